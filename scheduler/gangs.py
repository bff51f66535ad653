"""Gang recognition: which multi-pod replica a pod belongs to, from the labels users already have. Pure.

Sources, first match wins:
    clique.dev/gang (+ clique.dev/gang-size, clique.dev/role)                 our own annotations or labels
    LeaderWorkerSet   leaderworkerset.sigs.k8s.io/name + group-index, size annotation, worker-index 0 = leader
    Grove             grove.io/podgang, role grove.io/podclique               (size from the PodGang object)
    Volcano           annotation scheduling.k8s.io/group-name                  (size: PodGroup minMember)
    coscheduling      label scheduling.x-k8s.io/pod-group                      (size: PodGroup minMember)
    PodGroup API      spec.schedulingGroup.podGroupName (Kubernetes 1.36+)     (size from the PodGroup)
    StatefulSet       owner StatefulSet + clique.dev/gang-size annotation: ordinals in groups of that size
A pod with none of these is a gang of one. Sizes that live in other objects (PodGroup, PodGang) come in through
`sizes`, looked up by the caller; without them the gang waits with a reason that says what is missing.
Topology: clique.dev/topology-required / clique.dev/topology-preferred (a level name or a node label key); an LWS
group's exclusive-topology key is its required level. `size_from_object` reads a PodGroup / PodGang into a
`GangObject` (size, topology, per-role minimums, timeout, what is not honoured); the caller turns it into a
`GangView` per pod (gangbook.gang_view) that `recognize` applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from topology.levels import Level

GANG = "clique.dev/gang"
GANG_SIZE = "clique.dev/gang-size"
ROLE = "clique.dev/role"
TOPOLOGY_REQUIRED = "clique.dev/topology-required"
TOPOLOGY_PREFERRED = "clique.dev/topology-preferred"
# How long a gated gang whose only places now would split its preferred domain waits for a place inside one, as
# Slurm's `--switches=count@max-time` waits for fewer leaf switches (slurm.schedmd.com/topology.html, "Tree
# Topology"). A duration: "90", "90s", "5m" or "1h". Absent or 0: placed at once, split (the default).
TOPOLOGY_PREFERRED_WAIT = "clique.dev/topology-preferred-wait"
MAX_PREFERRED_WAIT_S = 24 * 3600
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_SIZE = "leaderworkerset.sigs.k8s.io/size"
# Copied from the LeaderWorkerSet onto its pods (sigs.k8s.io/lws v0.8.0 pkg/controllers/leaderworkerset_controller.go,
# api/leaderworkerset/v1/leaderworkerset_types.go): one group per domain of this node label; the worker
# StatefulSet is created only once the leader has a node (pkg/controllers/pod_controller.go).
LWS_EXCLUSIVE = "leaderworkerset.sigs.k8s.io/exclusive-topology"
# Pod labels the Grove operator writes (ai-dynamo/grove v0.1.0-alpha.12-rc1 operator/api/common/labels.go,
# LabelPodGang and LabelPodClique, set in operator/internal/controller/podclique/components/pod/pod.go getLabels):
# the PodGang's name, and the PodClique's name, which is also the name of its PodGang podgroup
# (operator/internal/controller/podcliqueset/components/podgang/podgang.go createPodGroupsForPodGang: Name: pi.fqn).
GROVE_PODGANG = "grove.io/podgang"
GROVE_PODCLIQUE = "grove.io/podclique"
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
    members: tuple[str, ...] = ()  # pod keys that are the gang when its group has more pods; (): every pod
    near: tuple[str, ...] = ()  # a pod beyond its group's gang, placed alone: hosts of the gang to be near
    timeout_s: float | None = None  # how long the gang's places may be held before all of it is bound

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.source}/{self.name}"


def is_single_key(key: str) -> bool:
    """Whether a GangRef.key is that of a pod that is a gang of its own ("<namespace>/single/<pod name>")."""
    return key.split("/", 2)[1:2] == ["single"]


def _meta(pod: Mapping[str, Any]) -> tuple[str, str, dict, dict]:
    md = pod.get("metadata") or {}
    return md.get("namespace") or "default", md.get("name") or "", md.get("labels") or {}, md.get("annotations") or {}


def _int(value: Any) -> int | None:
    """A size as written in a label or annotation: 1 to 18 decimal digits, above zero (else None). Strict, so the
    routing policy's CEL (extender/routing_policy.py) can say the same; int() would also take ' 4', '+4', '4_0'."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{1,18}", value):
        return None
    return int(value) or None


