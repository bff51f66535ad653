"""The local control plane is the real thing: real binaries, TLS, RBAC, controllers, scheduler and KWOK nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from simulations.controlplane import ControlPlane
from simulations.controlplane.kwok_nodes import create_nodes, delete_nodes
from simulations.controlplane.processes import port_open
from simulations.controlplane.versions import KUBERNETES_VERSION
from tests.e2e.helpers import gpu_pod, wait_for
from topology.spec import parse_cluster_spec

SUPERPOD_100 = {
    "name": "e2e",
    "levels": [
        {"name": "zone", "label": "topology.kubernetes.io/zone", "hostsPerDomain": 50},
        {"name": "spine", "label": "clique.dev/spine", "hostsPerDomain": 25},
        {"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 5},
        {"name": "nvlink", "label": "nvidia.com/gpu.clique", "hostsPerDomain": 5, "valueFormat": "e2e.{index}"},
    ],
    "pools": [{"name": "gpu", "hosts": 100, "gpus": 8, "cpu": "64", "memory": "512Gi"}],
}


def _pids_alive(pids: list[int]) -> list[int]:
    return [p for p in pids if Path(f"/proc/{p}").exists() and
            Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]


def test_hundred_gpu_pods_run_on_hundred_kwok_nodes_and_nothing_remains_after_teardown():
    with ControlPlane() as cp:
        pids = [p.pid for p in cp.procs.values()]
        ports = list(cp.ports.values())
        assert set(cp.procs) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
        api = cp.api_client()
        core = client.CoreV1Api(api)
        names = create_nodes(api, parse_cluster_spec(SUPERPOD_100).hosts())
        assert len(names) == 100
        node = core.read_node(names[7])
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        assert node.metadata.labels["clique.dev/leaf"] == "leaf-1"
        assert node.metadata.labels["nvidia.com/gpu.clique"] == "e2e.1"

        # 100 pods of 8 GPUs each: the stock scheduler must put exactly one on every node.
        for i in range(100):
            core.create_namespaced_pod("default", gpu_pod(f"full-node-{i:03d}", 8))

        def all_running():
            pods = core.list_namespaced_pod("default", label_selector="app=gpu-test").items
            return len(pods) == 100 and all(p.status.phase == "Running" for p in pods) and pods
        pods = wait_for(all_running, 120, "100 GPU pods Running")
        per_node = Counter(p.spec.node_name for p in pods)
        assert len(per_node) == 100 and set(per_node.values()) == {1}, "GPU capacity must be honoured per node"

        # One more 8-GPU pod cannot fit anywhere: the real scheduler reports it unschedulable.
        core.create_namespaced_pod("default", gpu_pod("one-too-many", 8, labels={"app": "overflow"}))

        def unschedulable():
            pod = core.read_namespaced_pod("one-too-many", "default")
            conds = [c for c in (pod.status.conditions or []) if c.type == "PodScheduled"]
            return conds and conds[0].status == "False" and "nvidia.com/gpu" in (conds[0].message or "")
        wait_for(unschedulable, 60, "the 101st pod to be reported unschedulable for nvidia.com/gpu")
        api.close()

    assert _pids_alive(pids) == [], "harness processes survived teardown"
    assert [p for p in ports if port_open(p)] == [], "harness ports still open after teardown"


def test_deployment_scaled_through_scale_subresource_gets_running_pods(k8s):
    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    create_nodes(k8s, parse_cluster_spec({"name": "scale", "pools": [{"name": "scale", "hosts": 2, "gpus": 8}]}).hosts())
    name = f"decode-{uuid.uuid4().hex[:6]}"
    template = gpu_pod("unused", 2, labels={"app": name})
    apps.create_namespaced_deployment("default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": template["spec"]}},
    })
    scale = apps.patch_namespaced_deployment_scale(name, "default", {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3

    def three_running():
        pods = core.list_namespaced_pod("default", label_selector=f"app={name}").items
        return len(pods) == 3 and all(p.status.phase == "Running" and p.spec.node_name for p in pods)
    wait_for(three_running, 60, "3 Deployment pods Running")
    assert apps.read_namespaced_deployment_scale(name, "default").status.replicas == 3

    # Scale to zero: the controller deletes the pods and kwok's pod-delete stage removes them.
    apps.patch_namespaced_deployment_scale(name, "default", {"spec": {"replicas": 0}})
    wait_for(lambda: not core.list_namespaced_pod("default", label_selector=f"app={name}").items, 60,
             "scaled-down pods to go away")
    apps.delete_namespaced_deployment(name, "default")


def test_version_endpoint_reports_the_pinned_release(k8s):
    info = client.VersionApi(k8s).get_code()
    assert info.git_version == KUBERNETES_VERSION
    assert info.minor == KUBERNETES_VERSION.split(".")[1]


def test_rbac_is_enforced_and_anonymous_requests_are_refused(control_plane):
    import urllib.error
    import urllib.request
    import ssl

    ctx = ssl.create_default_context(cafile=str(control_plane.workdir / "pki" / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as anon:
        urllib.request.urlopen(f"{control_plane.server}/api/v1/nodes", context=ctx, timeout=5)
    assert anon.value.code == 401

    from kubernetes import config

    kwok_api = config.new_client_from_config(config_file=str(control_plane.workdir / "kwok.kubeconfig"))
    try:
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(kwok_api).create_namespace({"metadata": {"name": "kwok-may-not"}})
        assert denied.value.status == 403
        client.CoreV1Api(kwok_api).list_node(limit=1)  # what kwok needs is allowed
    finally:
        kwok_api.close()


def test_second_scheduler_with_its_own_profile_schedules_its_pods(control_plane, k8s):
    core = client.CoreV1Api(k8s)
    create_nodes(k8s, parse_cluster_spec({"name": "prof", "pools": [{"name": "prof", "hosts": 1, "gpus": 8}]}).hosts())
    config = {
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "percentageOfNodesToScore": 100,
        "profiles": [{"schedulerName": "e2e-second-scheduler",
                      "plugins": {"score": {"disabled": [{"name": "*"}], "enabled": [{"name": "NodeResourcesFit"}]}}}],
    }
    control_plane.start_scheduler(config, name="second-scheduler")
    try:
        core.create_namespaced_pod("default", gpu_pod("via-second-profile", 1, scheduler="e2e-second-scheduler",
                                                      labels={"app": "second"}))
        pod = wait_for(lambda: (p := core.read_namespaced_pod("via-second-profile", "default")).status.phase == "Running"
                       and p, 60, "pod of the second profile Running")
        assert pod.spec.node_name
        events = core.list_namespaced_event("default", field_selector="involvedObject.name=via-second-profile").items
        assert any(e.reason == "Scheduled" and (e.reporting_component or e.source.component) == "e2e-second-scheduler"
                   for e in events)
    finally:
        control_plane.stop_component("second-scheduler")
        core.delete_namespaced_pod("via-second-profile", "default")


def test_deleted_pod_goes_away_and_deleted_node_is_gone(k8s):
    core = client.CoreV1Api(k8s)
    names = create_nodes(k8s, parse_cluster_spec({"name": "del", "pools": [{"name": "del", "hosts": 1, "gpus": 8}]}).hosts())
    pod = gpu_pod("short-lived", 1, labels={"app": "short"})
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": names[0]}
    core.create_namespaced_pod("default", pod)
    wait_for(lambda: core.read_namespaced_pod("short-lived", "default").status.phase == "Running", 60, "pod Running")
    core.delete_namespaced_pod("short-lived", "default")
    wait_for(lambda: not core.list_namespaced_pod("default", field_selector="metadata.name=short-lived").items, 30,
             "deleted pod to disappear")
    delete_nodes(k8s, names)
    wait_for(lambda: not core.list_node(field_selector=f"metadata.name={names[0]}").items, 30, "node deleted")


def test_cli_cluster_up_status_down_as_a_user_runs_them(tmp_path):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: cli\npools:\n  - {name: cli, hosts: 3, gpus: 8}\n")
    clique = [sys.executable, "-m", "clique"]
    env = dict(os.environ)
    up = subprocess.run([*clique, "cluster", "up", "--name", name, "--spec", str(spec)], capture_output=True,
                        text=True, timeout=300, env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "is up" in up.stdout and "3 KWOK nodes, 24 GPUs" in up.stdout
        again = subprocess.run([*clique, "cluster", "up", "--name", name], capture_output=True, text=True, env=env)
        assert again.returncode == 1 and "already up" in again.stderr

        status = subprocess.run([*clique, "cluster", "status", "--name", name, "--json"], capture_output=True,
                                text=True, timeout=60, env=env)
        assert status.returncode == 0, status.stderr
        state = json.loads(status.stdout)
        assert state["up"] and state["nodes"]["nodes"] == 3 and state["nodes"]["gpus"] == 24
        pids = [p["pid"] for p in state["processes"].values()]
        assert len(pids) == 5 and _pids_alive(pids) == pids
    finally:
        down = subprocess.run([*clique, "cluster", "down", "--name", name], capture_output=True, text=True,
                              timeout=120, env=env)
    assert down.returncode == 0 and "is down" in down.stdout, down.stderr
    assert _pids_alive(pids) == []
    after = subprocess.run([*clique, "cluster", "status", "--name", name], capture_output=True, text=True, env=env)
    assert after.returncode == 1 and "not up" in after.stdout


def test_feature_gates_and_runtime_config_enable_the_workload_and_podgroup_api():
    """Kubernetes 1.37's own gang API (scheduling.k8s.io/v1beta1 Workload and PodGroup) is off by default;
    the harness turns it on for the comparisons with kube-scheduler's gang and topology plugins."""
    from simulations.controlplane import ControlPlaneOptions

    opts = ControlPlaneOptions(feature_gates={"GenericWorkload": True, "TopologyAwareWorkloadScheduling": True},
                               runtime_config={"scheduling.k8s.io/v1beta1": True}, start_kwok=False)
    with ControlPlane(opts) as cp:
        api = cp.api_client()
        try:
            resources = client.ApisApi(api).get_api_versions()
            versions = {v.group_version for g in resources.groups for v in g.versions}
            assert "scheduling.k8s.io/v1beta1" in versions
            listed = client.CustomObjectsApi(api).get_api_resources("scheduling.k8s.io", "v1beta1")
            names = {r.name for r in listed.resources}
            assert {"workloads", "podgroups"} <= names
            assert "--feature-gates=GenericWorkload=true,TopologyAwareWorkloadScheduling=true" in cp.procs["kube-scheduler"].argv
        finally:
            api.close()
