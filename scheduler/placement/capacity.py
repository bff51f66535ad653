"""Phase 1 of placement: what each host and domain can hold for a gang, and lower bounds on topology cost. Pure.

"Slots" of a role on a host = how many of its pods fit there alone (all four resources, one-per-host caps at 1).
A domain's slots are its hosts' slots summed. `cover(values, need)` = the fewest domains whose values add up
to `need` (largest first), which is exact for one role and a valid lower bound for several.

Cost vectors are tuples: domains used per level, outermost first, then hosts used. They compare
lexicographically: fewer zones beats anything below it, then fewer spines, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from scheduler.placement.types import Gang, Role, Snapshot
from topology.model import DomainKey

Resources = tuple[int, int, int, int]  # gpus, cpu_millis, memory bytes, pod slots


def slots(free: Resources, role: Role) -> int:
    """How many pods of `role` fit into `free` on their own."""
    fit = min((f // r for f, r in zip(free, role.request) if r > 0), default=0)
    return min(fit, 1) if role.one_per_host else fit


def fits(free: Resources, request: Resources) -> bool:
    return all(f >= r for f, r in zip(free, request))


def sub(free: Resources, request: Resources) -> Resources:
    return (free[0] - request[0], free[1] - request[1], free[2] - request[2], free[3] - request[3])


def cover(values: Iterable[int], need: int) -> int | None:
    """Fewest values (largest first) that add up to at least `need`; None if all of them fall short."""
    if need <= 0:
        return 0
    total, count = 0, 0
    for v in sorted(values, reverse=True):
        if v <= 0:
            break
        total += v
        count += 1
        if total >= need:
            return count
    return None


@dataclass
class GangCapacity:
    """Per-host free resources and slots for one gang over a set of candidate hosts (phase 1 result)."""

    free: dict[str, Resources]  # host -> free resources (only hosts with a slot for some role)
    slots: dict[str, tuple[int, ...]]  # host -> slots per role
    pods: dict[str, int] = field(default_factory=dict)  # host -> gang pods it could take (pod slots, role slots)

    def domain_slots(self, snapshot: Snapshot, level: int, hosts: Iterable[str] | None = None
                     ) -> dict[DomainKey, list[int]]:
        """Slots per role summed over each domain at `level` (only domains with any slot)."""
        topo = snapshot.topology
        out: dict[DomainKey, list[int]] = {}
        for h in (self.slots if hosts is None else hosts):
            s = self.slots.get(h)
            if s is None:
                continue
            acc = out.setdefault(topo.domain(h, level), [0] * len(s))
            for i, v in enumerate(s):
                acc[i] += v
        return out

    def domain_free_gpus(self, snapshot: Snapshot, level: int, hosts: Iterable[str] | None = None
                         ) -> dict[DomainKey, int]:
        topo = snapshot.topology
        out: dict[DomainKey, int] = {}
        for h in (self.free if hosts is None else hosts):
            if h in self.free:
                key = topo.domain(h, level)
                out[key] = out.get(key, 0) + self.free[h][0]
        return out


def gang_capacity(snapshot: Snapshot, gang: Gang, hosts: Iterable[str] | None = None) -> GangCapacity:
    """Phase 1: free resources and per-role slots of every host that can take at least one pod of the gang.

    Hosts with equal free resources have equal slots, so slots are computed once per distinct free vector.
    """
    free: dict[str, Resources] = {}
    slot_map: dict[str, tuple[int, ...]] = {}
    pod_map: dict[str, int] = {}
    memo: dict[Resources, tuple[tuple[int, ...], int]] = {}
    roles = gang.roles
    all_free = snapshot.free_vectors
    for name in (all_free if hosts is None else hosts):
        f = all_free[name]
        m = memo.get(f)
        if m is None:
            s = tuple(slots(f, r) for r in roles) if f[3] > 0 else ()
            m = memo[f] = (s, min(f[3], sum(s)) if s else 0)
        if m[1]:
            free[name] = f
            slot_map[name] = m[0]
            pod_map[name] = m[1]
    return GangCapacity(free, slot_map, pod_map)


@dataclass
class DomainTotals:
    """What a domain can hold for one gang: slots per role, free GPUs, free pod slots (candidate hosts only)."""

    slots: list[int]
    gpus: int = 0
    pods: int = 0
    hosts: list[str] | None = None
    untouched: int = 0  # hosts with nothing on them yet

    @property
    def all_untouched(self) -> bool:
        return self.untouched == len(self.hosts or ())

    def may_hold(self, gang: Gang) -> bool:
        """Necessary (not sufficient) condition for the whole gang to fit in this domain."""
        return (all(s >= r.pods for s, r in zip(self.slots, gang.roles)) and self.gpus >= gang.gpu_count
                and self.pods >= gang.pod_count)


def domain_totals(snapshot: Snapshot, gang: Gang, cap: GangCapacity) -> list[dict[DomainKey, DomainTotals]]:
    """Totals per domain at every level (outermost first): the innermost domains from the topology's own host
    groups (comprehensions, no per-host Python loop body), then rolled up level by level."""
    topo = snapshot.topology
    nlevels = len(topo.levels)
    nroles = len(gang.roles)
    out: list[dict[DomainKey, DomainTotals]] = [{} for _ in range(nlevels)]
    if nlevels == 0:
        return out
    slot_map, free, untouched = cap.slots, cap.free, snapshot.untouched
    inner = out[-1]
    for key, members in topo.domains(nlevels - 1).items():
        hs = [h for h in members if h in slot_map]
        if not hs:
            continue
        per_host = [slot_map[h] for h in hs]
        t = DomainTotals([sum(s[i] for s in per_host) for i in range(nroles)], hosts=hs)
        t.gpus = sum(free[h][0] for h in hs)
        t.pods = sum([cap.pods[h] for h in hs])
        t.untouched = sum([untouched[h] for h in hs])
        inner[key] = t
    for lv in range(nlevels - 2, -1, -1):
        level = out[lv]
        for key, child in out[lv + 1].items():
            t = level.get(key[: lv + 1])
            if t is None:
                t = level[key[: lv + 1]] = DomainTotals([0] * nroles, hosts=[])
            for i in range(nroles):
                t.slots[i] += child.slots[i]
            t.gpus += child.gpus
            t.pods += child.pods
            t.untouched += child.untouched
            t.hosts.extend(child.hosts)
    return out


def lower_bound(snapshot: Snapshot, gang: Gang, cap: GangCapacity, hosts: Sequence[str],
                scope_level: int) -> tuple[int, ...] | None:
    """Componentwise lower bound on the cost vector of any placement of `gang` on `hosts`.

    Levels at or above `scope_level` (all hosts share one domain there) count 1. None means infeasible:
    some role, or the gang's GPUs or pods, cannot be covered by these hosts at all.
    """
    nlevels = len(snapshot.topology.levels)
    gang_gpus, gang_pods = gang.gpu_count, gang.pod_count
    bound: list[int] = []
    for level in range(nlevels + 1):  # the last "level" is the hosts themselves
        if level <= scope_level:
            bound.append(1)
            continue
        if level == nlevels:
            per_role = [[cap.slots[h][i] for h in hosts] for i in range(len(gang.roles))]
            gpus = [cap.free[h][0] for h in hosts]
            pods = [cap.pods[h] for h in hosts]
        else:
            agg = cap.domain_slots(snapshot, level, hosts)
            per_role = [[v[i] for v in agg.values()] for i in range(len(gang.roles))]
            gpus = list(cap.domain_free_gpus(snapshot, level, hosts).values())
            pods = [sum(v) for v in agg.values()]
        counts = [cover(per_role[i], r.pods) for i, r in enumerate(gang.roles)]
        counts.append(cover(gpus, gang_gpus) if gang_gpus else 1)
        counts.append(cover(pods, gang_pods))
        if any(c is None for c in counts):
            return None
        bound.append(max(1, *[c for c in counts if c is not None]))
    return tuple(bound)


def cost_vector(snapshot: Snapshot, hosts: Iterable[str]) -> tuple[int, ...]:
    """Domains used per level (outermost first), then hosts used."""
    used = set(hosts)
    return (*snapshot.topology.domains_used(used), len(used))
