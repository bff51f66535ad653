"""Clique's extender behind the real kube-scheduler (second scheduler, profile clique-scheduler), KWOK nodes."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from kubernetes import client

from simulations.controlplane.kwok_nodes import create_nodes
from simulations.controlplane.processes import http_ok
from tests.e2e.helpers import gpu_pod, wait_for
from topology.spec import parse_cluster_spec

NVL = "nvidia.com/gpu.clique"


def nvl_cluster(prefix: str, domains: int = 3, hosts: int = 4) -> list[str]:
    return [h.name for h in parse_cluster_spec({
        "name": prefix,
        "levels": [{"name": "nvlink", "label": NVL, "hostsPerDomain": hosts, "valueFormat": prefix + ".{index}"}],
        "pools": [{"name": prefix, "hosts": domains * hosts, "gpus": 8}],
    }).hosts()]


def gang_pod(name: str, gang: str, size: int, gpus: int = 8, pool: str | None = None, args: list[str] | None = None,
             gated: bool = False) -> dict:
    pod = gpu_pod(name, gpus, scheduler="clique-scheduler", labels={"gang": gang})
    pod["metadata"]["annotations"] = {"clique.dev/gang": gang, "clique.dev/gang-size": str(size),
                                      "clique.dev/topology-required": "nvlink"}
    if pool:
        pod["spec"]["nodeSelector"] = {"clique.dev/pool": pool}
    if args:
        pod["spec"]["containers"][0]["args"] = args
    if gated:
        pod["spec"]["schedulingGates"] = [{"name": "clique.dev/test-hold"}]
    return pod


def gang_pods(core, name: str, size: int, gpus: int = 8, ns: str = "default", pool: str | None = None) -> None:
    for i in range(size):
        core.create_namespaced_pod(ns, gang_pod(f"{name}-{i}", name, size, gpus, pool))


def new_pool(k8s, domains: int, hosts: int) -> tuple[str, list[str], dict[str, str]]:
    """Fresh KWOK nodes in NVLink domains, labelled clique.dev/pool=<prefix> so a test's pods stay on them."""
    prefix = f"p{uuid.uuid4().hex[:5]}"
    names = create_nodes(k8s, parse_cluster_spec({
        "name": prefix,
        "levels": [{"name": "nvlink", "label": NVL, "hostsPerDomain": hosts, "valueFormat": prefix + ".{index}"}],
        "pools": [{"name": prefix, "hosts": domains * hosts, "gpus": 8}]}).hosts())
    return prefix, names, {n: f"{prefix}.{i // hosts}" for i, n in enumerate(names)}


def bound(core, gang: str) -> list[str]:
    return [p.spec.node_name for p in core.list_namespaced_pod("default", label_selector=f"gang={gang}").items
            if p.spec.node_name]


def pinned(core, name: str, node: str, gpus: int = 8) -> None:
    pod = gpu_pod(name, gpus, labels={"app": "pinned"})
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    core.create_namespaced_pod("default", pod)


def running_on(core, name: str) -> dict[str, str]:
    pods = core.list_namespaced_pod("default", label_selector=f"gang={name}").items
    return {p.metadata.name: p.spec.node_name for p in pods if p.status.phase == "Running"}


def test_gang_lands_whole_inside_one_nvlink_domain_and_waits_whole_when_it_cannot(control_plane, k8s, clique_scheduler):
    core = client.CoreV1Api(k8s)
    prefix = f"nvl{uuid.uuid4().hex[:4]}"
    names = nvl_cluster(prefix)
    api_nodes = create_nodes(k8s, parse_cluster_spec({
        "name": prefix,
        "levels": [{"name": "nvlink", "label": NVL, "hostsPerDomain": 4, "valueFormat": prefix + ".{index}"}],
        "pools": [{"name": prefix, "hosts": 12, "gpus": 8}]}).hosts())
    assert api_nodes == names
    domain = {n: f"{prefix}.{i // 4}" for i, n in enumerate(names)}
    # Domains 0 and 1 each have one busy host: only domain 2 can hold a 4 x 8-GPU gang.
    pinned(core, f"{prefix}-busy-0", names[0])
    pinned(core, f"{prefix}-busy-1", names[4])
    wait_for(lambda: all(core.read_namespaced_pod(f"{prefix}-busy-{i}", "default").status.phase == "Running"
                         for i in (0, 1)), 60, "busy pods Running")

    g1 = f"{prefix}-a"
    gang_pods(core, g1, 4, pool=prefix)  # only this test's nodes: other modules leave free domains behind
    placed = wait_for(lambda: (r := running_on(core, g1)) and len(r) == 4 and r, 90, "gang a Running")
    assert {domain[n] for n in placed.values()} == {f"{prefix}.2"}
    assert len(set(placed.values())) == 4

    # Now no domain has 4 free hosts: the next gang waits whole, with an Event that says why.
    g2 = f"{prefix}-b"
    gang_pods(core, g2, 4, pool=prefix)

    def explained():
        events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={g2}-0").items
        return [e.message for e in events if e.reason == "GangUnschedulable"]
    messages = wait_for(explained, 60, "an Event explaining why the gang waits")
    assert f"needs 4 pod(s) x 8 GPU(s) inside one {NVL}" in messages[0] and "has room for 3 host(s)" in messages[0]
    pods = core.list_namespaced_pod("default", label_selector=f"gang={g2}").items
    assert all(not p.spec.node_name for p in pods), "a gang that cannot fit must not be partly bound"

    # Capacity frees up in domain 0: the whole gang is placed there.
    core.delete_namespaced_pod(f"{prefix}-busy-0", "default")
    placed2 = wait_for(lambda: (r := running_on(core, g2)) and len(r) == 4 and r, 120, "gang b Running after capacity freed")
    assert {domain[n] for n in placed2.values()} == {f"{prefix}.0"}


