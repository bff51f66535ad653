"""Clique's placement engine: snapshot + gang -> plan or reason. Pure and deterministic.

    phase 1  capacity: free resources and per-role slots of every host that can take a pod of the gang
    phase 2  scope level: the innermost level (not above the required one) where one domain may hold the
             whole gang; its candidate domains are the scopes. The cost is lexicographic, so when one domain
             of that level can hold the gang, the optimum lies inside one. None at any level -> a reason
             naming the best domain and what it lacks
    phase 3  a lower bound on the topology cost per scope; greedy fills, best-fitting scope first
    phase 4  proof: a greedy plan that meets the smallest lower bound is optimal; otherwise CP-SAT searches
             the scopes whose bound beats the best plan so far, best bound first, within the time budget
    phase 5  the plan: assignments, cost vector, proof (lower bound / CP-SAT optimal / greedy fallback)

Topology cost is lexicographic: domains used per level, outermost first, then hosts. Among equal costs the
engine prefers the affinity domain, then partly used hosts and domains (least fragmentation).
A preferred level needs no rule of its own: the lexicographic cost fits the gang inside one domain of every
level where that is possible. `what_if` answers how many more replicas of a gang shape fit right now.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from scheduler.placement.capacity import (GangCapacity, LevelTotals, cost_vector, domain_totals, gang_capacity,
                                          level_totals, lower_bound)
from scheduler.placement.exact import solve_exact
from scheduler.placement.greedy import greedy_fill
from scheduler.placement.types import Assignment, Gang, Plan, PlanStatus, Proof, Snapshot


MAX_GREEDY_TRIES = 8  # candidate domains the greedy fill tries before CP-SAT takes over


@dataclass(frozen=True)
class EngineOptions:
    time_budget_s: float | None = 0.02  # CP-SAT deterministic-time budget per scope searched; None = no limit
    max_exact_scopes: int = 4  # scopes CP-SAT may search per request (best lower bound first)
    # CP-SAT's wall-clock safety net, as a multiple of the budget: on a starved CPU it stops a search before its
    # deterministic budget is spent (a served request must not wait); None = no net, strictly same input same answer
    wall_clock_factor: float | None = 2.0


class CliqueEngine:
    """The Clique placement policy: topology-optimal, all or nothing."""

    name = "clique"
    gang_aware = True  # all or nothing, required topology honoured

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()

    def place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        started = time.perf_counter()
        plan = self._place(snapshot, gang)
        return Plan(**{**plan.__dict__, "solve_ms": (time.perf_counter() - started) * 1000, "policy": self.name})

    # ------------------------------------------------------------------
    def _place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        topo = snapshot.topology
        problem = _validate(gang)
        if problem:
            return Plan(gang.name, PlanStatus.UNSCHEDULABLE, reason=problem)
        try:
            req_level = topo.level_index(gang.required_level) if gang.required_level else -1
            aff_level = topo.level_index(gang.affinity.level) if gang.affinity else None
        except KeyError as exc:
            return Plan(gang.name, PlanStatus.UNSCHEDULABLE, reason=str(exc.args[0]))
        affinity = None
        if gang.affinity and aff_level is not None:
            affinity = (aff_level, {topo.domain(h, aff_level) for h in gang.affinity.hosts if h in topo.host_paths})

        # phase 1
        cap = gang_capacity(snapshot, gang)
        # phase 2: the innermost level, not above the required one, where one domain may hold the whole gang.
        # The cost is lexicographic, so if one domain of that level can hold it, the optimum lies inside one.
        # Levels are totalled one at a time, innermost first: most gangs never need the outer ones.
        timed_out = False
        for level in range(len(topo.levels) - 1, req_level - 1, -1):
            # in key order, and only domains that may hold the gang (level -1: the whole cluster)
            cands = level_totals(snapshot, gang, cap, level, candidates_only=True)
            if not cands:
                continue
            plan, proven_empty = self._search(snapshot, gang, cap, level, cands, affinity)
            if plan is not None:
                return plan
            timed_out |= not proven_empty
            # every candidate at this level is proven unable to hold the gang: look one level further out
        if timed_out:
            return Plan(gang.name, PlanStatus.UNSCHEDULABLE,
                        reason=f"gang {gang.name}: no placement found within the time budget")
        return Plan(gang.name, PlanStatus.UNSCHEDULABLE,
                    reason=unschedulable_reason(snapshot, gang, cap, None if req_level < 0 else req_level))

    def _search(self, snapshot: Snapshot, gang: Gang, cap: GangCapacity, level: int,
                cands: LevelTotals, affinity: tuple[int, set] | None) -> tuple[Plan | None, bool]:
        """Phases 3-5 over candidate domains of one level. Returns (plan, proven that none exists)."""
        def aff_miss(key: tuple) -> int:
            # known up front when the affinity level is this level or above it
            if affinity is None or affinity[0] > level:
                return 0
            return 0 if key[: affinity[0] + 1] in affinity[1] else 1

        # phase 3: one lower bound valid for every scope (computed over all of them together: any scope's
        # hosts are a subset), then greedy fills, best fit first: affinity, least free GPUs, partly used first
        all_rows = cands.rows
        global_lb = lower_bound(snapshot, gang, cap, all_rows, level)
        if global_lb is None:
            return None, True
        if gang.pod_count == 1 and affinity is None:
            # One pod costs the same in every candidate domain, so choose the host, not a domain first: best fit
            # on GPUs, then the smaller host, partly used before untouched, the fullest innermost domain, the
            # least CPU and memory left. Choosing the fullest domain first pulled small pods onto big hosts
            # (measured on openb multigpu50: its 128-core hosts were used up and a big pod failed at 76%
            # allocation; with this order the first failure comes at 99.3%).
            fm = cap.free_matrix
            if topo_levels := len(snapshot.topology.levels):
                codes = snapshot.topology.level_codes[topo_levels - 1]
                dfree = np.bincount(codes, weights=snapshot.free_matrix[:, 0])[codes[all_rows]]
            else:
                dfree = np.zeros(len(all_rows))
            order = np.lexsort((all_rows, fm[all_rows, 2], fm[all_rows, 1], dfree,
                                snapshot.untouched_vector[all_rows], snapshot.topology.gpu_vector[all_rows],
                                fm[all_rows, 0]))
            host = snapshot.topology.host_names[int(all_rows[order[0]])]
            return self._plan(snapshot, gang, [Assignment(gang.roles[0].name, 0, host)], Proof.LOWER_BOUND), False
        # best fit first: affinity misses, free GPUs, partly used before untouched, then key (cands come in key
        # order, so a stable sort on the rest keeps it); arrays, as a level may have thousands of candidates
        n = len(cands)
        miss = (np.fromiter((aff_miss(k) for k in cands.keys), dtype=np.int64, count=n) if affinity
                else np.zeros(n, np.int64))
        whole = cands.untouched == cands.counts
        order = np.lexsort((np.arange(n), whole, cands.gpus, miss)).tolist()
        miss_l = miss.tolist()
        best_miss = miss_l[order[0]]
        best: tuple[tuple, list[Assignment]] | None = None
        for j in order[:MAX_GREEDY_TRIES]:
            if best is not None and miss_l[j] > best[0][1]:
                continue
            got = greedy_fill(snapshot, gang, cap, cands.domain(j).hosts, level + 1)
            if got is not None:
                rank = (cost_vector(snapshot, (a.host for a in got)), _affinity_misses(snapshot, got, affinity))
                if best is None or rank < best[0]:
                    best = (rank, got)
                if rank == (global_lb, best_miss):
                    return self._plan(snapshot, gang, got, Proof.LOWER_BOUND), False

        # phase 4: CP-SAT, best bound first (each scope's own bound now), while a bound can beat the incumbent
        bounded = []
        for j in order:
            t = cands.domain(j)
            lb = lower_bound(snapshot, gang, cap, t.rows, level)
            if lb is not None:
                bounded.append((lb, miss_l[j], cands.keys[j], t.hosts))
        bounded.sort(key=lambda b: b[:3])
        all_proven = True
        searched = 0
        for lb, miss, key, hosts in bounded:
            if best is not None and (lb, miss) >= best[0]:
                break  # sorted by bound: nothing later can do better
            if searched >= self.options.max_exact_scopes:
                all_proven = False
                break
            searched += 1
            res = solve_exact(snapshot, gang, cap, hosts, affinity[1] if affinity else None,
                              affinity[0] if affinity else None, self.options.time_budget_s,
                              upper_bound=best[0][0] if best else None,
                              wall_clock_factor=self.options.wall_clock_factor)
            all_proven &= res.optimal
            if res.assignments is not None:
                rank = (res.cost, _affinity_misses(snapshot, res.assignments, affinity))
                if best is None or rank < best[0]:
                    best = (rank, res.assignments)
        if best is None:
            return None, all_proven
        # phase 5: optimal if every scope that could beat the plan was searched to the end
        proof = Proof.CP_SAT_OPTIMAL if all_proven else Proof.GREEDY_FALLBACK
        note = "" if all_proven else "time budget ran out before optimality was proven"
        return self._plan(snapshot, gang, best[1], proof, note), False

    def _plan(self, snapshot: Snapshot, gang: Gang, assignments: list[Assignment], proof: Proof, note: str = "") -> Plan:
        return Plan(gang.name, PlanStatus.PLACED, tuple(assignments), reason=note,
                    cost=cost_vector(snapshot, (a.host for a in assignments)), proof=proof)

    # ------------------------------------------------------------------
    def what_if(self, snapshot: Snapshot, gang: Gang, limit: int = 64) -> int:
        """How many more replicas of this gang fit right now, one after another, honouring its topology."""
        count = 0
        while count < limit:
            plan = self.place(snapshot, gang)
            if not plan.placed:
                break
            snapshot = snapshot.apply(gang, plan)
            count += 1
        return count


def _affinity_misses(snapshot: Snapshot, assignments: list[Assignment], affinity: tuple[int, set] | None) -> int:
    """Domains at the affinity level used by the plan that hold none of the peer gang's hosts."""
    if affinity is None:
        return 0
    level, domains = affinity
    return len({snapshot.topology.domain(a.host, level) for a in assignments} - domains)


