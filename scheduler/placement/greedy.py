"""Clique's hierarchical greedy fill: the fast path, the upper bound for the exact search, and its fallback. Pure.

At each level below the scope, from the outside in:
  - if one child domain can hold every remaining pod, take the best-fitting one (least free GPUs, and a
    partly used one before an untouched one) and descend into it;
  - otherwise take the child that can hold the most remaining pods, fill it, and repeat with what is left.
At the host level the same rule picks hosts. Pods are placed largest request first. The result is exact
for most single-role gangs; the engine checks it against a lower bound and calls CP-SAT when it falls short.
"""

from __future__ import annotations

from typing import Sequence

from scheduler.placement.capacity import GangCapacity, Resources, fits, sub
from scheduler.placement.types import Assignment, Gang, Snapshot

Pod = tuple[int, int]  # (role index, pod index)
MAX_SINGLE_TRIES = 4  # single-child candidates tried (best fit first) before splitting the remainder


class _Fill:
    def __init__(self, snapshot: Snapshot, gang: Gang, cap: GangCapacity) -> None:
        self.topo = snapshot.topology
        self.nlevels = len(self.topo.levels)
        self.gang = gang
        self.requests: list[Resources] = [r.request for r in gang.roles]
        self.one_per_host = [r.one_per_host for r in gang.roles]
        self.cap = cap
        # "untouched" = nothing used yet: keep those whole for big gangs, so prefer partly used ones.
        self.untouched = snapshot.untouched

    # ---------------------------------------------------------------- hosts
    def host_take(self, host: str, pods: Sequence[Pod], free: Resources) -> list[Pod]:
        """Pods (in order) that fit on `host` together, greedily."""
        taken: list[Pod] = []
        seen_roles: set[int] = set()
        for pod in pods:
            r = pod[0]
            if self.one_per_host[r] and r in seen_roles:
                continue
            if fits(free, self.requests[r]):
                free = sub(free, self.requests[r])
                taken.append(pod)
                seen_roles.add(r)
        return taken

    def fill_hosts(self, hosts: Sequence[str], pods: list[Pod]) -> tuple[list[tuple[Pod, str]], list[Pod]]:
        """First-fit-decreasing onto hosts: each pod (largest first) goes to the best-fitting host the gang
        already uses; a new host is one that can take every pod still to come if there is one (best fit
        among those), else the emptiest. Fewer hosts first, then tight packing."""
        free = self.cap.free.many(hosts)  # type: ignore[attr-defined]
        opened: list[str] = []
        roles_on: dict[str, set[int]] = {}
        placed: list[tuple[Pod, str]] = []
        left: list[Pod] = []
        for idx, pod in enumerate(pods):
            r = pod[0]
            req = self.requests[r]

            def ok(h: str) -> bool:
                return fits(free[h], req) and not (self.one_per_host[r] and r in roles_on.get(h, ()))

            cands = [h for h in opened if ok(h)]
            if cands:
                h = min(cands, key=lambda x: (free[x][0], x))
            else:
                rest = pods[idx:]
                fresh = [h for h in hosts if h not in roles_on and ok(h)]
                if not fresh:
                    left.append(pod)
                    continue
                if len(self.requests) == 1:  # one role: a fresh host takes min(its slots, what is left)
                    slots = self.cap.slots.many(fresh)  # type: ignore[attr-defined]
                    takes = {h: min(slots[h][0], len(rest)) for h in fresh}
                else:
                    takes = {h: len(self.host_take(h, rest, free[h])) for h in fresh}
                closers = [h for h in fresh if takes[h] == len(rest)]
                if closers:
                    # best fit on GPUs; ties go to the host with the least CPU and memory left, which keeps
                    # the big hosts whole for the pods that need them
                    h = min(closers, key=lambda x: (free[x][0], self.untouched[x], free[x][1], free[x][2], x))
                else:
                    h = max(fresh, key=lambda x: (takes[x], -self.untouched[x], -free[x][0], x))
                opened.append(h)
            free[h] = sub(free[h], req)
            roles_on.setdefault(h, set()).add(r)
            placed.append((pod, h))
        return placed, left

    # ---------------------------------------------------------------- domains
    def capacity(self, hosts: Sequence[str], pods: list[Pod]) -> int:
        """Quick upper estimate of how many of `pods` fit in a group of hosts (slot sums per role)."""
        need: dict[int, int] = {}
        for r, _ in pods:
            need[r] = need.get(r, 0) + 1
        total = 0
        for r, n in need.items():
            total += min(n, sum(self.cap.slots[h][r] for h in hosts))
        return total

    def fill(self, hosts: Sequence[str], level: int, pods: list[Pod]) -> tuple[list[tuple[Pod, str]], list[Pod]]:
        if level >= self.nlevels:
            return self.fill_hosts(hosts, pods)
        # phase a: the innermost level where one domain can hold every pod; best fit among those domains
        for lv in range(self.nlevels - 1, level - 1, -1):
            groups = self._groups(hosts, lv)
            whole = [k for k, v in groups.items() if self.capacity(v, pods) >= len(pods)]
            whole.sort(key=lambda k: (self._free_gpus(groups[k]), self._untouched(groups[k]),
                                      self._free_other(groups[k]), k))
            for k in whole[:MAX_SINGLE_TRIES]:
                got, left = self.fill(groups[k], lv + 1, pods)
                if not left:
                    return got, []
        # phase b: no single child holds them all: largest child first, then again with the rest
        children = self._groups(hosts, level)
        placed: list[tuple[Pod, str]] = []
        remaining = pods
        while remaining and children:
            caps = {k: self.capacity(v, remaining) for k, v in children.items()}
            key = max(children, key=lambda k: (caps[k], -self._free_gpus(children[k]), k))
            if caps[key] == 0:
                break
            got, remaining = self.fill(children.pop(key), level + 1, remaining)
            placed += got
            if remaining and children:
                # the rest may now fit one child: let phase a pick the best-fitting one
                rest_hosts = [h for v in children.values() for h in v]
                got, remaining = self.fill(rest_hosts, level, remaining)
                placed += got
                break
        return placed, remaining

    def _groups(self, hosts: Sequence[str], level: int) -> dict[tuple[str, ...], list[str]]:
        groups: dict[tuple[str, ...], list[str]] = {}
        for h in hosts:
            groups.setdefault(self.topo.host_paths[h][: level + 1], []).append(h)
        return groups

    def _free_gpus(self, hosts: Sequence[str]) -> int:
        return sum(self.cap.free[h][0] for h in hosts)

    def _free_other(self, hosts: Sequence[str]) -> tuple[int, int]:
        return (sum(self.cap.free[h][1] for h in hosts), sum(self.cap.free[h][2] for h in hosts))

    def _untouched(self, hosts: Sequence[str]) -> bool:
        return all(self.untouched[h] for h in hosts)


def greedy_fill(snapshot: Snapshot, gang: Gang, cap: GangCapacity, hosts: Sequence[str],
                start_level: int) -> list[Assignment] | None:
    """Place every pod of `gang` on `hosts` (which share one domain above `start_level`), or None."""
    pods: list[Pod] = [(ri, i) for ri, r in enumerate(gang.roles) for i in range(r.pods)]
    # Largest request first: big pods are the hard ones to fit.
    pods.sort(key=lambda p: (tuple(-x for x in gang.roles[p[0]].request), p))
    placed, left = _Fill(snapshot, gang, cap).fill(list(hosts), start_level, pods)
    if left:
        return None
    return sorted((Assignment(gang.roles[r].name, i, h) for (r, i), h in placed), key=lambda a: (a.role, a.index))
