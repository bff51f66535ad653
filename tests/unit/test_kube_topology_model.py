"""The `topology-placement` model: kube-scheduler v1.37.2's gang + topology scheduling (pkg/scheduler/
schedule_one_podgroup.go, framework/plugins/topologyaware, noderesources scorePlacement / LeastAllocated)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.placement.kube_topology import TopologyPlacement, _go_div
from scheduler.placement.types import Gang, HostState, Role, Snapshot
from tests.unit.placement_builders import LEVELS, tree_hosts
from topology.model import HostInfo, Topology

CORES, TIB = 1000, 1024 ** 4


def _snap(cpu_cores: dict[str, int] | None = None, gpus: dict[str, int] | None = None,
          hosts: list[HostInfo] | None = None) -> Snapshot:
    """16 hosts of 8 GPUs, 128 cores, 1 TiB (the KWOK nodes' shape); usage given per host, memory in step with CPU."""
    hosts = hosts or tree_hosts()
    cpu_cores, gpus = cpu_cores or {}, gpus or {}
    states = {}
    for h in hosts:
        c = cpu_cores.get(h.name, 0)
        states[h.name] = HostState(h.name, gpus=8, cpu_millis=128 * CORES, memory=TIB, gpus_used=gpus.get(h.name, 0),
                                   cpu_used=c * CORES, memory_used=c * TIB // 128,
                                   pods_used=int(bool(c or gpus.get(h.name))))
    return Snapshot(Topology(hosts, LEVELS), states)


def _gang(pods: int, gpus: int, cores: int, required: str | None = "leaf") -> Gang:
    return Gang("g", (Role("w", pods, gpus, cpu_millis=cores * CORES, memory=cores * TIB // 128),),
                required_level=required)


def _leaves(plan) -> set[int]:
    return {int(a.host[1:]) // 4 for a in plan.assignments}


def test_the_gang_goes_to_the_domain_with_the_most_cpu_and_memory_requested_whatever_its_gpus():
    # leaf l0: GPUs nearly all taken by pods that asked little CPU; leaf l1: few GPUs used but much CPU requested
    snap = _snap(cpu_cores={"h04": 100, "h05": 100, "h06": 100}, gpus={"h00": 7, "h01": 7, "h02": 7, "h04": 1})
    plan = TopologyPlacement().place(snap, _gang(2, 1, 8))
    assert plan.placed and _leaves(plan) == {1}
    scores = {c.key[-1]: c.score for c in TopologyPlacement().placement_scores(snap, _gang(2, 1, 8))}
    assert scores["l1"] > scores["l0"] == scores["l2"] == scores["l3"]


def test_inside_the_domain_each_pod_goes_to_the_host_with_the_most_free_cpu_not_the_most_free_gpus():
    full = {f"h{i:02d}": 8 for i in range(4, 16)}  # only leaf l0 has room
    snap = _snap(cpu_cores={"h01": 40, "h02": 40, "h03": 100}, gpus={"h00": 5, **full})
    plan = TopologyPlacement().place(snap, _gang(3, 1, 16))
    assert [a.host for a in plan.assignments] == ["h00"] * 3  # h00: fewest free GPUs, most free CPU


def test_pods_spread_one_per_host_while_the_hosts_are_equal_and_go_to_the_fuller_leaf():
    snap = _snap(cpu_cores={f"h{i:02d}": 64 for i in range(4, 8)})
    plan = TopologyPlacement().place(snap, _gang(4, 1, 16))
    assert _leaves(plan) == {1}, "MostAllocated over the placement: l1 has requested the most CPU and memory"
    assert len(set(plan.hosts())) == 4, "LeastAllocated inside it: each pod on the emptiest host"


def test_with_gpu_only_pods_every_feasible_domain_ties_and_the_seeded_draw_picks_one():
    snap = _snap(gpus={"h00": 4, "h05": 2})
    g = _gang(2, 4, 0)
    cands = TopologyPlacement().placement_scores(snap, g)
    assert len({c.score for c in cands}) == 1, "no CPU or memory asked: MostAllocated rounds every leaf to the same"
    picks = {TopologyPlacement(seed).place(snap, g).hosts()[0] for seed in range(12)}
    assert len({int(h[1:]) // 4 for h in picks}) > 1, "ties broken at random, as rand.Int() does upstream"
    assert TopologyPlacement(3).place(snap, g).assignments == TopologyPlacement(3).place(snap, g).assignments
    picked = snap.topology.domain(TopologyPlacement(3).place(snap, g).hosts()[0], 2)
    other = next(c for c in cands if c.key != picked)
    assert TopologyPlacement().explains(snap, g, [a.host for a in other.assignments]), "another leaf: only a tie-break"


def test_a_placement_the_model_scores_lower_is_not_explained_as_a_tie():
    snap = _snap(cpu_cores={"h04": 100, "h05": 100})
    g = _gang(2, 1, 8)
    assert not TopologyPlacement().explains(snap, g, ["h00", "h01"])  # l0: less requested than l1
    best = TopologyPlacement().place(snap, g)
    assert TopologyPlacement().explains(snap, g, [a.host for a in best.assignments])


def test_hosts_without_the_constraints_label_are_in_no_placement():
    hosts = [h if h.name != "h03" else HostInfo("h03", 8, {k: v for k, v in h.labels.items() if k != "clique.dev/leaf"})
             for h in tree_hosts()]
    snap = _snap(gpus={f"h{i:02d}": 8 for i in range(4, 16)}, hosts=hosts)  # only h00-h03 have room
    assert not TopologyPlacement().place(snap, _gang(4, 8, 0)).placed  # l0 holds 3 labelled hosts
    assert TopologyPlacement().place(snap, _gang(3, 8, 0)).hosts() == ["h00", "h01", "h02"]


def test_a_gang_without_a_topology_constraint_is_one_placement_of_every_node_and_may_span_leaves():
    snap = _snap(gpus={f"h{i:02d}": 8 for i in range(16) if i not in (0, 5, 10)})
    plan = TopologyPlacement().place(snap, _gang(3, 8, 0, required=None))
    assert plan.placed and plan.hosts() == ["h00", "h05", "h10"]
    assert [c.key for c in TopologyPlacement().placement_scores(snap, _gang(3, 8, 0, required=None))] == [()]


def test_a_gang_that_fits_no_placement_is_refused_whole_with_upstreams_count_of_placements():
    plan = TopologyPlacement().place(_snap(), _gang(5, 8, 0))
    assert not plan.placed and plan.assignments == ()
    assert "0/4 placements" in plan.reason


def test_scores_use_gos_integer_division():
    assert _go_div(-3, 2) == -1 and _go_div(3, 2) == 1 and _go_div(-4, 2) == -2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 128), st.integers(0, 3)), min_size=16, max_size=16),
       st.integers(0, 8), st.integers(0, 64), st.booleans())
def test_scoring_every_node_at_once_gives_the_same_scores_as_node_by_node(usage, gpus, cores, with_memory):
    from scheduler.placement.kube_topology import DEFAULT_MEMORY, DEFAULT_MILLI_CPU, _Arrays, _node_score, \
        _placement_score

    hosts = tree_hosts()
    states = {h.name: HostState(h.name, gpus=8, cpu_millis=128 * CORES, memory=TIB, gpus_used=g, cpu_used=c * CORES,
                                memory_used=(c * TIB // 200) if with_memory else 0, pods_used=p)
              for h, (g, c, p) in zip(hosts, usage)}
    snap = Snapshot(Topology(hosts, LEVELS), states)
    role = Role("w", 1, gpus, cpu_millis=cores * CORES, memory=cores * TIB // 128 if with_memory else 0)
    names = sorted(states)
    arrays = _Arrays.of(snap, names)
    nz = (role.cpu_millis or DEFAULT_MILLI_CPU, role.memory or DEFAULT_MEMORY)
    nodes = [TopologyPlacement._node(snap, h) for h in names]
    assert arrays.scores(role, *nz) == [_node_score(n, role, *nz) for n in nodes]
    assert arrays.placement_score(3 * nz[0], 3 * nz[1]) == _placement_score(nodes, 3 * nz[0], 3 * nz[1])