@dataclass(frozen=True)
class GangView:
    """What a gang's object says about one pod of it, for `recognize` (built by gangbook.gang_view)."""

    required: str | None = None  # topology key (or level name) every member must share
    preferred: str | None = None
    members: tuple[str, ...] = ()  # pod keys that are the gang (its group has more pods than that); (): all
    near: tuple[str, ...] | None = None  # set: this pod is beyond the gang's minimum, placed alone near these hosts
    timeout_s: float | None = None


def recognize(pod: Mapping[str, Any], sizes: Mapping[str, int] | None = None,
              topology: Mapping[str, str | GangView] | None = None) -> GangRef:
    """The gang of a pod (a dict as the API serves it). `sizes` maps `size_object` strings to member counts,
    `topology` to a required topology key read from the same object, or to a GangView (the pod's annotations
    win over either)."""
    ns, name, labels, ann = _meta(pod)
    both = {**labels, **ann}
    req, pref = both.get(TOPOLOGY_REQUIRED), both.get(TOPOLOGY_PREFERRED)
    sizes = sizes or {}

    def ref(gang: str, source: str, size: int | None, role: str, size_object: str | None = None,
            required_key: str | None = None) -> GangRef:
        if size is None and size_object:
            size = sizes.get(size_object)
        view = (topology or {}).get(size_object) if size_object else None
        view = GangView(required=view) if isinstance(view, str) else (view or GangView())
        required, preferred = req or required_key or view.required, pref or view.preferred
        if size == 1:  # a group of one (e.g. a PodGroup with the `basic` policy) is placed pod by pod
            return GangRef(ns, name, "single", 1, "pod", required, preferred)
        if view.near is not None:  # beyond its group's minimum, which is bound: alone, preferably near the gang
            return GangRef(ns, name, "single", 1, "pod", None, preferred or required, near=view.near)
        return GangRef(ns, gang, source, size, role, required, preferred, size_object, view.members,
                       timeout_s=view.timeout_s)

    if GANG in both:
        return ref(both[GANG], "clique", _int(both.get(GANG_SIZE)), both.get(ROLE, "worker"))
    if LWS_NAME in labels and LWS_GROUP in labels:
        role = "leader" if labels.get(LWS_WORKER, "0") == "0" else "worker"
        return ref(f"{labels[LWS_NAME]}-{labels[LWS_GROUP]}", "lws", _int(ann.get(LWS_SIZE)), role,
                   required_key=ann.get(LWS_EXCLUSIVE) or None)
    if GROVE_PODGANG in labels:  # each PodClique is a role, with its own request and minimum
        return ref(labels[GROVE_PODGANG], "grove", _int(both.get(GANG_SIZE)),
                   labels.get(GROVE_PODCLIQUE) or both.get(ROLE, "worker"), f"PodGang {ns}/{labels[GROVE_PODGANG]}")
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


def preferred_wait_s(pod: Mapping[str, Any]) -> tuple[float, str | None]:
    """The seconds a gang may wait for a place inside one preferred domain (TOPOLOGY_PREFERRED_WAIT, on the pod's
    annotations or labels), and a sentence saying what is wrong with a value that cannot be read (then 0)."""
    _, name, labels, ann = _meta(pod)
    value = {**labels, **ann}.get(TOPOLOGY_PREFERRED_WAIT)
    if value is None:
        return 0.0, None
    m = re.fullmatch(r"\s*([0-9]{1,9})\s*([smh]?)\s*", value) if isinstance(value, str) else None
    if m is None:
        return 0.0, (f"pod {name}: {TOPOLOGY_PREFERRED_WAIT}={value!r} is not a duration; write seconds, or a "
                     "number with s, m or h (e.g. 90s, 5m); the gang is placed without waiting")
    seconds = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if seconds > MAX_PREFERRED_WAIT_S:
        return 0.0, (f"pod {name}: {TOPOLOGY_PREFERRED_WAIT}={value!r} is over 24h; the gang is placed without "
                     "waiting")
    return float(seconds), None


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


