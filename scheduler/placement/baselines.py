"""Baseline placement policies behind the engine's interface, for side-by-side runs. Pure and seeded.

    default-spread       kube-scheduler's default: pod by pod, LeastAllocated (emptiest host), no gang notion:
                         when a pod does not fit, the pods before it stay bound (a partial gang)
    most-allocated       pod by pod, MostAllocated bin-packing (fullest host that fits), no gang notion
    kueue-bestfit        Kueue TAS (v0.17.0, TASProfileMixed): from the requested level, the domain with the
                         fewest slots that suffices (BestFit), children most slots first, the last best-fitted;
                         unconstrained gangs LeastFreeCapacity over nodes
    topology-placement   kube-scheduler v1.37.2 gang + topology scheduling (kube_topology.py): one candidate
                         placement per domain of the required level, pods scored pod by pod (LeastAllocated
                         cpu/memory), placements by MostAllocated cpu/memory, ties at random (seeded)
    kai-topology         NVIDIA KAI-Scheduler's topology plugin (kai_topology.py): the fullest domain relative
                         to the job that holds it, from the preferred level up to the required one; nodes by
                         preferred sub-domain (roomier first), then GPU bin-packing
    random-fit           pods to random hosts that fit, all or nothing

Each returns a Plan; the pod-by-pod ones report a partial gang in `reason` and `partial` when they fail.
"""

from __future__ import annotations

import random
import time
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from scheduler.placement.capacity import Resources, fits, slots, sub
from scheduler.placement.types import Assignment, Gang, Plan, PlanStatus, Snapshot
from topology.model import Topology

# Models of other schedulers, each in its own module (they name the upstream files and versions they follow).
from scheduler.placement.kai_topology import KaiTopology  # noqa: E402,F401 - re-exported
from scheduler.placement.kube_topology import TopologyPlacement  # noqa: E402,F401 - re-exported


@dataclass(frozen=True)
class BaselinePlan(Plan):
    partial: tuple[Assignment, ...] = field(default=())  # pods a non-gang scheduler would have bound anyway


def _pods(gang: Gang) -> list[tuple[int, int]]:
    return [(ri, i) for ri, r in enumerate(gang.roles) for i in range(r.pods)]


def _free_map(snapshot: Snapshot, hosts: Sequence[str] | None = None) -> dict[str, Resources]:
    names = snapshot.hosts.keys() if hosts is None else hosts
    return {h: snapshot.hosts[h].free for h in names}


def _alloc_share(snapshot: Snapshot, host: str, free: Resources) -> float:
    """Share of the host's GPUs (or CPU when it has none) allocated: kube-scheduler's *Allocated scores."""
    s = snapshot.hosts[host]
    if s.gpus:
        return (s.gpus - free[0]) / s.gpus
    return (s.cpu_millis - free[1]) / max(1, s.cpu_millis)


_RANKS: "weakref.WeakKeyDictionary[Topology, np.ndarray]" = weakref.WeakKeyDictionary()


def _name_rank(topo: Topology) -> np.ndarray:
    """Each host's rank by name (row order), once per topology: ties between equal scores go by name."""
    rank = _RANKS.get(topo)
    if rank is None:
        rank = np.empty(len(topo.host_names), dtype=np.int64)
        rank[np.argsort(np.array(topo.host_names, dtype=object), kind="stable")] = np.arange(len(topo.host_names))
        _RANKS[topo] = rank
    return rank


# How `_pod_by_pod` picks among the hosts that fit: the emptiest (LeastAllocated), the fullest (MostAllocated),
# ties by the greatest host name; or a fixed key per host, the first in the hosts' order among equal keys.
LEAST, MOST = "least-allocated", "most-allocated"


def _pod_by_pod(snapshot: Snapshot, gang: Gang, hosts: Sequence[str] | None,
                order: str | dict[str, float]) -> tuple[list[Assignment], int]:
    """Place pods one at a time on the best host that fits (`order`). Returns (assignments, pods unplaced).
    Over arrays of all candidate hosts at once: a fill of thousands of pods on a thousand hosts, pod by pod in
    Python, took most of a simulation's time. The arithmetic is the scalar one's (float64 division of exact
    integers), so the picks are the same (tests/unit/test_baselines_pod_by_pod.py checks it against the
    one-host-at-a-time reference)."""
    topo = snapshot.topology
    if hosts is None and len(snapshot.hosts) == len(topo.host_names):
        names, rows = topo.host_names, slice(None)
    else:
        names = list(snapshot.hosts if hosts is None else hosts)
        rows = [topo.host_row[h] for h in names]  # type: ignore[assignment]
    if not names:
        return [], gang.pod_count
    free = snapshot.free_matrix[rows].copy()
    if isinstance(order, dict):
        static = np.array([order[h] for h in names], dtype=np.float64)
    else:
        capacity = snapshot.capacity_matrix[rows]
        gpus, cpu = capacity[:, 0], capacity[:, 1]
        has_gpus = gpus > 0
        share_of = np.where(has_gpus, gpus, np.maximum(1, cpu)).astype(np.float64)
        total = np.where(has_gpus, gpus, cpu)
        rank = _name_rank(topo)[rows]
    roles = gang.roles
    taken = {ri: np.zeros(len(names), dtype=bool) for ri, r in enumerate(roles) if r.one_per_host}
    placed: list[Assignment] = []
    for ri, i in _pods(gang):
        role = roles[ri]
        request = np.array(role.request, dtype=np.int64)
        ok = (free >= request).all(axis=1)
        if ri in taken:
            ok &= ~taken[ri]
        cands = np.flatnonzero(ok)
        if cands.size == 0:
            return placed, gang.pod_count - len(placed)
        if isinstance(order, dict):
            best = int(cands[np.argmax(static[cands])])  # argmax: the first of equal keys, as max() over a list
        else:
            used = total[cands] - np.where(has_gpus[cands], free[cands, 0], free[cands, 1])
            share = used / share_of[cands]
            share = -share if order == LEAST else share
            top = cands[share == share.max()]
            best = int(top[np.argmax(rank[top])])
        free[best] -= request
        if ri in taken:
            taken[ri][best] = True
        placed.append(Assignment(role.name, i, names[best]))
    return placed, 0


