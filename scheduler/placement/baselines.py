"""Baseline placement policies behind the engine's interface, for side-by-side runs. Pure and seeded.

    default-spread       kube-scheduler's default: pod by pod, LeastAllocated (emptiest host), no gang notion:
                         when a pod does not fit, the pods before it stay bound (a partial gang)
    most-allocated       pod by pod, MostAllocated bin-packing (fullest host that fits), no gang notion
    kueue-bestfit        Kueue TAS BestFit: the lowest level where one domain has enough pod slots, the
                         domain with the fewest slots that suffices, then children by most slots first
    topology-placement   kube-scheduler 1.36+ TopologyPlacement style: one candidate placement per domain at
                         the required level, pods fitted pod by pod, placements scored by MostAllocated
    random-fit           pods to random hosts that fit, all or nothing

Each returns a Plan; the pod-by-pod ones report a partial gang in `reason` and `partial` when they fail.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from scheduler.placement.capacity import Resources, fits, slots, sub
from scheduler.placement.types import Assignment, Gang, Plan, PlanStatus, Snapshot


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


def _pod_by_pod(snapshot: Snapshot, gang: Gang, hosts: Sequence[str] | None,
                score: Callable[[str, Resources], tuple]) -> tuple[list[Assignment], int]:
    """Place pods one at a time on the best-scoring host that fits. Returns (assignments, pods unplaced)."""
    free = _free_map(snapshot, hosts)
    roles = gang.roles
    placed: list[Assignment] = []
    per_host_roles: dict[str, set[int]] = {}
    for ri, i in _pods(gang):
        role = roles[ri]
        cands = [h for h, f in free.items() if fits(f, role.request)
                 and not (role.one_per_host and ri in per_host_roles.get(h, set()))]
        if not cands:
            return placed, gang.pod_count - len(placed)
        h = max(cands, key=lambda x: score(x, free[x]))
        free[h] = sub(free[h], role.request)
        per_host_roles.setdefault(h, set()).add(ri)
        placed.append(Assignment(role.name, i, h))
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
        placed, missing = _pod_by_pod(snapshot, gang, None,
                                      lambda h, f: (-_alloc_share(snapshot, h, f), h))
        return _finish(self.name, snapshot, gang, placed, missing, t, all_or_nothing=False)


class MostAllocated:
    name = "most-allocated"
    gang_aware = False  # pod by pod: may bind part of a gang, ignores required topology

    def place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        t = time.perf_counter()
        placed, missing = _pod_by_pod(snapshot, gang, None, lambda h, f: (_alloc_share(snapshot, h, f), h))
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
            placed, missing = _pod_by_pod(snapshot, gang, hosts, lambda h, f: (keys[h],))
            if not missing:
                return _finish(self.name, snapshot, gang, placed, 0, t, all_or_nothing=True)
        return _finish(self.name, snapshot, gang, [], gang.pod_count, t, all_or_nothing=True)


class KueueBestFit:
    """Kueue TAS BestFit over pod-slot counts (the gang's largest request as the slot shape)."""

    name = "kueue-bestfit"
    gang_aware = True  # all or nothing, required topology honoured

    def place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        t = time.perf_counter()
        topo = snapshot.topology
        nlevels = len(topo.levels)
        # Kueue counts how many pods of the PodSet fit per node; with several roles, take the largest shape.
        from scheduler.placement.types import Role

        shape = Role("slot", gang.pod_count, *(max(r.request[d] for r in gang.roles) for d in range(3)),
                     one_per_host=any(r.one_per_host for r in gang.roles))
        host_slots = {h: slots(s.free, shape) for h, s in snapshot.hosts.items()}
        need = gang.pod_count
        req = topo.level_index(gang.required_level) if gang.required_level else None

        def domain_slots(level: int, hosts: Sequence[str]) -> dict[tuple, list[str]]:
            groups: dict[tuple, list[str]] = {}
            for h in hosts:
                if host_slots[h]:
                    groups.setdefault(topo.host_paths[h][: level + 1], []).append(h)
            return groups

        def total(hosts: Sequence[str]) -> int:
            return sum(host_slots[h] for h in hosts)

        # phase 2a: lowest level (innermost first) where a single domain fits; BestFit = fewest slots that fit
        all_hosts = sorted(snapshot.hosts)
        chosen: list[str] | None = None
        start_level = 0
        for level in range(nlevels - 1, -1, -1):
            groups = domain_slots(level, all_hosts)
            fitting = [(total(v), k) for k, v in groups.items() if total(v) >= need]
            if fitting:
                _, key = min(fitting)
                chosen, start_level = groups[key], level + 1
                break
            if req is not None and level == req:
                best = max((total(v) for v in groups.values()), default=0)
                return _finish(self.name, snapshot, gang, [], need, t, True,
                               f"gang {gang.name}: no {topo.levels[req].name} has {need} pod slots (best: {best})")
        if chosen is None:
            if total(all_hosts) < need:
                return _finish(self.name, snapshot, gang, [], need, t, True)
            chosen, start_level = all_hosts, 0

        # phase 2b: descend, most slots first; the last child is the smallest that covers the rest (BestFit)
        def descend(hosts: list[str], level: int, count: int) -> list[tuple[str, int]]:
            if level >= nlevels:
                out, left = [], count
                ordered = sorted(hosts, key=lambda h: (-host_slots[h], h))
                while left > 0 and ordered:
                    fit = [h for h in ordered if host_slots[h] >= left]
                    h = min(fit, key=lambda x: (host_slots[x], x)) if fit else ordered[0]
                    take = min(left, host_slots[h])
                    out.append((h, take))
                    left -= take
                    ordered.remove(h)
                return out
            groups = domain_slots(level, hosts)
            ordered = sorted(groups, key=lambda k: (-total(groups[k]), k))
            out, left = [], count
            while left > 0 and ordered:
                fit = [k for k in ordered if total(groups[k]) >= left]
                k = min(fit, key=lambda x: (total(groups[x]), x)) if fit else ordered[0]
                take = min(left, total(groups[k]))
                out += descend(groups[k], level + 1, take)
                left -= take
                ordered.remove(k)
            return out

        per_host = descend(chosen, start_level, need)
        # Assign the gang's pods to the chosen slots, checking real fit (slots used the largest shape: safe).
        pods = _pods(gang)
        placed: list[Assignment] = []
        for h, n in per_host:
            for _ in range(n):
                ri, i = pods.pop(0)
                placed.append(Assignment(gang.roles[ri].name, i, h))
        return _finish(self.name, snapshot, gang, placed, len(pods), t, True)


class TopologyPlacement:
    """kube-scheduler 1.36+ TopologyPlacement style: one domain per gang at the required level, best by
    MostAllocated; without a required level the whole cluster is the one candidate."""

    name = "topology-placement"
    gang_aware = True  # all or nothing, required topology honoured

    def place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        t = time.perf_counter()
        topo = snapshot.topology
        if gang.required_level is None:
            candidates = {(): sorted(snapshot.hosts)}
        else:
            req = topo.level_index(gang.required_level)
            candidates = {k: v for k, v in topo.domains(req).items()}
        best: tuple[float, tuple, list[Assignment]] | None = None
        for key, hosts in sorted(candidates.items()):
            placed, missing = _pod_by_pod(snapshot, gang, hosts, lambda h, f: (_alloc_share(snapshot, h, f), h))
            if missing:
                continue
            # placement score: MostAllocated over the domain after placing the gang
            gpus = sum(snapshot.hosts[h].gpus for h in hosts) or 1
            after = sum(snapshot.hosts[h].gpus - snapshot.hosts[h].free_gpus for h in hosts) + gang.gpu_count
            score = after / gpus
            if best is None or (score, key) > (best[0], best[1]):
                best = (score, key, placed)
        if best is None:
            return _finish(self.name, snapshot, gang, [], gang.pod_count, t, True,
                           f"gang {gang.name}: no candidate placement holds all {gang.pod_count} pods")
        return _finish(self.name, snapshot, gang, best[2], 0, t, True)


def all_policies(seed: int = 0, engine_options=None) -> list:
    """Clique's engine first, then every baseline."""
    from scheduler.placement.engine import CliqueEngine

    return [CliqueEngine(engine_options), KueueBestFit(), TopologyPlacement(), MostAllocated(), DefaultSpread(),
            RandomFit(seed)]