@dataclass(frozen=True)
class GangObject:
    """What a PodGroup / PodGang object says about its gang (size_from_object's answer). Pure data."""

    size: int | None  # pods that must start together (None: the object does not say)
    required: str | None = None  # node label key every member must share
    preferred: str | None = None
    role_minimums: tuple[tuple[str, int], ...] = ()  # Grove: (podgroup = PodClique name, minReplicas)
    timeout_s: int | None = None  # coscheduling scheduleTimeoutSeconds
    not_honoured: tuple[str, ...] = ()  # fields read and not honoured, each a sentence for an Event


def _level_index(key: str, levels: Sequence[Level]) -> int | None:
    return next((i for i, lv in enumerate(levels) if key in (lv.name, lv.label)), None)


def _pack(constraint: Any) -> tuple[str | None, str | None]:
    """(required, preferred) topology keys of a Grove TopologyConstraint {packConstraint: {required, preferred}}."""
    pack = constraint.get("packConstraint") if isinstance(constraint, dict) else None
    if not isinstance(pack, dict):
        return None, None
    return ((pack.get("required") or None) if isinstance(pack.get("required"), str) else None,
            (pack.get("preferred") or None) if isinstance(pack.get("preferred"), str) else None)


def _grove(spec: Mapping[str, Any], levels: Sequence[Level]) -> GangObject:
    """A PodGang (ai-dynamo/grove v0.1.0-alpha.12-rc1 scheduler/api/core/v1alpha1/podgang.go): spec.podgroups[]
    {name, podReferences, minReplicas, topologyConstraint}, spec.topologyConstraint and
    spec.topologyConstraintGroupConfigs[].topologyConstraint, each {packConstraint: {required, preferred}} holding
    node label keys. The gang is every podgroup's minReplicas pods; the engine plans one required level per gang,
    so the innermost required key of all of them applies to the whole gang (every constraint holds, possibly
    more strictly than asked); the gang-level preferred key, else the innermost of the podgroups'."""
    groups = [g for g in spec.get("podgroups") or [] if isinstance(g, dict)]
    minimums = tuple((str(g.get("name") or ""), _int(g.get("minReplicas")) or 0) for g in groups)
    total = sum(n for _, n in minimums)
    top_req, top_pref = _pack(spec.get("topologyConstraint"))
    parts = [(f"podgroup {g.get('name')}", *_pack(g.get("topologyConstraint"))) for g in groups]
    parts += [(f"topologyConstraintGroupConfig {c.get('name')}", *_pack(c.get("topologyConstraint")))
              for c in spec.get("topologyConstraintGroupConfigs") or [] if isinstance(c, dict)]
    notes: list[str] = []

    def innermost(keys: list[tuple[str, str]]) -> str | None:
        if not levels:  # the level order is unknown: the gang-level key, else the first one
            return keys[0][1] if keys else None
        known = [(i, key) for _, key in keys if (i := _level_index(key, levels)) is not None]
        return max(known)[1] if known else None

    required_keys = ([("the PodGang", top_req)] if top_req else []) + [(w, r) for w, r, _ in parts if r]
    for where, key in required_keys:  # e.g. kubernetes.io/hostname, when hosts are not a level here
        if levels and _level_index(key, levels) is None:
            notes.append(f"required topology key {key} ({where}) is not a level of this cluster's topology "
                         f"({', '.join(lv.label for lv in levels)}); not honoured")
    # preferred is best effort (Grove's own example is kubernetes.io/hostname): keys that are not a level are
    # passed over without a word; Clique packs a gang onto the fewest hosts anyway
    preferred_keys = [("the PodGang", top_pref)] if top_pref else []
    preferred = innermost(preferred_keys) or innermost([(w, p) for w, _, p in parts if p])
    return GangObject(total or None, innermost(required_keys), preferred, minimums, None, tuple(notes))


