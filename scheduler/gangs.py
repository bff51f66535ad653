"""Gang recognition: which multi-pod replica a pod belongs to, from the labels users already have. Pure.

Sources, first match wins:
    clique.dev/gang (+ clique.dev/gang-size, clique.dev/role)                 our own annotations or labels
    LeaderWorkerSet   leaderworkerset.sigs.k8s.io/name + group-index, size annotation, worker-index 0 = leader
    Grove             grove.io/podgang                                         (size from the PodGang object)
    Volcano           annotation scheduling.k8s.io/group-name                  (size: PodGroup minMember)
    coscheduling      label scheduling.x-k8s.io/pod-group                      (size: PodGroup minMember)
    PodGroup API      spec.schedulingGroup.podGroupName (Kubernetes 1.36+)     (size from the PodGroup)
    StatefulSet       owner StatefulSet + clique.dev/gang-size annotation: ordinals in groups of that size
A pod with none of these is a gang of one. Sizes that live in other objects (PodGroup, PodGang) come in through
`sizes`, looked up by the caller; without them the gang waits with a reason that says what is missing.
Topology: clique.dev/topology-required / clique.dev/topology-preferred (a level name or a node label key); an LWS
group's exclusive-topology key is its required level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

GANG = "clique.dev/gang"
GANG_SIZE = "clique.dev/gang-size"
ROLE = "clique.dev/role"
TOPOLOGY_REQUIRED = "clique.dev/topology-required"
TOPOLOGY_PREFERRED = "clique.dev/topology-preferred"
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_SIZE = "leaderworkerset.sigs.k8s.io/size"
# Copied from the LeaderWorkerSet onto its pods (sigs.k8s.io/lws v0.8.0 pkg/controllers/leaderworkerset_controller.go,
# api/leaderworkerset/v1/leaderworkerset_types.go): one group per domain of this node label; the worker
# StatefulSet is created only once the leader has a node (pkg/controllers/pod_controller.go).
LWS_EXCLUSIVE = "leaderworkerset.sigs.k8s.io/exclusive-topology"
GROVE_PODGANG = "grove.io/podgang"
VOLCANO_GROUP = "scheduling.k8s.io/group-name"
COSCHED_GROUP = "scheduling.x-k8s.io/pod-group"
GPU = "nvidia.com/gpu"
TP_ARG = re.compile(r"--(?:tp-size|tensor-parallel-size|tp)(?:=|\s+)(\d{1,6})\b")


@dataclass(frozen=True)
class GangRef:
    """The gang a pod belongs to."""

    namespace: str
    name: str  # unique within the namespace and source
    source: str  # "clique", "lws", "grove", "volcano", "coscheduling", "podgroup", "statefulset", "single"
    size: int | None  # total pods; None: unknown until the owning object is read
    role: str  # role name inside the gang ("leader", "worker", ...)
    required_level: str | None = None
    preferred_level: str | None = None
    size_object: str | None = None  # "PodGroup <ns>/<name>" etc. when the size lives elsewhere

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.source}/{self.name}"


def _meta(pod: Mapping[str, Any]) -> tuple[str, str, dict, dict]:
    md = pod.get("metadata") or {}
    return md.get("namespace") or "default", md.get("name") or "", md.get("labels") or {}, md.get("annotations") or {}


def _int(value: Any) -> int | None:
    try:
        n = int(str(value))
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def recognize(pod: Mapping[str, Any], sizes: Mapping[str, int] | None = None,
              topology: Mapping[str, str] | None = None) -> GangRef:
    """The gang of a pod (a dict as the API serves it). `sizes` maps `size_object` strings to member counts,
    `topology` to a required topology key read from the same object (the pod's annotation wins)."""
    ns, name, labels, ann = _meta(pod)
    both = {**labels, **ann}
    req, pref = both.get(TOPOLOGY_REQUIRED), both.get(TOPOLOGY_PREFERRED)
    sizes = sizes or {}

    def ref(gang: str, source: str, size: int | None, role: str, size_object: str | None = None,
            required_key: str | None = None) -> GangRef:
        if size is None and size_object:
            size = sizes.get(size_object)
        required = req or required_key or ((topology or {}).get(size_object) if size_object else None)
        if size == 1:  # a group of one (e.g. a PodGroup with the `basic` policy) is placed pod by pod
            return GangRef(ns, name, "single", 1, "pod", required, pref)
        return GangRef(ns, gang, source, size, role, required, pref, size_object)

    if GANG in both:
        return ref(both[GANG], "clique", _int(both.get(GANG_SIZE)), both.get(ROLE, "worker"))
    if LWS_NAME in labels and LWS_GROUP in labels:
        role = "leader" if labels.get(LWS_WORKER, "0") == "0" else "worker"
        return ref(f"{labels[LWS_NAME]}-{labels[LWS_GROUP]}", "lws", _int(ann.get(LWS_SIZE)), role,
                   required_key=ann.get(LWS_EXCLUSIVE) or None)
    if GROVE_PODGANG in labels:
        return ref(labels[GROVE_PODGANG], "grove", _int(both.get(GANG_SIZE)), both.get(ROLE, "worker"),
                   f"PodGang {ns}/{labels[GROVE_PODGANG]}")
    if VOLCANO_GROUP in ann:
        return ref(ann[VOLCANO_GROUP], "volcano", None, both.get(ROLE, "worker"), f"PodGroup {ns}/{ann[VOLCANO_GROUP]}")
    if COSCHED_GROUP in labels:
        return ref(labels[COSCHED_GROUP], "coscheduling", None, both.get(ROLE, "worker"),
                   f"PodGroup {ns}/{labels[COSCHED_GROUP]}")
    group = ((pod.get("spec") or {}).get("schedulingGroup") or {}).get("podGroupName")
    if group:
        return ref(group, "podgroup", None, both.get(ROLE, "worker"), f"PodGroup {ns}/{group}")
    owner = next((o for o in (pod.get("metadata") or {}).get("ownerReferences") or [] if o.get("kind") == "StatefulSet"), None)
    size = _int(ann.get(GANG_SIZE))
    if owner and size:
        # ordinals 0..size-1 are gang 0, size..2*size-1 gang 1, ...: the StatefulSet scales in whole gangs
        ordinal = int(m.group(1)) if (m := re.search(r"-(\d+)$", name)) else 0
        return ref(f"{owner['name']}-g{ordinal // size}", "statefulset", size,
                   "leader" if ordinal % size == 0 else "worker")
    return GangRef(ns, name, "single", 1, "pod", req, pref)


@dataclass(frozen=True)
class PodRequest:
    gpus: int
    cpu_millis: int
    memory: int


def pod_request(pod: Mapping[str, Any]) -> PodRequest:
    """Effective requests as the scheduler sees them: sum over containers, max with each init container."""
    from topology.quantity import QuantityError, as_int, cpu_millis

    spec = pod.get("spec") or {}

    def one(c: Mapping[str, Any]) -> tuple[int, int, int]:
        res = c.get("resources") or {}
        req = {**(res.get("limits") or {}), **(res.get("requests") or {})}  # limits default the requests
        try:
            return (as_int(req.get(GPU, 0)), cpu_millis(req.get("cpu", 0)), as_int(req.get("memory", 0)))
        except QuantityError:
            return (0, 0, 0)

    total = [0, 0, 0]
    for c in spec.get("containers") or []:
        total = [a + b for a, b in zip(total, one(c))]
    for c in spec.get("initContainers") or []:
        total = [max(a, b) for a, b in zip(total, one(c))]
    return PodRequest(*total)


def declared_tp_size(pod: Mapping[str, Any]) -> int | None:
    """The tensor-parallel size a pod's command line declares (--tp-size, --tensor-parallel-size, --tp)."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        m = TP_ARG.search(" ".join(str(x) for x in (c.get("command") or []) + (c.get("args") or [])))
        if m:
            return int(m.group(1))
    return None


# The LeaderWorkerSet object (sigs.k8s.io/lws v0.8.0 api/leaderworkerset/v1/groupversion_info.go): group, version,
# plural; read for spec.startupPolicy and spec.leaderWorkerTemplate.workerTemplate (leaderworkerset_types.go).
LWS_OBJECT = ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")

# Where each gang source keeps its size: (API group, versions to try in order, plural) of the object named by
# `size_object`. Kubernetes' own PodGroup is served as scheduling.k8s.io/v1beta1 from 1.37 and as v1alpha2 in 1.36,
# with the same field paths (k8s.io/api v0.37.2 scheduling/v1beta1/types.go, v0.36.1 scheduling/v1alpha2/types.go).
SIZE_OBJECTS = {
    "volcano": ("scheduling.volcano.sh", ("v1beta1",), "podgroups"),
    "coscheduling": ("scheduling.x-k8s.io", ("v1alpha1",), "podgroups"),
    "podgroup": ("scheduling.k8s.io", ("v1beta1", "v1alpha2"), "podgroups"),
    "grove": ("scheduler.grove.io", ("v1alpha1",), "podgangs"),
}


def size_from_object(source: str, obj: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """(gang size, required topology label key) from a PodGroup / PodGang object as the API serves it."""
    spec = obj.get("spec") or {}
    if source in ("volcano", "coscheduling"):
        return _int(spec.get("minMember")), None
    if source == "podgroup":
        # spec.schedulingPolicy is `gang: {minCount}` or `basic: {}` (no gang: size 1, placed pod by pod)
        policy = spec.get("schedulingPolicy") or {}
        size = _int((policy.get("gang") or {}).get("minCount")) if policy.get("gang") else 1
        keys = [t.get("key") for t in (spec.get("schedulingConstraints") or {}).get("topology") or [] if t.get("key")]
        return size, (keys[0] if keys else None)
    if source == "grove":
        total = sum(_int(g.get("minReplicas")) or 0 for g in spec.get("podgroups") or [])
        return (total or None), None
    return None, None
