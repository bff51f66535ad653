"""Offline preemption simulator: high-priority gangs arrive into a full cluster of prioritised trace pods; Clique's
gang-aware preemption (scheduler/placement/preemption.py, the extender's own decision) against kube-scheduler's
pod-by-pod default (simulations/kube_preemption.py) on the same stream. Pure apart from the progress callback.

    fill     the background pods (openb with priority classes from qos: simulations/priorities.py) are placed by
             Clique's engine in arrival order, nothing leaves; what does not fit is dropped. Both policies start
             from this same full cluster.
    timed    the high-priority gangs arrive at their times (and leave after their lifetime, if they have one).
             A gang that fits is bound at once. Otherwise:
             clique      choose_victims over the whole gang; its victims (whole gangs or pods) are evicted together,
                         the preemptor's places are held, and it is bound when they are gone;
             pod-by-pod  each pod in turn: bound where it fits (LeastAllocated), else kube-scheduler's PostFilter
                         picks one node and its victims; the pod is nominated there and bound when they are gone.
                         No topology: the gang may end up outside one domain of its required level.
             Evicted pods take the termination grace (default 30 s, DefaultTerminationGracePeriodSeconds,
             k8s.io/api v0.37.2 core/v1/types.go) to go; until then they keep their resources, and the held or
             nominated places keep theirs, so nothing is counted twice. Evicted pods are not recreated (their
             controllers' replacements would queue behind); waiting preemptors are retried, in priority then
             arrival order, after every event.
Every event checks that no host is over-committed (`overcommits`, 0 expected).
"""

from __future__ import annotations

import heapq
import random
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from scheduler.placement.engine import CliqueEngine
from scheduler.placement.preemption import VictimPod, VictimUnit, choose_victims
from scheduler.placement.types import Gang, Role, Snapshot
from simulations.kube_preemption import NodeVictim, Vec, least_allocated_node, preempt_for_pod
from simulations.priorities import PREEMPTOR_CLASS, PREEMPTOR_PRIORITY, Prioritized, PriorityClass
from simulations.workloads import Arrival

GiB = 2**30
DEFAULT_GRACE_S = 30.0
POLICIES = ("clique", "pod-by-pod")


@dataclass
class Unit:
    """Something bound: a gang (all its pods) or a single pod."""

    id: str
    priority: PriorityClass
    pods: dict[str, tuple[str, Vec]]  # pod key -> (host, request)
    start: float
    gang: bool
    size: int  # pods when it was placed whole (a gang missing some is broken)
    broken: bool = False  # lost some pods to evictions (counted once)


@dataclass
class Hold:
    """Evicted victims still terminating and the preemptor's places held (or a pod's nominated node)."""

    gang: str
    victims: list[tuple[str, str, Vec]]  # (unit id, host, request) per pod
    places: list[tuple[str, str, Vec]]  # (pod key, host, request) of the preemptor
    extra: dict[str, Vec]  # per host: what the places take beyond the victims' own resources there


@dataclass
class Pending:
    arrival: Arrival
    seq: int
    bound: dict[str, tuple[str, Vec]] = field(default_factory=dict)  # pod key -> (host, request)
    held: set[str] = field(default_factory=set)  # pod keys with a hold in flight
    done: bool = False


