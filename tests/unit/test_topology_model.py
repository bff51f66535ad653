"""The topology model: domains from labels, presets, fabric files, NVLink matrices, costs, rendering."""

from __future__ import annotations

import pytest

from topology.fabric import FabricError, parse_fabric
from topology.levels import PRESETS, preset
from topology.model import HostInfo, Topology
from topology.nvlink import MatrixError, encode_links, parse_nvlink_matrix
from topology.render import render_png, render_text
from tests.unit.placement_builders import LEVELS, tree_hosts

#                         zone=z0
#              spine=s0                      spine=s1
#        leaf=l0        leaf=l1        leaf=l2        leaf=l3
#    h00 h01 h02 h03  h04 h05 h06 h07  h08 h09 h10 h11  h12 h13 h14 h15
TOPO = Topology(tree_hosts(), LEVELS)


@pytest.mark.parametrize("a, b, level, distance", [
    ("h00", "h00", 2, 0),
    ("h00", "h01", 2, 1),            # same leaf: only the host hop
    ("h00", "h04", 1, 1 + 10),       # same spine, other leaf
    ("h00", "h08", 0, 1 + 10 + 100),  # same zone, other spine
])
def test_lowest_common_domain_and_distance(a, b, level, distance):
    assert TOPO.lowest_common_level(a, b) == level
    assert TOPO.distance(a, b) == distance


def test_gang_cost_counts_extra_domains_per_level():
    assert TOPO.gang_cost(["h00", "h01"]) == 1
    assert TOPO.gang_cost(["h00", "h04"]) == 1 + 10
    assert TOPO.domains_used(["h00", "h04", "h08"]) == [1, 2, 3]


def test_free_capacity_per_domain():
    free = {h: 8 for h in TOPO.hosts} | {"h00": 0, "h01": 2}
    per_level = TOPO.free_per_domain(free)
    assert per_level[2][("z0", "s0", "l0")] == 0 + 2 + 8 + 8
    assert per_level[1][("z0", "s0")] == 18 + 32
    assert per_level[0][("z0",)] == 128 - 8 - 6


def test_same_leaf_name_under_two_spines_is_two_domains():
    hosts = [HostInfo("a", 8, {"clique.dev/spine": "s0", "clique.dev/leaf": "leaf-0"}),
             HostInfo("b", 8, {"clique.dev/spine": "s1", "clique.dev/leaf": "leaf-0"})]
    topo = Topology(hosts, preset("generic")[1:])
    assert topo.lowest_common_level("a", "b") == -1


def test_level_that_does_not_apply_is_shared_through_the_inner_domain():
    # GB200 racks: NVLink domain labels, no leaf switch label; H100 hosts: no NVLink domain.
    hosts = [HostInfo("gb-0", 4, {"nvidia.com/gpu.clique": "uuid.0"}), HostInfo("gb-1", 4, {"nvidia.com/gpu.clique": "uuid.0"}),
             HostInfo("gb-2", 4, {"nvidia.com/gpu.clique": "uuid.1"}), HostInfo("h-0", 8, {}), HostInfo("h-1", 8, {})]
    topo = Topology(hosts, preset("generic-nvlink"))
    assert topo.domains_used(["gb-0", "gb-1"]) == [1, 1, 1, 1]
    assert topo.domains_used(["gb-0", "gb-2"])[-1] == 2
    assert topo.lowest_common_level("h-0", "h-1") == -1  # nothing known: never assumed close
    assert sorted(topo.unlabelled) == ["leaf", "nvlink", "spine", "zone"]


def test_presets_name_the_providers_labels():
    assert [lv.label for lv in PRESETS["gb200-nvl72"]][-1] == "nvidia.com/gpu.clique"
    assert [lv.label for lv in PRESETS["aws"]] == [f"topology.k8s.aws/network-node-layer-{i}" for i in (1, 2, 3)]
    assert [lv.label for lv in PRESETS["gke"]] == ["cloud.google.com/gce-topology-block",
                                                   "cloud.google.com/gce-topology-subblock",
                                                   "cloud.google.com/gce-topology-host"]
    with pytest.raises(ValueError, match="unknown topology preset 'azure'"):
        preset("azure")


