"""Small builders and waiters for e2e tests against the real API server."""

from __future__ import annotations

from typing import Any

from simulations.controlplane.processes import wait_for  # noqa: F401 - the e2e modules import it from here


def gpu_pod(name: str, gpus: int, scheduler: str = "default-scheduler", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": "gpu-test"}},
        "spec": {
            "schedulerName": scheduler,
            "automountServiceAccountToken": False,
            "containers": [{
                "name": "worker", "image": "registry.example/vllm:test",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"cpu": "1", "memory": "1Gi"}},
            }],
        },
    }
