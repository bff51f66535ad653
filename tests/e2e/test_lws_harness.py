"""The real LeaderWorkerSet controller (sigs.k8s.io/lws) in the local control plane: CRD, webhooks, manager.

Its own module-scoped control plane with `lws=True`; the session `control_plane` fixture stays LWS-free.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from simulations.controlplane import ControlPlane, ControlPlaneOptions
from simulations.controlplane import lws as L
from simulations.controlplane.kwok_nodes import create_nodes
from tests.e2e.helpers import wait_for
from topology.spec import parse_cluster_spec

NVL = "nvidia.com/gpu.clique"


@pytest.fixture(scope="module")
def lws_plane():
    with ControlPlane(ControlPlaneOptions(lws=True)) as cp:
        yield cp


@pytest.fixture
def api(lws_plane):
    api = lws_plane.api_client()
    yield api
    api.close()


def new_pool(api, hosts: int) -> tuple[str, list[str]]:
    prefix = f"lws{uuid.uuid4().hex[:5]}"
    names = create_nodes(api, parse_cluster_spec({
        "name": prefix,
        "levels": [{"name": "nvlink", "label": NVL, "hostsPerDomain": hosts, "valueFormat": prefix + ".{index}"}],
        "pools": [{"name": prefix, "hosts": hosts, "gpus": 8}]}).hosts())
    return prefix, names


def env_of(pod) -> dict[str, str]:
    return {e.name: e.value for e in (pod.spec.containers[0].env or [])}


def test_the_real_controller_creates_leader_and_worker_statefulset_and_its_webhook_labels_the_pods(lws_plane, api):
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    pool, nodes = new_pool(api, hosts=2)
    name = f"g{uuid.uuid4().hex[:5]}"
    L.create_lws(api, L.lws_manifest(name, size=2, replicas=1, gpus=8, scheduler_name="default-scheduler",
                                     node_selector={"clique.dev/pool": pool}))

    def group_running():
        pods = {p.metadata.name: p for p in core.list_namespaced_pod(
            "default", label_selector=f"{L.SET_NAME_LABEL}={name}").items}
        return pods if len(pods) == 2 and all(p.status.phase == "Running" for p in pods.values()) else None

    pods = wait_for(group_running, 90, f"the leader and the worker of {name} Running")
    leader, worker = pods[f"{name}-0"], pods[f"{name}-0-1"]

    # The controller made the leader StatefulSet (owned by the LWS) and, from the leader pod, the worker one.
    leader_sts = apps.read_namespaced_stateful_set(name, "default")
    assert leader_sts.metadata.owner_references[0].kind == "LeaderWorkerSet"
    worker_sts = apps.read_namespaced_stateful_set(f"{name}-0", "default")
    assert worker_sts.spec.replicas == 1
    assert worker_sts.metadata.owner_references[0].name == leader.metadata.name

    # From the controller's pod templates: the leader is worker 0 and every pod knows the group size.
    assert leader.metadata.labels[L.WORKER_INDEX_LABEL] == "0"
    assert leader.metadata.annotations[L.SIZE_ANNOTATION] == "2"
    assert worker.metadata.annotations[L.SIZE_ANNOTATION] == "2"
    # From the pod webhook (pkg/webhooks/pod_webhook.go): group index and group key on the leader, the worker's
    # index parsed from its name, and the LWS_* environment variables.
    assert leader.metadata.labels[L.GROUP_INDEX_LABEL] == "0"
    assert leader.metadata.labels[L.GROUP_KEY_LABEL]
    assert worker.metadata.labels[L.WORKER_INDEX_LABEL] == "1"
    assert worker.metadata.labels[L.GROUP_KEY_LABEL] == leader.metadata.labels[L.GROUP_KEY_LABEL]
    assert env_of(leader)["LWS_GROUP_SIZE"] == "2" and env_of(leader)["LWS_WORKER_INDEX"] == "0"
    assert env_of(worker)["LWS_WORKER_INDEX"] == "1"
    assert env_of(worker)["LWS_LEADER_ADDRESS"] == f"{name}-0.{name}.default"

    # 8 GPUs a pod, 8 a node: one pod on each of the pool's two nodes, placed by the default scheduler.
    assert {leader.spec.node_name, worker.spec.node_name} == set(nodes)
    assert leader.spec.containers[0].resources.limits["nvidia.com/gpu"] == "8"

    # The LWS defaulting webhook ran on the object itself (networkConfig has no CRD default).
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(L.GROUP, L.VERSION, "default", L.PLURAL, name)
    assert obj["spec"]["networkConfig"]["subdomainPolicy"] == "Shared"
    assert obj["spec"]["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"

    L.delete_lws(api, name)
    wait_for(lambda: not core.list_namespaced_pod("default", label_selector=f"{L.SET_NAME_LABEL}={name}").items,
             20, f"the pods of {name} gone after deleting it (the CRD predates the garbage collector)")


def test_the_validating_webhook_rejects_an_invalid_leaderworkerset(api):
    from kubernetes.client.exceptions import ApiException

    bad = L.lws_manifest(f"bad{uuid.uuid4().hex[:5]}", size=2)
    bad["spec"]["leaderWorkerTemplate"]["subGroupPolicy"] = {"subGroupSize": 3}  # 3 does not divide size 2
    with pytest.raises(ApiException) as err:
        L.create_lws(api, bad)
    assert err.value.status == 403, err.value.body  # a webhook denial is Forbidden
    message = json.loads(err.value.body)["message"]
    assert 'admission webhook "vleaderworkerset.kb.io" denied the request' in message
    assert "subGroupSize cannot be larger than size" in message


def test_the_manifest_helper_carries_startup_policy_annotations_and_node_selector():
    m = L.lws_manifest("x", size=4, replicas=2, gpus=4, scheduler_name="clique-scheduler",
                       startup_policy="LeaderReady", annotations={L.EXCLUSIVE_TOPOLOGY_ANNOTATION: NVL},
                       node_selector={"clique.dev/pool": "p"}, pod_annotations={"clique.dev/gang-size": "4"})
    assert m["apiVersion"] == "leaderworkerset.x-k8s.io/v1" and m["kind"] == "LeaderWorkerSet"
    assert m["spec"]["replicas"] == 2 and m["spec"]["startupPolicy"] == "LeaderReady"
    assert m["metadata"]["annotations"] == {L.EXCLUSIVE_TOPOLOGY_ANNOTATION: NVL}
    tpl = m["spec"]["leaderWorkerTemplate"]
    assert tpl["size"] == 4 and tpl["workerTemplate"]["metadata"]["annotations"] == {"clique.dev/gang-size": "4"}
    spec = tpl["workerTemplate"]["spec"]
    assert spec["schedulerName"] == "clique-scheduler" and spec["nodeSelector"] == {"clique.dev/pool": "p"}
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"


def _listening_addresses(pid: int) -> list[str]:
    """Local addresses of the TCP sockets in LISTEN state that process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                found.append(cols[1])
    return found


