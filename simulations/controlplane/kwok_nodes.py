"""Fake GPU nodes on the real API server, managed by kwok. Side effects: creates/deletes Node objects.

`node_manifest` is pure (host spec -> Node dict); `create_nodes` posts them in parallel and waits until kwok
has marked every one Ready.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from simulations.controlplane.cluster import KWOK_NODE_ANNOTATION
from topology.spec import GPU_RESOURCE, HostSpec


def node_manifest(host: HostSpec, ready: bool = False) -> dict[str, Any]:
    """The Node for a host. `ready=True` writes a Ready condition at once (for runs without kwok)."""
    capacity = {
        "cpu": f"{host.cpu_millis}m",
        "memory": str(host.memory_bytes),
        "pods": str(host.pods),
        "ephemeral-storage": "1Ti",
        GPU_RESOURCE: str(host.gpus),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": host.name,
            "labels": dict(host.labels),
            # kwok manages only nodes with this annotation, so real nodes (if any) are never touched.
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {"capacity": capacity, "allocatable": dict(capacity), "phase": "Running" if ready else "Pending",
                   **({"conditions": [{"type": "Ready", "status": "True", "reason": "StaticNode",
                                       "message": "created Ready (no kubelet, no kwok)"}]} if ready else {})},
    }


def create_nodes(api_client: Any, hosts: Iterable[HostSpec], workers: int = 8, wait_ready_s: float = 120.0,
                 ready: bool = False) -> list[str]:
    """Create one Node per host (existing ones are left as they are) and wait until all are Ready."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    manifests = [node_manifest(h, ready) for h in hosts]

    def create(manifest: dict[str, Any]) -> str:
        try:
            core.create_node(manifest)
        except ApiException as exc:
            if exc.status != 409:  # already exists: keep it
                raise RuntimeError(f"creating node {manifest['metadata']['name']} failed: {exc.status} {exc.reason}: "
                                   f"{exc.body}") from exc
        return manifest["metadata"]["name"]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        names = list(pool.map(create, manifests))
    wait_nodes_ready(api_client, set(names), wait_ready_s)
    return names


def wait_nodes_ready(api_client: Any, names: set[str], timeout_s: float) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        for node in core.list_node(label_selector="type=kwok", resource_version="0").items:
            conds = {c.type: c.status for c in (node.status.conditions or [])}
            if conds.get("Ready") == "True":
                pending.discard(node.metadata.name)
        if not pending:
            return
        if time.monotonic() > deadline:
            sample = ", ".join(sorted(pending)[:5])
            raise TimeoutError(f"{len(pending)} KWOK node(s) not Ready after {timeout_s:.0f}s (e.g. {sample}); "
                               "is kwok running? see its log in the control plane's work directory")
        time.sleep(0.25)


def delete_nodes(api_client: Any, names: Iterable[str], workers: int = 8) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)

    def delete(name: str) -> None:
        try:
            core.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(delete, names))