FABRIC = {
    "levels": ["spine", "leaf"],
    "switches": [{"name": "sp-a", "children": [{"name": "lf-1", "hosts": ["n1", "n2"]}, {"name": "lf-2", "hosts": ["n3"]}]},
                 {"name": "sp-b", "children": [{"name": "lf-3", "hosts": ["n4"]}]}],
}


def test_fabric_file_gives_hosts_their_switches():
    fabric = parse_fabric(FABRIC)
    assert fabric.host_labels["n3"] == {"clique.dev/fabric-spine": "sp-a", "clique.dev/fabric-leaf": "lf-2"}
    topo = Topology([HostInfo(h, 8, labels) for h, labels in fabric.host_labels.items()], fabric.levels)
    assert topo.lowest_common_level("n1", "n2") == 1 and topo.lowest_common_level("n1", "n3") == 0
    assert topo.lowest_common_level("n1", "n4") == -1


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("levels"), "expected a mapping with 'levels'"),
    (lambda d: d["switches"][0]["children"][0].pop("hosts"), r"sp-a.*|lf-1.*list 'hosts'"),
    (lambda d: d["switches"][1].pop("children"), r"sp-b.*needs 'children'"),
    (lambda d: d["switches"][1]["children"][0]["hosts"].append("n1"), "host n1 appears under two switches"),
])
def test_broken_fabric_file_says_where(mutate, message):
    import copy

    data = copy.deepcopy(FABRIC)
    mutate(data)
    with pytest.raises(FabricError, match=message):
        parse_fabric(data)


def test_nvlink_matrix_round_trip_and_islands():
    # two NVLink islands of 4 GPUs (e.g. a PCIe-switched 8-GPU host with NVLink bridges)
    pairs = {(a, b) for group in ((0, 1, 2, 3), (4, 5, 6, 7)) for a in group for b in group if a < b}
    text = encode_links(8, pairs, pcie_p2p_pairs={(0, 4)})
    links = parse_nvlink_matrix(text)
    assert links.islands() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert links.rows[0][4] == "P" and links.encode() == text


@pytest.mark.parametrize("bad, message", [
    ("XN;NXN", "row 0 has 2 entries, expected 2|row 1 has 3 entries"),
    ("XQ;QX", "use X, N, P or -"),
    ("NN;NX", "X on the diagonal"),
    ("XN;-X", "must be symmetric"),
])
def test_malformed_nvlink_matrix_is_rejected_with_the_reason(bad, message):
    with pytest.raises(MatrixError, match=message):
        parse_nvlink_matrix(bad)


def test_a_bad_annotation_on_one_host_is_reported_and_ignored():
    hosts = [HostInfo("ok", 2, {}, {"clique.dev/nvlink-matrix": "XN;NX"}),
             HostInfo("bad", 2, {}, {"clique.dev/nvlink-matrix": "XZ;ZX"}),
             HostInfo("wrong-size", 4, {}, {"clique.dev/nvlink-matrix": "XN;NX"})]
    topo = Topology(hosts, LEVELS)
    assert topo.gpu_islands == {"ok": [[0, 1]]}
    assert any("host bad" in p for p in topo.problems) and any("wrong-size" in p for p in topo.problems)
    assert topo.graph.has_edge(("ok", 0), ("ok", 1))


def test_text_and_png_rendering(tmp_path):
    text = render_text(TOPO, free_gpus={h: 8 for h in TOPO.hosts} | {"h00": 0})
    assert text.splitlines()[0] == "cluster [16 hosts, 128 GPUs, 120 free]"
    assert "clique.dev/leaf=l0  [4 hosts, 32 GPUs, 24 free]" in text
    png = render_png(TOPO, tmp_path / "t.png", free_gpus={"h00": 0})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
