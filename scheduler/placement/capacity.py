"""Phase 1 of placement: what each host and domain can hold for a gang, and lower bounds on topology cost. Pure.

"Slots" of a role on a host = how many of its pods fit there alone (all four resources, one-per-host caps at 1).
A domain's slots are its hosts' slots summed. `cover(values, need)` = the fewest domains whose values add up
to `need` (largest first), which is exact for one role and a valid lower bound for several.

Cost vectors are tuples: domains used per level, outermost first, then hosts used. They compare
lexicographically: fewer zones beats anything below it, then fewer spines, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from scheduler.placement.types import Gang, Role, Snapshot
from topology.model import DomainKey, Topology

Resources = tuple[int, int, int, int]  # gpus, cpu_millis, memory bytes, pod slots


def slots(free: Resources, role: Role) -> int:
    """How many pods of `role` fit into `free` on their own."""
    fit = min((f // r for f, r in zip(free, role.request) if r > 0), default=0)
    return min(fit, 1) if role.one_per_host else fit


def fits(free: Resources, request: Resources) -> bool:
    return all(f >= r for f, r in zip(free, request))


def sub(free: Resources, request: Resources) -> Resources:
    return (free[0] - request[0], free[1] - request[1], free[2] - request[2], free[3] - request[3])


class _Rows(Mapping):
    """A read-only host -> value view over one row of an array per host, limited to candidate hosts. The
    engine reads it host by host only for the few hosts it actually tries."""

    def __init__(self, topo: Topology, mask: np.ndarray, arr: np.ndarray, scalar: bool = False) -> None:
        self._topo, self._mask, self._arr, self._scalar = topo, mask, arr, scalar

    def __getitem__(self, host: str):
        i = self._topo.host_row.get(host)
        if i is None or not self._mask[i]:
            raise KeyError(host)
        return int(self._arr[i]) if self._scalar else tuple(int(x) for x in self._arr[i])

    def many(self, hosts: Sequence[str]) -> dict:
        """{host: value} for these hosts in one array read. The caller passes candidates only (hosts of the
        candidate domains); unlike `self[host]` this does not check."""
        row = self._topo.host_row
        vals = self._arr[[row[h] for h in hosts]].tolist()
        return dict(zip(hosts, vals)) if self._scalar else {h: tuple(v) for h, v in zip(hosts, vals)}

    def __contains__(self, host: object) -> bool:
        i = self._topo.host_row.get(host)  # type: ignore[arg-type]
        return i is not None and bool(self._mask[i])

    def __iter__(self) -> Iterator[str]:
        names = self._topo.host_names
        return (names[i] for i in np.flatnonzero(self._mask))

    def __len__(self) -> int:
        return int(self._mask.sum())


@dataclass
class GangCapacity:
    """Phase 1 result for one gang: per-host free resources, slots per role and pod capacity, as arrays in the
    topology's row order, with host-keyed views for the parts of the engine that walk a few hosts."""

    topo: Topology
    free_matrix: np.ndarray  # hosts x 4
    slot_matrix: np.ndarray  # hosts x roles
    pods_vec: np.ndarray  # hosts: gang pods a host could take (pod slots and role slots)
    rows: np.ndarray  # candidate rows (a slot for some role), ascending
    free: Mapping[str, Resources] = field(init=False)
    slots: Mapping[str, tuple[int, ...]] = field(init=False)
    pods: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        mask = np.zeros(len(self.topo.host_names), dtype=bool)
        mask[self.rows] = True
        self.free = _Rows(self.topo, mask, self.free_matrix)
        self.slots = _Rows(self.topo, mask, self.slot_matrix)
        self.pods = _Rows(self.topo, mask, self.pods_vec, scalar=True)

    def host_rows(self, hosts: Iterable[str] | np.ndarray | None) -> np.ndarray:
        if hosts is None:
            return self.rows
        if isinstance(hosts, np.ndarray):
            return hosts
        row = self.topo.host_row
        return np.fromiter((row[h] for h in hosts if h in self.slots), dtype=np.int64)

    def domain_slots(self, snapshot: Snapshot, level: int, hosts: Iterable[str] | None = None
                     ) -> dict[DomainKey, list[int]]:
        """Slots per role summed over each domain at `level` (only domains with any slot)."""
        rows = self.host_rows(hosts)
        codes = self.topo.level_codes[level][rows]
        keys = self.topo.level_domains[level]
        out: dict[DomainKey, list[int]] = {}
        sums = [np.bincount(codes, weights=self.slot_matrix[rows, i], minlength=len(keys))
                for i in range(self.slot_matrix.shape[1])]
        for code in np.unique(codes):
            out[keys[code]] = [int(s[code]) for s in sums]
        return out