def _validate(gang: Gang) -> str:
    if not gang.roles:
        return f"gang {gang.name} has no roles; give at least one role with pods >= 1"
    for r in gang.roles:
        if r.pods < 1:
            return f"gang {gang.name}, role {r.name}: pods must be >= 1 (got {r.pods})"
        if min(r.gpus, r.cpu_millis, r.memory) < 0:
            return f"gang {gang.name}, role {r.name}: requests must not be negative"
    if len({r.name for r in gang.roles}) != len(gang.roles):
        return f"gang {gang.name}: role names must be unique"
    return ""


def unschedulable_reason(snapshot: Snapshot, gang: Gang, cap: GangCapacity, req_level: int | None,
                         packing: bool = False) -> str:
    """A reason a person can act on: what the gang needs, and what the best domain (or cluster) has."""
    topo = snapshot.topology
    main = max(gang.roles, key=lambda r: (r.pods * r.gpus, r.pods))
    need = f"{main.pods} pod(s) x {main.gpus} GPU(s)" if len(gang.roles) == 1 else (
        f"{gang.shape()} ({gang.pod_count} pods, {gang.gpu_count} GPUs)")
    ri = gang.roles.index(main)
    if req_level is None:
        have = sum(s[ri] for s in cap.slots.values())
        where = "in the cluster"
        if packing or have >= main.pods:
            return f"gang {gang.name} needs {need}; the cluster's free capacity cannot hold all of them together"
        return f"gang {gang.name} needs {need} {where}; only {have} such pod(s) fit now"
    level = topo.levels[req_level]
    per_domain = cap.domain_slots(snapshot, req_level)
    if not per_domain:
        return (f"gang {gang.name} needs {need} inside one {level.label}; no {level.name} has room for even one "
                f"such pod")
    best_key, best = max(per_domain.items(), key=lambda kv: (kv[1][ri], kv[0]))
    hosts_word = "host(s)" if main.one_per_host or main.gpus >= max(topo.host_gpus.values(), default=8) else "pod(s)"
    return (f"gang {gang.name} needs {need} inside one {level.label}; the best {level.name} "
            f"({best_key[-1]}) has room for {best[ri]} {hosts_word}" if best[ri] < main.pods else
            f"gang {gang.name} needs {need} inside one {level.label}; no {level.name} has room for all its roles "
            f"together (best: {best_key[-1]})")