@dataclass
class PreemptionResult:
    policy: str
    gangs: int
    placed: int = 0
    placed_one_domain: int = 0  # all pods inside one domain of the required level
    waiting: int = 0  # at the end, no pod bound
    partial: int = 0  # at the end, some pods bound (pod-by-pod only)
    preemptions: int = 0  # decisions that evicted something (a gang for clique, a pod for pod-by-pod)
    victim_pods: int = 0
    gpus_preempted: int = 0
    gpus_by_class: dict[str, int] = field(default_factory=dict)
    gangs_broken: int = 0  # victim gangs that lost some pods but not all
    wasted_gpus: int = 0  # GPUs evicted for preemptors not placed inside one required domain by the end
    preempted_without_placing: int = 0  # clique: decisions whose preemptor was then not bound (0 expected)
    overcommits: int = 0
    times_s: list[float] = field(default_factory=list)  # arrival -> last pod bound, placed gangs
    decision_ms: list[float] = field(default_factory=list)
    proofs: dict[str, int] = field(default_factory=dict)  # clique: the decisions' proofs by kind
    max_gap_gpus: int = 0  # clique: the largest greedy-fallback gap (GPUs above the best bound not searched)
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (time, GPUs preempted so far)

    def summary(self) -> dict:
        from simulations.placement_sim import pct

        t = self.times_s
        return {"policy": self.policy, "gangs": self.gangs, "placed": self.placed,
                "placed_one_domain": self.placed_one_domain, "waiting": self.waiting, "partial": self.partial,
                "preemptions": self.preemptions, "victim_pods": self.victim_pods,
                "gpus_preempted": self.gpus_preempted, "gpus_preempted_by_class": dict(sorted(self.gpus_by_class.items())),
                "gangs_broken": self.gangs_broken, "wasted_gpus": self.wasted_gpus,
                "preempted_without_placing": self.preempted_without_placing, "overcommits": self.overcommits,
                "time_to_place_mean_s": round(sum(t) / len(t), 3) if t else None,
                "time_to_place_p50_s": pct(t, 0.5) if t else None, "time_to_place_p99_s": pct(t, 0.99) if t else None,
                "time_to_place_max_s": round(max(t), 3) if t else None,
                "decision_p50_ms": pct(self.decision_ms, 0.5), "decision_p99_ms": pct(self.decision_ms, 0.99),
                "proofs": dict(sorted(self.proofs.items())), "max_gap_gpus": self.max_gap_gpus}


# ---------------------------------------------------------------------------------------------- inputs
def preemptor_stream(count: int, interval_s: float, seed: int, duration_s: float | None = None,
                     cpu_millis: int = 16_000, memory: int = 64 * GiB) -> list[Arrival]:
    """High-priority Dynamo-style gangs, one every `interval_s`, seeded: 2x8 and 4x8 (required leaf), a leader +
    3 workers (leaf), 8x8 (required spine); pods of 8 GPUs, `cpu_millis` and `memory` each."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = rng.choices(["2x8", "4x8", "leader", "8x8"], weights=[3, 3, 2, 1])[0]
        if kind == "leader":
            roles = (Role("leader", 1, 8, cpu_millis, memory, one_per_host=True), Role("worker", 3, 8, cpu_millis, memory))
            g = Gang(f"hp{i}-tp32", roles, required_level="leaf")
        else:
            n = int(kind.split("x")[0])
            g = Gang(f"hp{i}-{kind}", (Role("worker", n, 8, cpu_millis, memory),),
                     required_level="spine" if n > 4 else "leaf")
        out.append(Arrival((i + 1) * interval_s, g, duration_s))
    return out


@dataclass
class Filled:
    snapshot: Snapshot
    units: dict[str, Unit]
    placed: int
    dropped: int


def fill(base: Snapshot, background: Sequence[Prioritized]) -> Filled:
    """The background placed by Clique's engine in order, each gang whole or not at all."""
    engine, snap, units, dropped = CliqueEngine(), base, {}, 0
    n = len(background)
    for i, b in enumerate(background):
        plan = engine.place(snap, b.arrival.gang)
        if not plan.placed:
            dropped += 1
            continue
        snap = snap.apply(b.arrival.gang, plan)
        roles = {r.name: r for r in b.arrival.gang.roles}
        pods = {f"{b.arrival.gang.name}/{a.role}-{a.index}": (a.host, roles[a.role].request) for a in plan.assignments}
        units[b.arrival.gang.name] = Unit(b.arrival.gang.name, b.priority, pods, float(i - n),
                                          b.arrival.gang.pod_count > 1, len(pods))
    return Filled(snap, units, len(units), dropped)


