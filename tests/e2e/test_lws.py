"""Clique with the real LeaderWorkerSet controller (sigs.k8s.io/lws v0.8.0, built from its Go module and run by
the harness): every startup path ends with each group whole inside one NVLink domain, none deadlocks, and a
group that loses a worker is recreated and placed whole again."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender
from simulations.controlplane.kwok_nodes import create_nodes
from simulations.controlplane.lws import (EXCLUSIVE_TOPOLOGY_ANNOTATION, GROUP, PLURAL, SET_NAME_LABEL, VERSION,
                                          create_lws, delete_lws, lws_manifest)
from tests.e2e.helpers import wait_for
from topology.spec import parse_cluster_spec

NVL = "nvidia.com/gpu.clique"
DOMAINS, HOSTS = 3, 4


@pytest.fixture(scope="module")
def lws_cluster(tmp_path_factory):
    from simulations.controlplane import ControlPlane, ControlPlaneOptions

    with ControlPlane(ControlPlaneOptions(lws=True)) as cp:
        api = cp.api_client()
        names = create_nodes(api, parse_cluster_spec({
            "name": "lw", "pools": [{"name": "lw", "hosts": DOMAINS * HOSTS, "gpus": 8}],
            "levels": [{"name": "nvlink", "label": NVL, "hostsPerDomain": HOSTS, "valueFormat": "lw.{index}"}]}).hosts())
        log = tmp_path_factory.mktemp("extender") / "extender.log"
        proc, port = start_extender(cp.kubeconfig, log, preset="gb200-nvl72", bind_timeout_s=8)
        try:
            cp.start_scheduler(clique_scheduler_config(port), name="clique-scheduler")
            yield {"api": api, "domain": {n: f"lw.{i // HOSTS}" for i, n in enumerate(names)}, "log": log}
        finally:
            cp.stop_component("clique-scheduler")
            stop_extender(proc)
            api.close()


def _groups(core, name: str) -> dict[str, dict[str, str | None]]:
    """group index -> pod name -> node (None while pending)."""
    out: dict[str, dict[str, str | None]] = {}
    for p in core.list_namespaced_pod("default", label_selector=f"{SET_NAME_LABEL}={name}").items:
        if p.metadata.deletion_timestamp:
            continue
        out.setdefault(p.metadata.labels.get("leaderworkerset.sigs.k8s.io/group-index", "?"), {})[p.metadata.name] = \
            p.spec.node_name
    return out


def _whole(core, name: str, groups: int, size: int) -> dict[str, dict[str, str]] | None:
    got = _groups(core, name)
    if len(got) != groups or any(len(g) != size or not all(g.values()) for g in got.values()):
        return None
    return got  # type: ignore[return-value]


def _run(env, manifest: dict, groups: int, size: int, timeout_s: float = 90) -> dict[str, dict[str, str]]:
    core = client.CoreV1Api(env["api"])
    create_lws(env["api"], manifest)
    name = manifest["metadata"]["name"]
    placed = wait_for(lambda: _whole(core, name, groups, size), timeout_s, f"LWS {name}: {groups} group(s) bound whole")
    for g in placed.values():
        assert len({env["domain"][n] for n in g.values()}) == 1, f"group spans domains: {g}"
    return placed


def _domains(env, placed) -> list[str]:
    return [next(env["domain"][n] for n in g.values()) for g in placed.values()]


def test_default_startup_group_of_four_is_bound_together_inside_one_nvlink_domain(lws_cluster):
    placed = _run(lws_cluster, lws_manifest("lws-default", size=4, scheduler_name="clique-scheduler"), 1, 4)
    log = lws_cluster["log"].read_text()
    assert "planned gang default/lws/lws-default-0 (1x8 leader + 3x8 worker)" in log
    assert "bound leader default/lws-default-0" not in log, "LeaderCreated: no leader bound ahead of its workers"
    assert len(set(next(iter(placed.values())).values())) == 4
    delete_lws(lws_cluster["api"], "lws-default")


def test_leader_ready_group_is_planned_whole_from_its_leader_and_does_not_deadlock(lws_cluster):
    _run(lws_cluster, lws_manifest("lws-ready", size=3, scheduler_name="clique-scheduler",
                                   startup_policy="LeaderReady"), 1, 3)
    log = lws_cluster["log"].read_text()
    assert "bound leader default/lws-ready-0 of gang default/lws/lws-ready-0" in log
    assert "2 worker place(s) held" in log
    delete_lws(lws_cluster["api"], "lws-ready")


def test_exclusive_topology_puts_one_group_per_nvlink_domain_without_deadlock(lws_cluster):
    placed = _run(lws_cluster, lws_manifest("lws-excl", size=2, replicas=2, scheduler_name="clique-scheduler",
                                            annotations={EXCLUSIVE_TOPOLOGY_ANNOTATION: NVL}), 2, 2)
    assert len(set(_domains(lws_cluster, placed))) == 2, "exclusive: each group in its own domain"
    delete_lws(lws_cluster["api"], "lws-excl")


def test_scaling_an_lws_up_and_down_keeps_each_group_whole_in_its_own_domain(lws_cluster):
    env = lws_cluster
    core, custom = client.CoreV1Api(env["api"]), client.CustomObjectsApi(env["api"])
    _run(env, lws_manifest("lws-scale", size=4, replicas=1, scheduler_name="clique-scheduler"), 1, 4)
    custom.patch_namespaced_custom_object_scale(GROUP, VERSION, "default", PLURAL, "lws-scale", {"spec": {"replicas": 3}})
    placed = wait_for(lambda: _whole(core, "lws-scale", 3, 4), 120, "3 groups bound whole")
    assert sorted(_domains(env, placed)) == ["lw.0", "lw.1", "lw.2"], "3 groups of 4 fill the 3 domains of 4 hosts"
    custom.patch_namespaced_custom_object_scale(GROUP, VERSION, "default", PLURAL, "lws-scale", {"spec": {"replicas": 1}})
    wait_for(lambda: _whole(core, "lws-scale", 1, 4), 120, "back to 1 group")
    delete_lws(env["api"], "lws-scale")
    wait_for(lambda: not _groups(core, "lws-scale"), 60, "pods gone")


def test_a_deleted_worker_makes_lws_recreate_the_group_which_is_placed_whole_again(lws_cluster):
    env = lws_cluster
    core = client.CoreV1Api(env["api"])
    placed = _run(env, lws_manifest("lws-heal", size=3, scheduler_name="clique-scheduler"), 1, 3)
    before = {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod(
        "default", label_selector=f"{SET_NAME_LABEL}=lws-heal").items}
    worker = next(n for n in next(iter(placed.values())) if n != "lws-heal-0")
    core.delete_namespaced_pod(worker, "default")  # graceful: LWS sees the deletionTimestamp (PodDeleted)

    def recreated():
        pods = core.list_namespaced_pod("default", label_selector=f"{SET_NAME_LABEL}=lws-heal").items
        fresh = [p for p in pods if p.metadata.uid not in before.values() and not p.metadata.deletion_timestamp]
        return len(fresh) == 3 and all(p.spec.node_name for p in fresh) and fresh
    fresh = wait_for(recreated, 120, "the whole group recreated by LWS and bound again")
    assert len({env["domain"][p.spec.node_name] for p in fresh}) == 1
    delete_lws(env["api"], "lws-heal")
    time.sleep(0.5)