def reference_optimum(snapshot: Snapshot, gang: Gang) -> tuple[int, ...] | None:
    """The proven optimal cost vector, by CP-SAT alone (no greedy, no time limit); None if infeasible.

    Exact by the same argument the engine uses: the cost is lexicographic, so if any domain of a level can hold
    the gang, the optimum lies inside one domain of the innermost such level. Each candidate domain is solved
    to optimality, best lower bound first, pruned by the best cost found. For tests and benchmarks.
    """
    topo = snapshot.topology
    req_level = topo.level_index(gang.required_level) if gang.required_level else -1
    cap = gang_capacity(snapshot, gang)
    totals = domain_totals(snapshot, gang, cap)
    for level in range(len(topo.levels) - 1, req_level - 1, -1):
        if level >= 0:
            scopes = [t.hosts for _, t in sorted(totals[level].items()) if t.may_hold(gang)]
        else:
            scopes = [list(cap.slots)]
        bounded = sorted((lb, hosts) for hosts in scopes
                         if (lb := lower_bound(snapshot, gang, cap, hosts, level)) is not None)
        best: tuple[int, ...] | None = None
        for lb, hosts in bounded:
            if best is not None and lb >= best:
                break
            res = solve_exact(snapshot, gang, cap, hosts, time_budget_s=None, upper_bound=best)
            if res.assignments is not None and (best is None or res.cost < best):
                best = res.cost
        if best is not None:
            return best
    return None
