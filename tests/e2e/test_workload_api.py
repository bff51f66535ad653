"""Kubernetes' own Workload API (PodGroup, scheduling.k8s.io/v1beta1 on 1.37) with the GenericWorkload and
TopologyAwareWorkloadScheduling gates on: clique-scheduler's profile leaves gang placement to the extender (the
in-tree gang plugins are disabled there), a gang PodGroup is bound whole in one NVLink domain, and a PodGroup
with the `basic` policy is placed pod by pod."""

from __future__ import annotations

import pytest
from kubernetes import client

from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender
from simulations.controlplane.kwok_nodes import create_nodes
from tests.e2e.helpers import gpu_pod, wait_for
from topology.spec import parse_cluster_spec

NVL = "nvidia.com/gpu.clique"


@pytest.fixture(scope="module")
def gated_cluster(tmp_path_factory):
    from simulations.controlplane import ControlPlane, ControlPlaneOptions

    opts = ControlPlaneOptions(feature_gates={"GenericWorkload": True, "TopologyAwareWorkloadScheduling": True},
                               runtime_config={"scheduling.k8s.io/v1beta1": True})
    with ControlPlane(opts) as cp:
        api = cp.api_client()
        names = create_nodes(api, parse_cluster_spec({
            "name": "wl", "pools": [{"name": "wl", "hosts": 8, "gpus": 8}],
            "levels": [{"name": "nvlink", "label": NVL, "hostsPerDomain": 4, "valueFormat": "wl.{index}"}]}).hosts())
        log = tmp_path_factory.mktemp("extender") / "extender.log"
        proc, port = start_extender(cp.kubeconfig, log, preset="gb200-nvl72")
        try:
            cp.start_scheduler(clique_scheduler_config(port), name="clique-scheduler")
            yield api, {n: f"wl.{i // 4}" for i, n in enumerate(names)}, log
        finally:
            cp.stop_component("clique-scheduler")
            stop_extender(proc)
            api.close()


def _podgroup(custom, name: str, policy: dict) -> None:
    custom.create_namespaced_custom_object("scheduling.k8s.io", "v1beta1", "default", "podgroups", {
        "apiVersion": "scheduling.k8s.io/v1beta1", "kind": "PodGroup", "metadata": {"name": name},
        "spec": {"schedulingPolicy": policy, "schedulingConstraints": {"topology": [{"key": NVL}]}}})


def _member(name: str, group: str) -> dict:
    pod = gpu_pod(name, 8, scheduler="clique-scheduler", labels={"group": group})
    pod["spec"]["schedulingGroup"] = {"podGroupName": group}
    return pod


def test_a_gang_podgroup_is_bound_whole_in_one_domain_by_the_extender_with_the_gates_on(gated_cluster):
    api, domain, log = gated_cluster
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    _podgroup(custom, "gang", {"gang": {"minCount": 3}})
    for i in range(3):
        core.create_namespaced_pod("default", _member(f"gang-{i}", "gang"))
    placed = wait_for(lambda: (r := {p.metadata.name: p.spec.node_name for p in core.list_namespaced_pod(
        "default", label_selector="group=gang").items if p.spec.node_name}) and len(r) == 3 and r, 90, "gang bound")
    assert len({domain[n] for n in placed.values()}) == 1 and len(set(placed.values())) == 3
    assert "planned gang default/podgroup/gang (3x8)" in log.read_text(), "placed by the extender as one gang"


def test_a_basic_podgroup_is_placed_pod_by_pod(gated_cluster):
    api, _, log = gated_cluster
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    _podgroup(custom, "basic", {"basic": {}})
    core.create_namespaced_pod("default", _member("basic-0", "basic"))
    # one pod of a basic group is bound on its own: it does not wait for siblings that never come
    wait_for(lambda: core.read_namespaced_pod("basic-0", "default").spec.node_name, 60, "basic pod bound alone")
    assert "planned gang default/single/basic-0 (1x8)" in log.read_text()
