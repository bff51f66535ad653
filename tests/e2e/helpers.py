"""Small builders and waiters for e2e tests against the real API server."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
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


@contextmanager
def opted_in_namespaces(control_plane, api, port: int | None, ca: bytes | None, prefix: str, probe_pod: dict,
                        scheduler: str = "clique-scheduler"):
    """A namespace labelled clique.dev/scheduler=enabled and one without the label, pods reaching Clique as shipped:
    through the routing MutatingAdmissionPolicy (manifests/routing/) when `port` is None, else through the
    shipped webhook configuration calling the extender's webhook on 127.0.0.1:PORT (trusting `ca`). Yields (on,
    off) once a dry-run `probe_pod` in the opted-in one comes out routed to `scheduler`. Everything is removed at
    the end."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from simulations.controlplane.processes import port_open
    from simulations.controlplane.webhook import OPT_IN, policy_registered, registered

    core = client.CoreV1Api(api)
    suffix = uuid.uuid4().hex[:5]
    on, off = f"{prefix}-on-{suffix}", f"{prefix}-off-{suffix}"
    name = f"clique-scheduler-{prefix}-{suffix}"
    if port is None:
        routing = policy_registered(api, name=name)
    else:
        wait_for(lambda: port_open(port), 30, "the extender's webhook port")
        routing = registered(api, port, ca, name=name)
    with routing:
        try:
            for ns in (on, off):
                control_plane.create_namespace(ns)
            core.patch_namespace(on, {"metadata": {"labels": OPT_IN}})
            # the API server picks new webhook configurations and policies up within a moment
            wait_for(lambda: core.create_namespaced_pod(on, probe_pod, dry_run="All").spec.scheduler_name == scheduler,
                     60, "routing to take effect in the opted-in namespace", interval_s=0.5)
            yield on, off
        finally:
            for ns in (on, off):
                try:
                    core.delete_namespace(ns)
                except ApiException:
                    pass


def built_or_skip(name: str) -> None:
    """Build (or find cached) an optional controller (`lws`, `kueue`); skip the test where no Go toolchain can
    build it, fail on any other build error."""
    import pytest

    from simulations.controlplane.build import BuildError, ensure_optional

    try:
        ensure_optional(name)
    except BuildError as exc:
        if "Go toolchain not found" in str(exc):
            pytest.skip(f"{name} cannot be built here: {exc}")
        raise
