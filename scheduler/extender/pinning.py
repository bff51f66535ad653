"""Gated gangs: planned once complete, every member pinned to its gang's planned domain, then handed to
kube-scheduler, which confirms one small set of nodes per pod instead of filtering the whole cluster.

Why (docs/design/scale.md has the measurements): on the per-pod filter path the first member of every gang costs
kube-scheduler a pass over all nodes with `percentageOfNodesToScore: 100` and the extender a whole-cluster plan
inside kube-scheduler's serial cycle, so pods/s fall as the cluster grows. Kueue's TAS shows the way out: plan
a pod set once, then give each pod a node constraint and remove a scheduling gate.

  admission   the routing webhook (admission.py) adds the scheduling gate GATE to pods of recognised gangs at
              CREATE (gates can only be added then; k8s.io/kubernetes v1.37.2 pkg/apis/core/validation/
              validation.go, validateOnlyDeletedSchedulingGates). kube-scheduler leaves gated pods alone.
  plan        once every member exists and ours is each pod's only gate, the gang is planned by the same engine
              and reservation as the filter path (Extender.plan, nodes judged by the pods' own spec: nodefit)
  pin         each member's required node affinity is narrowed to the pinned nodes (the hosts of the planned
              domain of its required level, or the planned hosts; one `matchFields metadata.name In [node]`
              term per node, see pin_patch) and our gate removed, in one JSON patch with the pod's UID as a
              precondition. Gated pods may have their node
              affinity narrowed this way (validation.go, validateNodeAffinityMutation: terms may only gain
              requirements) and kube-scheduler's NodeAffinity PreFilter turns matchFields metadata.name into
              the only nodes it evaluates (pkg/scheduler/framework/plugins/nodeaffinity/node_affinity.go).
  confirm     kube-scheduler runs its own filters (taints, resources, affinities) on those few nodes and calls
              the extender as before: filter answers the member's planned host, bind binds the gang all or
              nothing. If the plan went stale (reservation expired, host taken), filter replans inside the pins.
A pin is never loosened (the API allows narrowing only); a member that cannot be bound inside its pins waits
with a reason, and the gang health restarts a broken gang whole.

settle      a gang that waited for room is tried again as the cluster changes; room comes back in bursts (the
              pods of a departing group are deleted one by one, each a watch event moments apart), and a plan
              made at the first deletion sees only part of the release. So a retried gang whose plan would
              split its preferred domain is not committed while the cluster is still changing: it is planned
              again once nothing changed for SETTLE_S (at most SETTLE_MAX_S into a burst, so constant churn
              does not starve it). A plan inside one preferred domain, and a gang's first try, are committed at
              once. Measured on the timed Dynamo mix with the real control plane (README, "Timed arrivals with
              the real Kueue"): the eager retry split gangs that one leaf held 0.7 s later.

hold        a gang may ask to wait for one preferred domain (`clique.dev/topology-preferred-wait`, as Slurm's
              `--switches=count@max-time`): when its plan would split that domain, it is not committed, and it is
              planned again as the cluster changes, for at most that long from the first split plan; then it
              takes the split place. A gang no domain of that level could hold, were it empty, is never held
              (judged on the schedulable nodes' allocatable: a domain whose nodes the pods' own selectors or
              tolerations refuse still counts, so such a gang waits out its wait). Gated gangs only (a pod
              pinned at creation whose plan splits is gated instead): the filter path has no place to hold a pod
              but kube-scheduler's backoff.

created     pinned at creation (the extender's admission webhook, `--pin-at-creation on`): the gate's one extra
              write per pod (the release patch, and its watch event to every pod watcher) is most of what gating
              adds to kube-apiserver's work per pod. The webhook sees each pod before it is stored, so for gangs
              whose members one pod describes (creation_members) the first member's admission plans the whole
              gang and reserves it, and every member is created already pinned to the planned domain, without
              the gate. All or nothing still holds at bind, which waits for every planned member (the filter
              path's bind, service.bind). The members' pins are the same as a released gang's, so everything
              after the release is the same. Anything one pod cannot settle falls back to the gate (Pinner.admit).
              The routing MutatingAdmissionPolicy cannot do this: CEL cannot plan.

`has_gate`, `other_gates`, `pin_patch`, `narrow_ops`, `creation_patch`, `creation_members`, `ungate_patch`,
`pin_hosts`, `settled`, `holds` and `fits_one_domain` are pure; `Pinner.admit` and `run` are the effects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from scheduler.gangs import ROLE, TOPOLOGY_PREFERRED_WAIT

if TYPE_CHECKING:
    from scheduler.extender.service import Extender

log = logging.getLogger("clique.extender.pinning")
GATE = "clique.dev/placement"
# On a pod pinned at creation (value: its planned host). The routing policy, re-run after the webhook
# (reinvocationPolicy: IfNeeded), and the webhook itself leave such a pod ungated (admission.decide).
PINNED = "clique.dev/pinned-at-creation"
MAX_DOMAIN_PINS = 128  # a larger required domain is pinned to the planned hosts only (a short pin list per pod)
WAITING_EVENT_S = 5.0  # a gang incomplete this long gets a GangWaiting Event
RETRY_S = 1.0  # a gang that could not be planned is tried again this often while the cluster changes
SETTLE_S = 1.0  # a retried gang's split plan waits until the cluster has not changed for this long ...
SETTLE_MAX_S = 5.0  # ... or until the burst of changes has lasted this long
NAME_FIELD = "metadata.name"


def _gates(pod: Mapping[str, Any]) -> list[str]:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return [g.get("name") for g in gates if isinstance(g, dict) and isinstance(g.get("name"), str)]


def has_gate(pod: Mapping[str, Any]) -> bool:
    return GATE in _gates(pod)


def other_gates(pod: Mapping[str, Any]) -> list[str]:
    """Gates of other controllers (Kueue, Grove, ...): the pod is theirs to release first."""
    return [g for g in _gates(pod) if g != GATE]


def pin_patch(pod: Mapping[str, Any], hosts: Iterable[str], own_host: str) -> list[dict[str, Any]]:
    """A JSON patch that removes our gate and narrows the pod's required node affinity to the gang's pinned nodes
    (narrow_ops). The UID and the gate's position are tested first: a successor pod under the same name or a
    concurrent change of the gates is refused, not patched."""
    spec = pod.get("spec") or {}
    gates = spec.get("schedulingGates") or []
    index = next(i for i, g in enumerate(gates) if isinstance(g, dict) and g.get("name") == GATE)
    return [{"op": "test", "path": "/metadata/uid", "value": (pod.get("metadata") or {}).get("uid")},
            {"op": "test", "path": f"/spec/schedulingGates/{index}/name", "value": GATE},
            {"op": "remove", "path": f"/spec/schedulingGates/{index}"}, *narrow_ops(spec, hosts, own_host)]


def narrow_ops(spec: Mapping[str, Any], hosts: Iterable[str], own_host: str) -> list[dict[str, Any]]:
    """JSON patch operations narrowing a pod's required node affinity to the pinned nodes. The API allows one value
    per `matchFields metadata.name` requirement (validation.go, ValidateNodeFieldSelectorRequirement: "must be only
    one value when `operator` is 'In' or 'NotIn' for node field selector"), so a pod with no required terms gets
    one term per pinned node (terms are ORed); a pod with terms of its own may only have requirements added to them
    (no new terms, validateNodeAffinityMutation), so each of its terms is narrowed to the member's own planned
    host. `own_host` empty: nothing to narrow (a pod released unpinned)."""
    if not own_host:
        return []
    affinity = spec.get("affinity")
    node_affinity = (affinity or {}).get("nodeAffinity")
    required = (node_affinity or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = (required or {}).get("nodeSelectorTerms") or []

    def field(host: str) -> dict[str, Any]:
        return {"key": NAME_FIELD, "operator": "In", "values": [host]}

    selector = {"nodeSelectorTerms": [{"matchFields": [field(h)]} for h in sorted(set(hosts) | {own_host})]}
    if not affinity:
        return [{"op": "add", "path": "/spec/affinity", "value": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": selector}}}]
    if not node_affinity:
        return [{"op": "add", "path": "/spec/affinity/nodeAffinity",
                 "value": {"requiredDuringSchedulingIgnoredDuringExecution": selector}}]
    if not terms:
        return [{"op": "add", "path": "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution",
                 "value": selector}]
    ops = []
    base = "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms"
    for i, term in enumerate(terms):
        if not term.get("matchExpressions") and not term.get("matchFields"):
            continue  # an empty term matches no node, and the API forbids adding to it
        if term.get("matchFields"):
            ops.append({"op": "add", "path": f"{base}/{i}/matchFields/-", "value": field(own_host)})
        else:
            ops.append({"op": "add", "path": f"{base}/{i}/matchFields", "value": [field(own_host)]})
    return ops


def creation_patch(pod: Mapping[str, Any], hosts: Iterable[str], own_host: str) -> list[dict[str, Any]]:
    """The admission webhook's pin of a pod being created (`created` above): our gate removed if an earlier
    admission step (the routing policy, the pod's template) added it, the annotation PINNED set, the node affinity
    narrowed. No UID test: a pod has none before it is stored."""
    spec = pod.get("spec") or {}
    gates = spec.get("schedulingGates") or []
    ops = [{"op": "remove", "path": f"/spec/schedulingGates/{i}"}
           for i, g in reversed(list(enumerate(gates))) if isinstance(g, dict) and g.get("name") == GATE]
    if (pod.get("metadata") or {}).get("annotations"):
        ops.append({"op": "add", "path": "/metadata/annotations/" + PINNED.replace("~", "~0").replace("/", "~1"),
                    "value": own_host})
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {PINNED: own_host}})
    return ops + narrow_ops(spec, hosts, own_host)


def creation_members(pod: Mapping[str, Any], gang: Any) -> list[Mapping[str, Any]] | None:
    """The members of a gang as they will be created, judged from its first member at admission, or None when one
    pod cannot tell them: a `clique.dev/gang` gang without `clique.dev/role` is `size` pods like this one (one
    template; a member larger than the first is gated by Pinner.admit); a StatefulSet
    gang is the ordinals of this pod's block, named as the StatefulSet names them (`<name>-<ordinal>`), each
    taking its role from its ordinal (scheduler.gangs.recognize). Other sources (Grove, Volcano, PodGroups) size
    and shape their gangs in objects of their own: gated, as before."""
    md = pod.get("metadata") or {}
    if gang.size is None or gang.size < 2 or gang.members or gang.near:
        return None
    if gang.source == "clique":
        # `size` pods like this one, unless roles say the gang has several shapes (a frontend and workers)
        return None if ROLE in {**(md.get("labels") or {}), **(md.get("annotations") or {})} else [pod] * gang.size
    if gang.source == "statefulset":
        owner = next((o for o in md.get("ownerReferences") or [] if o.get("kind") == "StatefulSet"), None)
        name = str(md.get("name") or "")
        prefix = f"{owner['name']}-" if owner else ""
        ordinal = name[len(prefix):]
        if not owner or not name.startswith(prefix) or not ordinal.isdigit():
            return None
        first = int(ordinal) // gang.size * gang.size
        return [{**pod, "metadata": {**md, "name": f"{prefix}{o}"}} for o in range(first, first + gang.size)]
    return None


def ungate_patch(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Remove our gate only (a pod beyond its gang's minimum, placed alone by the filter path)."""
    return pin_patch(pod, (), "")


def pin_hosts(planned: Iterable[str], domain_of: Mapping[str, str], domains: Mapping[str, list[str]]) -> list[str]:
    """The nodes a gang's members are pinned to: every host of the one required-level domain its plan uses
    (room to replan there if a planned host is taken before the bind), else just the planned hosts.
    `domain_of`: host -> its domain of the required level; `domains`: domain -> its hosts."""
    planned = sorted(set(planned))
    values = {domain_of.get(h) for h in planned}
    if len(values) == 1 and None not in values:
        members = domains.get(values.pop(), [])  # type: ignore[arg-type]
        if len(members) <= MAX_DOMAIN_PINS:
            return sorted(set(members) | set(planned))
    return planned


def settled(now: float, changed_at: float, burst_started: float) -> bool:
    """Whether a burst of cluster changes is over for a retried gang's split plan: nothing changed for SETTLE_S,
    or the changes have gone on for SETTLE_MAX_S (then waiting longer would not give a quieter moment)."""
    return now - changed_at >= SETTLE_S or now - burst_started >= SETTLE_MAX_S


def holds(now: float, first_split_at: float, wait_s: float) -> bool:
    """Whether a gang whose plan splits its preferred domain still waits for one (see `hold`)."""
    return wait_s > 0 and now - first_split_at < wait_s


def fits_one_domain(requests: Iterable[Sequence[int]], domains: Iterable[Iterable[Sequence[int]]]) -> bool:
    """Whether some domain, were it empty, could hold every member: each request (GPUs, CPU millis, memory, one
    pod) on one host's allocatable (the same four), first fit, largest first. Else waiting for one domain is
    waiting for ever. A domain's GPU total is not enough: 32 GPUs on eight 4-GPU hosts hold no 8-GPU member.
    First fit may say no where a cleverer packing fits (the gang then takes its split place at once, as with no
    wait); it never says yes where nothing fits."""
    order = sorted((tuple(r) for r in requests), reverse=True)
    for hosts in domains:
        free = [list(h) for h in hosts]
        for req in order:
            host = next((f for f in free if all(a <= b for a, b in zip(req, f))), None)
            if host is None:
                break
            for i, a in enumerate(req):
                host[i] -= a
        else:
            return True
    return False


def splits(hosts: Iterable[str], domain_of: Mapping[str, str]) -> bool:
    """Whether planned hosts span more than one domain of a level (a host without the label is its own)."""
    return len({domain_of.get(h, "\0" + h) for h in hosts}) > 1


# ------------------------------------------------------------------------------------------------ effects
class Pinner:
    """Plans complete gated gangs and releases their members, pinned, to kube-scheduler."""

    def __init__(self, extender: "Extender") -> None:
        self.extender = extender
        self.waiting: dict[str, tuple[float, int]] = {}  # gang key -> (last tried without success, state version)
        self.incomplete: dict[str, float] = {}  # gang key -> since when it has been seen with members missing
        self._index: tuple[int, str, dict[str, str], dict[str, list[str]]] | None = None
        self.settling: set[str] = set()  # retried gangs whose split plan waits for the cluster to settle
        self.split_since: dict[str, float] = {}  # gangs that asked to wait (see `hold`) -> their first split plan
        self.held: dict[str, float] = {}  # held gangs -> when their wait ends
        self._version, self._changed_at, self._burst_started = -1, 0.0, 0.0

    def _domains(self, label: str) -> tuple[dict[str, str], dict[str, list[str]]]:
        state = self.extender.state
        if self._index is None or self._index[:2] != (state.node_version, label):
            domain_of = {n: info.labels[label] for n, info in state.nodes.items() if label in info.labels}
            domains: dict[str, list[str]] = {}
            for n, v in domain_of.items():
                domains.setdefault(v, []).append(n)
            self._index = (state.node_version, label, domain_of, domains)
        return self._index[2], self._index[3]

    async def tick(self) -> None:
        state = self.extender.state
        touched = state.take_gated()
        now = time.monotonic()
        if state.version != self._version:
            if now - self._changed_at >= SETTLE_S:
                self._burst_started = now
            self._version, self._changed_at = state.version, now
        # a waiting gang is tried again once the cluster changed since its last try (capacity, its gang bound)
        touched |= {g for g, (t, version) in self.waiting.items() if now - t >= RETRY_S and state.version != version}
        if self.settling and settled(now, self._changed_at, self._burst_started):
            touched |= self.settling
            self.settling = set()
        # a held gang whose wait is over is tried once more (its split place) even if nothing changed since
        expired = {g for g, deadline in self.held.items() if now >= deadline}
        for g in expired:
            del self.held[g]
        touched |= expired
        for gang_key in sorted(touched):
            version = state.version
            try:
                if await self.release(gang_key):
                    self.waiting.pop(gang_key, None)
                    self.split_since.pop(gang_key, None)
                    self.held.pop(gang_key, None)
                else:
                    self.waiting[gang_key] = (now, version)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one odd gang must not stop the others
                log.exception("pinning gang %s failed; it is looked at again on its next change", gang_key)
                self.waiting[gang_key] = (now, version)

    async def release(self, gang_key: str) -> bool:
        """Plan and release one gang if it is ready. True: nothing left to do for it (released, or no gated pod
        of ours); False: it waits (incomplete, other gates, no room, extras whose gang is not bound yet) and is
        retried. A group with more pods than its gang's minimum (Volcano minMember, Grove minReplicas): its
        members are planned and pinned as a gang; the other pods stay gated until the gang is bound, then are
        released unpinned and placed one by one near it (the filter path, scheduler.gangs GangView.near)."""
        from scheduler.extender.gangbook import members_of, not_terminating, pod_key
        from scheduler.extender.service import GANG_INCOMPLETE
        from scheduler.gangs import pod_request, recognize

        ext = self.extender
        pods = ext.state.gang_members(gang_key)
        gated = [p for p in pods if has_gate(p) and (p.get("spec") or {}).get("schedulerName") == ext.scheduler_name]
        if not gated:
            self.incomplete.pop(gang_key, None)
            self.split_since.pop(gang_key, None)
            self.held.pop(gang_key, None)
            return True
        if any(other_gates(p) for p in gated):
            return False  # another controller holds them: a change of their gates touches the gang again
        seen = []
        for p in gated:  # each pod's own view: a member of the gang, or an extra beyond its minimum
            sizes, topology, problem = await ext._gang_object(p)
            if problem:
                ext.event(p, "GangSizeUnknown", problem)
                return False
            seen.append((p, recognize(p, sizes, topology)))
        alone = [p for p, g in seen if g.source == "single"]  # extras whose gang is bound: placed one by one
        if alone:
            failures = [e for e in await asyncio.gather(*(ext.binder.patch_pod(pod_key(p), ungate_patch(p))
                                                          for p in alone)) if e]
            if failures:
                log.warning("gang %s: extra pods not released: %s", gang_key, "; ".join(failures[:3]))
        members = [(p, g) for p, g in seen if g.source != "single" and (not g.members or pod_key(p) in g.members)]
        waiting_extras = len(seen) - len(alone) - len(members)
        if not members:
            return waiting_extras == 0
        first, gang = members[0]
        if gang.size is None:
            ext.event(first, "GangSizeUnknown", f"gang {gang.name} has no size: add the clique.dev/gang-size "
                                               "annotation to its pods")
            return False
        gang_pods = [p for p in not_terminating(pods) if not gang.members or pod_key(p) in gang.members]
        if len(gang_pods) < gang.size:
            since = self.incomplete.setdefault(gang_key, time.monotonic())
            if time.monotonic() - since >= WAITING_EVENT_S:  # members of a burst arrive within moments: no Event
                ext.event(first, "GangWaiting",
                          f"gang {gang.name} {GANG_INCOMPLETE}: {len(gang_pods)} of {gang.size} exist")
            return False
        self.incomplete.pop(gang_key, None)
        res = ext.reservations.get(gang.key)
        if res is None:
            found = members_of(gang_pods, ext.just_bound())
            res, _ = ext.plan(gang, found.pending, found.bound, nodes=None, pod=first)
            if res is None:  # plan() sent the reason as an Event; a higher-priority gang may free a domain
                from scheduler.extender import preemption

                if not found.bound:
                    preemption.on_unschedulable(ext, first, gang)  # the freed domain becomes its reservation
                return False
            # clique_gangs_total counts every plan made as `planned`; a plan one of these two drops is counted
            # again as `held` or `settling` (so a held gang's retries show as such, not as gangs placed)
            if self._held_for_one_domain(gang_key, gang, res, first, gang_pods):
                ext.reservations.pop(gang.key, None)  # planned again as the cluster changes, or when the wait ends
                ext.metrics.gangs.labels("held").inc()
                return False
            if self._unsettled_split(gang_key, gang, res):
                ext.reservations.pop(gang.key, None)  # planned again once the burst of changes is over
                ext.metrics.gangs.labels("settling").inc()
                self.settling.add(gang_key)
                log.info("gang %s: its plan splits its preferred domain while the cluster is still changing; "
                         "planned again once it settles", gang.key)
                return False
        places: dict[str, str] = {}
        for p, g in members:
            q = pod_request(p)
            host = res.claim(pod_key(p), g.role, (q.gpus, q.cpu_millis, q.memory, 1))
            if host is None:
                ext.event(p, "GangUnschedulable", f"gang {gang.name} is planned without a place for this pod")
                return False
            places[pod_key(p)] = host
        planned = list(res.hosts.values()) + res.unclaimed_hosts()
        level = next((lv for lv in ext.state.levels if gang.required_level in (lv.name, lv.label)), None)
        hosts = pin_hosts(planned, *self._domains(level.label)) if level is not None else sorted(set(planned))
        failures = [e for e in await asyncio.gather(*(
            ext.binder.patch_pod(pod_key(p), pin_patch(p, hosts, places[pod_key(p)])) for p, _ in members)) if e]
        ext.metrics.gangs.labels("pinned" if not failures else "pin_failed").inc()
        if failures:
            log.warning("gang %s: %d of %d members not released: %s", gang.key, len(failures), len(members),
                        "; ".join(failures[:3]))
            return False
        log.info("gang %s released to kube-scheduler, pinned to %d node(s)", gang.key, len(hosts))
        return waiting_extras == 0

    def admit(self, pod: dict) -> list[dict[str, Any]] | None:
        """Pinned at creation (the admission webhook, a pod being created for real, not a dry run): the JSON patch
        operations that pin the pod to its gang's planned place, or None to gate it as usual. The first member
        of a gang plans the whole gang (creation_members) and reserves it; the members after it claim their
        places from that reservation. No gate, so no release patch: one write per pod fewer than gating (see
        `created` in the module docstring). Falls back to the gate, which waits for the whole gang, whenever one
        pod cannot settle it: a source whose gangs are shaped by objects of their own, a pod without a fixed name
        (claims are by name, and generateName is filled in after admission), another controller's gate, members
        already known without this reservation, no room, a member its gang's plan has no place for or a smaller
        one, and an extender whose watches have not synced yet."""
        from scheduler.extender.gangbook import not_terminating, pod_key
        from scheduler.gangs import pod_request, preferred_wait_s, recognize

        ext = self.extender
        if not all(e.is_set() for e in ext.state.synced.values()):
            return None  # what is bound and who the members are is not known yet: the gate waits for it
        if not (pod.get("metadata") or {}).get("name") or other_gates(pod):
            return None
        gang = recognize(pod)
        members = creation_members(pod, gang)
        if members is None:
            return None
        res = ext.reservations.get(gang.key)
        if res is None:
            if not_terminating(ext.state.gang_members(gang.key)):
                return None  # members exist already (made before this extender started, or gated): the pinner's
            res, _ = ext.plan(gang, members, {}, nodes=None, pod=pod)
            if res is None:
                return None  # plan() sent the reason as an Event; gated, the gang waits for room as usual
            if (preferred_wait_s(pod)[0] > 0 and self._split_preferred(gang, res) is not None
                    and self._fits_one_domain(gang, members)):
                ext.reservations.pop(gang.key, None)
                ext.metrics.gangs.labels("held").inc()
                return None  # it asked to wait for one preferred domain: gated, the pinner holds it (see `hold`)
            res.admitted = True
            ext.metrics.gangs.labels("pinned_at_creation").inc()
        elif not res.admitted:
            return None
        q = pod_request(pod)
        request = (q.gpus, q.cpu_millis, q.memory, 1)
        place = res.role_requests.get(gang.role)
        if pod_key(pod) not in res.hosts and (place is None or any(a > b for a, b in zip(request, place))):
            return None  # larger than the place its gang's first member was planned for: gated, planned whole
        host = res.claim(pod_key(pod), gang.role, request)
        if host is None:
            return None
        level = next((lv for lv in ext.state.levels if gang.required_level in (lv.name, lv.label)), None)
        planned = list(res.hosts.values()) + res.unclaimed_hosts()
        hosts = pin_hosts(planned, *self._domains(level.label)) if level is not None else sorted(set(planned))
        return creation_patch(pod, hosts, host)

    def _split_preferred(self, gang: Any, res: Any) -> Any:
        """The preferred level whose domain the reservation's unclaimed places split, or None."""
        if gang.preferred_level is None:
            return None
        level = next((lv for lv in self.extender.state.levels if gang.preferred_level in (lv.name, lv.label)), None)
        if level is None or not splits(res.unclaimed_hosts(), self._domains(level.label)[0]):
            return None
        return level

    def _held_for_one_domain(self, gang_key: str, gang: Any, res: Any, first: dict, gang_pods: list[dict]) -> bool:
        """A gang that asked to wait for one preferred domain (see `hold`) and whose new plan splits it, still
        within its wait: True, and a GangWaiting Event says so on its first hold."""
        from scheduler.gangs import preferred_wait_s

        ext = self.extender
        wait_s, problem = preferred_wait_s(first)
        if problem:
            ext.event(first, "BadAnnotation", problem, warning=True)
        level = self._split_preferred(gang, res) if wait_s > 0 and not res.hosts else None
        if level is None:
            return False
        if not self._fits_one_domain(gang, gang_pods):
            return False
        now = time.monotonic()
        since = self.split_since.setdefault(gang_key, now)
        if not holds(now, since, wait_s):
            return False
        if gang_key not in self.held:
            ext.event(first, "GangWaiting", f"gang {gang.name}: its only places now span more than one {level.name}; "
                      f"it waits for one {level.name} ({TOPOLOGY_PREFERRED_WAIT}: {wait_s:g}s from its first split "
                      f"plan, {since + wait_s - now:.0f}s left), then takes them")
        self.held[gang_key] = since + wait_s
        return True

    def _fits_one_domain(self, gang: Any, pods: list) -> bool:
        """Whether one domain of the gang's preferred level could hold its members were it empty (fits_one_domain,
        on the schedulable nodes' allocatable)."""
        from scheduler.gangs import pod_request

        level = next((lv for lv in self.extender.state.levels if gang.preferred_level in (lv.name, lv.label)), None)
        if level is None:
            return False
        nodes = self.extender.state.nodes
        requests = [(q.gpus, q.cpu_millis, q.memory, 1) for q in map(pod_request, pods)]
        domains = ([(nodes[n].gpus, nodes[n].cpu_millis, nodes[n].memory, nodes[n].pods) for n in names
                    if n in nodes and nodes[n].schedulable] for names in self._domains(level.label)[1].values())
        return fits_one_domain(requests, domains)

    def _unsettled_split(self, gang_key: str, gang: Any, res: Any) -> bool:
        """A retried gang (it waited for room) whose new plan splits its preferred domain while the cluster is
        still changing (see `settle` in the module docstring)."""
        if gang_key not in self.waiting or res.hosts or self._split_preferred(gang, res) is None:
            return False
        return not settled(time.monotonic(), self._changed_at, self._burst_started)


async def run(extender: "Extender", interval_s: float = 0.05, pinner: Pinner | None = None) -> None:
    """Release gated gangs as they become complete (and retry those with no room as the cluster changes)."""
    state = extender.state
    pinner = pinner or Pinner(extender)
    await asyncio.gather(*(e.wait() for e in state.synced.values()))
    while True:
        acting = extender.leadership.active()  # a standby's gated gangs wait for it to lead (leadership.py)
        extender.metrics.acting.set(int(acting))
        if acting:
            await pinner.tick()
        else:  # kept for the takeover, but only gangs that still have pods (a standby may wait for weeks)
            state.gated_gangs.intersection_update(state.gang_index)
            # what it waited for and since when is the acting extender's now (leadership.py: a standby keeps nothing)
            for kept in (pinner.waiting, pinner.split_since, pinner.held):
                kept.clear()
            pinner.settling.clear()
        await asyncio.sleep(interval_s)
