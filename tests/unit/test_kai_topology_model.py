"""The `kai-topology` model: KAI-Scheduler's topology-aware allocation (NVIDIA/KAI-Scheduler @ 72de64fc,
docs/topology/README.md, pkg/scheduler/plugins/topology/, pkg/scheduler/actions/common/allocate.go)."""

from __future__ import annotations

from collections import Counter

from scheduler.placement.kai_topology import KaiTopology
from scheduler.placement.types import Gang, HostState, Role, Snapshot
from tests.unit.placement_builders import gang, snapshot
from topology.levels import levels_from_labels
from topology.model import HostInfo, Topology

ZONE, RACK = "topology.kubernetes.io/zone", "topology.kubernetes.io/rack"


def _docs_cluster() -> Snapshot:
    """docs/topology/README.md's example: zone A = rack A1 (2 nodes) + racks A2-A4 (1 node each), zone B = racks
    B1-B3 (2 nodes each); one GPU per node."""
    racks = {"A1": 2, "A2": 1, "A3": 1, "A4": 1, "B1": 2, "B2": 2, "B3": 2}
    hosts = [HostInfo(f"{r}-{i + 1}", 1, {ZONE: f"zone{r[0]}", RACK: r}) for r, n in racks.items() for i in range(n)]
    topo = Topology(hosts, levels_from_labels([ZONE, RACK], ["zone", "rack"]))
    return Snapshot(topo, {h.name: HostState(h.name, gpus=1) for h in hosts})


def _hosts(plan) -> Counter:
    return Counter(a.host for a in plan.assignments)


def test_the_docs_example_bin_packs_into_the_zone_with_fewer_free_gpus_and_fills_the_roomiest_rack_first():
    plan = KaiTopology().place(_docs_cluster(), Gang("job", (Role("w", 3, 1),), required_level=ZONE,
                                                     preferred_level=RACK))
    assert plan.placed
    hosts = set(_hosts(plan))
    assert {"A1-1", "A1-2"} <= hosts, "rack A1 (2 free GPUs, the roomiest rack of zone A) is filled first"
    assert all(h.startswith("A") for h in hosts), "zone A: 5 free GPUs against zone B's 6"
    # the third pod: racks A2-A4 tie on their ratio (3/1), sorted by ID, and node_scoring.go scores later racks
    # higher, so KAI's code takes A4 (the docs' walk-through names A2; the code is what is modelled)
    assert hosts == {"A1-1", "A1-2", "A4-1"}


def test_a_required_leaf_goes_to_the_fullest_leaf_that_still_holds_the_gang():
    # leaf l0: 2 hosts free; l1: 3 hosts free; l2, l3: empty. A 2 x 8 gang packs into l0.
    used = {"h02": 8, "h03": 8, "h07": 8}
    plan = KaiTopology().place(snapshot(used), gang(2, 8, required="leaf"))
    assert set(_hosts(plan)) == {"h00", "h01"}


def test_a_preferred_leaf_is_looked_for_inside_the_fullest_spine_first_not_across_the_cluster():
    # spine s0 is fuller (l0 has 3 hosts with 4 free, l1 is full); spine s1 has the fullest fitting leaf (l2: 2 hosts
    # with 4 free) but more free GPUs overall. KAI sorts spines first, so a 2 x 4 gang lands in l0.
    used = {"h00": 4, "h01": 4, "h02": 4, "h03": 8, **{f"h0{i}": 8 for i in range(4, 8)},
            "h08": 4, "h09": 4, "h10": 8, "h11": 8}
    plan = KaiTopology().place(snapshot(used), gang(2, 4, preferred_level="leaf"))
    assert plan.placed and set(_hosts(plan)) <= {"h00", "h01", "h02"}


def test_a_preferred_leaf_that_fits_nowhere_falls_back_to_the_spine_and_fills_its_roomiest_leaf_first():
    # every leaf has at most 3 free hosts; a 5 x 8 gang fits no leaf, so KAI takes a spine, and inside it the
    # leaf with the most free GPUs first (node_scoring.go), so the gang uses as few leaves as it can
    used = {"h00": 8, "h04": 8, "h05": 8, "h08": 8, "h12": 8}
    plan = KaiTopology().place(snapshot(used), gang(5, 8, preferred_level="leaf"))
    assert plan.placed
    leaves = Counter(int(a.host[1:]) // 4 for a in plan.assignments)
    spines = {leaf // 2 for leaf in leaves}
    assert len(spines) == 1 and sorted(leaves.values()) == [2, 3]


def test_a_gang_with_a_required_spine_that_fits_no_spine_is_not_placed_and_says_where_it_looked():
    used = {f"h{i:02d}": 8 for i in range(0, 16, 2)}  # every other host full: 4 free per spine
    plan = KaiTopology().place(snapshot(used), gang(5, 8, required="spine"))
    assert not plan.placed and plan.assignments == ()
    assert "spine" in plan.reason and "5 pods" in plan.reason


def test_without_topology_constraints_pods_bin_pack_onto_the_hosts_with_the_fewest_free_gpus():
    used = {"h05": 6, "h09": 4}
    plan = KaiTopology().place(snapshot(used), gang(2, 2))
    assert sorted(_hosts(plan).elements()) == ["h05", "h09"]  # 2 free first (full after), then 4 free


def test_a_preferred_level_outside_the_required_one_is_kais_configuration_error():
    plan = KaiTopology().place(snapshot(), gang(2, 8, required="leaf", preferred_level="spine"))
    assert not plan.placed and "topology constraint error" in plan.reason


def test_a_gang_of_two_shapes_uses_summed_requests_and_still_places_every_pod_once():
    g = Gang("g", (Role("leader", 1, 0, cpu_millis=1000, one_per_host=True), Role("worker", 3, 8)),
             required_level="leaf")
    plan = KaiTopology().place(snapshot({"h00": 8}), g)
    assert plan.placed and sorted((a.role, a.index) for a in plan.assignments) == sorted(g.pod_ids())
    assert len({int(a.host[1:]) // 4 for a in plan.assignments}) == 1
