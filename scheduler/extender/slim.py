"""What the cluster state keeps of a pod: only the fields the extender and the autoscaler read. Pure.

A pod as the API server serves it costs about 29 KB as Python objects (managedFields, volumes, env, probes, the
kubelet's container statuses), so 50,000 pods would hold 1.4 GB; what scheduler/ reads of a pod from the state
(gangs.py, extender/service, gangbook, gang_health, health_loop, recovery, pinning, preemption, nodefit, binder,
state) is kept, the rest dropped, for about 1.5 KB a pod. Parts that pods of one template share (containers,
tolerations, affinity, owner references, annotations, ...) are kept once and shared by all the pods that have
them, and strings are interned (but a pod's own: name, uid, timestamps). Slim pods, and so everything in
ClusterState.pods, are read-only: no code changes a pod dict it reads from the state (a change would reach every
pod sharing that part).

Kept, by path (a field missing from the pod stays missing):
  apiVersion, kind
  metadata: name, generateName, namespace, uid, labels, annotations, ownerReferences, creationTimestamp,
            deletionTimestamp
  spec: nodeName, schedulerName, priority, priorityClassName, preemptionPolicy, nodeSelector, affinity,
        tolerations, schedulingGates, schedulingGroup, terminationGracePeriodSeconds,
        containers[] and initContainers[]: name, resources, command, args, restartPolicy
  status: phase, reason, message, nominatedNodeName; conditions of type PodScheduled and DisruptionTarget
          (their type, status, reason, message, lastTransitionTime)
A pod whose metadata, spec or status is not an object keeps that part as it is (the readers judge it).
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any, Mapping

METADATA = ("name", "generateName", "namespace", "uid", "labels", "annotations", "ownerReferences",
            "creationTimestamp", "deletionTimestamp")
SPEC = ("nodeName", "schedulerName", "priority", "priorityClassName", "preemptionPolicy", "nodeSelector", "affinity",
        "tolerations", "schedulingGates", "schedulingGroup", "terminationGracePeriodSeconds", "containers",
        "initContainers")
CONTAINER = ("name", "resources", "command", "args", "restartPolicy")
STATUS = ("phase", "reason", "message", "nominatedNodeName")
CONDITIONS = ("PodScheduled", "DisruptionTarget")  # gangbook.scheduled_at, gang_health.how_gone
CONDITION = ("type", "status", "reason", "message", "lastTransitionTime")  # what they read of one (and say)
UNIQUE = {("metadata", "name"), ("metadata", "uid"), ("metadata", "creationTimestamp"),
          ("metadata", "deletionTimestamp")}  # one pod's own: copied, not interned (the intern table would grow)
# Parts that pods of one template (or scheduled in the same second) have in common.
SHARED = {("metadata", "labels"), ("metadata", "annotations"), ("status", "conditions"), ("metadata", "ownerReferences"), ("spec", "nodeSelector"),
          ("spec", "affinity"), ("spec", "tolerations"), ("spec", "schedulingGates"), ("spec", "schedulingGroup"),
          ("spec", "containers"), ("spec", "initContainers")}
_MISSING: Any = object()  # no previous part to compare with
MAX_SHARED = 50_000  # distinct shared parts remembered; past that the table starts over (sharing is only a saving)


def copy_str(value: Any) -> Any:
    """A new string equal to `value` (not interned), anything else through `fresh`."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    return fresh(value)


