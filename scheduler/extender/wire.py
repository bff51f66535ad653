"""The kube-scheduler extender wire format (k8s.io/kube-scheduler/extender/v1). Pure.

The Go structs have no JSON tags, so fields travel under their Go names: `Pod`, `Nodes`, `NodeNames`,
`FailedNodes`, `FailedAndUnresolvableNodes`, `Error`, `Host`, `Score`, `PodName`, `PodNamespace`, `PodUID`,
`Node`. Go decodes field names case-insensitively, so we accept any case and always answer in Go's.
Malformed input raises WireError with a message that names the field; the service answers 400 with it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

MAX_SCORE = 10  # MaxExtenderPriority
# Object names as the API server accepts them (DNS-1123 subdomain, k8s.io/apimachinery validation.go): anything
# else cannot name a real pod or node, so it is refused here instead of reaching an API call or a log line.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
MAX_QUANTITY = 10**15  # base units (1 PB of memory, 10^15 GPUs): far above a real pod, and fits int64 in millis
MAX_NODE_NAMES = 100_000  # far above any real cluster; bounds the work one request can ask for


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
    nodes: list[dict[str, Any]] | None = None  # those Node objects: the answer must return the passing ones


def is_name(value: Any) -> bool:
    """A string the API server would accept as a pod, namespace or node name."""
    return isinstance(value, str) and len(value) <= 253 and _NAME.fullmatch(value) is not None


def _string_map(value: Any, where: str) -> None:
    if value is not None and (not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
        raise WireError(f"{where}: expected a map of strings to strings")


def _quantity(value: Any, where: str) -> None:
    from topology.quantity import QuantityError, parse_quantity

    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise WireError(f"{where}: expected a quantity such as '8', '500m' or '64Gi', got {value!r:.40}")
    if isinstance(value, str):
        if len(value) > 64:
            raise WireError(f"{where}: quantity longer than 64 characters")
    try:
        amount = parse_quantity(value)
        if not amount.is_finite():
            raise QuantityError(str(value))
    except (QuantityError, ArithmeticError):
        raise WireError(f"{where}: {value!r:.40} is not a Kubernetes quantity; write e.g. '8', '500m' or '64Gi'") from None
    if not 0 <= amount <= MAX_QUANTITY:
        raise WireError(f"{where}: quantity {value!r:.40} is out of range (0 to {MAX_QUANTITY:.0e})")


def validate_pod(pod: Any, where: str = "ExtenderArgs.Pod") -> None:
    """The fields of a Pod that the extender reads have the types the API serves; raises WireError naming the
    first one that does not (the request is answered 400 before any of it is used)."""
    if not isinstance(pod, dict):
        raise WireError(f"{where}: expected a Pod object")
    md = pod.get("metadata")
    if not isinstance(md, dict):
        raise WireError(f"{where}.metadata: expected an object")
    if not is_name(md.get("name")):
        raise WireError(f"{where}.metadata.name: expected a pod name (lowercase DNS subdomain), got {md.get('name')!r:.60}")
    if md.get("namespace") is not None and not is_name(md["namespace"]):
        raise WireError(f"{where}.metadata.namespace: expected a namespace name, got {md['namespace']!r:.60}")
    if md.get("uid") is not None and not isinstance(md["uid"], str):
        raise WireError(f"{where}.metadata.uid: expected a string")
    _string_map(md.get("labels"), f"{where}.metadata.labels")
    _string_map(md.get("annotations"), f"{where}.metadata.annotations")
    owners = md.get("ownerReferences")
    if owners is not None and (not isinstance(owners, list) or not all(
            isinstance(o, dict) and isinstance(o.get("kind"), str) and isinstance(o.get("name"), str)
            for o in owners)):  # both required in an OwnerReference (k8s.io/apimachinery v0.37.2 meta/v1/types.go)
        raise WireError(f"{where}.metadata.ownerReferences: expected a list of objects with string kind and name")
    status = pod.get("status")
    if status is not None and (not isinstance(status, dict) or any(
            status.get(f) is not None and not isinstance(status[f], str) for f in ("phase", "nominatedNodeName"))):
        raise WireError(f"{where}.status: expected an object with string phase and nominatedNodeName")
    spec = pod.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise WireError(f"{where}.spec: expected an object")
    for field_name in ("nodeName", "schedulerName", "priorityClassName"):
        if spec.get(field_name) is not None and not isinstance(spec[field_name], str):
            raise WireError(f"{where}.spec.{field_name}: expected a string")
    group = spec.get("schedulingGroup")
    if group is not None and (not isinstance(group, dict) or not isinstance(group.get("podGroupName", ""), str)):
        raise WireError(f"{where}.spec.schedulingGroup: expected an object with a string podGroupName")
    _string_map(spec.get("nodeSelector"), f"{where}.spec.nodeSelector")
    for kind in ("containers", "initContainers"):
        containers = spec.get(kind)
        if containers is None:
            continue
        if not isinstance(containers, list):
            raise WireError(f"{where}.spec.{kind}: expected a list of containers")
        for i, c in enumerate(containers):
            at = f"{where}.spec.{kind}[{i}]"
            if not isinstance(c, dict):
                raise WireError(f"{at}: expected a container object")
            for args in ("command", "args"):
                if c.get(args) is not None and not isinstance(c[args], list):
                    raise WireError(f"{at}.{args}: expected a list of strings")
            res = c.get("resources")
            if res is None:
                continue
            if not isinstance(res, dict):
                raise WireError(f"{at}.resources: expected an object")
            for part in ("limits", "requests"):
                values = res.get(part)
                if values is None:
                    continue
                if not isinstance(values, dict):
                    raise WireError(f"{at}.resources.{part}: expected a map of resource names to quantities")
                for name, value in values.items():
                    _quantity(value, f"{at}.resources.{part}[{name!r:.40}]")


def parse_extender_args(body: Any) -> ExtenderArgs:
    obj = _require_object(body, "ExtenderArgs")
    pod = _get(obj, "Pod")
    validate_pod(pod)
    names = _get(obj, "NodeNames")
    nodes = _get(obj, "Nodes")
    if names is not None:
        # This check is on every filter call with thousands of names: str.join runs in C and refuses anything
        # but strings (0.09 ms for 15,000 names; set(map(type, ...)) took 0.5 ms). The decoded list is fresh
        # (json.loads made it), so it is used as it is, not copied.
        if not isinstance(names, list) or len(names) > MAX_NODE_NAMES:
            raise WireError("ExtenderArgs.NodeNames: expected a list of node names")
        try:
            "".join(names)
        except TypeError:
            raise WireError("ExtenderArgs.NodeNames: expected a list of node names") from None
        return ExtenderArgs(pod, names, False)
    if nodes is not None:
        items = nodes.get("items") if isinstance(nodes, dict) else None
        if not isinstance(items, list):
            raise WireError("ExtenderArgs.Nodes: expected a NodeList with items")
        out = []
        for i, n in enumerate(items):
            md = n.get("metadata") if isinstance(n, dict) else None
            name = md.get("name") if isinstance(md, dict) else None
            if not isinstance(name, str):
                raise WireError(f"ExtenderArgs.Nodes.items[{i}]: node without metadata.name")
            out.append(name)
        return ExtenderArgs(pod, out, True, items)
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
        if f == "PodUID" and not (isinstance(v, str) and len(v) <= 128 and v.isascii()):
            raise WireError("ExtenderBindingArgs.PodUID: expected the pod's UID (a string)")
        if f != "PodUID" and not is_name(v):
            raise WireError(f"ExtenderBindingArgs.{f}: expected a {'node' if f == 'Node' else 'pod or namespace'} "
                            f"name (lowercase DNS subdomain), got {v!r:.60}")
        vals[f] = v
    return BindingArgs(vals["PodName"], vals["PodNamespace"], vals["PodUID"], vals["Node"])


@dataclass(frozen=True)
class PreemptionArgs:
    """ExtenderPreemptionArgs: the pod and, per node, the UIDs of the victims kube-scheduler chose there
    (NodeNameToMetaVictims with nodeCacheCapable; the UIDs of NodeNameToVictims' pods otherwise)."""

    pod: dict[str, Any]
    victims: dict[str, tuple[list[str], int]]  # node -> (victim UIDs, PDB violations)


def parse_preemption_args(body: Any) -> PreemptionArgs:
    obj = _require_object(body, "ExtenderPreemptionArgs")
    pod = _get(obj, "Pod")
    validate_pod(pod, "ExtenderPreemptionArgs.Pod")
    meta, full = _get(obj, "NodeNameToMetaVictims"), _get(obj, "NodeNameToVictims")
    where = "NodeNameToMetaVictims" if meta is not None else "NodeNameToVictims"
    given = meta if meta is not None else full
    if given is None:
        return PreemptionArgs(pod, {})
    if not isinstance(given, dict):
        raise WireError(f"ExtenderPreemptionArgs.{where}: expected a map of node names to victims")
    out: dict[str, tuple[list[str], int]] = {}
    for node, v in given.items():
        at = f"ExtenderPreemptionArgs.{where}[{node!r:.60}]"
        if not isinstance(v, dict) or not isinstance(_get(v, "Pods") or [], list):
            raise WireError(f"{at}: expected an object with a list of Pods")
        uids = []
        for i, p in enumerate(_get(v, "Pods") or []):
            md = p.get("metadata") if isinstance(p, dict) else None  # NodeNameToVictims: whole pods
            uid = _get(p, "UID") if meta is not None and isinstance(p, dict) else (
                md.get("uid") if isinstance(md, dict) else None)
            if not isinstance(uid, str):
                raise WireError(f"{at}.Pods[{i}]: expected a pod with a UID")
            uids.append(uid)
        pdb = _get(v, "NumPDBViolations") or 0
        if isinstance(pdb, bool) or not isinstance(pdb, int):
            raise WireError(f"{at}.NumPDBViolations: expected an integer")
        out[node] = (uids, pdb)
    return PreemptionArgs(pod, out)


def preemption_result_json(victims: dict[str, tuple[list[str], int]]) -> dict[str, Any]:
    """ExtenderPreemptionResult; kube-scheduler preempts on none of the nodes left out."""
    return {"NodeNameToMetaVictims": {n: {"Pods": [{"UID": u} for u in uids], "NumPDBViolations": pdb}
                                      for n, (uids, pdb) in victims.items()}}


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
