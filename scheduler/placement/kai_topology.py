"""`kai-topology`: a model of NVIDIA KAI-Scheduler's topology-aware gang allocation. Pure and deterministic.

Read from github.com/NVIDIA/KAI-Scheduler at commit 72de64fc8eca10fa8cca26a20156178f3edbe092 (2026-03-07,
`git describe`: v0.13.0-rc1-142-g72de64fc):

- docs/topology/README.md: required / preferred placement levels (`kai.scheduler/topology-required-placement`,
  `-preferred-placement`); domains bin-packed (the one with less free resources relative to the job first),
  nodes inside ordered to keep pods in the preferred sub-domain with more free resources.
- pkg/scheduler/plugins/topology/job_filtering.go `subSetNodesFn`: the job's lowest common domain
  (common.go `lowestCommonDomainID`, stopping at the preferred level), its subtree's free resources and
  `AllocatablePods` (how many copies of the job's largest pod each node holds, for homogeneous jobs,
  `useRepresentorPodsAccounting`; else the job's summed requests against the free resources); the tree is sorted
  (`sortTree`) down to the preferred level (else the required one): children by `getJobRatioToFreeResources`
  (the dominant resource's job-total / domain-free), highest first, ties by domain ID; candidate domains are
  every domain that holds the job (`checkJobDomainFit`) at the levels from the preferred one (else the
  required one) up to the required one (else up to the whole cluster, `calculateRelevantDomainLevels`), ordered
  innermost level first and, within a level, in the sorted tree's order (`sortDomainInfos`, topology_utils.go
  `reverseLevelOrder`). So a preferred level that does not fit falls back to its parent level, and so on.
- pkg/scheduler/actions/common/allocate.go: the candidate domains are tried in that order; in each, tasks are
  allocated one by one on the nodes in `OrderedNodesByTask` order (framework/session.go: summed node-order
  scores, highest first, ties by node name); the first domain where every task fits is the placement.
- node-order scores (plugins/scores/scores.go): nodeavailability +100 where the task fits; topology
  (node_scoring.go `calculateNodeScores`, only with a preferred level) floor((i+1)/n x 10) x 10000 for the
  nodes of the i-th of the n preferred-level domains in sorted order (the roomier ones score higher);
  nodeplacement binpack (the default, pack.go) 9 x (1 - (free - min) / (max - min)) over the set's nodes'
  free GPUs (free CPU for CPU-only tasks; 9 for all when min = max); resourcetype +10 for a CPU-only task on a
  node without GPUs.
- a job with neither level is allocated over every node with the same node order (no subsets).

Named differences: one KAI Topology whose levels are the snapshot's levels (the node level is implied); no
releasing resources, queues / quotas, fractional GPUs, subgroups or already-running pods of the job; tasks in
the gang's role order (KAI's taskorder plugin orders by priority); a role's one-pod-per-host rule (pod
anti-affinity in KAI, the predicates plugin) is a filter here. A preferred level outside the required one is
KAI's configuration error: the gang is not placed, with KAI's message. As in KAI, free resources are summed only
under the lowest common domain, so a required level above it (every node in one leaf, a required spine) fits
nowhere.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from scheduler.placement.capacity import Resources, fits, slots, sub
from scheduler.placement.types import Assignment, Gang, Plan, Role, Snapshot

AVAILABILITY, RESOURCE_TYPE, TOPOLOGY, MAX_HIGH_DENSITY = 100, 10, 10000, 9  # plugins/scores/scores.go
NOT_IN_DOMAIN_RATIO = 1000.0  # job_filtering.go requiredResourceNotInDomainRatio


@dataclass
class _Domain:
    id: str  # KAI's DomainID: the label values from the outermost level down, joined by "."
    level: int  # -1 for the root (the whole cluster)
    hosts: list[str] = field(default_factory=list)
    children: list["_Domain"] = field(default_factory=list)
    free: list[int] = field(default_factory=lambda: [0, 0, 0])  # gpus, cpu, memory (idle; nothing releasing here)
    allocatable_pods: int = -1  # -1: not computed (KAI's allocatablePodsNotSet)


def _ratio(total: Resources, d: _Domain) -> float:
    """getJobRatioToFreeResources: the dominant resource's job total / the domain's free amount (pods ignored)."""
    r = 0.0
    for dim, (want, free) in enumerate(zip(total[:3], d.free)):
        if dim == 1:  # CPU compared as resource.Quantity.Value() of millicores: whole cores, rounded up
            want, free = -(-want // 1000), -(-free // 1000)
        if want > 0:  # GPUs: a float division (+Inf when none is free); other resources: 1000 when none is free
            r = max(r, want / free if free else (math.inf if dim == 0 else NOT_IN_DOMAIN_RATIO))
    return r


class KaiTopology:
    """KAI-Scheduler's topology plugin + allocate action (module docstring: files and commit read, differences)."""

    name = "kai-topology"
    gang_aware = True  # all or nothing, required topology honoured

    def place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        from scheduler.placement.baselines import _finish

        t = time.perf_counter()
        topo = snapshot.topology
        tasks = [(ri, i) for ri, r in enumerate(gang.roles) for i in range(r.pods)]
        if gang.required_level is None and gang.preferred_level is None:
            placed = self._allocate(snapshot, gang, tasks, sorted(snapshot.hosts), {})
            return _finish(self.name, snapshot, gang, placed or [], 0 if placed else gang.pod_count, t, True,
                           "" if placed else f"gang {gang.name}: its {gang.pod_count} pods do not all fit on the "
                                             "cluster's nodes")
        req = topo.level_index(gang.required_level) if gang.required_level else None
        pref = topo.level_index(gang.preferred_level) if gang.preferred_level else None
        if req is not None and pref is not None and pref < req:
            return _finish(self.name, snapshot, gang, [], gang.pod_count, t, True,
                           f"topology constraint error: gang {gang.name} specified '{gang.preferred_level}' as the "
                           f"preferred level, outside its required level '{gang.required_level}'")
        root, by_level, valid = self._tree(snapshot)
        common = self._lowest_common(root, valid, pref)
        homogeneous = len({r.gpus > 0 for r in gang.roles}) == 1
        total = tuple(sum(r.pods * r.request[d] for r in gang.roles) for d in range(4))
        shape = Role("max", 1, *(max(r.request[d] for r in gang.roles) for d in range(3)),
                     one_per_host=any(r.one_per_host for r in gang.roles))
        self._resources(snapshot, common, shape if homogeneous else None, gang.pod_count)

        def fit(d: _Domain) -> bool:  # checkJobDomainFit
            if d.allocatable_pods != -1:
                return d.allocatable_pods >= gang.pod_count
            return _ratio(total, d) <= 1.0

        if not fit(common):
            where = "the cluster" if common.level < 0 else common.id
            return _finish(self.name, snapshot, gang, [], gang.pod_count, t, True,
                           f"gang {gang.name}: not enough resources in {where} to allocate the job")
        depth = pref if pref is not None else req
        self._sort(common, total, depth)
        scores: dict[str, float] = {}
        if pref is not None:
            doms = self._level_domains(common, pref)
            for i, d in enumerate(doms):
                for h in d.hosts:
                    scores[h] = math.floor((i + 1) / len(doms) * 10) * TOPOLOGY
        top = req if req is not None else -1  # relevant levels: depth .. required (or the root)
        order = [d for level in self._reverse_level_order(root)
                 if top <= level[0].level <= depth for d in level if fit(d)]
        for d in order:
            placed = self._allocate(snapshot, gang, tasks, sorted(h for h in d.hosts if h in valid), scores)
            if placed:
                return _finish(self.name, snapshot, gang, placed, 0, t, True)
        level_name = topo.levels[top].name if top >= 0 else "cluster"
        return _finish(self.name, snapshot, gang, [], gang.pod_count, t, True,
                       f"gang {gang.name}: no {level_name} domain (from the {topo.levels[depth].name} level up) can "
                       f"allocate its {gang.pod_count} pods")

    # ------------------------------------------------------------------ the domain tree
    @staticmethod
    def _tree(snapshot: Snapshot) -> tuple[_Domain, dict[int, dict[tuple, _Domain]], set[str]]:
        """Root -> domains per level -> hosts, over the hosts that carry every level's label
        (isNodePartOfTopology); children in host-name order of first appearance."""
        topo = snapshot.topology
        unlabelled = {h for hs in topo.unlabelled.values() for h in hs}
        valid = {h for h in snapshot.hosts if h not in unlabelled}
        root = _Domain("root", -1)
        by_level: dict[int, dict[tuple, _Domain]] = {lv: {} for lv in range(len(topo.levels))}
        for h in sorted(valid):
            parent = root
            root.hosts.append(h)
            for lv in range(len(topo.levels)):
                key = topo.domain(h, lv)
                d = by_level[lv].get(key)
                if d is None:
                    d = by_level[lv][key] = _Domain(".".join(key), lv)
                    parent.children.append(d)
                d.hosts.append(h)
                parent = d
        return root, by_level, valid

    @staticmethod
    def _lowest_common(root: _Domain, valid: set[str], pref: int | None) -> _Domain:
        """lowestCommonDomainID: the deepest domain holding every valid node, no deeper than the preferred level."""
        d = root
        while len(d.children) == 1 and (pref is None or d.level < pref):
            d = d.children[0]
        return d

    @staticmethod
    def _resources(snapshot: Snapshot, d: _Domain, shape: Role | None, tasks: int) -> None:
        """calcSubTreeFreeResources and, for homogeneous jobs, calcSubTreeAllocatable over d's subtree."""
        free = [0, 0, 0]
        pods = 0
        for h in d.hosts:
            f = snapshot.hosts[h].free
            for i in range(3):
                free[i] += f[i]
            if shape is not None:
                pods += tasks if not any(shape.request[:3]) else slots(f, shape)
        d.free = free
        d.allocatable_pods = pods if shape is not None else -1
        for c in d.children:
            KaiTopology._resources(snapshot, c, shape, tasks)

    @staticmethod
    def _sort(d: _Domain, total: Resources, depth: int) -> None:
        """sortTree: children by ratio, highest first, ties by ID; down to the depth level."""
        d.children.sort(key=lambda c: (-_ratio(total, c), c.id))
        if d.level == depth:
            return
        for c in d.children:
            KaiTopology._sort(c, total, depth)

    @staticmethod
    def _level_domains(d: _Domain, level: int) -> list[_Domain]:
        if d.level == level:
            return [d]
        return [x for c in d.children for x in KaiTopology._level_domains(c, level)]

    @staticmethod
    def _reverse_level_order(root: _Domain) -> list[list[_Domain]]:
        levels, queue = [], [root]
        while queue:
            levels.append(queue)
            queue = [c for d in queue for c in d.children]
        return levels[::-1]

    # ------------------------------------------------------------------ allocation
    @staticmethod
    def _allocate(snapshot: Snapshot, gang: Gang, tasks: list[tuple[int, int]], hosts: list[str],
                  topo_scores: dict[str, float]) -> list[Assignment] | None:
        """allocateTasksOnNodeSet: each task on the first fitting node in OrderedNodesByTask order."""
        fv = snapshot.free_vectors
        free: dict[str, Resources] = {h: fv[h] for h in hosts}
        alloc = {h: snapshot.hosts[h] for h in hosts}
        roles_on: dict[str, set[int]] = {}
        placed: list[Assignment] = []
        for ri, i in tasks:
            role = gang.roles[ri]
            cpu_only = role.gpus == 0
            dim = 1 if cpu_only else 0
            r0, r1, r2, _ = role.request
            have = [free[h][dim] for h in hosts if (alloc[h].cpu_millis if cpu_only else alloc[h].gpus) > 0]
            lo, hi = (min(have), max(have)) if have else (0, 0)

            # OrderedNodesByTask, then the first node that fits: every fitting node has nodeavailability's +100, so
            # that is the fitting node with the highest other scores, ties by name
            node, best = None, -1.0
            for h in hosts:  # in name order: a later node must score strictly higher
                f = free[h]
                if f[0] < r0 or f[1] < r1 or f[2] < r2 or f[3] < 1 or (role.one_per_host and ri in roles_on.get(h, ())):
                    continue
                a = alloc[h]
                s = float(AVAILABILITY)  # summed in the default configuration's plugin order (conf_util)
                if cpu_only and a.gpus == 0:
                    s += RESOURCE_TYPE
                if (a.cpu_millis if cpu_only else a.gpus) > 0 and hi > 0:
                    s += MAX_HIGH_DENSITY if lo == hi else MAX_HIGH_DENSITY * (1 - (f[dim] - lo) / (hi - lo))
                s += topo_scores.get(h, 0.0)
                if s > best:
                    node, best = h, s
            if node is None:
                return None
            free[node] = sub(free[node], role.request)
            roles_on.setdefault(node, set()).add(ri)
            placed.append(Assignment(role.name, i, node))
        return placed
