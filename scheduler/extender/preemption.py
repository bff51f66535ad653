"""Gang-aware preemption, the effects: when the filter finds a gang unschedulable, choose victims
(scheduler/placement/preemption.py, pure), evict them through the Eviction API, hold the freed capacity for the
preemptor until it is bound. Side effects: API reads (PodDisruptionBudgets), Evictions, Events, pod status
patches (nominations), Prometheus counters.

Sequence for one gang (at most one attempt in flight per gang; the filter answers its members with an Error
meanwhile, so kube-scheduler retries them with backoff instead of parking them):
  1. the decision over the hosts the preemptor's own spec allows (nodeSelector, affinity, taints: nodefit), net
     of every reservation; victims are bound pods of lower priority (spec.priority), a gang of them as one unit;
     units a PodDisruptionBudget would not let go (status.disruptionsAllowed, counted over all chosen victims of
     that budget) are left out, and the decision made again;
  2. the preemptor's places are held at once (a Reservation under "<gang key>#preemption", never expired by the
     extender's own timers), so no other pod takes what the evictions free;
  3. every victim pod is evicted with a dry run first (a refusal leaves everything in place and the unit is
     left out next time); then for real, all at once: a gang victim whole or not at all;
  4. once the watch shows every victim gone, the hold becomes the preemptor's own planned Reservation on the
     freed domain (its members are nominated there), which its members claim in filter and bind.
Events: `Preempted` on each victim naming the preemptor (the reason kube-scheduler uses, k8s.io/kubernetes v1.37.2
pkg/scheduler/framework/preemption/executor.go), `Preempting` on the preemptor's pods naming the victims, and
`PreemptionSkipped` when nothing would help (with the decision's reason).
Eviction: policy/v1 Eviction on pods/eviction (k8s.io/api v0.37.2 policy/v1/types.go); a budget that forbids it
answers 429 (pkg/registry/core/pod/storage/eviction.go, v1.37.2).

Off the event loop: the victims come from the state's incremental victim index (state.py, updated by the watch
events, no scan of every pod), and the decision (numpy and CP-SAT, tens of ms at 5,000 nodes) runs in a worker
thread (asyncio.to_thread) on a copy: the Snapshot (copied arrays, frozen host states) and the frozen VictimUnits
taken together on the loop, so the thread never reads what the watches change. The watches go on meanwhile, so
the decision may be stale when it returns: optimistic concurrency. Right before the places are held, on the loop
with no await in between (so no watch event can interleave), every victim unit is compared with the index as it
is now (same pods, hosts, requests, priority; a unit that gained, lost or moved a pod fails) and every place is
checked against a fresh snapshot net of every reservation (free now plus what the victims free there); a stale
decision is made again (at most MAX_ROUNDS decisions per attempt). A lock around the state would instead block
the watches for the whole decision, and a decision on the live dicts from a thread would read them mid-update.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram

from scheduler.extender.gangbook import Reservation, gang_spec, members_of, pod_key
from scheduler.extender.nodefit import _expression_holds
from scheduler.gangs import GangRef, pod_request, recognize
from scheduler.placement.preemption import Decision, VictimPod, VictimUnit, choose_victims
from scheduler.placement.types import Snapshot

if TYPE_CHECKING:
    from scheduler.extender.service import Extender

log = logging.getLogger("clique.extender.preemption")
HOLD_SUFFIX = "#preemption"
RETRY_AFTER_S = 5.0  # a gang for which preemption did not help is looked at again after this long
VICTIMS_GONE_S = 120.0  # how long the hold waits for evicted victims to go (beyond their termination grace)
MAX_ROUNDS = 3  # decisions per attempt when budgets refuse victims


@dataclass
class Attempt:
    gang: GangRef
    started: float
    what: str = "choosing victims"


class Preemptor:
    """One per extender (attached on first use)."""

    def __init__(self, extender: "Extender") -> None:
        self.ext = extender
        self.attempts: dict[str, Attempt] = {}
        self.skipped: dict[str, float] = {}  # gang key -> when preemption last did not help
        reg = extender.metrics.registry
        self.decisions = Counter("clique_preemption_decisions_total", "Gang preemption decisions by outcome",
                                 ["outcome"], registry=reg)
        self.victims = Counter("clique_preempted_total", "Victim units evicted by gang preemption", ["kind"],
                               registry=reg)
        self.gpus = Counter("clique_preempted_gpus_total", "GPUs freed by evicting victims of gang preemption",
                            registry=reg)
        self.decision_seconds = Histogram("clique_preemption_decision_seconds", "Victim choice time",
                                          registry=reg, buckets=(.001, .0025, .005, .01, .025, .05, .1, .5, 1))

    # ------------------------------------------------------------------ called by the filter (sync)
    def consider(self, pod: dict, gang: GangRef) -> str:
        attempt = self.attempts.get(gang.key)
        if attempt is not None:
            return f"gang {gang.name}: preemption in progress ({attempt.what}); kube-scheduler will retry"
        spec = pod.get("spec") or {}
        if spec.get("preemptionPolicy") == "Never" or not isinstance(spec.get("priority"), int):
            return ""
        if time.monotonic() - self.skipped.get(gang.key, -1e9) < RETRY_AFTER_S:
            return ""
        if gang.size is None or len(self.ext.state.gang_members(gang.key)) < gang.size:
            return ""
        prio = spec["priority"]
        lowest = self.ext.state.lowest_bound_priority()  # the victim index: no scan of every pod
        if lowest is None or lowest >= prio:
            return ""
        self.attempts[gang.key] = Attempt(gang, time.monotonic())
        try:
            asyncio.get_running_loop().create_task(self._attempt(gang, pod))
        except RuntimeError:  # no loop (pure in-process tests): nothing can be evicted
            del self.attempts[gang.key]
            return ""
        return f"gang {gang.name}: looking for lower-priority victims to make room; kube-scheduler will retry"

    # ------------------------------------------------------------------ the attempt
    async def _attempt(self, gang: GangRef, pod: dict) -> None:
        hold_key = gang.key + HOLD_SUFFIX
        try:
            await self._run(gang, pod, hold_key)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed attempt must not leave a hold behind
            log.exception("preemption for gang %s failed", gang.key)
        finally:
            self.ext.reservations.pop(hold_key, None)
            self.attempts.pop(gang.key, None)

    def _skip(self, gang: GangRef, pods: list[dict], reason: str, outcome: str) -> None:
        self.skipped[gang.key] = time.monotonic()
        self.decisions.labels(outcome).inc()
        log.info("no preemption for gang %s: %s", gang.key, reason)
        for p in pods[:1]:
            self.ext.event(p, "PreemptionSkipped", reason)

    async def _run(self, gang: GangRef, pod: dict, hold_key: str) -> None:
        ext, state = self.ext, self.ext.state
        attempt = self.attempts[gang.key]
        pods = state.gang_members(gang.key)
        members = members_of(pods, ext.just_bound())
        if members.bound or not members.pending:
            return  # a half gang joins its bound members (gangbook); preemption is for gangs placed whole
        pending = members.pending
        prio, policy = _priority(pod), (pod.get("spec") or {}).get("preemptionPolicy")
        spec, roles = gang_spec(gang, pending)
        pdbs = await self._budgets()
        protected: dict[str, str] = {}
        decision: Decision | None = None
        chosen: list[VictimUnit] = []
        cleared, stale = False, ""
        for _ in range(MAX_ROUNDS):
            stale = ""
            snapshot = self._snapshot(pending)  # with the units below: one consistent copy, taken on the loop
            units = self._units(gang, prio)
            for u in units:
                why = _refused_by_budget([u], pdbs, state.pods)
                if why:
                    protected[u.id] = why
            units = [u for u in units if u.id not in protected]
            started = time.perf_counter()
            decision = await asyncio.to_thread(choose_victims, snapshot, spec, prio, units, policy)
            self.decision_seconds.observe(time.perf_counter() - started)
            if not decision.preempts:
                break
            chosen = [u for u in units if u.id in decision.victims]
            why = _refused_by_budget(chosen, pdbs, state.pods)
            if why:  # together they exceed a budget: leave out the most expensive of them and decide again
                worst = max(chosen, key=lambda u: (u.gpus, len(u.pods), u.id))
                protected[worst.id] = why
                continue
            attempt.what = f"dry-run evictions of {len(decision.victims)} victim unit(s)"
            refused = await self._evict(chosen, gang, dry_run=True)
            if refused:
                protected.update(refused)
                continue
            stale = stale_decision(decision, chosen, self.ext.state, self._snapshot(pending), spec)
            if stale:  # the watches moved on while the thread decided (or the dry run ran): decide again
                log.info("gang %s: decision stale (%s); deciding again", gang.key, stale)
                continue
            cleared = True
            break
        if decision is None or not cleared:
            note = (f"; left out as PodDisruptionBudgets protect them: {len(protected)} unit(s) "
                    f"({next(iter(protected.values()))})" if protected else "")
            if decision is not None and decision.fits and not decision.preempts:
                reason, outcome = f"gang {gang.name} fits without preemption now", "fits"
            elif decision is not None and stale:
                reason, outcome = (f"gang {gang.name}: the cluster changed under each of {MAX_ROUNDS} decisions "
                                   f"(last: {stale}); kube-scheduler's retry decides again"), "stale"
            elif decision is not None and decision.preempts:
                reason, outcome = f"gang {gang.name}: no victims the budgets allow after {MAX_ROUNDS} tries", "refused"
            else:
                reason, outcome = (decision.reason if decision is not None else "no decision"), "not_helpful"
            self._skip(gang, pending, reason + note, outcome)
            return
        # hold the preemptor's places before anything is evicted: nobody else takes what the evictions free
        ext.reservations[hold_key] = Reservation(gang, {}, list(decision.places), {}, roles, time.monotonic(),
                                                 direct=True)
        gpus = sum(u.gpus for u in chosen)
        where = f"domain {decision.scope[-1]}" if decision.scope else "the cluster"
        names = ", ".join(sorted(p.key for u in chosen for p in u.pods))
        pname = f"{gang.namespace}/{gang.name}"
        self.decisions.labels("preempt").inc()
        log.info("gang %s (priority %d) preempts %s (%d GPUs, cost %s, proof %s, %.1f ms) to free %s", gang.key,
                 prio, names, gpus, decision.cost, decision.proof, decision.solve_ms, where)
        for p in pending:
            ext.event(p, "Preempting", f"gang {pname} (priority {prio}) evicts {names} ({gpus} GPU(s), victim priority "
                                       f"<= {decision.cost[0]}) to free {where}; proof {decision.proof}"
                                       + (f", {decision.reason}" if decision.reason else ""))
        victims = {(p.key, _uid(state.pods.get(p.key))) for u in chosen for p in u.pods}
        grace = max((int(((state.pods.get(k) or {}).get("spec") or {}).get("terminationGracePeriodSeconds") or 30)
                     for k, _ in victims), default=0)
        attempt.what = f"evicting {len(chosen)} victim unit(s) in {where}"
        refused = await self._evict(chosen, gang, dry_run=False, message=(
            f"preempted by gang {pname} (priority {prio}), which needs {where}"))
        for u in chosen:
            if u.id not in refused:
                self.victims.labels("gang" if u.gang else "pod").inc()
                self.gpus.inc(u.gpus)
        if refused:
            log.warning("gang %s: %d victim eviction(s) refused (%s); releasing the hold", gang.key, len(refused),
                        next(iter(refused.values())))
            self._skip(gang, pending, f"evictions refused: {next(iter(refused.values()))}", "eviction_refused")
            return
        attempt.what = f"waiting for {len(chosen)} evicted victim unit(s) to go from {where}"
        deadline = time.monotonic() + VICTIMS_GONE_S + grace
        while any(u and _uid(state.pods.get(k)) == u for k, u in victims):
            if time.monotonic() > deadline:
                self._skip(gang, pending, f"evicted victims in {where} did not go within the deadline", "timed_out")
                return
            await asyncio.sleep(0.1)
        # the hold becomes the preemptor's own plan on the freed domain
        ext.reservations.pop(hold_key, None)
        pods = state.gang_members(gang.key)
        members = members_of(pods, ext.just_bound())
        if not members.pending or members.bound or gang.key in ext.reservations:
            return
        hosts = sorted({h for _, h in decision.places})
        scope_hosts = sorted(h for h in state.nodes if h in set(_scope_hosts(state, decision)) or h in hosts)
        res, why = ext.plan(gang, members.pending, {}, nodes=scope_hosts, pod=members.pending[0])
        if res is None:
            log.warning("gang %s: planning on the freed %s failed: %s", gang.key, where, why)
            return
        sends, ext._to_nominate = ext._to_nominate, []
        if sends:
            await asyncio.gather(*(ext.binder.nominate(k, h) for k, h in sends))
        log.info("gang %s: victims gone; %s held for it on %s", gang.key, where, sorted(set(res.unclaimed_hosts())
                                                                                      | set(res.hosts.values())))

    # ------------------------------------------------------------------ inputs
    def _snapshot(self, pending: list[dict]) -> Snapshot:
        snapshot = self.ext.state.snapshot(self.ext._held())
        refused = set(self.ext._refused_by_spec(pending, snapshot))
        if not refused:
            return snapshot
        return Snapshot(snapshot.topology, {n: (replace(h, schedulable=False) if n in refused else h)
                                            for n, h in snapshot.hosts.items()})

    def _units(self, gang: GangRef, prio: int) -> list[VictimUnit]:
        """Bound, not terminating pods of lower priority than `prio`, a gang's pods as one unit (its priority
        the highest of its pods: a gang with one pod the preemptor may not take is no victim), from the state's
        victim index (the same as units_by_scan over every pod, without the scan)."""
        return self.ext.state.victim_units(prio, exclude=gang.key)

    async def _budgets(self) -> list[dict]:
        from kubernetes_asyncio import client

        try:
            resp = await client.PolicyV1Api(self.ext.api).list_pod_disruption_budget_for_all_namespaces(
                _preload_content=False)
            import json

            return list(json.loads(await resp.read()).get("items") or [])
        except Exception as exc:  # noqa: BLE001 - without budgets, the dry-run evictions still check them
            log.warning("PodDisruptionBudgets not readable (%s); relying on the dry-run evictions", exc)
            return []

    async def _evict(self, units: list[VictimUnit], gang: GangRef, dry_run: bool,
                     message: str = "") -> dict[str, str]:
        """Evict every pod of `units` (or a dry run); returns unit id -> the first refusal."""
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        core = client.CoreV1Api(self.ext.api)
        refused: dict[str, str] = {}

        async def one(u: VictimUnit, p: VictimPod) -> None:
            ns, name = p.key.split("/", 1)
            pod = self.ext.state.pods.get(p.key)
            body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                                    "metadata": {"name": name, "namespace": ns}}
            if pod is not None and _uid(pod):
                body["deleteOptions"] = {"preconditions": {"uid": _uid(pod)}}
            try:
                await core.create_namespaced_pod_eviction(name, ns, body, **({"dry_run": "All"} if dry_run else {}))
                if not dry_run and pod is not None:
                    self.ext.event(pod, "Preempted", message, warning=True)
            except ApiException as exc:
                if exc.status == 404:
                    return  # already gone
                what = {429: "a PodDisruptionBudget forbids it"}.get(exc.status, f"{exc.status} {exc.reason}")
                refused.setdefault(u.id, f"evicting {p.key}: {what} ({(exc.body or '')[:200]})")
            except (OSError, asyncio.TimeoutError) as exc:
                refused.setdefault(u.id, f"evicting {p.key}: API server unreachable ({exc!r})")

        await asyncio.gather(*(one(u, p) for u in units for p in u.pods))
        return refused


def units_by_scan(pods: dict[str, dict], exclude: str, prio: int) -> list[VictimUnit]:
    """The victim units by a scan of every pod (what the victim index replaces; the reference the unit tests
    and `clique bench preemption` compare it with)."""
    groups: dict[str, list[dict]] = {}
    is_gang: dict[str, bool] = {}
    for key, p in pods.items():
        spec, md = p.get("spec") or {}, p.get("metadata") or {}
        if not spec.get("nodeName") or md.get("deletionTimestamp") or (p.get("status") or {}).get("phase") in (
                "Succeeded", "Failed"):
            continue
        g = recognize(p)
        if g.key == exclude:
            continue
        unit = g.key if g.source != "single" else key
        groups.setdefault(unit, []).append(p)
        is_gang[unit] = g.source != "single"
    out = []
    for unit, ps in sorted(groups.items()):
        top = max(_priority(p) for p in ps)
        if top >= prio:
            continue
        vp = []
        for p in sorted(ps, key=pod_key):
            q = pod_request(p)
            vp.append(VictimPod(pod_key(p), p["spec"]["nodeName"], (q.gpus, q.cpu_millis, q.memory, 1)))
        out.append(VictimUnit(unit, top, tuple(vp), is_gang[unit]))
    return out


def stale_decision(decision: Decision, chosen: list[VictimUnit], state: Any, now: Snapshot, gang: Any) -> str:
    """Why a decision made on an earlier copy no longer holds ("" if it does): a victim unit that changed since
    (a pod gone, added, moved, terminating, or a new priority), or a place the preemptor can no longer take with
    what is free now (`now`: a fresh snapshot net of every reservation) plus what its victims free there."""
    for u in chosen:
        cur = state.victim_unit(u.id)
        if cur != u:
            return f"victim {u.id} changed since the decision" if cur is not None else f"victim {u.id} is gone"
    need: dict[str, list[int]] = {}
    reqs = {r.name: r.request for r in gang.roles}
    for role, host in decision.places:
        acc = need.setdefault(host, [0, 0, 0, 0])
        for d, v in enumerate(reqs[role]):
            acc[d] += v
    freed: dict[str, list[int]] = {}
    for u in chosen:
        for p in u.pods:
            acc = freed.setdefault(p.host, [0, 0, 0, 0])
            for d, v in enumerate(p.request):
                acc[d] += v
    for host, n in need.items():
        h = now.hosts.get(host)
        if h is None or not h.schedulable:
            return f"node {host} is gone or no longer schedulable"
        free, got = h.free, freed.get(host, [0, 0, 0, 0])
        if any(free[d] + got[d] < n[d] for d in range(4)):
            return f"node {host} no longer has room for the preemptor's pods there"
    return ""


def _scope_hosts(state: Any, decision: Decision) -> list[str]:
    if decision.scope is None:
        return list(state.nodes)
    topo = state.topology()
    level = len(decision.scope) - 1
    return list(topo.domains(level).get(tuple(decision.scope), []))


def _uid(pod: dict | None) -> str:
    return str(((pod or {}).get("metadata") or {}).get("uid") or "")


def _priority(pod: dict) -> int:
    """spec.priority, which the Priority admission plugin resolves from priorityClassName (0 without one and no
    global default: k8s.io/kubernetes v1.37.2 plugin/pkg/admission/priority/admission.go)."""
    p = (pod.get("spec") or {}).get("priority")
    return p if isinstance(p, int) else 0


def selector_matches(selector: Any, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector: null matches nothing; {} matches everything (policy/v1 PodDisruptionBudgetSpec,
    k8s.io/api v0.37.2 policy/v1/types.go)."""
    if not isinstance(selector, dict):
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        if not isinstance(e, dict) or not _expression_holds(e, labels.get(str(e.get("key")))):
            return False
    return True


