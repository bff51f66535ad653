"""Gang bookkeeping of the extender: reservations, and the decisions about a gang's members. Pure (no I/O; the
clock is passed in).

- `Reservation`: where each member of a planned gang goes, held until all of them are bound.
- `members_of`: which members of a gang are bound (and where) and which are pending.
- `split_group` / `gang_view`: which pods of a PodGroup / PodGang are its gang (the minimum: minMember, or each
  Grove podgroup's minReplicas) and which are extras beyond it, placed alone near the gang once it is bound.
- `gang_spec`: the engine's Gang for the pending members, one role per role name, each with its own request.
- `join_bound`: the snapshot narrowed so that pending members can only join their bound siblings inside the
  domain the gang's required level demands (a replacement pod, or a gang whose bind was interrupted).
- `decide_half_gang`: what to do with a gang some of whose members are bound and the rest pending: complete it,
  restart it (delete the bound members so its controller recreates the gang whole) or wait.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Mapping

from scheduler.gangs import GangObject, GangRef, GangView, pod_request, recognize
from scheduler.placement.types import Affinity, Gang, Role, Snapshot

Request = tuple[int, int, int, int]  # gpus, cpu millis, memory bytes, pods


def pod_key(pod: Mapping[str, Any]) -> str:
    md = pod.get("metadata") or {}
    return f"{md.get('namespace') or 'default'}/{md.get('name')}"


@dataclass
class Reservation:
    """A planned gang whose members are not all bound yet. Mutable: members claim their places as they come."""

    gang: GangRef
    hosts: dict[str, str]  # pod key -> planned host (claimed members)
    unclaimed: list[tuple[str, str]]  # (role, host) not yet claimed by a pod
    requests: dict[str, Request]  # pod key -> its request (claimed members)
    role_requests: dict[str, Request]  # role -> per-pod request (unclaimed places)
    created: float
    arrived: dict[str, str] = field(default_factory=dict)  # pod key -> uid, members that reached bind
    done: Any = None  # asyncio.Future set when the gang's Bindings are done (the service owns it)
    binding: bool = False  # its Bindings have been started
    leader_first: bool = False  # an LWS leader is bound alone first; its workers are created afterwards
    direct: bool = False  # bound by the gang recovery itself, not through kube-scheduler's bind calls
    admitted: bool = False  # planned at its first member's admission (pinning.Pinner.admit), before any pod exists
    # reserved_usage, kept until a claim changes it: every plan sums the usage of every gang in flight (_held)
    _usage: dict[str, Request] | None = field(default=None, repr=False, compare=False)

    @property
    def planned(self) -> int:
        return len(self.hosts) + len(self.unclaimed)

    def unclaimed_hosts(self) -> list[str]:
        return [h for _, h in self.unclaimed]

    def claim(self, key: str, role: str, request: Request) -> str | None:
        """The planned host of pod `key`, claiming an unclaimed place of its role on first sight. A pod beyond
        the gang's members (its group has more pods than the gang) claims nothing."""
        if key in self.hosts:
            return self.hosts[key]
        if self.gang.members and key not in self.gang.members:
            return None
        for i, (r, host) in enumerate(self.unclaimed):
            if r == role:
                self.unclaimed.pop(i)
                self.hosts[key] = host
                self.requests[key] = request
                self._usage = None
                return host
        return None

    def reserved_usage(self) -> dict[str, Request]:
        """Resources held on each host for members not bound yet (all of them: binding is all at once). Only
        `claim` changes the places, so the sum is kept until it does."""
        if self._usage is not None:
            return self._usage
        out: dict[str, list[int]] = {}
        places = [(h, self.requests[p]) for p, h in self.hosts.items()] + [
            (h, self.role_requests[r]) for r, h in self.unclaimed]
        for host, req in places:
            acc = out.setdefault(host, [0, 0, 0, 0])
            for i, v in enumerate(req):
                acc[i] += v
        self._usage = {h: (v[0], v[1], v[2], v[3]) for h, v in out.items()}
        return self._usage


def reserved_total(reservations: Iterable[Reservation]) -> dict[str, Request]:
    """What all reservations hold, per host."""
    total: dict[str, list[int]] = {}
    for res in reservations:
        for h, use in res.reserved_usage().items():
            acc = total.setdefault(h, [0, 0, 0, 0])
            for i, v in enumerate(use):
                acc[i] += v
    return {h: (v[0], v[1], v[2], v[3]) for h, v in total.items()}


