"""The node agent against the real API server: what it publishes is what the topology model reads, it patches
only on change, and the shipped admission policy keeps it to its own Node. NVML is the FAKE one here (no GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
import urllib.request
from pathlib import Path

from kubernetes import client

from simulations.controlplane.kwok_nodes import create_nodes
from simulations.controlplane.processes import free_port
from tests.e2e.helpers import wait_for
from tests.e2e.kustomize import build
from topology.levels import preset
from topology.model import HostInfo, Topology
from topology.spec import parse_cluster_spec

MANIFESTS = Path(__file__).parents[2] / "manifests"


def start_agent(control_plane, node: str, profile: str, tmp: Path,
                kubeconfig: Path | None = None) -> tuple[subprocess.Popen, int, Path]:
    """The agent with a fake NVML `profile` publishing to `node`, as the harness admin or as `kubeconfig`'s user."""
    port = free_port()
    log = tmp / f"agent-{node}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "topology.agent", "--fake-nvml", profile, "--node-name", node,
                                 "--kubeconfig", str(kubeconfig or control_plane.kubeconfig), "--listen", f"127.0.0.1:{port}",
                                 "--interval", "0.3"], stdout=fh, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return proc, port, log


def test_agent_publishes_what_the_topology_model_reads_and_patches_only_on_change(control_plane, k8s, tmp_path):
    core = client.CoreV1Api(k8s)
    prefix = f"ag{uuid.uuid4().hex[:4]}"
    nodes = create_nodes(k8s, parse_cluster_spec({"name": prefix, "pools": [{"name": prefix, "hosts": 3, "gpus": 4}]}).hosts())
    profiles = {nodes[0]: "nvl72-4:rack-uuid:1", nodes[1]: "nvl72-4:rack-uuid:1", nodes[2]: "nvl72-4:rack-uuid:2"}
    agents = [start_agent(control_plane, n, p, tmp_path) for n, p in profiles.items()]
    try:
        def published():
            got = [core.read_node(n) for n in nodes]
            return all("clique.dev/nvlink-matrix" in (x.metadata.annotations or {}) for x in got) and got
        got = wait_for(published, 30, "agents' annotations on their nodes")
        topo = Topology([HostInfo(x.metadata.name, 4, x.metadata.labels, x.metadata.annotations) for x in got],
                        preset("gb200-nvl72"))
        assert topo.lowest_common_level(nodes[0], nodes[1]) == 1  # one NVLink domain
        assert topo.lowest_common_level(nodes[0], nodes[2]) == -1
        assert topo.gpu_islands[nodes[0]] == [[0, 1, 2, 3]]
        assert got[0].metadata.labels["nvidia.com/gpu.clique"] == "rack-uuid.1"
        # DCGM-named metrics
        proc, port, log = agents[0]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert text.count("DCGM_FI_DEV_FB_FREE{") == 4 and f'Hostname="{nodes[0]}"' in text
        # several more readings, no more patches: values did not change
        time.sleep(2.0)
        assert log.read_text().count("patched node") == 1
    finally:
        for proc, _, _ in agents:
            proc.terminate()
            proc.wait(timeout=10)


def test_shipped_policy_lets_the_agent_change_only_its_own_node(k8s):
    """Real RBAC and ValidatingAdmissionPolicy from manifests/agent, a token bound to a pod on node A."""
    from kubernetes.dynamic import DynamicClient

    core = client.CoreV1Api(k8s)
    dyn = DynamicClient(k8s)
    wanted = {"clique-system", "clique-agent", "clique:agent", "clique-agent-own-node"}
    for obj in build(MANIFESTS):
        if obj["kind"] != "DaemonSet" and obj["metadata"]["name"] in wanted:
            try:
                dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).create(
                    body=obj, namespace=obj["metadata"].get("namespace"))
            except Exception as exc:  # noqa: BLE001
                assert "AlreadyExists" in str(exc), exc
    prefix = f"vap{uuid.uuid4().hex[:4]}"
    a, b = create_nodes(k8s, parse_cluster_spec({"name": prefix, "pools": [{"name": prefix, "hosts": 2, "gpus": 8}]}).hosts())
    pod = core.create_namespaced_pod("clique-system", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"agent-{prefix}"},
        "spec": {"nodeName": a, "serviceAccountName": "clique-agent",
                 "containers": [{"name": "agent", "image": "clique"}]}})
    token = core.create_namespaced_service_account_token("clique-agent", "clique-system", {
        "spec": {"expirationSeconds": 600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name, "uid": pod.metadata.uid}}
    }).status.token
    cfg = client.Configuration()
    cfg.host = k8s.configuration.host
    cfg.ssl_ca_cert = k8s.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    agent = client.CoreV1Api(client.ApiClient(cfg))

    def denied(node: str, patch: dict) -> str:
        try:
            agent.patch_node(node, patch)
            return ""
        except client.exceptions.ApiException as exc:
            return f"{exc.status} {exc.body}"

    # the policy takes a moment to become active after creation
    wait_for(lambda: "may change only the Node its pod runs on" in denied(b, {"metadata": {"labels": {"x": "1"}}}), 30,
             "the own-node policy to deny a patch of another node")
    assert denied(a, {"metadata": {"annotations": {"clique.dev/nvlink-matrix": "XN;NX"}}}) == ""
    assert "may change only labels and annotations" in denied(a, {"spec": {"unschedulable": True}})
    core.delete_namespaced_pod(pod.metadata.name, "clique-system")
