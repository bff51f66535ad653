"""Exact placement with OR-Tools CP-SAT over one scope (a domain at the required level, or the cluster). Pure.

Model, by role (PyJobShop-style):
  variables   z[c, p]  hosts of class c that take pattern p (p = pods per role on one host)
              y[l, d]  domain d of level l is used;  used[c]  some host of class c is used
  constraints every pod placed exactly once (sum of z * p = pods per role); a class has `count` hosts;
              a used class marks its domains used at every level
  objective   lexicographic: domains per level, outermost first, then hosts (the topology cost), then
              affinity misses, then fragmentation (GPUs left idle on touched hosts, untouched hosts and
              domains broken into)

Hosts in the same innermost domain with the same free resources are interchangeable for one gang, so they
form a class with a count: the model grows with distinct host states, not with hosts. Patterns make
several roles per host exact (a leader and a worker sharing a host must fit together).
Determinism: one worker, fixed seed, and a deterministic-time budget (wall time only as a safety net).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Sequence

from scheduler.placement import cpsat  # OR-Tools' cp_model API without its pandas import
from scheduler.placement.capacity import GangCapacity, Resources, fits
from scheduler.placement.types import Assignment, Gang, Snapshot


@dataclass(frozen=True)
class ExactResult:
    assignments: list[Assignment] | None  # None: infeasible, or nothing found in time
    cost: tuple[int, ...] | None
    optimal: bool  # CP-SAT proved optimality
    wall_ms: float
    status: str


@dataclass
class _Class:
    hosts: list[str]
    free: Resources
    path: tuple[str, ...]
    untouched: bool


def _patterns(free: Resources, gang: Gang, host_slots: tuple[int, ...]) -> list[tuple[int, ...]]:
    ranges = [range(0, s + 1) for s in host_slots]
    out = []
    for p in itertools.product(*ranges):
        if not any(p):
            continue
        need = tuple(sum(n * r.request[d] for n, r in zip(p, gang.roles)) for d in range(4))
        if fits(free, need):
            out.append(p)
    return out


def solve_exact(snapshot: Snapshot, gang: Gang, cap: GangCapacity, hosts: Sequence[str],
                affinity_domains: set[tuple[str, ...]] | None = None, affinity_level: int | None = None,
                time_budget_s: float | None = 0.05, upper_bound: tuple[int, ...] | None = None,
                wall_clock_factor: float | None = 2.0) -> ExactResult:
    """Optimal placement of `gang` on `hosts`; `time_budget_s=None` means no limit (reference optimum);
    `wall_clock_factor`: the wall-clock limit as a multiple of the budget (None: none, fully deterministic)."""
    started = time.perf_counter()
    topo = snapshot.topology
    nlevels = len(topo.levels)
    # phase a: classes of interchangeable hosts
    classes: dict[tuple, _Class] = {}
    for h in hosts:
        state = snapshot.hosts[h]
        untouched = state.gpus_used == 0 and state.pods_used == 0
        key = (topo.host_paths[h], cap.free[h], untouched)
        c = classes.get(key)
        if c is None:
            classes[key] = _Class([h], cap.free[h], topo.host_paths[h], untouched)
        else:
            c.hosts.append(h)
    cls = list(classes.values())

    m = cpsat.CpModel()
    # phase b: variables
    z: dict[tuple[int, tuple[int, ...]], cpsat.IntVar] = {}
    used: list[cpsat.IntVar] = []
    for ci, c in enumerate(cls):
        pats = _patterns(c.free, gang, cap.slots[c.hosts[0]])
        for p in pats:
            z[ci, p] = m.new_int_var(0, len(c.hosts), f"z_{ci}_{'_'.join(map(str, p))}")
        used.append(m.new_bool_var(f"used_{ci}"))
    domain_vars: list[dict[tuple[str, ...], cpsat.IntVar]] = [{} for _ in range(nlevels)]
    for c in cls:
        for lv in range(nlevels):
            key = c.path[: lv + 1]
            if key not in domain_vars[lv]:
                domain_vars[lv][key] = m.new_bool_var(f"y_{lv}_{len(domain_vars[lv])}")

    # phase c: constraints
    for ri, role in enumerate(gang.roles):
        m.add(sum(v * p[ri] for (ci, p), v in z.items()) == role.pods)
    by_class: dict[int, list[cpsat.IntVar]] = {}
    for (ci, _), v in z.items():
        by_class.setdefault(ci, []).append(v)
    hosts_used_terms = []
    for ci, c in enumerate(cls):
        vs = by_class.get(ci, [])
        total = sum(vs) if vs else 0
        m.add(total <= len(c.hosts))
        if vs:
            m.add(total >= 1).only_enforce_if(used[ci])
            m.add(total == 0).only_enforce_if(~used[ci])
            hosts_used_terms.append(total)
        else:
            m.add(used[ci] == 0)
        for lv in range(nlevels):
            m.add_implication(used[ci], domain_vars[lv][c.path[: lv + 1]])
    # A domain counts as used only if a class under it is.
    for lv in range(nlevels):
        members: dict[tuple[str, ...], list[int]] = {}
        for ci, c in enumerate(cls):
            members.setdefault(c.path[: lv + 1], []).append(ci)
        for key, var in domain_vars[lv].items():
            m.add_bool_or([used[ci] for ci in members[key]]).only_enforce_if(var)

    # phase d: objective (lexicographic by weights)
    n_levels = [sum(domain_vars[lv].values()) for lv in range(nlevels)]
    n_hosts = sum(hosts_used_terms)
    # fragmentation: idle GPUs left on touched hosts + breaking untouched hosts and domains
    frag_terms = []
    frag_max = 0
    for (ci, p), v in z.items():
        c = cls[ci]
        pod_gpus = sum(n * r.gpus for n, r in zip(p, gang.roles))
        left = c.free[0] - pod_gpus + (8 if c.untouched else 0)
        frag_terms.append(v * left)
        frag_max += len(c.hosts) * max(left, 0)
    untouched_domains = []
    for lv in range(nlevels):
        for key, var in domain_vars[lv].items():
            if all(cl.untouched for cl in cls if cl.path[: lv + 1] == key):
                untouched_domains.append(var * 4)
                frag_max += 4
    frag = sum(frag_terms) + sum(untouched_domains)
    aff = 0
    aff_max = 0
    if affinity_domains is not None and affinity_level is not None:
        misses = [v for key, v in domain_vars[affinity_level].items() if key not in affinity_domains]
        aff = sum(misses) if misses else 0
        aff_max = len(misses)
    base = gang.pod_count + 1
    w_frag = 1
    w_aff = frag_max + 1
    w_host = w_aff * (aff_max + 1)
    weights = [w_host * base ** (nlevels - lv) for lv in range(nlevels)]
    m.minimize(sum(w * n for w, n in zip(weights, n_levels)) + w_host * n_hosts + w_aff * aff + w_frag * frag)
    if upper_bound is not None:  # nothing worse than the greedy plan's topology cost is of interest
        m.add(sum(w * n for w, n in zip(weights, n_levels)) + w_host * n_hosts
              <= sum(w * n for w, n in zip(weights, upper_bound[:-1])) + w_host * upper_bound[-1])

    # phase e: solve
    solver = cpsat.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    if time_budget_s is not None:
        # Deterministic time is CP-SAT's own work measure (about seconds on a fast core): same input, same answer.
        solver.parameters.max_deterministic_time = time_budget_s
        # Wall-clock safety net for a loaded machine; when it is what stops the search, the plan says
        # "greedy-fallback" (and is then not guaranteed to repeat exactly).
        if wall_clock_factor is not None:
            solver.parameters.max_time_in_seconds = wall_clock_factor * time_budget_s
    status = solver.solve(m)
    wall_ms = (time.perf_counter() - started) * 1000
    name = solver.status_name(status)
    if status not in (cpsat.OPTIMAL, cpsat.FEASIBLE):
        return ExactResult(None, None, status == cpsat.INFEASIBLE, wall_ms, name)

    # phase f: read the plan back, hosts of a class in name order
    pods_left = {r.name: list(range(r.pods)) for r in gang.roles}
    out: list[Assignment] = []
    for ci, c in enumerate(cls):
        free_hosts = iter(sorted(c.hosts))
        for p in sorted((p for (cj, p) in z if cj == ci), reverse=True):
            for _ in range(solver.value(z[ci, p])):
                h = next(free_hosts)
                for ri, n in enumerate(p):
                    role = gang.roles[ri].name
                    for _ in range(n):
                        out.append(Assignment(role, pods_left[role].pop(0), h))
    out.sort(key=lambda a: (a.role, a.index))
    cost = (*topo.domains_used({a.host for a in out}), len({a.host for a in out}))
    return ExactResult(out, cost, status == cpsat.OPTIMAL, wall_ms, name)
