"""The kube-scheduler extender wire format (k8s.io/kube-scheduler/extender/v1). Pure.

The Go structs have no JSON tags, so fields travel under their Go names: `Pod`, `Nodes`, `NodeNames`,
`FailedNodes`, `FailedAndUnresolvableNodes`, `Error`, `Host`, `Score`, `PodName`, `PodNamespace`, `PodUID`,
`Node`. Go decodes field names case-insensitively, so we accept any case and always answer in Go's.
Malformed input raises WireError with a message that names the field; the service answers 400 with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_SCORE = 10  # MaxExtenderPriority


class WireError(ValueError):
    """The request body is not what the extender protocol says; the message names the field."""


def _get(obj: dict[str, Any], name: str) -> Any:
    if name in obj:
        return obj[name]
    lower = name.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == lower:
            return v
    return None


def _require_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WireError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body


@dataclass(frozen=True)
class ExtenderArgs:
    pod: dict[str, Any]
    node_names: list[str]  # from NodeNames (nodeCacheCapable) or the names in Nodes.items
    full_nodes: bool  # True when full Node objects were sent (nodeCacheCapable: false)


def parse_extender_args(body: Any) -> ExtenderArgs:
    obj = _require_object(body, "ExtenderArgs")
    pod = _get(obj, "Pod")
    if not isinstance(pod, dict) or not isinstance(pod.get("metadata"), dict) or not pod["metadata"].get("name"):
        raise WireError("ExtenderArgs.Pod: expected a Pod object with metadata.name")
    names = _get(obj, "NodeNames")
    nodes = _get(obj, "Nodes")
    if names is not None:
        # set(map(type, ...)) runs in C: this check is on every filter call with thousands of names
        if not isinstance(names, list) or not set(map(type, names)) <= {str}:
            raise WireError("ExtenderArgs.NodeNames: expected a list of node names")
        return ExtenderArgs(pod, list(names), False)
    if nodes is not None:
        items = nodes.get("items") if isinstance(nodes, dict) else None
        if not isinstance(items, list):
            raise WireError("ExtenderArgs.Nodes: expected a NodeList with items")
        out = []
        for i, n in enumerate(items):
            name = ((n or {}).get("metadata") or {}).get("name") if isinstance(n, dict) else None
            if not isinstance(name, str):
                raise WireError(f"ExtenderArgs.Nodes.items[{i}]: node without metadata.name")
            out.append(name)
        return ExtenderArgs(pod, out, True)
    raise WireError("ExtenderArgs: neither NodeNames nor Nodes given")


@dataclass(frozen=True)
class BindingArgs:
    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str


def parse_binding_args(body: Any) -> BindingArgs:
    obj = _require_object(body, "ExtenderBindingArgs")
    vals = {}
    for f in ("PodName", "PodNamespace", "PodUID", "Node"):
        v = _get(obj, f)
        if not isinstance(v, str) or (f != "PodUID" and not v):
            raise WireError(f"ExtenderBindingArgs.{f}: expected a non-empty string")
        vals[f] = v
    return BindingArgs(vals["PodName"], vals["PodNamespace"], vals["PodUID"], vals["Node"])


@dataclass
class FilterResult:
    node_names: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # may pass on retry
    unresolvable: dict[str, str] = field(default_factory=dict)  # preemption cannot help
    error: str = ""

    def to_json(self, full_nodes: list[dict] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"FailedNodes": self.failed, "FailedAndUnresolvableNodes": self.unresolvable,
                               "Error": self.error}
        if full_nodes is not None:
            keep = set(self.node_names)
            out["Nodes"] = {"items": [n for n in full_nodes if n["metadata"]["name"] in keep]}
            out["NodeNames"] = None
        else:
            out["NodeNames"] = self.node_names
            out["Nodes"] = None
        return out


def priorities_json(scores: dict[str, int]) -> list[dict[str, Any]]:
    return [{"Host": h, "Score": max(0, min(MAX_SCORE, s))} for h, s in scores.items()]


def binding_result_json(error: str = "") -> dict[str, str]:
    return {"Error": error}