def test_malformed_requests_get_400_and_the_service_keeps_serving(clique_scheduler):
    import json
    import urllib.error
    import urllib.request

    base = f"http://127.0.0.1:{clique_scheduler['port']}"
    for body in (b"{not json", json.dumps({"NodeNames": ["a"]}).encode(), json.dumps([1, 2]).encode()):
        req = urllib.request.Request(f"{base}/filter", data=body, headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 400 and json.loads(err.value.read())["Error"]
    assert http_ok(f"{base}/healthz")
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert 'clique_extender_bad_requests_total{verb="filter"} 3.0' in metrics


def test_two_gangs_that_cannot_both_fit_one_runs_whole_the_other_waits_whole(k8s, clique_scheduler):
    core = client.CoreV1Api(k8s)
    pool, names, _ = new_pool(k8s, domains=1, hosts=4)
    a, b = f"{pool}-a", f"{pool}-b"
    for i in range(3):  # interleaved: a0, b0, a1, b1, a2, b2 (3 + 3 hosts > 4)
        core.create_namespaced_pod("default", gang_pod(f"{a}-{i}", a, 3, pool=pool))
        core.create_namespaced_pod("default", gang_pod(f"{b}-{i}", b, 3, pool=pool))
    winner = wait_for(lambda: next((g for g in (a, b) if len(running_on(core, g)) == 3), None), 90, "one gang Running")
    loser = b if winner == a else a
    deadline = __import__("time").monotonic() + 10
    while __import__("time").monotonic() < deadline:  # keep watching: the loser never gets a single pod bound
        assert bound(core, loser) == [], "half a gang was bound"
        assert len(bound(core, winner)) == 3
    # the winner leaves: the loser is placed whole
    for i in range(3):
        core.delete_namespaced_pod(f"{winner}-{i}", "default")
    wait_for(lambda: len(running_on(core, loser)) == 3, 120, "the waiting gang Running once room is made")


def test_extender_killed_mid_placement_leaves_no_partial_gang_and_recovers(control_plane, k8s, clique_scheduler):
    """Two members reach bind and wait for the third (held back by a scheduling gate); the extender is killed
    while they wait. Nothing may be bound then or after the timeout; once the third member is released, the
    restarted extender binds the whole gang."""
    import signal
    import time

    core = client.CoreV1Api(k8s)
    pool, names, domain = new_pool(k8s, domains=1, hosts=4)
    g = f"{pool}-r"
    core.create_namespaced_pod("default", gang_pod(f"{g}-0", g, 3, pool=pool))
    core.create_namespaced_pod("default", gang_pod(f"{g}-1", g, 3, pool=pool))
    core.create_namespaced_pod("default", gang_pod(f"{g}-2", g, 3, pool=pool, gated=True))
    log = clique_scheduler["log"]
    wait_for(lambda: f"planned gang default/clique/{g}" in log.read_text(), 60, "the gang planned")
    # The held-back member never arrives: after the bind timeout the reservation is released, nothing bound.
    wait_for(lambda: f"released gang default/clique/{g}: bind timeout" in log.read_text(), 30, "bind timeout")
    assert bound(core, g) == []
    wait_for(lambda: log.read_text().count(f"planned gang default/clique/{g}") >= 2, 60, "kube-scheduler's retry")
    time.sleep(1.0)  # members are waiting in bind again
    proc = clique_scheduler["proc"]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    for _ in range(20):  # while the extender is down and after its bind timeout: nothing bound
        assert bound(core, g) == []
        time.sleep(0.5)
    clique_scheduler["restart"]()
    time.sleep(10)  # past a full bind timeout of the restarted extender
    assert bound(core, g) == [], "a partial gang was bound"
    core.patch_namespaced_pod(f"{g}-2", "default", {"spec": {"schedulingGates": None}})
    placed = wait_for(lambda: (r := running_on(core, g)) and len(r) == 3 and r, 120, "whole gang Running after restart")
    assert len({domain[n] for n in placed.values()}) == 1


def test_single_gpu_pods_are_bin_packed_and_other_schedulers_pods_are_counted(k8s, clique_scheduler):
    core = client.CoreV1Api(k8s)
    pool, names, _ = new_pool(k8s, domains=1, hosts=4)
    # A default-scheduler pod uses 4 GPUs of names[2]: Clique must count it, never bind it.
    other = gpu_pod(f"{pool}-other", 4, labels={"app": "other"})
    other["spec"]["nodeSelector"] = {"kubernetes.io/hostname": names[2]}
    core.create_namespaced_pod("default", other)
    wait_for(lambda: core.read_namespaced_pod(f"{pool}-other", "default").status.phase == "Running", 60, "other Running")
    for i in range(4):
        pod = gpu_pod(f"{pool}-s{i}", 2, scheduler="clique-scheduler", labels={"gang": f"{pool}-singles"})
        pod["spec"]["nodeSelector"] = {"clique.dev/pool": pool}
        core.create_namespaced_pod("default", pod)
        wait_for(lambda: core.read_namespaced_pod(f"{pool}-s{i}", "default").status.phase == "Running", 60, "single Running")
    hosts = Counter(running_on(core, f"{pool}-singles").values())
    # best fit: the half-used host is filled first (2 pods), the rest share one more host
    assert hosts[names[2]] == 2 and len(hosts) == 2 and sorted(hosts.values()) == [2, 2]
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={pool}-other").items
    assert any(e.reason == "Scheduled" and (e.reporting_component or e.source.component) == "default-scheduler"
               for e in events)


def test_tensor_parallel_size_that_does_not_match_the_gang_gets_a_warning(k8s, clique_scheduler):
    core = client.CoreV1Api(k8s)
    pool, names, _ = new_pool(k8s, domains=1, hosts=2)
    g = f"{pool}-tp"
    for i in range(2):
        core.create_namespaced_pod("default", gang_pod(f"{g}-{i}", g, 2, pool=pool, args=["--tensor-parallel-size", "8"]))
    wait_for(lambda: len(running_on(core, g)) == 2, 60, "gang Running")
    # on the member whose filter call planned the gang (whichever kube-scheduler took first); sent asynchronously
    def warning():
        return [e for i in range(2) for e in core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={g}-{i}").items if e.reason == "TensorParallelMismatch"]
    warn = wait_for(warning, 30, "TensorParallelMismatch event")
    assert warn and warn[0].type == "Warning" and "tensor-parallel size 8" in warn[0].message and "16 GPUs" in warn[0].message


def test_gang_size_comes_from_a_coscheduling_podgroup_and_a_missing_one_is_explained(k8s, clique_scheduler):
    ext = client.ApiextensionsV1Api(k8s)
    crd = "podgroups.scheduling.x-k8s.io"
    try:  # a stand-in CRD (any spec) for scheduler-plugins' PodGroup: Clique reads spec.minMember
        ext.create_custom_resource_definition({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": crd},
            "spec": {"group": "scheduling.x-k8s.io", "scope": "Namespaced",
                     "names": {"kind": "PodGroup", "plural": "podgroups", "singular": "podgroup"},
                     "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
    except client.exceptions.ApiException as exc:
        assert exc.status == 409
    core, custom = client.CoreV1Api(k8s), client.CustomObjectsApi(k8s)
    pool, names, domain = new_pool(k8s, domains=2, hosts=3)

    def member(name: str, group: str) -> dict:
        pod = gpu_pod(name, 8, scheduler="clique-scheduler", labels={"gang": group, "scheduling.x-k8s.io/pod-group": group})
        pod["metadata"]["annotations"] = {"clique.dev/topology-required": "nvlink"}
        pod["spec"]["nodeSelector"] = {"clique.dev/pool": pool}
        return pod

    # no PodGroup object: the pods wait and an Event says what is missing
    lost = f"{pool}-nopg"
    core.create_namespaced_pod("default", member(f"{lost}-0", lost))
    def explained():
        events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={lost}-0").items
        return [e.message for e in events if e.reason == "GangSizeUnknown"]
    message = wait_for(explained, 60, "GangSizeUnknown event")[0]
    assert f"PodGroup default/{lost} (scheduling.x-k8s.io/v1alpha1) is not found" in message
    assert not core.read_namespaced_pod(f"{lost}-0", "default").spec.node_name

    group = f"{pool}-pg"
    wait_for(lambda: _try_create_podgroup(custom, group), 30, "PodGroup created (CRD established)")
    for i in range(3):
        core.create_namespaced_pod("default", member(f"{group}-{i}", group))
    placed = wait_for(lambda: (r := running_on(core, group)) and len(r) == 3 and r, 90, "PodGroup gang Running")
    assert len({domain[n] for n in placed.values()}) == 1


def _try_create_podgroup(custom, name: str) -> bool:
    try:
        custom.create_namespaced_custom_object("scheduling.x-k8s.io", "v1alpha1", "default", "podgroups", {
            "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup", "metadata": {"name": name},
            "spec": {"minMember": 3}})
        return True
    except client.exceptions.ApiException as exc:
        return exc.status == 409
