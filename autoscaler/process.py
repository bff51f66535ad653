"""The autoscaler daemon as a separate process next to a local control plane (tests, benchmarks, demos).
Side effects: starts a process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from simulations.controlplane.processes import free_port, http_ok


def start_autoscaler(kubeconfig: Path, log: Path, prometheus_url: str | None, namespace: str | None = None,
                     preset: str = "generic-nvlink", lease_namespace: str = "default", extra: list[str] | None = None,
                     ready_timeout_s: float = 60.0) -> tuple[subprocess.Popen, int]:
    """Start `clique autoscaler run` and wait until /readyz answers (its cluster-state watches have synced)."""
    port = free_port()
    argv = [sys.executable, "-m", "clique", "autoscaler", "run", "--kubeconfig", str(kubeconfig),
            "--listen", f"127.0.0.1:{port}", "--preset", preset, "--lease-namespace", lease_namespace]
    if prometheus_url:
        argv += ["--prometheus-url", prometheus_url]
    if namespace:
        argv += ["--namespace", namespace]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv + list(extra or []), stdout=fh, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + ready_timeout_s
    while not http_ok(f"http://127.0.0.1:{port}/readyz"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the autoscaler did not become ready; see {log}")
        time.sleep(0.1)
    return proc, port


def stop_autoscaler(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
