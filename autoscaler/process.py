"""The autoscaler daemon as a separate process next to a local control plane (tests, benchmarks, demos).
Side effects: starts a process."""

from __future__ import annotations

import subprocess
from pathlib import Path

from simulations.controlplane.processes import free_port, start_service, stop_service


def start_autoscaler(kubeconfig: Path, log: Path, prometheus_url: str | None, namespace: str | None = None,
                     preset: str = "generic-nvlink", lease_namespace: str = "default", extra: list[str] | None = None,
                     ready_timeout_s: float = 60.0, levels: list[str] | None = None) -> tuple[subprocess.Popen, int]:
    """Start `clique autoscaler run` and wait until /readyz answers (its cluster-state watches have synced).
    `levels` (node label keys, outermost first) overrides the preset."""
    port = free_port()
    how = ["--levels", ",".join(levels)] if levels else ["--preset", preset]
    args = ["autoscaler", "run", "--kubeconfig", str(kubeconfig), "--listen", f"127.0.0.1:{port}",
            *how, "--lease-namespace", lease_namespace]
    if prometheus_url:
        args += ["--prometheus-url", prometheus_url]
    if namespace:
        args += ["--namespace", namespace]
    return start_service(args + list(extra or []), log, port, "autoscaler", ready_timeout_s), port


stop_autoscaler = stop_service
