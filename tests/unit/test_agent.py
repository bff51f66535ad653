"""The node agent against a FAKE NVML (the hardware boundary): readings, Node patches, DCGM-named metrics."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from topology.agent.fake_nvml import fake_profile
from topology.agent.main import run_agent
from topology.agent.metrics import AgentCollector
from topology.agent.reading import node_patch, read_host
from topology.model import HostInfo, Topology
from topology.levels import preset
from topology.nvlink import parse_nvlink_matrix


def test_nvswitch_host_has_nvlink_between_every_pair():
    reading = read_host(fake_profile("nvswitch-8"))
    assert len(reading.gpus) == 8 and reading.product == "NVIDIA H100 80GB HBM3"
    assert parse_nvlink_matrix(reading.matrix()).islands() == [list(range(8))]
    assert reading.fabric is None and reading.errors == []
    g = reading.gpus[3]
    assert g.total == 80 * 2**30 and g.reserved == 512 * 2**20 and g.free == g.total - g.reserved - g.used
    assert (g.numa_node, reading.gpus[7].numa_node) == (0, 1) and g.pci_bus_id.endswith(":48:00.0")


def test_nvl72_member_reports_its_nvlink_domain_as_gfd_writes_it():
    reading = read_host(fake_profile("nvl72-4:aaaa-bbbb:7"))
    assert reading.clique == "aaaa-bbbb.7"
    assert reading.matrix() == "XNNN;NXNN;NNXN;NNNX"


def test_pcie_host_has_no_nvlink_and_peer_reads_only_where_the_switch_allows():
    reading = read_host(fake_profile("pcie-4"))
    assert reading.matrix() == "XP--;PX--;--XP;--PX"
    assert parse_nvlink_matrix(reading.matrix()).islands() == [[0], [1], [2], [3]]


def test_an_nvml_error_on_one_gpu_does_not_hide_the_others():
    nvml = fake_profile("nvswitch-8")
    nvml.fail = {2: "GPU is lost"}
    reading = read_host(nvml)
    assert len(reading.gpus) == 8
    assert reading.gpus[2].errors and not reading.gpus[2].memory_ok
    assert all(g.memory_ok for g in reading.gpus if g.index != 2)
    assert any("p2p 0-2" in e for e in reading.errors)
    assert (0, 1) in reading.nvlink and (0, 2) not in reading.nvlink
    collector = AgentCollector("node-a")
    collector.reading = reading
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    assert text.count("DCGM_FI_DEV_FB_USED{") == 7  # the lost GPU has no sample rather than a false zero


def test_metrics_use_dcgm_exporter_names_labels_and_mib():
    nvml = fake_profile("nvl72-4")
    nvml.used_bytes = {1: 1000 * 2**20}
    collector = AgentCollector("gb-node-3")
    collector.reading = read_host(nvml)
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    line = next(l for l in text.splitlines() if l.startswith("DCGM_FI_DEV_FB_USED{") and 'gpu="1"' in l)
    assert line.endswith(" 1000.0")
    for label in ('Hostname="gb-node-3"', 'device="nvidia1"', 'modelName="NVIDIA GB200"', 'UUID="GPU-', "pci_bus_id="):
        assert label in line
    free = next(l for l in text.splitlines() if l.startswith("DCGM_FI_DEV_FB_FREE{") and 'gpu="1"' in l)
    assert float(free.rsplit(" ", 1)[1]) == 186 * 1024 - 512 - 1000


def test_node_patch_writes_only_what_changed_and_leaves_gfd_labels_to_gfd():
    reading = read_host(fake_profile("nvl72-4:u:2"))
    first = node_patch(reading, {}, {})
    assert first["metadata"]["labels"] == {"nvidia.com/gpu.clique": "u.2", "nvidia.com/gpu.count": "4",
                                           "nvidia.com/gpu.product": "NVIDIA-GB200"}
    assert first["metadata"]["annotations"]["clique.dev/nvlink-matrix"] == "XNNN;NXNN;NNXN;NNNX"
    assert json.loads(first["metadata"]["annotations"]["clique.dev/gpus"])[0]["numa"] == 0
    # applied: nothing left to patch
    assert node_patch(reading, first["metadata"]["labels"], first["metadata"]["annotations"]) is None
    # GFD present and authoritative: its clique label is never overwritten, count/product not written
    gfd = {"nvidia.com/gfd.timestamp": "1", "nvidia.com/gpu.clique": "gfd-value.9"}
    patch = node_patch(reading, gfd, first["metadata"]["annotations"])
    assert patch is None


def test_the_topology_model_reads_what_the_agent_publishes():
    patches = {}
    for host, profile in (("gb-a", "nvl72-4:rack:1"), ("gb-b", "nvl72-4:rack:1"), ("gb-c", "nvl72-4:rack:2")):
        patches[host] = node_patch(read_host(fake_profile(profile)), {}, {})["metadata"]
    topo = Topology([HostInfo(h, 4, p["labels"], p["annotations"]) for h, p in patches.items()], preset("gb200-nvl72"))
    # same NVLink domain; different domains with no zone label share nothing known
    assert topo.lowest_common_level("gb-a", "gb-b") == 1 and topo.lowest_common_level("gb-a", "gb-c") == -1
    assert topo.gpu_islands["gb-a"] == [[0, 1, 2, 3]]


def test_without_nvml_the_agent_says_so_and_exits_nonzero_unless_allowed(capsys):
    rc = asyncio.run(run_agent(fake_profile("none"), None, None, "127.0.0.1", 0, 1.0, allow_no_gpu=False, once=True))
    assert rc == 1 and "no NVIDIA driver or no GPU" in capsys.readouterr().err


def test_with_allow_no_gpu_it_serves_empty_metrics():
    from simulations.controlplane.processes import free_port

    async def scenario() -> str:
        import aiohttp

        port = free_port()
        task = asyncio.create_task(run_agent(fake_profile("none"), None, None, "127.0.0.1", port, 0.2, True))
        try:
            for _ in range(50):
                try:
                    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
                        return await r.text()
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            raise AssertionError("agent did not serve /metrics")
        finally:
            task.cancel()
            with pytest.raises((asyncio.CancelledError, Exception)):
                await task

    text = asyncio.run(scenario())
    assert "clique_agent_nvml_up 0.0" in text and "DCGM_FI_DEV_FB_USED{" not in text
