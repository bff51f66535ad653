"""Gang health: is a bound gang broken, and what to do about it. Pure (no I/O; the clock is passed in).

A tensor-parallel replica that lost one pod is dead (its NCCL group is gone) while the others hold their GPUs.
A gang with at least one bound member is *broken* when
  - a member Failed, was evicted or deleted (or is terminating), or is missing (fewer pods than the gang's size),
  - a member is a replacement: created after another member was scheduled (the gang ran, then lost one),
  - a member is on a Node that is NotReady / unreachable, or deleted, for longer than the grace.
`clique.dev/gang-restart-policy` says what a lost member means: `Gang` (default): the gang is broken at once;
`Member`: a replacement may join the bound members (inside their domain, scheduler/extender/gangbook.py), and the
gang is broken only if the member is not back within the grace. Node trouble waits for the grace under both.
`clique.dev/gang-restart-grace` (seconds; default DEFAULT_GRACE_S; 0 = never restart) is read from the pods.

For a broken gang whose controller recreates deleted pods but not the group (StatefulSet gangs, `clique.dev/gang`
pods owned by a controller), the action is RestartGang: delete every remaining member so the controller
recreates them and the whole gang is placed again, in one domain. LeaderWorkerSet groups are left to LWS (its
default restartPolicy RecreateGroupOnPodRestart recreates the group, sigs.k8s.io/lws v0.8.0
api/leaderworkerset/v1/leaderworkerset_types.go); other sources and bare pods are reported, never deleted
(nothing would recreate them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence, Union

from scheduler.extender.gangbook import _stamp, pod_key, scheduled_at
from scheduler.gangs import GangRef

GRACE_ANNOTATION = "clique.dev/gang-restart-grace"
POLICY_ANNOTATION = "clique.dev/gang-restart-policy"
POLICIES = ("Gang", "Member")
DEFAULT_POLICY = "Gang"
# Counted from the Ready condition's last transition: the node lifecycle controller marks a silent node Unknown
# only after --node-monitor-grace-period (50 s in k8s.io/kubernetes v1.37.2,
# pkg/controller/nodelifecycle/config/v1alpha1/defaults.go), so a node that stops answering is restarted ~80 s in.
DEFAULT_GRACE_S = 30.0
# A member deleted (not failed or evicted) breaks its gang only if the rest of it is still there this long after:
# a gang being deleted as a whole (kubectl delete, a scale-down, a benchmark's cleanup) loses its pods one after
# another within moments, and is not a gang to restart.
DELETION_SETTLE_S = 2.0
MEMBER_CAUSES = ("member-failed", "member-evicted", "member-deleted", "member-missing", "member-replaced")
NODE_CAUSES = ("node-not-ready", "node-deleted")
_GRACE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m)?\s*$")


@dataclass(frozen=True)
class Loss:
    """A bound member that went away (observed on the pod watch), or a gang found short of members."""

    key: str  # pod key ("ns/name"); for "missing", the gang key
    uid: str
    node: str
    at: datetime
    how: str  # "failed", "evicted", "deleted", "missing"
    detail: str = ""


@dataclass(frozen=True)
class NodeView:
    name: str
    ready: bool
    since: datetime | None  # when it stopped being Ready (or was first seen gone); None: unknown
    exists: bool = True


@dataclass(frozen=True)
class ObservedGang:
    gang: GangRef
    pods: tuple[dict, ...]  # its pods as the API shows them (not terminal)
    losses: tuple[Loss, ...] = ()


@dataclass(frozen=True)
class RestartGang:
    gang: GangRef
    members: tuple[tuple[str, str], ...]  # (pod key, uid) to delete, with UID preconditions
    reason: str
    cause: str


@dataclass(frozen=True)
class ReportBroken:
    """Broken, but Clique does not restart it (its controller does, or nothing would recreate its pods)."""

    gang: GangRef
    pods: tuple[str, ...]
    reason: str
    cause: str


@dataclass(frozen=True)
class AwaitGrace:
    """Broken by node trouble (or, under the Member policy, a lost member) not older than the grace yet."""

    gang: GangRef
    pods: tuple[str, ...]
    reason: str
    cause: str
    restart_in_s: float


@dataclass(frozen=True)
class BadAnnotation:
    gang: GangRef
    pod: str
    message: str


Action = Union[RestartGang, ReportBroken, AwaitGrace, BadAnnotation]


def parse_grace(value: str) -> float:
    """Seconds from `30`, `30s`, `2m`, `0`; ValueError with what was wrong otherwise."""
    m = _GRACE.match(str(value))
    if not m:
        raise ValueError(f"{GRACE_ANNOTATION}={value!r} is not a duration: use seconds (e.g. \"30\" or \"30s\"), "
                         "minutes (\"2m\") or \"0\" (never restart)")
    return float(m.group(1)) * (60 if m.group(2) == "m" else 1)


def node_view(name: str, node: Any | None, missing_since: datetime | None, now: datetime) -> NodeView:
    """A NodeView from the extender's NodeInfo (or None when the Node is gone)."""
    if node is None:
        return NodeView(name, False, missing_since or now, exists=False)
    return NodeView(name, bool(node.ready), None if node.ready else (_stamp(node.ready_changed) or now))