def gang_capacity(snapshot: Snapshot, gang: Gang) -> GangCapacity:
    """Phase 1: free resources and per-role slots of every host, vectorised; candidates = hosts with a slot."""
    topo = snapshot.topology
    free = snapshot.free_matrix
    n = free.shape[0]
    slot_matrix = np.zeros((n, len(gang.roles)), dtype=np.int64)
    for i, role in enumerate(gang.roles):
        req = np.array(role.request, dtype=np.int64)
        dims = req > 0
        q = (free[:, dims] // req[dims]).min(axis=1)
        slot_matrix[:, i] = np.minimum(q, 1) if role.one_per_host else q
    slot_matrix[free[:, 3] <= 0] = 0
    pods_vec = np.minimum(free[:, 3], slot_matrix.sum(axis=1))
    return GangCapacity(topo, free, slot_matrix, pods_vec, np.flatnonzero(pods_vec > 0))


@dataclass
class DomainTotals:
    """What a domain can hold for one gang: slots per role, free GPUs, free pod slots (candidate hosts only)."""

    slots: list[int]
    gpus: int = 0
    pods: int = 0
    rows: np.ndarray | None = None  # candidate host rows, ascending
    untouched: int = 0  # hosts with nothing on them yet
    topo: Topology | None = None

    @property
    def hosts(self) -> list[str]:
        names = self.topo.host_names  # type: ignore[union-attr]
        return [names[i] for i in self.rows]  # type: ignore[union-attr]

    @property
    def all_untouched(self) -> bool:
        return self.untouched == len(self.rows if self.rows is not None else ())

    def may_hold(self, gang: Gang) -> bool:
        """Necessary (not sufficient) condition for the whole gang to fit in this domain."""
        return (all(s >= r.pods for s, r in zip(self.slots, gang.roles)) and self.gpus >= gang.gpu_count
                and self.pods >= gang.pod_count)


@dataclass
class LevelTotals:
    """Domains of one level as arrays, in key order (the topology numbers domains so). A DomainTotals object is
    built only for the domains asked for: at 5,000 hosts a level has hundreds of candidates, the engine tries a
    few."""

    keys: list[DomainKey]
    slots: np.ndarray  # domains x roles
    gpus: np.ndarray
    pods: np.ndarray
    untouched: np.ndarray  # untouched candidate hosts per domain
    counts: np.ndarray  # candidate hosts per domain
    rows: np.ndarray  # candidate rows of every domain here, grouped by domain, ascending inside each
    starts: np.ndarray  # domain j's rows are rows[starts[j]:starts[j + 1]]
    topo: Topology

    def __len__(self) -> int:
        return len(self.keys)

    def domain(self, j: int) -> DomainTotals:
        a, b = int(self.starts[j]), int(self.starts[j + 1])
        return DomainTotals(self.slots[j].tolist(), int(self.gpus[j]), int(self.pods[j]), self.rows[a:b],
                            int(self.untouched[j]), self.topo)

    def as_dict(self) -> dict[DomainKey, DomainTotals]:
        return {k: self.domain(j) for j, k in enumerate(self.keys)}


def domain_totals(snapshot: Snapshot, gang: Gang, cap: GangCapacity, candidates_only: bool = False
                  ) -> list[dict[DomainKey, DomainTotals]]:
    """Totals per domain at every level (outermost first); see `level_totals`."""
    return [level_totals(snapshot, gang, cap, lv, candidates_only).as_dict()
            for lv in range(len(snapshot.topology.levels))]


def level_totals(snapshot: Snapshot, gang: Gang, cap: GangCapacity, lv: int, candidates_only: bool = False
                 ) -> LevelTotals:
    """Totals per domain at one level, vectorised: candidate rows grouped by domain code, sums by reduceat.
    Level -1 is the whole cluster as one domain (key ()). With `candidates_only`, only domains that may hold
    the whole gang (checked on the arrays) are kept."""
    topo = snapshot.topology
    rows = cap.rows
    if len(rows) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return LevelTotals([], np.zeros((0, len(gang.roles)), np.int64), empty, empty, empty, empty, empty,
                           np.zeros(1, np.int64), topo)
    codes = topo.level_codes[lv][rows] if lv >= 0 else np.zeros(len(rows), dtype=np.int64)
    order = np.argsort(codes, kind="stable")  # stable: rows stay ascending inside each domain
    sorted_codes = codes[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_codes)) + 1))
    counts = np.diff(np.append(starts, len(order)))
    dom_codes = sorted_codes[starts]
    slot_sums = np.add.reduceat(cap.slot_matrix[rows][order], starts, axis=0)
    gpu_sums = np.add.reduceat(cap.free_matrix[rows, 0][order], starts)
    pod_sums = np.add.reduceat(cap.pods_vec[rows][order], starts)
    un_sums = np.add.reduceat(snapshot.untouched_vector[rows][order].astype(np.int64), starts)
    rows_sorted = rows[order]
    if candidates_only:
        need = np.array([r.pods for r in gang.roles], dtype=np.int64)
        keep = np.flatnonzero((slot_sums >= need).all(axis=1) & (gpu_sums >= gang.gpu_count)
                              & (pod_sums >= gang.pod_count))
        if len(keep) < len(starts):
            member = np.repeat(np.isin(np.arange(len(starts)), keep), counts)
            rows_sorted = rows_sorted[member]
            dom_codes, counts = dom_codes[keep], counts[keep]
            slot_sums, gpu_sums, pod_sums, un_sums = slot_sums[keep], gpu_sums[keep], pod_sums[keep], un_sums[keep]
    keys = topo.level_domains[lv] if lv >= 0 else [()]
    bounds = np.concatenate(([0], np.cumsum(counts)))
    return LevelTotals([keys[c] for c in dom_codes.tolist()], slot_sums, gpu_sums, pod_sums, un_sums, counts,
                       rows_sorted, bounds, topo)