def fresh(value: Any) -> Any:
    """A copy of a JSON value made of new objects, strings interned (label keys and values repeat across pods).
    New, not the parsed ones: a kept string of a parsed list or event would pin the memory of all of it that was
    allocated around it (a 50,000-pod list is 1.4 GB as Python objects), and the process would never shrink."""
    if isinstance(value, str):
        return sys.intern(value.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return {fresh(k): fresh(v) for k, v in value.items()}
    if isinstance(value, list):  # exactly its length: a comprehension over-allocates (one item: 88 bytes, not 64)
        out = [None] * len(value)
        for i, v in enumerate(value):
            out[i] = fresh(v)
        return out
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value * 1  # a new object (small ints are shared constants anyway)
    return value


class Slimmer:
    """Turns pods into slim pods; holds the table of shared parts (bounded)."""

    def __init__(self) -> None:
        self._shared: dict[bytes, Any] = {}
        self._last: dict[tuple[str, str], Any] = {}  # field -> the part last shared for it

    def _share(self, value: Any, field: tuple[str, str], previous: Any = _MISSING) -> Any:
        """The shared copy of `value`. Most events repeat a part the state already holds: the same pod's previous
        version (a MODIFIED event), or the pod of the same template seen just before (its gang's next member);
        those are found by equality (C speed, the part's types fixed by the API schema), not by hashing its JSON."""
        if not isinstance(value, (dict, list)):
            return fresh(value)
        if previous is not _MISSING and previous == value:
            return previous
        last = self._last.get(field, _MISSING)
        if last is not _MISSING and last == value:
            return last
        try:  # a 128-bit digest of the canonical JSON names the part (cheaper to keep than the text)
            key = hashlib.blake2b(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogatepass"),
                                  digest_size=16).digest()
        except (TypeError, ValueError):  # not JSON (a test's object): kept as it is, unshared
            return value
        found = self._shared.get(key)
        if found is None:
            if len(self._shared) >= MAX_SHARED:
                self._shared.clear()
            found = self._shared[key] = fresh(value)
        self._last[field] = found
        return found

    def _part(self, obj: Any, section: str, keys: tuple[str, ...], previous: Any = None) -> Any:
        if not isinstance(obj, dict):
            return obj
        previous = previous if isinstance(previous, dict) else {}
        out = {}
        for k in keys:
            if k in obj:
                v = obj[k]
                if (section, k) in SHARED:
                    v = self._share(self._containers(v) if k in ("containers", "initContainers") else v, (section, k),
                                    previous.get(k, _MISSING))
                else:
                    v = copy_str(v) if (section, k) in UNIQUE else fresh(v)
                out[sys.intern(k)] = v
        return out

    @staticmethod
    def _containers(value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [{k: c[k] for k in CONTAINER if k in c} if isinstance(c, dict) else c for c in value]

    def pod(self, pod: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The slim pod; `previous`: the slim version of the same pod the state holds, whose shared parts are
        reused where they did not change."""
        previous = previous or {}
        out: dict[str, Any] = {k: fresh(v) for k, v in pod.items() if k in ("apiVersion", "kind")}
        if "metadata" in pod:
            out["metadata"] = self._part(pod["metadata"], "metadata", METADATA, previous.get("metadata"))
        if "spec" in pod:
            out["spec"] = self._part(pod["spec"], "spec", SPEC, previous.get("spec"))
        if "status" in pod:
            status = pod["status"]
            before = previous.get("status")
            slim = self._part(status, "status", STATUS, before)
            if isinstance(status, dict) and isinstance(slim, dict) and "conditions" in status:
                conds = status["conditions"]
                slim["conditions"] = self._share([{k: c[k] for k in CONDITION if k in c} for c in conds
                                                  if isinstance(c, dict) and c.get("type") in CONDITIONS]
                                                 if isinstance(conds, list) else conds, ("status", "conditions"),
                                                 before.get("conditions", _MISSING) if isinstance(before, dict)
                                                 else _MISSING)
            out["status"] = slim
        return out


def slim_node(node: Mapping[str, Any]) -> dict[str, Any]:
    """What state.node_info reads of a Node (name, labels, annotations, taints, unschedulable, allocatable, the
    Ready condition), as fresh objects: a list page's nodes are dropped as soon as the page is read."""
    out: dict[str, Any] = {}
    for part, keys in (("metadata", ("name", "labels", "annotations")), ("spec", ("taints", "unschedulable")),
                       ("status", ("allocatable",))):
        obj = node.get(part)
        out[part] = {k: fresh(obj[k]) for k in keys if k in obj} if isinstance(obj, dict) else fresh(obj)
    status = node.get("status")
    if isinstance(status, dict) and isinstance(status.get("conditions"), list):
        out["status"]["conditions"] = fresh([c for c in status["conditions"]
                                             if isinstance(c, dict) and c.get("type") == "Ready"])
    return out