def controller_of(pod: Mapping[str, Any]) -> dict | None:
    for o in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(o, dict) and o.get("controller"):
            return o
    return None


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def how_gone(pod: Mapping[str, Any]) -> tuple[str, str]:
    """("failed" | "evicted" | "deleted", detail) for a pod that went away or is going. Evictions carry the
    DisruptionTarget condition (k8s.io/api v0.37.2 core/v1/types.go DisruptionTarget; reasons such as
    EvictionByEvictionAPI, k8s.io/kubernetes v1.37.2 pkg/registry/core/pod/storage/eviction.go, and
    DeletionByTaintManager, pkg/controller/tainteviction/taint_eviction.go) or, from the kubelet, status.reason
    Evicted."""
    status = pod.get("status") or {}
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "DisruptionTarget" and c.get("status") == "True":
            return "evicted", str(c.get("reason") or "")
    if status.get("reason") == "Evicted":
        return "evicted", str(status.get("message") or "Evicted")
    if status.get("phase") == "Failed":
        return "failed", str(status.get("reason") or status.get("message") or "phase Failed")
    return "deleted", ""


def _settings(gang: GangRef, pods: Sequence[Mapping[str, Any]],
              default_grace_s: float) -> tuple[float, str, list[BadAnnotation]]:
    grace, policy, bad = default_grace_s, DEFAULT_POLICY, []
    for p in sorted(pods, key=pod_key):
        ann = (p.get("metadata") or {}).get("annotations") or {}
        if GRACE_ANNOTATION in ann:
            try:
                grace = parse_grace(ann[GRACE_ANNOTATION])
            except ValueError as exc:
                bad.append(BadAnnotation(gang, pod_key(p), f"{exc}; using {default_grace_s:g}s"))
            break
    for p in sorted(pods, key=pod_key):
        ann = (p.get("metadata") or {}).get("annotations") or {}
        if POLICY_ANNOTATION in ann:
            if ann[POLICY_ANNOTATION] in POLICIES:
                policy = ann[POLICY_ANNOTATION]
            else:
                bad.append(BadAnnotation(gang, pod_key(p), f"{POLICY_ANNOTATION}={ann[POLICY_ANNOTATION]!r} is not "
                                         f"one of {', '.join(POLICIES)}; using {DEFAULT_POLICY}"))
            break
    return grace, policy, bad


