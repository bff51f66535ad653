"""The extender as a separate process next to a local control plane (benchmarks, tests, demos), and the
KubeSchedulerConfiguration of a kube-scheduler that calls it. Side effects: starts a process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from simulations.controlplane.processes import free_port, http_ok


def start_extender(kubeconfig: Path, log: Path, preset: str = "generic-nvlink", bind_timeout_s: float = 10.0,
                   port: int | None = None, ready_timeout_s: float = 60.0) -> tuple[subprocess.Popen, int]:
    """Start `clique scheduler extender` and wait until /readyz answers (its watches have synced)."""
    port = port or free_port()
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "clique", "scheduler", "extender", "--kubeconfig", str(kubeconfig),
                                 "--listen", f"127.0.0.1:{port}", "--preset", preset, "--bind-timeout", str(bind_timeout_s)],
                                stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + ready_timeout_s
    while not http_ok(f"http://127.0.0.1:{port}/readyz"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the extender did not become ready; see {log}")
        time.sleep(0.1)
    return proc, port


def stop_extender(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def clique_scheduler_config(extender_port: int, scheduler_name: str = "clique-scheduler") -> dict[str, Any]:
    """A second kube-scheduler with one profile that calls the extender for GPU pods (as manifests/ ships)."""
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "percentageOfNodesToScore": 100,
        "profiles": [{"schedulerName": scheduler_name}],
        "extenders": [{"urlPrefix": f"http://127.0.0.1:{extender_port}", "filterVerb": "filter",
                       "prioritizeVerb": "prioritize", "bindVerb": "bind", "weight": 1, "nodeCacheCapable": True,
                       "httpTimeout": "30s", "managedResources": [{"name": "nvidia.com/gpu"}], "ignorable": False}],
    }