@dataclass(frozen=True)
class Members:
    """The members of one gang as the API server shows them (plus Bindings this process made and the watch has
    not shown yet)."""

    bound: dict[str, str]  # pod key -> node
    pending: list[dict]  # pod dicts, in key order

    @property
    def half(self) -> bool:
        return bool(self.bound) and bool(self.pending)


def not_terminating(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods that are not being deleted. A terminating member is leaving its gang: counted as one, a gang
    restarted whole (old members deleted, the controller recreating them) would have its first new member planned
    and bound beside old members still terminating (graceful deletion takes up to the pod's
    terminationGracePeriodSeconds). Their GPUs still count as used (state.py) until they are gone."""
    return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]


def members_of(pods: Iterable[Mapping[str, Any]], just_bound: Mapping[str, str] | None = None) -> Members:
    """A gang's live pods split into bound (key -> node) and pending; terminating pods are neither (not_terminating)."""
    bound: dict[str, str] = {}
    pending: list[dict] = []
    for p in not_terminating(pods):
        key = pod_key(p)
        node = (p.get("spec") or {}).get("nodeName") or (just_bound or {}).get(key)
        if node:
            bound[key] = node
        else:
            pending.append(dict(p))
    return Members(bound, pending)


@dataclass(frozen=True)
class GroupSplit:
    """A PodGroup's / PodGang's pods split into its gang and the extras beyond the gang's minimum."""

    pods: int  # pods of the group (the one asking included)
    members: tuple[str, ...]  # pod keys of the gang, bound ones included; () when every pod is a member
    extras: frozenset[str]  # pending pods beyond the minimum
    started: bool  # the minimum is bound: every pending pod is an extra
    near: tuple[str, ...]  # hosts of the bound pods
    missing: int  # pods a podgroup still lacks to reach its minReplicas (Grove)


def split_group(pods: Iterable[Mapping[str, Any]], obj: GangObject, just_bound: Mapping[str, str] | None = None,
                asking: Mapping[str, Any] | None = None) -> GroupSplit:
    """Which pods are the gang: bound pods first, then pending ones in key order (the same answer whichever pod
    asks), up to the group's minimum: Grove's minReplicas per podgroup (the pod's grove.io/podclique; a pod of
    no podgroup is an extra), else minMember in all. `asking`: the pod being filtered, which the watch may not
    show yet."""
    by_key = {pod_key(p): p for p in pods}
    if asking is not None:
        by_key.setdefault(pod_key(asking), dict(asking))
    keys = sorted(by_key)
    bound = {k: n for k in keys if (n := (by_key[k].get("spec") or {}).get("nodeName") or (just_bound or {}).get(k))}
    pending = [k for k in keys if k not in bound]
    members, missing, started = list(bound), 0, True
    if obj.role_minimums:
        role = {k: recognize(by_key[k]).role for k in keys}
        for name, need in obj.role_minimums:
            have = sum(1 for k in bound if role[k] == name)
            waiting = [k for k in pending if role[k] == name]
            take = max(0, need - have)
            members += waiting[:take]
            missing += max(0, take - len(waiting))
            started &= have >= need
    else:
        take = max(0, (obj.size or 0) - len(bound))
        members += pending[:take]
        missing, started = max(0, take - len(pending)), len(bound) >= (obj.size or 0)
    chosen = set(members)
    extras = frozenset(k for k in pending if k not in chosen)
    return GroupSplit(len(keys), tuple(sorted(members)) if extras else (), extras, started,
                      tuple(sorted(set(bound.values()))), missing)


def gang_view(obj: GangObject, split: GroupSplit, key: str) -> tuple[int, GangView]:
    """(gang size, view) for pod `key` of a group: an extra of a gang that is bound is placed alone near it; an
    extra of a gang not bound yet waits until it is (it claims no place of the gang). While a Grove podgroup
    lacks pods to reach its minReplicas, the size counts them too, so the gang waits for them."""
    size = max(obj.size or 0, split.pods + split.missing) if split.missing else (obj.size or 0)
    if split.started and key in split.extras:
        return size, GangView(obj.required, obj.preferred, near=split.near)
    return size, GangView(obj.required, obj.preferred, split.members, timeout_s=obj.timeout_s)


class Live(Mapping[str, Any]):
    """A one-key mapping whose value is computed each time it is read: what `recognize` is given for a gang
    whose membership follows the pods the watch shows at that moment (the filter reads it again after giving
    the watch a moment to catch up with kube-scheduler, when more of a group's pods may have arrived)."""

    def __init__(self, key: str, compute: Callable[[], Any]) -> None:
        self._key, self._compute = key, compute

    def __getitem__(self, key: str) -> Any:
        if key != self._key:
            raise KeyError(key)
        return self._compute()

    def __iter__(self) -> Iterator[str]:
        return iter((self._key,))

    def __len__(self) -> int:
        return 1


def gang_spec(gang: GangRef, pending: list[Mapping[str, Any]],
              workers: tuple[int, Request] | None = None) -> tuple[Gang, dict[str, Request]]:
    """The engine's Gang for the pending members and each role's per-pod request (the largest of its pods),
    plus `workers` (count, per-pod request) for members of role worker that do not exist yet. Pending pods
    that are not among the gang's `members` (extras beyond its minimum) are left out; a pod placed near a gang
    (`near`) prefers the gang's domain."""
    if gang.members:
        chosen = set(gang.members)
        pending = [m for m in pending if pod_key(m) in chosen]
    roles: dict[str, Request] = {}
    counts: dict[str, int] = {}
    if workers is not None and workers[0] > 0:
        roles["worker"], counts["worker"] = workers[1], workers[0]
    for m in pending:
        r = recognize(m).role if gang.source != "single" else gang.role
        q = pod_request(m)
        prev = roles.get(r, (0, 0, 0, 1))
        roles[r] = (max(prev[0], q.gpus), max(prev[1], q.cpu_millis), max(prev[2], q.memory), 1)
        counts[r] = counts.get(r, 0) + 1
    near = Affinity(gang.preferred_level or gang.required_level or "", gang.near) if gang.near else None
    spec = Gang(gang.key, tuple(Role(r, counts[r], *roles[r][:3], one_per_host=(r == "leader"))
                                for r in sorted(roles)),
                required_level=gang.required_level, preferred_level=gang.preferred_level, affinity=near)
    return spec, roles


def _known_level(topo: Any, level: str | None) -> str | None:
    if not level:
        return None
    try:
        topo.level_index(level)
    except KeyError:
        return None
    return level


def join_bound(snapshot: Snapshot, spec: Gang, bound_hosts: Iterable[str]) -> tuple[Snapshot, Gang, str]:
    """Narrow `snapshot` so the pending members of `spec` can only go where their bound siblings leave room for
    the whole gang: inside the bound members' domain at the required level, and preferably near them. Returns
    (snapshot, gang with an affinity to the bound hosts, problem); a problem means no place can be right."""
    topo = snapshot.topology
    innermost = topo.levels[-1].name if topo.levels else None
    if spec.affinity is not None and not _known_level(topo, spec.affinity.level):
        # a preferred key that is not a level here (e.g. kubernetes.io/hostname): near means the innermost level
        spec = replace(spec, affinity=Affinity(innermost, spec.affinity.hosts) if innermost else None)
    hosts = sorted(set(bound_hosts))
    if not hosts:
        return snapshot, spec, ""
    missing = [h for h in hosts if h not in topo.host_paths]
    if missing:
        return snapshot, spec, f"gang {spec.name}: bound members are on nodes that are gone ({', '.join(missing)})"
    near = _known_level(topo, spec.preferred_level) or _known_level(topo, spec.required_level) or innermost
    joined = replace(spec, affinity=Affinity(near, tuple(hosts)) if near else None)
    if not spec.required_level:
        return snapshot, joined, ""
    try:
        level = topo.level_index(spec.required_level)
    except KeyError as exc:
        return snapshot, spec, str(exc.args[0])
    domains = {topo.domain(h, level) for h in hosts}
    label = topo.levels[level].label
    if len(domains) > 1:
        return snapshot, spec, (f"gang {spec.name}: its bound members already span {len(domains)} {label} domains; "
                                "the gang must be restarted whole")
    (domain,) = domains
    inside = set(topo.domains(level)[domain])
    narrowed = {n: (h if n in inside or not h.schedulable else replace(h, schedulable=False))
                for n, h in snapshot.hosts.items()}
    # a new Snapshot: its cached free vectors and arrays are derived again, with the hosts outside at zero
    return Snapshot(topo, narrowed), joined, ""


@dataclass(frozen=True)
class LeaderFirst:
    """A LeaderWorkerSet whose groups' workers are created only after the leader is placed (exclusive topology)
    or Ready (startupPolicy LeaderReady), so the leader must be bound before its workers exist."""

    why: str  # "exclusive-topology" or "LeaderReady"
    worker_request: Request | None  # per worker pod, from the workers' template (None: unknown, use the leader's)


def leader_first(lws: Mapping[str, Any], exclusive: bool) -> LeaderFirst | None:
    """How a LeaderWorkerSet's groups start (from the object as the API serves it; {} when unreadable) and
    whether the extender must place a leader before its workers exist. Field names: sigs.k8s.io/lws v0.8.0
    api/leaderworkerset/v1/leaderworkerset_types.go (spec.startupPolicy LeaderCreated|LeaderReady,
    spec.leaderWorkerTemplate.workerTemplate)."""
    spec = lws.get("spec") if isinstance(lws.get("spec"), dict) else {}
    ready = spec.get("startupPolicy") == "LeaderReady"
    if not (ready or exclusive):
        return None
    template = (spec.get("leaderWorkerTemplate") or {}).get("workerTemplate") if isinstance(
        spec.get("leaderWorkerTemplate"), dict) else None
    request = None
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        from scheduler.extender.wire import WireError, validate_pod

        worker = {"metadata": {"name": "worker"}, "spec": template["spec"]}
        try:
            validate_pod(worker, "workerTemplate")
            q = pod_request(worker)
            request = (q.gpus, q.cpu_millis, q.memory, 1)
        except WireError:
            request = None
    return LeaderFirst("exclusive-topology" if exclusive else "LeaderReady", request)


class HalfGangAction(enum.Enum):
    COMPLETE = "complete"  # bind the pending members on the plan's hosts
    RESTART = "restart"  # delete the bound members: the controller recreates them and the gang goes again whole
    WAIT = "wait"  # nothing to do now; the reason says why


@dataclass(frozen=True)
class HalfGangDecision:
    action: HalfGangAction
    reason: str
    delete: tuple[str, ...] = ()  # pod keys to delete (RESTART)


def _stamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def scheduled_at(pod: Mapping[str, Any]) -> datetime | None:
    """When the API server recorded the pod as scheduled (its PodScheduled condition)."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "PodScheduled" and c.get("status") == "True":
            return _stamp(c.get("lastTransitionTime"))
    return None


def interrupted_bind(bound_pods: Iterable[Mapping[str, Any]], pending: Iterable[Mapping[str, Any]]) -> bool:
    """True when the gang was never whole: every pending member already existed when the last member was bound
    (a bind cut short, e.g. by a crash). A pending member created after that is a replacement of a member that
    was lost from a gang that ran. Both times come from the API server (second resolution; a tie counts as
    interrupted). A bound member without a recorded time counts as just bound."""
    times = [scheduled_at(p) for p in bound_pods]
    if any(t is None for t in times):
        return True
    last = max(t for t in times if t is not None) if times else None
    created = [_stamp((p.get("metadata") or {}).get("creationTimestamp")) for p in pending]
    return last is None or all(c is not None and c <= last for c in created)


def decide_half_gang(gang: GangRef, planned_hosts: list[str] | None, problem: str, members: Members,
                     interrupted: bool) -> HalfGangDecision:
    """What to do with a gang whose members are partly bound, given the hosts planned for its pending members
    (joined to the bound ones), or None and the problem that prevented a plan. Purely computational."""
    if planned_hosts is not None:
        return HalfGangDecision(HalfGangAction.COMPLETE,
                                f"gang {gang.name}: {len(members.pending)} pending member(s) join the "
                                f"{len(members.bound)} bound one(s) on {', '.join(planned_hosts)}")
    if interrupted:
        return HalfGangDecision(HalfGangAction.RESTART,
                                f"gang {gang.name}: its bind was interrupted and the rest cannot join the bound "
                                f"members ({problem}); deleting the {len(members.bound)} bound member(s) so the gang "
                                "is placed again whole", tuple(sorted(members.bound)))
    return HalfGangDecision(HalfGangAction.WAIT,
                            f"gang {gang.name}: the replacement member(s) wait for room beside the "
                            f"{len(members.bound)} bound one(s) ({problem})")
