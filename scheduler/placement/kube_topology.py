"""`topology-placement`: a model of kube-scheduler's own workload-aware gang + topology scheduling, as
k8s.io/kubernetes v1.37.2 does it with the GenericWorkload and TopologyAwareWorkloadScheduling gates on. Pure.

Followed files (k8s.io/kubernetes@v1.37.2):

- pkg/scheduler/schedule_one_podgroup.go `podGroupSchedulingPlacementAlgorithm`: the PlacementGenerate plugins
  give candidate placements (node sets); in each, the pod group's pods are scheduled one by one with the normal
  per-pod filters and scores (`podGroupSchedulingDefaultAlgorithm`), each assumed before the next; placements
  where every pod fits are scored by the PlacementScore plugins (`findBestPlacement`): the highest total wins,
  ties broken by `rand.Int()`.
- pkg/scheduler/framework/plugins/topologyaware/topology_placement.go: one placement per value of the PodGroup's
  `schedulingConstraints.topology[0].key` over the nodes that carry that label (nodes without it are in no
  placement); with no constraint, one placement of every node.
- pkg/scheduler/framework/plugins/noderesources/resource_allocation.go `scorePlacement` with most_allocated.go:
  the placement's score is MostAllocated over the default scoring resources (cpu and memory, weight 1 each,
  pkg/scheduler/apis/config/v1/defaults.go): (the gang's requests + the nodes' requests) / the nodes'
  allocatable, summed over the placement, integer percent per resource, then averaged. Requests are the
  "non-zero" ones (pkg/scheduler/util/pod_resources.go: a container without a cpu / memory request counts
  100m / 200 MiB). GPUs are not in it.
- pkg/scheduler/framework/plugins/podgrouppodscount/podgroup_pods_count.go: pods placed / the most placed,
  x100: the same for every placement that holds the whole gang, so it never decides.
- per pod (pkg/scheduler/apis/config/v1/default_plugins.go, noderesources/least_allocated.go,
  balanced_allocation.go): NodeResourcesFit LeastAllocated over cpu / memory non-zero requests, plus
  NodeResourcesBalancedAllocation (actual requests; skipped for a pod that requests neither), weight 1 each;
  the other default scores (taints, affinity, spreading, images) are equal on every node for these pods. The
  highest total wins, ties broken at random (framework/sorted_nodes.go, the `Randomizer`).

So, unlike Kueue or KAI, GPUs decide nothing but feasibility: with GPU-only pods on nodes of 128 cores the scores
are all equal and the real scheduler picks a feasible domain, and nodes inside it, at random. The model breaks
the same ties with a seeded random draw per gang; `placement_scores` lists every candidate's score and `explains`
says whether a given placement is one the model scores as high as its own pick, so a comparison can tell a
different tie-break from a different decision. Every node of a placement is scored at once (numpy, the same
integer and float64 arithmetic) where the sizes allow exact int64 arithmetic, else one by one.

Checked against the real kube-scheduler v1.37.2 on KWOK by `clique bench kube-topology-models`
(simulations/kube_topology_check.py). Named differences:
- ties (equal placement or node scores) are broken at random by both, so the exact domain and hosts agree only
  where the scores decide;
- a pod already on a host counts with max(its CPU / memory requests, 100m / 200 MiB x pods on the host): the
  snapshot keeps sums, not each pod's own requests;
- partly bound gangs (the placement is confined to the bound pods' domain), PodGroup `minCount` below the pod
  count, preemption (PodGroupPostFilter), CompositePodGroups and DRA are not modelled; nodes outside the snapshot
  (other pools) are in no placement here, and in the real scheduler they hold none of these pods either.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from scheduler.placement.capacity import Resources, fits, sub
from scheduler.placement.types import Assignment, Gang, Plan, Snapshot

MAX_SCORE = 100  # fwk.MaxNodeScore / MaxScore
DEFAULT_MILLI_CPU = 100  # pkg/scheduler/util/pod_resources.go DefaultMilliCPURequest
DEFAULT_MEMORY = 200 * 1024 * 1024  # DefaultMemoryRequest


def _go_div(a: int, b: int) -> int:
    """Go's integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@dataclass(slots=True)
class _Node:
    """One node as kube-scheduler's NodeInfo sees it: allocatable, requested and non-zero requested cpu / memory."""

    name: str
    cpu: int
    memory: int
    cpu_used: int
    memory_used: int
    cpu_nz: int
    memory_nz: int
    free: Resources
    balance: int = -1  # BalancedAllocation's score of the node as it is (without the pod); -1: not computed yet