# ---------------------------------------------------------------------------------------------- the run
class _Run:
    def __init__(self, policy: str, filled: Filled, arrivals: Sequence[Arrival], priority: int, grace_s: float,
                 seed: int) -> None:
        self.policy, self.grace, self.priority = policy, grace_s, PriorityClass(PREEMPTOR_CLASS, priority)
        self.snap = filled.snapshot
        self.units = {k: replace(u, pods=dict(u.pods)) for k, u in filled.units.items()}
        self.topo = self.snap.topology
        self.names = list(self.topo.host_names)
        self.alloc = {h: (s.gpus, s.cpu_millis, s.memory, s.pods) for h, s in self.snap.hosts.items()}
        self.engine = CliqueEngine()
        self.rng = random.Random(seed)
        self.res = PreemptionResult(policy, len(arrivals))
        self.events: list = []
        self.seq = 0
        self.holds: dict[int, Hold] = {}
        self.pending: list[Pending] = []
        self.by_gang: dict[str, Pending] = {}
        self.evicted_for: dict[str, int] = {}  # preemptor gang -> GPUs evicted for it
        self.terminating: set[str] = set()  # victim pod keys being evicted
        for i, a in enumerate(arrivals):
            self._push(a.time, "arrive", (i, a))

    def _push(self, t: float, kind: str, payload) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, payload))

    # resources: the snapshot counts bound pods, terminating victims and the extra part of holds
    def _shift(self, deltas: list[tuple[str, Vec]], sign: int) -> None:
        hosts = dict(self.snap.hosts)
        for h, v in deltas:
            s = hosts[h]
            hosts[h] = replace(s, gpus_used=s.gpus_used + sign * v[0], cpu_used=s.cpu_used + sign * v[1],
                               memory_used=s.memory_used + sign * v[2], pods_used=s.pods_used + sign * v[3])
        self.snap = Snapshot(self.topo, hosts)
        for h, _ in deltas:
            s = hosts[h]
            if s.gpus_used > s.gpus or s.cpu_used > s.cpu_millis or s.memory_used > s.memory or s.pods_used > s.pods:
                self.res.overcommits += 1

    def _free(self) -> dict[str, Vec]:
        return self.snap.free_vectors

    # ------------------------------------------------------------------ main loop
    def run(self, progress: Callable[[int, int], None] | None) -> PreemptionResult:
        arrived = 0
        while self.events:
            now, _, kind, payload = heapq.heappop(self.events)
            if kind == "arrive":
                i, a = payload
                p = Pending(a, i)
                self.pending.append(p)
                self.by_gang[a.gang.name] = p
                arrived += 1
                if progress:
                    progress(arrived, self.res.gangs)
            elif kind == "release":
                self._release(payload, now)
            elif kind == "depart":
                u = self.units.pop(payload, None)
                if u is not None:
                    self._shift(list(u.pods.values()), -1)
            self._retry(now)
        self._finish()
        return self.res

    def _retry(self, now: float) -> None:
        for p in sorted(self.pending, key=lambda p: (-self.priority.value, p.seq)):
            if p.done:
                continue
            if self.policy == "clique":
                self._clique(p, now)
            else:
                self._pod_by_pod(p, now)
        self.pending = [p for p in self.pending if not p.done]

    def _eligible(self) -> list[VictimUnit]:
        out = []
        for u in self.units.values():
            if u.priority.value >= self.priority.value:
                continue
            pods = tuple(VictimPod(k, h, r) for k, (h, r) in sorted(u.pods.items()) if k not in self.terminating)
            if pods:
                out.append(VictimUnit(u.id, u.priority.value, pods, u.gang))
        return out

    def _pod_keys(self, gang: Gang) -> list[tuple[str, Role]]:
        return [(f"{gang.name}/{r.name}-{i}", r) for r in gang.roles for i in range(r.pods)]

    # ------------------------------------------------------------------ clique: the whole gang
    def _clique(self, p: Pending, now: float) -> None:
        if p.held:
            return
        gang = p.arrival.gang
        plan = self.engine.place(self.snap, gang)
        if plan.placed:
            by_role = {r.name: [k for k, rr in self._pod_keys(gang) if rr.name == r.name] for r in gang.roles}
            roles = {r.name: r for r in gang.roles}
            for a in plan.assignments:
                self._bind(p, by_role[a.role][a.index], a.host, roles[a.role].request, now)
            return
        d = choose_victims(self.snap, gang, self.priority.value, self._eligible())
        self.res.proofs[d.proof or "none"] = self.res.proofs.get(d.proof or "none", 0) + 1
        self.res.max_gap_gpus = max(self.res.max_gap_gpus, d.gap_gpus)
        self.res.decision_ms.append(d.solve_ms)
        if not d.fits:
            return
        roles = {r.name: r for r in gang.roles}
        left = {r.name: [k for k, rr in self._pod_keys(gang) if rr.name == r.name] for r in gang.roles}
        places = [(left[role].pop(0), host, roles[role].request) for role, host in d.places]
        if not d.preempts:
            for k, h, req in places:
                self._bind(p, k, h, req, now)
            return
        victims = [(uid, h, r) for uid in d.victims for k, (h, r) in sorted(self.units[uid].pods.items())
                   if k not in self.terminating]
        for uid in d.victims:
            self.terminating.update(self.units[uid].pods)
        self._hold(p, victims, places, now)

    # ------------------------------------------------------------------ pod-by-pod: kube-scheduler's default
    def _pod_by_pod(self, p: Pending, now: float) -> None:
        for key, role in self._pod_keys(p.arrival.gang):
            if key in p.bound or key in p.held:
                continue
            req = role.request
            free = self._free()
            host = least_allocated_node(self.names, free, self.alloc, req)
            if host is not None:
                self._bind(p, key, host, req, now)
                continue
            on_node: dict[str, list[NodeVictim]] = {}
            for u in self.units.values():
                for k, (h, r) in u.pods.items():
                    if k not in self.terminating:
                        on_node.setdefault(h, []).append(NodeVictim(k, u.id, u.priority.value, u.start, r))
            started = time.perf_counter()
            c = preempt_for_pod(self.names, free, on_node, req, self.priority.value, self.rng)
            self.res.decision_ms.append((time.perf_counter() - started) * 1000)
            if c is None:
                continue  # unschedulable: retried at the next event
            for v in c.victims:
                self.terminating.add(v.pod)
            self._hold(p, [(v.unit, c.node, v.request) for v in c.victims], [(key, c.node, req)], now)

    # ------------------------------------------------------------------ effects
    def _hold(self, p: Pending, victims: list[tuple[str, str, Vec]], places: list[tuple[str, str, Vec]],
              now: float) -> None:
        freed: dict[str, list[int]] = {}
        for _, h, r in victims:
            acc = freed.setdefault(h, [0, 0, 0, 0])
            for d in range(4):
                acc[d] += r[d]
        need: dict[str, list[int]] = {}
        for _, h, r in places:
            acc = need.setdefault(h, [0, 0, 0, 0])
            for d in range(4):
                acc[d] += r[d]
        extra = {h: tuple(max(0, n[d] - freed.get(h, [0, 0, 0, 0])[d]) for d in range(4)) for h, n in need.items()}
        self._shift(list(extra.items()), 1)
        self.seq += 1
        hid = self.seq
        self.holds[hid] = Hold(p.arrival.gang.name, victims, places, extra)
        p.held.update(k for k, _, _ in places)
        gpus = sum(r[0] for _, _, r in victims)
        self.res.preemptions += 1
        self.res.victim_pods += len(victims)
        self.res.gpus_preempted += gpus
        for uid, _, r in victims:
            cls = self.units[uid].priority.name
            self.res.gpus_by_class[cls] = self.res.gpus_by_class.get(cls, 0) + r[0]
        self.evicted_for[p.arrival.gang.name] = self.evicted_for.get(p.arrival.gang.name, 0) + gpus
        self.res.timeline.append((now, self.res.gpus_preempted))
        self._push(now + self.grace, "release", hid)

    def _release(self, hid: int, now: float) -> None:
        hold = self.holds.pop(hid)
        gone = []
        for uid, h, r in hold.victims:
            u = self.units[uid]
            key = next(k for k, (hh, rr) in sorted(u.pods.items()) if hh == h and rr == r and k in self.terminating)
            del u.pods[key]
            self.terminating.discard(key)
            gone.append((h, r))
        for uid in {v[0] for v in hold.victims}:
            u = self.units[uid]
            if not u.pods:
                del self.units[uid]
            elif u.gang and len(u.pods) < u.size and not u.broken:
                self.res.gangs_broken += 1
                u.broken = True
        self._shift(gone, -1)
        self._shift(list(hold.extra.items()), -1)
        p = self.by_gang[hold.gang]
        for k, h, r in hold.places:
            p.held.discard(k)
            self._bind(p, k, h, r, now)

    def _bind(self, p: Pending, key: str, host: str, req: Vec, now: float) -> None:
        self._shift([(host, req)], 1)
        p.bound[key] = (host, req)
        gang = p.arrival.gang
        u = self.units.setdefault(gang.name, Unit(gang.name, self.priority, {}, now, True, gang.pod_count))
        u.pods[key] = (host, req)
        if len(p.bound) == gang.pod_count and not p.done:
            p.done = True
            self.res.placed += 1
            self.res.times_s.append(round(now - p.arrival.time, 6))
            if self._one_domain(gang, [h for h, _ in p.bound.values()]):
                self.res.placed_one_domain += 1
            if p.arrival.duration is not None:
                self._push(now + p.arrival.duration, "depart", gang.name)

    def _one_domain(self, gang: Gang, hosts: list[str]) -> bool:
        if not gang.required_level:
            return True
        level = self.topo.level_index(gang.required_level)
        return len({self.topo.domain(h, level) for h in hosts}) == 1

    def _finish(self) -> None:
        for p in self.by_gang.values():
            if p.done:
                ok = self._one_domain(p.arrival.gang, [h for h, _ in p.bound.values()])
            else:
                ok = False
                if p.bound:
                    self.res.partial += 1
                else:
                    self.res.waiting += 1
                if self.policy == "clique" and p.arrival.gang.name in self.evicted_for:
                    self.res.preempted_without_placing += 1
            if not ok:
                self.res.wasted_gpus += self.evicted_for.get(p.arrival.gang.name, 0)