def cover(values: np.ndarray, need: int) -> int | None:
    """Fewest values (largest first) adding up to at least `need`; None if all of them fall short."""
    if need <= 0:
        return 0
    v = np.sort(values[values > 0])[::-1]
    cs = np.cumsum(v)
    if len(cs) == 0 or cs[-1] < need:
        return None
    return int(np.searchsorted(cs, need)) + 1


def lower_bound(snapshot: Snapshot, gang: Gang, cap: GangCapacity, hosts: Sequence[str] | np.ndarray,
                scope_level: int) -> tuple[int, ...] | None:
    """Componentwise lower bound on the cost vector of any placement of `gang` on `hosts`.

    Levels at or above `scope_level` (all hosts share one domain there) count 1. None means infeasible:
    some role, or the gang's GPUs or pods, cannot be covered by these hosts at all.
    """
    topo = snapshot.topology
    nlevels = len(topo.levels)
    rows = cap.host_rows(hosts)
    S, G, P = cap.slot_matrix[rows], cap.free_matrix[rows, 0], cap.pods_vec[rows]
    bound: list[int] = []
    for level in range(nlevels + 1):  # the last "level" is the hosts themselves
        if level <= scope_level:
            bound.append(1)
            continue
        if level == nlevels:
            per_role = [S[:, i] for i in range(len(gang.roles))]
            gpus, pods = G, P
        else:
            _, inv = np.unique(topo.level_codes[level][rows], return_inverse=True)
            per_role = [np.bincount(inv, weights=S[:, i]) for i in range(len(gang.roles))]
            gpus, pods = np.bincount(inv, weights=G), np.bincount(inv, weights=P)
        counts = [cover(per_role[i], r.pods) for i, r in enumerate(gang.roles)]
        counts.append(cover(gpus, gang.gpu_count) if gang.gpu_count else 1)
        counts.append(cover(pods, gang.pod_count))
        if any(c is None for c in counts):
            return None
        bound.append(max(1, *[c for c in counts if c is not None]))
    return tuple(bound)


def cost_vector(snapshot: Snapshot, hosts: Iterable[str]) -> tuple[int, ...]:
    """Domains used per level (outermost first), then hosts used."""
    used = set(hosts)
    return (*snapshot.topology.domains_used(used), len(used))