def _least_allocated(n: _Node, cpu_nz: int, mem_nz: int) -> int:
    """LeastAllocated over cpu and memory (non-zero requests), weight 1 each, integer percent."""
    total = weights = 0
    if n.cpu > 0:
        r = n.cpu_nz + cpu_nz
        total += 0 if r > n.cpu else (n.cpu - r) * MAX_SCORE // n.cpu
        weights += 1
    if n.memory > 0:
        r = n.memory_nz + mem_nz
        total += 0 if r > n.memory else (n.memory - r) * MAX_SCORE // n.memory
        weights += 1
    return total // weights if weights else 0


def _balanced(n: _Node, cpu: int, mem: int) -> int:
    if cpu == 0 and mem == 0:  # best-effort pod: PreScore skips the plugin
        return 0
    with_pod = _balance(n.cpu_used + cpu, n.cpu, n.memory_used + mem, n.memory)
    if n.balance < 0:
        n.balance = _balance(n.cpu_used, n.cpu, n.memory_used, n.memory)
    without = n.balance
    return MAX_SCORE // 2 + _go_div(MAX_SCORE // 2 + with_pod - without, 2)


def _balance(cpu_req: int, cpu: int, mem_req: int, mem: int) -> int:
    """balancedResourceScore over cpu and memory: (1 - std of the requested fractions) x 100."""
    if cpu > 0 and mem > 0:
        std = abs(min(1.0, float(cpu_req) / float(cpu)) - min(1.0, float(mem_req) / float(mem))) / 2  # as Go: float64s
    else:
        std = 0.0
    return int((1 - std) * MAX_SCORE)