def simulate_preemption(policy: str, filled: Filled, arrivals: Sequence[Arrival], priority: int = PREEMPTOR_PRIORITY,
                        grace_s: float = DEFAULT_GRACE_S, seed: int = 1,
                        progress: Callable[[int, int], None] | None = None) -> PreemptionResult:
    """One policy ("clique" or "pod-by-pod") on the high-priority stream, from the filled cluster."""
    if policy not in POLICIES:
        raise ValueError(f"unknown preemption policy {policy!r}; choose from {', '.join(POLICIES)}")
    if policy == "clique":
        _warm_up()
    return _Run(policy, filled, arrivals, priority, grace_s, seed).run(progress)


def _warm_up() -> None:
    """The first CP-SAT solve in a process pays a one-time initialisation (hundreds of ms): paid here, untimed, as
    a running extender has paid it long before (the preemption bench does the same)."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    m.Add(m.NewBoolVar("x") >= 0)
    cp_model.CpSolver().Solve(m)


# ---------------------------------------------------------------------------------------------- output
def table(results: list[PreemptionResult]) -> str:
    rows = [r.summary() for r in results]
    head = (f"{'policy':12} {'placed':>6} {'1-domain':>8} {'waiting':>7} {'partial':>7} {'preempts':>8} "
            f"{'victims':>7} {'GPUs':>6} {'wasted':>6} {'broken':>6} {'t mean s':>8} {'t p99 s':>7} {'dec p99 ms':>10}"
            "  GPUs by victim class")
    lines = [head]
    for r in rows:
        def f(v):
            return "-" if v is None else f"{v:.1f}"
        lines.append(f"{r['policy']:12} {r['placed']:>6} {r['placed_one_domain']:>8} {r['waiting']:>7} "
                     f"{r['partial']:>7} {r['preemptions']:>8} {r['victim_pods']:>7} {r['gpus_preempted']:>6} "
                     f"{r['wasted_gpus']:>6} {r['gangs_broken']:>6} {f(r['time_to_place_mean_s']):>8} "
                     f"{f(r['time_to_place_p99_s']):>7} {r['decision_p99_ms']:>10}  "
                     f"{r['gpus_preempted_by_class']}")
    return "\n".join(lines)


def plot(results: list[PreemptionResult], path, title: str) -> str:
    """GPUs preempted over the run, and per victim class, per policy (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        xs = [0.0] + [t / 60 for t, _ in r.timeline]
        ys = [0] + [g for _, g in r.timeline]
        a.step(xs, ys, where="post", label=r.policy, lw=2.2 if r.policy == "clique" else 1.2)
    a.set_xlabel("time after the fill (min)")
    a.set_ylabel("GPUs preempted (cumulative)")
    a.legend(fontsize=8)
    classes = sorted({c for r in results for c in r.gpus_by_class})
    bottom = [0] * len(results)
    for c in classes:
        vals = [r.gpus_by_class.get(c, 0) for r in results]
        b.bar([r.policy for r in results], vals, bottom=bottom, label=c)
        bottom = [x + y for x, y in zip(bottom, vals)]
    for i, r in enumerate(results):
        b.text(i, bottom[i], f" placed {r.placed_one_domain}/{r.gangs} in 1 domain", ha="center", va="bottom",
               fontsize=8)
    b.set_ylabel("GPUs preempted, by victim priority class")
    b.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