def test_the_manager_listens_on_loopback_only_and_its_webhooks_call_it_there(lws_plane, api):
    proc = lws_plane.procs[L.PROCESS_NAME]
    addresses = _listening_addresses(proc.pid)
    ports = {int(a.split(":")[1], 16) for a in addresses}
    assert {lws_plane.ports["lws-webhook"], lws_plane.ports[L.PROCESS_NAME]} <= ports
    assert all(a.startswith("0100007F:") for a in addresses), addresses  # 127.0.0.1, never 0.0.0.0 or ::
    # Recorded in state.json, so `clique cluster down` stops it like the other components.
    assert L.PROCESS_NAME in lws_plane.state()["processes"]

    adm = client.AdmissionregistrationV1Api(api)
    hooks = [*adm.read_mutating_webhook_configuration("lws-mutating-webhook-configuration").webhooks,
             *adm.read_validating_webhook_configuration("lws-validating-webhook-configuration").webhooks]
    assert sorted(h.name for h in hooks) == ["mleaderworkerset.kb.io", "mpod.kb.io", "vleaderworkerset.kb.io",
                                             "vpod.kb.io"]
    for h in hooks:
        assert h.client_config.url.startswith(f"https://127.0.0.1:{lws_plane.ports['lws-webhook']}/")
        assert h.client_config.service is None and h.failure_policy == "Fail"
        if h.name.endswith("pod.kb.io"):  # the kustomize patches: only pods of a LeaderWorkerSet
            assert h.object_selector.match_expressions[0].key == L.SET_NAME_LABEL
            assert h.object_selector.match_expressions[0].operator == "Exists"


def test_stopping_the_manager_alone_removes_its_webhooks_so_the_cluster_stays_usable(lws_plane, api):
    # Last in this module: the fixture's ControlPlane.stop() then stops the rest (and fails if anything remains).
    proc = lws_plane.procs[L.PROCESS_NAME]
    L.stop(lws_plane)
    assert not proc.alive() and L.PROCESS_NAME not in lws_plane.procs
    assert not [w for w in client.AdmissionregistrationV1Api(api).list_mutating_webhook_configuration().items
                if w.metadata.name.startswith(L.NAME_PREFIX)]
    # The CRD stays: a LeaderWorkerSet is still accepted (nothing reconciles it now).
    name = f"idle{uuid.uuid4().hex[:5]}"
    L.create_lws(api, L.lws_manifest(name, size=2))
    L.delete_lws(api, name)