def _placement_score(nodes: Sequence[_Node], gang_cpu_nz: int, gang_mem_nz: int) -> int:
    """NodeResourcesFit.ScorePlacement (MostAllocated) + PodGroupPodsCount (100 for a whole gang)."""
    total = weights = 0
    for gang_req, attr, used in ((gang_cpu_nz, "cpu", "cpu_nz"), (gang_mem_nz, "memory", "memory_nz")):
        alloc = sum(getattr(n, attr) for n in nodes)
        if alloc <= 0:
            continue
        requested = min(alloc, gang_req + sum(getattr(n, used) for n in nodes))
        total += requested * MAX_SCORE // alloc
        weights += 1
    return (total // weights if weights else 0) + MAX_SCORE


@dataclass(frozen=True)
class CandidatePlacement:
    key: tuple  # the domain's key at the constraint's level; () for the one placement of every node
    score: int | None  # None: the gang does not fit there
    assignments: tuple[Assignment, ...]


class TopologyPlacement:
    """kube-scheduler v1.37.2 gang + topology scheduling (module docstring: files followed, named differences)."""

    name = "topology-placement"
    gang_aware = True  # all or nothing, required topology honoured

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def placement_scores(self, snapshot: Snapshot, gang: Gang) -> list[CandidatePlacement]:
        """Every candidate placement, in key order, with its score (None where the gang does not fit)."""
        return self._evaluate(snapshot, gang)[0]

    def explains(self, snapshot: Snapshot, gang: Gang, hosts: Sequence[str]) -> bool:
        """Whether the model scores this placement (one host per pod) as high as its own choice at every step: its
        placement among the best-scored ones, and each pod, in turn, on one of the best-scored nodes. True means a
        different outcome is only a different tie-break. For one-role gangs (pods are taken in role order)."""
        if len(hosts) != gang.pod_count:
            return False
        cands = [c for c in self.placement_scores(snapshot, gang) if c.score is not None]
        if not cands:
            return False
        topo = snapshot.topology
        key = () if gang.required_level is None else topo.domain(hosts[0], topo.level_index(gang.required_level))
        mine = next((c for c in cands if c.key == key), None)
        if mine is None or mine.score != max(c.score for c in cands):
            return False
        members = self._evaluate_hosts(snapshot, gang)[key]
        nodes = {h: self._node(snapshot, h) for h in members}
        left = list(hosts)
        for role in gang.roles:
            cpu_nz, mem_nz = role.cpu_millis or DEFAULT_MILLI_CPU, role.memory or DEFAULT_MEMORY
            for _ in range(role.pods):
                feasible = [n for n in nodes.values() if fits(n.free, role.request)]
                scores = {n.name: _least_allocated(n, cpu_nz, mem_nz) + _balanced(n, role.cpu_millis, role.memory)
                          for n in feasible}
                pick = next((h for h in left if h in scores and scores[h] == max(scores.values())), None)
                if pick is None:
                    return False
                left.remove(pick)
                n = nodes[pick]
                n.free = sub(n.free, role.request)
                n.cpu_used, n.memory_used = n.cpu_used + role.cpu_millis, n.memory_used + role.memory
                n.cpu_nz, n.memory_nz = n.cpu_nz + cpu_nz, n.memory_nz + mem_nz
                n.balance = -1
        return True

    def place(self, snapshot: Snapshot, gang: Gang) -> Plan:
        from scheduler.placement.baselines import _finish

        t = time.perf_counter()
        cands, rng = self._evaluate(snapshot, gang)
        ok = [c for c in cands if c.score is not None]
        if not ok:
            where = (f"one per {gang.required_level} domain" if gang.required_level else "every node")
            return _finish(self.name, snapshot, gang, [], gang.pod_count, t, True,
                           f"gang {gang.name}: 0/{len(cands)} placements ({where}) hold all {gang.pod_count} pods")
        best = max(c.score for c in ok)
        tied = [c for c in ok if c.score == best]
        return _finish(self.name, snapshot, gang, list(rng.choice(tied).assignments), 0, t, True)

    def _evaluate(self, snapshot: Snapshot, gang: Gang) -> tuple[list[CandidatePlacement], random.Random]:
        rng = random.Random(f"{self.seed}/{gang.name}")
        groups = self._evaluate_hosts(snapshot, gang)
        gang_cpu = sum(r.pods * (r.cpu_millis or DEFAULT_MILLI_CPU) for r in gang.roles)
        gang_mem = sum(r.pods * (r.memory or DEFAULT_MEMORY) for r in gang.roles)
        out = []
        for key, hosts in groups.items():
            arrays = _Arrays.of(snapshot, hosts)
            if arrays is None:  # sizes beyond exact int64 arithmetic (the unconstrained HostState defaults)
                nodes = [self._node(snapshot, h) for h in hosts]
                score = _placement_score(nodes, gang_cpu, gang_mem)  # on the nodes as they were: upstream reverts
                placed = self._pods(nodes, gang, rng)  # the simulated pods before PlacementScore
            else:
                score = arrays.placement_score(gang_cpu, gang_mem)
                placed = self._pods(arrays, gang, rng, arrays.scores)
            out.append(CandidatePlacement(key, None if placed is None else score, tuple(placed or ())))
        return out, rng

    @staticmethod
    def _evaluate_hosts(snapshot: Snapshot, gang: Gang) -> dict[tuple, list[str]]:
        """TopologyPlacementGenerator: the candidate placements' nodes, by domain key, in key order."""
        topo = snapshot.topology
        if gang.required_level is None:
            return {(): sorted(snapshot.hosts)}
        lv = topo.level_index(gang.required_level)
        unlabelled = set(topo.unlabelled.get(topo.levels[lv].name, ()))
        groups = {}
        for key, hosts in sorted(topo.domains(lv).items()):
            members = [h for h in hosts if h in snapshot.hosts and h not in unlabelled]
            if members:
                groups[key] = members
        return groups

    @staticmethod
    def _node(snapshot: Snapshot, host: str) -> _Node:
        s = snapshot.hosts[host]
        return _Node(host, s.cpu_millis, s.memory, s.cpu_used, s.memory_used,
                     max(s.cpu_used, DEFAULT_MILLI_CPU * s.pods_used), max(s.memory_used, DEFAULT_MEMORY * s.pods_used),
                     snapshot.free_vectors[host])

    @staticmethod
    def _pods(nodes: Sequence[_Node], gang: Gang, rng: random.Random, initial=None) -> list[Assignment] | None:
        """podGroupSchedulingDefaultAlgorithm inside one placement: each pod filtered, scored, assumed. Scores are
        computed once per node and role, then again only for the node that took the last pod."""
        placed: list[Assignment] = []
        for ri, role in enumerate(gang.roles):
            cpu_nz, mem_nz = role.cpu_millis or DEFAULT_MILLI_CPU, role.memory or DEFAULT_MEMORY
            taken: set[str] = set()  # hosts holding a pod of this role (for one-per-host roles)
            scores = (initial(role, cpu_nz, mem_nz) if initial else
                      [_node_score(n, role, cpu_nz, mem_nz) for n in nodes])
            for i in range(role.pods):
                best = max(scores, default=-1)
                if best < 0:
                    return None
                j = rng.choice([k for k, v in enumerate(scores) if v == best])
                node = nodes[j]
                node.free = sub(node.free, role.request)
                node.cpu_used += role.cpu_millis
                node.memory_used += role.memory
                node.cpu_nz += cpu_nz
                node.memory_nz += mem_nz
                node.balance = -1
                taken.add(node.name)
                scores[j] = -1 if role.one_per_host else _node_score(node, role, cpu_nz, mem_nz)
                placed.append(Assignment(role.name, i, node.name))
        return placed


def _node_score(n: _Node, role, cpu_nz: int, mem_nz: int) -> int:
    """-1 where the pod does not fit (NodeResourcesFit's filter), else LeastAllocated + BalancedAllocation."""
    f = n.free
    if f[0] < role.gpus or f[1] < role.cpu_millis or f[2] < role.memory or f[3] < 1:
        return -1
    return _least_allocated(n, cpu_nz, mem_nz) + (_balanced(n, role.cpu_millis, role.memory)
                                                   if role.cpu_millis or role.memory else 0)


class _Arrays:
    """One placement's nodes as arrays, for scoring every node at once; a node becomes a _Node (and is scored
    one by one, as `_node_score` does) once a pod is placed on it. Same integer and float64 arithmetic."""

    LIMIT = 2 ** 55  # every cpu / memory amount below this: x 100 stays inside int64

    def __init__(self, hosts: list[str], snapshot: Snapshot, cols: dict[str, np.ndarray], free: np.ndarray) -> None:
        self.hosts, self.snapshot, self.cols, self.free = hosts, snapshot, cols, free
        self.made: dict[int, _Node] = {}

    @classmethod
    def of(cls, snapshot: Snapshot, hosts: list[str]) -> "_Arrays | None":
        hs = [snapshot.hosts[h] for h in hosts]
        cpu = [s.cpu_millis for s in hs]
        mem = [s.memory for s in hs]
        if max(cpu, default=0) >= cls.LIMIT or max(mem, default=0) >= cls.LIMIT:
            return None
        pods = np.array([s.pods_used for s in hs], dtype=np.int64)
        cols = {"cpu": np.array(cpu, dtype=np.int64), "memory": np.array(mem, dtype=np.int64),
                "cpu_used": np.array([s.cpu_used for s in hs], dtype=np.int64),
                "memory_used": np.array([s.memory_used for s in hs], dtype=np.int64)}
        cols["cpu_nz"] = np.maximum(cols["cpu_used"], DEFAULT_MILLI_CPU * pods)
        cols["memory_nz"] = np.maximum(cols["memory_used"], DEFAULT_MEMORY * pods)
        fm, row = snapshot.free_matrix, snapshot.topology.host_row
        return cls(hosts, snapshot, cols, fm[[row[h] for h in hosts]])

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, j: int) -> _Node:
        if j not in self.made:
            self.made[j] = TopologyPlacement._node(self.snapshot, self.hosts[j])
        return self.made[j]

    def placement_score(self, gang_cpu_nz: int, gang_mem_nz: int) -> int:
        total = weights = 0
        for gang_req, attr in ((gang_cpu_nz, "cpu"), (gang_mem_nz, "memory")):
            alloc = sum(self.cols[attr].tolist())  # Python ints: exact whatever the sum
            if alloc <= 0:
                continue
            requested = min(alloc, gang_req + sum(self.cols[attr + "_nz"].tolist()))
            total += requested * MAX_SCORE // alloc
            weights += 1
        return (total // weights if weights else 0) + MAX_SCORE

    def scores(self, role, cpu_nz: int, mem_nz: int) -> list[int]:
        c = self.cols
        f = self.free
        ok = (f[:, 0] >= role.gpus) & (f[:, 1] >= role.cpu_millis) & (f[:, 2] >= role.memory) & (f[:, 3] >= 1)
        total = np.zeros(len(self.hosts), dtype=np.int64)
        weights = np.zeros(len(self.hosts), dtype=np.int64)
        for alloc, nz, req in ((c["cpu"], c["cpu_nz"], cpu_nz), (c["memory"], c["memory_nz"], mem_nz)):
            has = alloc > 0
            r = nz + req
            safe = np.where(has, alloc, 1)
            total += np.where(has & (r <= alloc), (alloc - r) * MAX_SCORE // safe, 0)
            weights += has
        least = np.where(weights > 0, total // np.maximum(weights, 1), 0)
        if role.cpu_millis or role.memory:
            both = (c["cpu"] > 0) & (c["memory"] > 0)
            cpu_f = np.where(both, c["cpu"], 1).astype(np.float64)
            mem_f = np.where(both, c["memory"], 1).astype(np.float64)

            def balance(cpu_req: np.ndarray, mem_req: np.ndarray) -> np.ndarray:
                std = np.where(both, np.abs(np.minimum(1.0, cpu_req.astype(np.float64) / cpu_f)
                                            - np.minimum(1.0, mem_req.astype(np.float64) / mem_f)) / 2, 0.0)
                return ((1 - std) * MAX_SCORE).astype(np.int64)  # truncation, as Go's int64()

            x = MAX_SCORE // 2 + balance(c["cpu_used"] + role.cpu_millis, c["memory_used"] + role.memory) \
                - balance(c["cpu_used"], c["memory_used"])
            least = least + MAX_SCORE // 2 + np.where(x >= 0, x // 2, -((-x) // 2))
        out = np.where(ok, least, -1).tolist()
        for j, n in self.made.items():  # nodes that already took a pod of this gang
            out[j] = _node_score(n, role, cpu_nz, mem_nz)
        return out