def _finish(policy: str, snapshot: Snapshot, gang: Gang, placed: list[Assignment], missing: int, started: float,
            all_or_nothing: bool, why: str = "") -> BaselinePlan:
    ms = (time.perf_counter() - started) * 1000
    if missing == 0 and placed:
        hosts = {a.host for a in placed}
        cost = (*snapshot.topology.domains_used(hosts), len(hosts))
        return BaselinePlan(gang.name, PlanStatus.PLACED, tuple(placed), cost=cost, solve_ms=ms, policy=policy)
    reason = why or f"{missing} of {gang.pod_count} pod(s) of gang {gang.name} found no host"
    return BaselinePlan(gang.name, PlanStatus.UNSCHEDULABLE, reason=reason, solve_ms=ms, policy=policy,
                        partial=() if all_or_nothing else tuple(placed))


class DefaultSpread:
    name = "default-spread"
    gang_aware = False  # pod by pod: may bind part of a gang, ignores required topology

    def place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        t = time.perf_counter()
        placed, missing = _pod_by_pod(snapshot, gang, None, LEAST)
        return _finish(self.name, snapshot, gang, placed, missing, t, all_or_nothing=False)


class MostAllocated:
    name = "most-allocated"
    gang_aware = False  # pod by pod: may bind part of a gang, ignores required topology

    def place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        t = time.perf_counter()
        placed, missing = _pod_by_pod(snapshot, gang, None, MOST)
        return _finish(self.name, snapshot, gang, placed, missing, t, all_or_nothing=False)


class RandomFit:
    name = "random-fit"
    gang_aware = True  # all or nothing, required topology honoured

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        t = time.perf_counter()
        rng = random.Random(f"{self.seed}/{gang.name}")
        keys = {h: rng.random() for h in sorted(snapshot.hosts)}
        topo = snapshot.topology
        if gang.required_level is None:
            scopes = [sorted(snapshot.hosts)]
        else:  # a random domain of the required level among those that hold the whole gang
            scopes = [v for _, v in sorted(topo.domains(topo.level_index(gang.required_level)).items())]
            rng.shuffle(scopes)
        for hosts in scopes:
            placed, missing = _pod_by_pod(snapshot, gang, hosts, keys)
            if not missing:
                return _finish(self.name, snapshot, gang, placed, 0, t, all_or_nothing=True)
        return _finish(self.name, snapshot, gang, [], gang.pod_count, t, all_or_nothing=True)


