"""Clique's extender behind the real kube-scheduler (second scheduler, profile clique-scheduler), KWOK nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from kubernetes import client

from simulations.controlplane.kwok_nodes import create_nodes
from simulations.controlplane.processes import free_port, http_ok
from tests.e2e.helpers import gpu_pod, wait_for
from topology.spec import parse_cluster_spec

NVL = "nvidia.com/gpu.clique"


@pytest.fixture(scope="module")
def clique_scheduler(control_plane, tmp_path_factory):
    """Our extender process plus a second kube-scheduler whose profile `clique-scheduler` calls it."""
    port = free_port()
    log = tmp_path_factory.mktemp("extender") / "extender.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "clique", "scheduler", "extender", "--kubeconfig",
                                 str(control_plane.kubeconfig), "--listen", f"127.0.0.1:{port}", "--preset",
                                 "gb200-nvl72", "--bind-timeout", "8"], stdout=fh, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        wait_for(lambda: proc.poll() is None and http_ok(f"http://127.0.0.1:{port}/readyz"), 30,
                 f"extender ready (log {log})")
        config = {
            "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
            "percentageOfNodesToScore": 100,
            "profiles": [{"schedulerName": "clique-scheduler"}],
            "extenders": [{"urlPrefix": f"http://127.0.0.1:{port}", "filterVerb": "filter",
                           "prioritizeVerb": "prioritize", "bindVerb": "bind", "weight": 1, "nodeCacheCapable": True,
                           "httpTimeout": "30s", "managedResources": [{"name": "nvidia.com/gpu"}],
                           "ignorable": False}],
        }
        control_plane.start_scheduler(config, name="clique-scheduler")
        yield {"port": port, "log": log}
    finally:
        control_plane.stop_component("clique-scheduler")
        proc.terminate()
        proc.wait(timeout=15)


def nvl_cluster(prefix: str, domains: int = 3, hosts: int = 4) -> list[str]:
    return [h.name for h in parse_cluster_spec({
        "name": prefix,
        "levels": [{"name": "nvlink", "label": NVL, "hostsPerDomain": hosts, "valueFormat": prefix + ".{index}"}],
        "pools": [{"name": prefix, "hosts": domains * hosts, "gpus": 8}],
    }).hosts()]


def gang_pods(core, name: str, size: int, gpus: int = 8, ns: str = "default") -> None:
    for i in range(size):
        pod = gpu_pod(f"{name}-{i}", gpus, scheduler="clique-scheduler", labels={"gang": name})
        pod["metadata"]["annotations"] = {"clique.dev/gang": name, "clique.dev/gang-size": str(size),
                                          "clique.dev/topology-required": "nvlink"}
        core.create_namespaced_pod(ns, pod)


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
    gang_pods(core, g1, 4)
    placed = wait_for(lambda: (r := running_on(core, g1)) and len(r) == 4 and r, 90, "gang a Running")
    assert {domain[n] for n in placed.values()} == {f"{prefix}.2"}
    assert len(set(placed.values())) == 4

    # Now no domain has 4 free hosts: the next gang waits whole, with an Event that says why.
    g2 = f"{prefix}-b"
    gang_pods(core, g2, 4)

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
