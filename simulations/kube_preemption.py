"""kube-scheduler's default preemption, pod by pod, as the simulator's baseline. Pure and deterministic (the random
offset comes from the caller's seeded generator).

Modelled after k8s.io/kubernetes v1.37.2 with GenericWorkload off (every pod its own victim, no PodGroups), no
PodDisruptionBudgets and no extenders:
    pkg/scheduler/framework/preemption/preemption.go
        findCandidates: the potential nodes are those where the preemptor failed Filter as Unschedulable (here:
            its request does not fit the node's free resources); GetOffsetAndNumCandidates picks a random offset
            and DryRunPreemption walks the nodes from it, stopping once numCandidates candidates are found (the
            real walk is parallel; here sequential, so the stop point is exact);
        pickOneNodeForPreemption: fewest PDB violations (always 0 here), then the lowest highest victim priority,
            then the lowest sum of (priority + MaxInt32 + 1), then the fewest victims, then the latest start time
            of the earliest-started highest-priority victim (pkg/scheduler/util/utils.go GetEarliestPodStartTime),
            then the first candidate (Go iterates a map there, so it is random; here the walk's order).
    pkg/scheduler/framework/plugins/defaultpreemption/default_preemption.go
        calculateNumCandidates: max(nodes x MinCandidateNodesPercentage / 100, MinCandidateNodesAbsolute), at most
            the node count (defaults 10 and 100: pkg/scheduler/apis/config/v1/defaults.go);
        SelectVictimsOnNode: remove every lower-priority pod; if the preemptor still does not fit, the node is no
            candidate; else reprieve pods from the most important down (preemption/util.go MoreImportantVictim:
            higher priority, then the older start time), keeping each one the preemptor still fits beside;
            the others are the victims.
What it does not model: inter-pod affinity, topology spread, taints (none in the simulation), async preemption.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

Vec = tuple[int, int, int, int]  # gpus, cpu millis, memory bytes, pods
MIN_CANDIDATE_NODES_PERCENTAGE = 10
MIN_CANDIDATE_NODES_ABSOLUTE = 100


@dataclass(frozen=True)
class NodeVictim:
    pod: str  # pod key
    unit: str  # the victim unit it belongs to (its gang, or itself)
    priority: int
    start: float  # when it started (older = more important)
    request: Vec


@dataclass(frozen=True)
class PodPreemption:
    node: str
    victims: tuple[NodeVictim, ...]  # most important first, as SelectVictimsOnNode returns them


def fits(free: Vec, req: Vec) -> bool:
    return all(f >= r for f, r in zip(free, req))


def _add(a: Vec, b: Vec, sign: int = 1) -> Vec:
    return (a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2], a[3] + sign * b[3])


def num_candidates(nodes: int) -> int:
    n = nodes * MIN_CANDIDATE_NODES_PERCENTAGE // 100
    return min(max(n, MIN_CANDIDATE_NODES_ABSOLUTE), nodes)


def select_victims_on_node(free: Vec, req: Vec, on_node: list[NodeVictim], priority: int
                           ) -> tuple[NodeVictim, ...] | None:
    """The fewest pods to evict from one node, most important reprieved first; None: no candidate."""
    potential = [v for v in on_node if v.priority < priority]
    if not potential:
        return None
    avail = free
    for v in potential:
        avail = _add(avail, v.request)
    if not fits(avail, req):
        return None
    potential.sort(key=lambda v: (-v.priority, v.start, v.pod))
    victims = []
    for v in potential:
        trial = _add(avail, v.request, -1)  # put it back
        if fits(trial, req):
            avail = trial  # reprieved
        else:
            victims.append(v)
    return tuple(victims) or None


def _earliest_top_start(victims: tuple[NodeVictim, ...]) -> float:
    top = max(v.priority for v in victims)
    return min(v.start for v in victims if v.priority == top)


def pick_one_node(candidates: list[PodPreemption]) -> PodPreemption:
    """pickOneNodeForPreemption's score functions, in order; ties go to the first candidate."""
    def key(c: PodPreemption):
        return (max(v.priority for v in c.victims), sum(v.priority + math.pow(2, 31) for v in c.victims),
                len(c.victims), -_earliest_top_start(c.victims))

    best = min(key(c) for c in candidates)
    return next(c for c in candidates if key(c) == best)


def preempt_for_pod(nodes: list[str], free: dict[str, Vec], on_node: dict[str, list[NodeVictim]], req: Vec,
                    priority: int, rng: random.Random) -> PodPreemption | None:
    """The node and victims kube-scheduler's PostFilter would choose for one pod, or None (no candidate)."""
    potential = [n for n in nodes if not fits(free[n], req)]
    if not potential:
        return None
    offset, wanted = rng.randrange(len(potential)), num_candidates(len(potential))
    found: list[PodPreemption] = []
    for i in range(len(potential)):
        n = potential[(offset + i) % len(potential)]
        victims = select_victims_on_node(free[n], req, list(on_node.get(n, ())), priority)
        if victims:
            found.append(PodPreemption(n, victims))
            if len(found) >= wanted:
                break
    return pick_one_node(found) if found else None


def least_allocated_node(nodes: list[str], free: dict[str, Vec], alloc: dict[str, Vec], req: Vec) -> str | None:
    """Where kube-scheduler binds a pod that fits: NodeResourcesFit's default LeastAllocated score over cpu and
    memory, weight 1 each (pkg/scheduler/apis/config/v1/defaults.go defaultResourceSpec, v1.37.2); ties to the
    first node. Other score plugins are not modelled."""
    best, best_score = None, -1.0
    for n in nodes:
        f = free[n]
        if not fits(f, req):
            continue
        a = alloc[n]
        score = sum((f[d] - req[d]) / a[d] for d in (1, 2) if a[d] > 0) / 2
        if score > best_score:
            best, best_score = n, score
    return best
