from pathlib import Path

import pytest

from topology.model import topology_from_spec
from topology.render import render_text
from topology.spec import SpecError, load_cluster_spec, parse_cluster_spec

DEFAULT_SPEC = Path(__file__).parents[2] / "simulations" / "controlplane" / "default-cluster.yaml"

SUPERPOD = {
    "name": "sp",
    "levels": [
        {"name": "zone", "label": "topology.kubernetes.io/zone", "hostsPerDomain": 8},
        {"name": "spine", "label": "clique.dev/spine", "hostsPerDomain": 4},
        {"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 2},
    ],
    "pools": [{"name": "h100", "hosts": 16, "gpus": 8, "cpu": "192", "memory": "2Ti"}],
}


def test_hosts_fill_domains_in_order_level_by_level():
    hosts = parse_cluster_spec(SUPERPOD).hosts()
    assert [h.name for h in hosts[:3]] == ["h100-0000", "h100-0001", "h100-0002"]
    # host 5: zone 0 (0-7), spine 1 (4-7), leaf 2 (4-5)
    assert {k: hosts[5].labels[k] for k in ("topology.kubernetes.io/zone", "clique.dev/spine", "clique.dev/leaf")} == {
        "topology.kubernetes.io/zone": "zone-0", "clique.dev/spine": "spine-1", "clique.dev/leaf": "leaf-2"}
    assert hosts[15].labels["topology.kubernetes.io/zone"] == "zone-1"
    assert hosts[0].gpus == 8 and hosts[0].cpu_millis == 192000 and hosts[0].memory_bytes == 2**41
    assert hosts[0].labels["nvidia.com/gpu.count"] == "8"


def test_level_limited_to_a_pool_counts_only_that_pools_hosts():
    spec = parse_cluster_spec({
        "name": "mix",
        "levels": [{"name": "nvlink", "label": "nvidia.com/gpu.clique", "hostsPerDomain": 18, "pools": ["gb200"],
                    "valueFormat": "{cluster}-fabric.{index}"}],
        "pools": [{"name": "h100", "hosts": 3}, {"name": "gb200", "hosts": 36, "gpus": 4}],
    })
    hosts = spec.hosts()
    assert "nvidia.com/gpu.clique" not in hosts[0].labels
    cliques = [h.labels["nvidia.com/gpu.clique"] for h in hosts[3:]]
    assert cliques[:18] == ["mix-fabric.0"] * 18 and cliques[18:] == ["mix-fabric.1"] * 18
    assert spec.gpu_count == 3 * 8 + 36 * 4


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["levels"][1].update(hostsPerDomain=3), "does not divide level 'zone'"),
    (lambda d: d.update(pools=[]), "'pools' is empty"),
    (lambda d: d["pools"][0].update(hosts="many"), r"pools\[0\].hosts: expected an integer"),
    (lambda d: d["pools"][0].update(memory="lots"), r"pools\[0\]: 'lots' is not a Kubernetes quantity"),
    (lambda d: d["levels"][0].pop("label"), r"levels\[0\]: missing required field 'label'"),
    (lambda d: d["levels"][2].update(label="clique.dev/spine"), "same label"),
    (lambda d: d["levels"][0].update(pools=["a100"]), r"unknown pool\(s\) \['a100'\]"),
])
def test_invalid_spec_names_the_field_and_the_fix(mutate, message):
    import copy

    data = copy.deepcopy(SUPERPOD)
    mutate(data)
    with pytest.raises(SpecError, match=message):
        parse_cluster_spec(data)


def test_missing_or_broken_spec_file_is_a_clear_error(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_cluster_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_cluster_spec(bad)


def test_embedded_default_cluster_has_superpod_tree_and_nvl72_domains():
    spec = load_cluster_spec(DEFAULT_SPEC)
    tree = render_text(topology_from_spec(spec))
    assert spec.host_count == 68 and spec.gpu_count == 32 * 8 + 36 * 4
    assert "clique.dev/leaf=leaf-7  [4 hosts, 32 GPUs]" in tree
    assert "nvidia.com/gpu.clique=clique-demo-fabric.1  [18 hosts, 72 GPUs]" in tree