class KueueBestFit:
    """Kueue topology-aware scheduling as sigs.k8s.io/kueue v0.17.0 places one pod set (default feature gates:
    TASProfileMixed on, TASBalancedPlacement off), over pod-slot counts (the gang's largest request as the slot
    shape). Follows pkg/cache/scheduler/tas_flavor_snapshot.go (v0.17.0):

    - the search starts AT the requested level (`findAssignment`: the level of podset-required-topology or
      podset-preferred-topology), not at the innermost one: `findLevelWithFitDomains` orders that level's domains
      by free slots, most first (ties: label values ascending); if the top one holds the gang, the one with the
      fewest slots that still holds it (`findBestFitDomain`). Required: no fit = not admitted. Preferred: no fit
      = the next level out; at the outermost level, several domains in that order, the last one best-fitted.
    - descent (phase 2b): the children of every chosen domain pooled and ordered the same way, consumed in that
      order, the last one the best fit (`updateCountsToMinimumGeneric`), level by level down to the nodes
      (`kubernetes.io/hostname`, the Topology's last level).
    - a gang with neither level (Kueue's unconstrained / implied pod sets) uses LeastFreeCapacity
      (`useLeastFreeCapacityAlgorithm`, the KEP-2724 matrix): nodes ordered by free slots, fewest first; the first
      that holds the whole gang, else nodes in that order until the gang is covered.

    Checked against the real Kueue v0.17.0 on KWOK by `clique bench kueue-models` (simulations/kueue_check.py).
    Not modelled: leaders / slices / multi-layer topology, balanced placement, per-resource quota (the
    ClusterQueue is assumed to have room), and Kueue's pod-count capacity beyond the host's pod slots.
    """

    name = "kueue-bestfit"
    gang_aware = True  # all or nothing, required topology honoured

    def place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        t = time.perf_counter()
        topo = snapshot.topology
        nlevels = len(topo.levels)  # Kueue's Topology: these levels, then kubernetes.io/hostname (index nlevels)
        # Kueue counts how many pods of the PodSet fit per node; with several roles, take the largest shape.
        from scheduler.placement.types import Role

        shape = Role("slot", gang.pod_count, *(max(r.request[d] for r in gang.roles) for d in range(3)),
                     one_per_host=any(r.one_per_host for r in gang.roles))
        host_slots = {h: slots(s.free, shape) for h, s in snapshot.hosts.items()}
        need = gang.pod_count
        requested = gang.required_level or gang.preferred_level
        unconstrained = requested is None
        required = gang.required_level is not None

        def key(level: int, h: str) -> tuple:
            path = tuple(topo.host_paths[h])
            return path[: level + 1] if level < nlevels else (*path, h)

        def domains(level: int, hosts: Sequence[str]) -> dict[tuple, list[str]]:
            groups: dict[tuple, list[str]] = {}
            for h in hosts:
                if host_slots[h]:  # an empty domain never fits and adds nothing to a greedy cover
                    groups.setdefault(key(level, h), []).append(h)
            return groups

        def order(groups: dict[tuple, list[str]]) -> list[tuple]:
            tot = {k: sum(host_slots[h] for h in v) for k, v in groups.items()}
            # sortedDomains: BestFit most slots first, LeastFreeCapacity fewest first; then levelValues ascending
            return sorted(groups, key=(lambda k: (tot[k], k)) if unconstrained else (lambda k: (-tot[k], k)))

        def total(groups: dict[tuple, list[str]], k: tuple) -> int:
            return sum(host_slots[h] for h in groups[k])

        def best_fit(groups: dict[tuple, list[str]], keys: list[tuple], needed: int) -> tuple:
            # findBestFitDomainBy: the first domain (in order) with the fewest slots that still cover `needed`
            best = keys[0]
            for k in keys:
                if needed <= total(groups, k) < total(groups, best):
                    best = k
            return best

        def consume(groups: dict[tuple, list[str]], keys: list[tuple], count: int) -> list[tuple[tuple, int]]:
            # updateCountsToMinimumGeneric (no leaders, slices of one pod)
            out, left, rest = [], count, list(keys)
            while left > 0 and rest:
                k = rest[0]
                if not unconstrained and total(groups, k) >= left:
                    k = best_fit(groups, rest, left)
                take = min(left, total(groups, k))
                out.append((k, take))
                left -= take
                rest.remove(k)
            return out if left == 0 else []

        # phase 2a: the level where the assignment is made, and its domain(s)
        all_hosts = sorted(snapshot.hosts)
        level = nlevels if unconstrained else topo.level_index(requested)
        while True:
            groups = domains(level, all_hosts)
            keys = order(groups)
            if not keys:
                return _finish(self.name, snapshot, gang, [], need, t, True, f"gang {gang.name}: no node has room")
            fitting = [k for k in keys if total(groups, k) >= need]
            if unconstrained:
                chosen = [(fitting[0], need)] if fitting else consume(groups, keys, need)
                break
            if fitting:
                chosen = [(best_fit(groups, keys, need), need)]
                break
            if required:
                return _finish(self.name, snapshot, gang, [], need, t, True,
                               f"gang {gang.name}: no {topo.levels[level].name} has {need} pod slots "
                               f"(best: {total(groups, keys[0])})")
            if level > 0:
                level -= 1
                continue
            chosen = consume(groups, keys, need)
            break
        if not chosen:
            return _finish(self.name, snapshot, gang, [], need, t, True,
                           f"gang {gang.name}: the cluster has fewer than {need} pod slots")

        # phase 2b: down level by level, children of all chosen domains pooled
        pool = [h for k, _ in chosen for h in groups[k]]
        for lv in range(level + 1, nlevels + 1):
            groups = domains(lv, pool)
            chosen = consume(groups, order(groups), need)
            pool = [h for k, _ in chosen for h in groups[k]]
        per_host = [(groups[k][0], n) for k, n in chosen]  # at the node level each domain is one host
        # Assign the gang's pods to the chosen slots, checking real fit (slots used the largest shape: safe).
        pods = _pods(gang)
        placed: list[Assignment] = []
        for h, n in per_host:
            for _ in range(n):
                ri, i = pods.pop(0)
                placed.append(Assignment(gang.roles[ri].name, i, h))
        return _finish(self.name, snapshot, gang, placed, len(pods), t, True)


def all_policies(seed: int = 0, engine_options=None) -> list:
    """Clique's engine first, then every baseline."""
    from scheduler.placement.engine import CliqueEngine

    return [CliqueEngine(engine_options), KueueBestFit(), TopologyPlacement(seed), KaiTopology(), MostAllocated(),
            DefaultSpread(), RandomFit(seed)]