def replacements(pods: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Members created after another member was scheduled: the gang ran, then lost the member they replace. A
    gang is only ever bound once all its pods exist, so a gang placed whole has none (second resolution; a tie
    is not a replacement)."""
    bound = [(pod_key(p), scheduled_at(p)) for p in pods if (p.get("spec") or {}).get("nodeName")]
    out = []
    for p in pods:
        created = _stamp((p.get("metadata") or {}).get("creationTimestamp"))
        if created is None:
            continue
        if any(k != pod_key(p) and t is not None and t < created for k, t in bound):
            out.append(dict(p))
    return out


def _restart_target(gang: GangRef, pods: Sequence[Mapping[str, Any]]) -> tuple[bool, str]:
    """(Clique restarts it, who recreates the pods / why not)."""
    if gang.source == "statefulset":
        owner = controller_of(pods[0]) or {}
        return True, f"StatefulSet {gang.namespace}/{owner.get('name', '?')}"
    if gang.source == "clique":
        owners = [controller_of(p) for p in pods]
        if all(owners):
            kinds = sorted({f"{o.get('kind')} {gang.namespace}/{o.get('name')}" for o in owners if o})
            return True, ", ".join(kinds)
        return False, ("some of its pods have no controller that would recreate them, so Clique does not delete "
                       "them: delete and recreate the gang")
    if gang.source == "lws":
        return False, "left to LeaderWorkerSet, which recreates the group (restartPolicy RecreateGroupOnPodRestart)"
    return False, f"left to its {gang.source} controller"


def decide_gang(obs: ObservedGang, nodes: Mapping[str, NodeView], now: datetime,
                default_grace_s: float = DEFAULT_GRACE_S) -> list[Action]:
    gang, pods = obs.gang, list(obs.pods)
    live = [p for p in pods if not _terminating(p)]
    bound = [p for p in live if (p.get("spec") or {}).get("nodeName")]
    if not bound or gang.source == "single":
        return []  # not a bound gang
    grace, policy, bad = _settings(gang, pods, default_grace_s)
    actions: list[Action] = list(bad)
    if grace == 0:
        return actions  # never restarted by Clique
    causes: list[tuple[datetime, str, str]] = []  # (due, cause, what)
    member_delay = 0.0 if policy == "Gang" else grace
    for loss in obs.losses:
        cause = {"failed": "member-failed", "evicted": "member-evicted", "missing": "member-missing"}.get(
            loss.how, "member-deleted")
        what = (f"member {loss.key} {'on ' + loss.node + ' ' if loss.node else ''}{loss.how}"
                f"{' (' + loss.detail + ')' if loss.detail else ''}" if loss.how != "missing"
                else f"it has {len(live)} of {gang.size} members")
        delay = max(member_delay, DELETION_SETTLE_S) if loss.how == "deleted" else member_delay
        causes.append((_plus(loss.at, delay), cause, what))
    for p in pods:
        if _terminating(p) and (p.get("spec") or {}).get("nodeName"):
            how, detail = how_gone(p)
            at = _stamp((p.get("metadata") or {}).get("deletionTimestamp")) or now
            delay = max(member_delay, DELETION_SETTLE_S) if how == "deleted" else member_delay
            causes.append((_plus(min(at, now), delay), f"member-{how}",
                           f"member {pod_key(p)} is terminating ({how}{', ' + detail if detail else ''})"))
    if policy == "Gang" and gang.source != "lws":  # LWS creates workers after placing the leader
        for p in replacements(live):
            created = _stamp((p.get("metadata") or {}).get("creationTimestamp")) or now
            causes.append((created, "member-replaced", f"member {pod_key(p)} replaces one the gang lost"))
    for p in bound:
        node = p["spec"]["nodeName"]
        view = nodes.get(node)
        if view is None or view.ready:
            continue
        since = view.since or now
        gone = "deleted" if not view.exists else "NotReady"
        causes.append((_plus(since, grace), "node-deleted" if not view.exists else "node-not-ready",
                       f"member {pod_key(p)} is on node {node}, {gone} for {(now - since).total_seconds():.0f}s"))
    if not causes:
        return actions
    causes.sort(key=lambda c: (c[0], c[1], c[2]))
    keys = tuple(sorted(pod_key(p) for p in pods))
    due = [c for c in causes if c[0] <= now]
    if not due:
        first = causes[0]
        wait = (first[0] - now).total_seconds()
        actions.append(AwaitGrace(gang, keys, f"gang {gang.name} is broken: {first[2]}; it is restarted whole in "
                                              f"{wait:.0f}s (grace {grace:g}s) unless it recovers", first[1], wait))
        return actions
    cause, what = due[0][1], due[0][2]
    more = f" (and {len(due) - 1} more)" if len(due) > 1 else ""
    restart, who = _restart_target(gang, live or pods)
    if restart:
        members = tuple(sorted(((pod_key(p), str((p.get("metadata") or {}).get("uid") or "")) for p in live)))
        actions.append(RestartGang(gang, members, f"gang {gang.name} is broken: {what}{more}; restarting it whole: "
                                                  f"deleting its {len(members)} remaining member(s) so {who} "
                                                  "recreates them and the gang is placed again in one domain", cause))
    else:
        actions.append(ReportBroken(gang, keys, f"gang {gang.name} is broken: {what}{more}; {who}", cause))
    return actions


def decide(gangs: Iterable[ObservedGang], nodes: Mapping[str, NodeView], now: datetime,
           default_grace_s: float = DEFAULT_GRACE_S) -> list[Action]:
    """Every gang's actions, in gang key order."""
    out: list[Action] = []
    for obs in sorted(gangs, key=lambda o: o.gang.key):
        out += decide_gang(obs, nodes, now, default_grace_s)
    return out


def _plus(t: datetime, seconds: float) -> datetime:
    from datetime import timedelta

    return t + timedelta(seconds=seconds)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