def _volcano(spec: Mapping[str, Any], levels: Sequence[Level]) -> GangObject:
    """A Volcano PodGroup (volcano-sh/apis v1.15.0 pkg/apis/scheduling/v1beta1/types.go): spec.minMember, and
    spec.networkTopology {mode: hard|soft (default hard), highestTierAllowed | highestTierName}. Tiers count from
    the innermost: Volcano's label-based HyperNode discovery (volcano-sh/volcano v1.15.1
    pkg/controllers/hypernode/discovery/label/label.go) takes node label keys outermost first and numbers them
    from the one just above kubernetes.io/hostname (tier 1) outwards, with the key as tierName. So tier n is the
    n-th of Clique's levels from the innermost, and a tier name is a level's node label key (or name)."""
    size = _int(spec.get("minMember"))
    notes: list[str] = []
    required = preferred = None
    topo = spec.get("networkTopology")
    if isinstance(topo, dict) and (topo.get("highestTierAllowed") is not None or topo.get("highestTierName")):
        mode = topo.get("mode") or "hard"
        name, tier = topo.get("highestTierName"), topo.get("highestTierAllowed")
        key = None
        if isinstance(name, str) and name:
            i = _level_index(name, levels)
            key = levels[i].label if i is not None else None
            asked = f"highestTierName {name}"
        else:
            n = tier if isinstance(tier, int) and not isinstance(tier, bool) else None
            key = levels[len(levels) - n].label if n is not None and 1 <= n <= len(levels) else None
            asked = f"highestTierAllowed {tier}"
        if key is None:
            inner = ", ".join(f"tier {len(levels) - i} = {lv.label}" for i, lv in enumerate(levels))
            notes.append(f"networkTopology (mode {mode}, {asked}) matches no level of this cluster's topology "
                         f"({inner or 'no levels'}); not honoured")
        elif mode == "hard":
            required = key
        else:
            preferred = key
    for field, what in (("minTaskMember", "per-task minimums"), ("subGroupPolicy", "subgroups")):
        if spec.get(field):
            notes.append(f"{field} ({what}) is not honoured: the group's minMember pods are planned as one gang")
    return GangObject(size, required, preferred, (), None, tuple(notes))


def size_from_object(source: str, obj: Mapping[str, Any], levels: Sequence[Level] = ()) -> GangObject:
    """What a PodGroup / PodGang object (as the API serves it) says about its gang. `levels` (the topology's
    levels, outermost first, each with .name and .label) resolve Volcano tiers and order Grove's keys."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if source == "volcano":
        return _volcano(spec, levels)
    if source == "coscheduling":
        # scheduler-plugins v0.35.4-devel apis/scheduling/v1alpha1/types.go: spec.minMember and
        # spec.scheduleTimeoutSeconds, the longest the group's pods wait for each other (pkg/util/podgroup.go
        # GetWaitTimeDuration; Permit in pkg/coscheduling/coscheduling.go)
        return GangObject(_int(spec.get("minMember")), timeout_s=_int(spec.get("scheduleTimeoutSeconds")))
    if source == "podgroup":
        # spec.schedulingPolicy is `gang: {minCount}` or `basic: {}` (no gang: size 1, placed pod by pod)
        policy = spec.get("schedulingPolicy") or {}
        size = _int((policy.get("gang") or {}).get("minCount")) if policy.get("gang") else 1
        keys = [t.get("key") for t in (spec.get("schedulingConstraints") or {}).get("topology") or [] if t.get("key")]
        return GangObject(size, keys[0] if keys else None)
    if source == "grove":
        return _grove(spec, levels)
    return GangObject(None)