def _refused_by_budget(units: list[VictimUnit], pdbs: list[dict], pods: dict[str, dict]) -> str:
    """Why evicting all of `units` together would break a budget ("" if none would): more matched pods than its
    status.disruptionsAllowed, or a budget the disruption controller has not processed yet."""
    for pdb in pdbs:
        md, spec, status = pdb.get("metadata") or {}, pdb.get("spec") or {}, pdb.get("status") or {}
        ns = md.get("namespace")
        hit = 0
        for u in units:
            for vp in u.pods:
                if not vp.key.startswith(f"{ns}/"):
                    continue
                labels = ((pods.get(vp.key) or {}).get("metadata") or {}).get("labels") or {}
                if selector_matches(spec.get("selector"), labels):
                    hit += 1
        if not hit:
            continue
        allowed = status.get("disruptionsAllowed")
        if (status.get("observedGeneration") or 0) < (md.get("generation") or 0):
            return f"PodDisruptionBudget {ns}/{md.get('name')} is not processed yet"
        if not isinstance(allowed, int) or hit > allowed:
            return (f"PodDisruptionBudget {ns}/{md.get('name')} allows {allowed} disruption(s), the victims would be "
                    f"{hit}")
    return ""


def on_unschedulable(extender: "Extender", pod: dict, gang: GangRef) -> str:
    """The filter's hook for a gang it cannot place: starts (or reports) a gang preemption. Returns an Error text
    while one is in flight (kube-scheduler then retries the pod after its backoff), "" otherwise."""
    preemptor = extender.__dict__.get("_preemptor")
    if preemptor is None:
        preemptor = extender.__dict__["_preemptor"] = Preemptor(extender)
    return preemptor.consider(pod, gang)
