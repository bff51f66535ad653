"""The binder against the real API server: refused Bindings are errors (and roll a gang back), only planned hosts
are bound, a gang cut short by a crash between its Bindings is completed at once, a replacement member stays in
its gang's NVLink domain, and a gang that cannot fit invites no preemption.

This module runs its own extender with the test hook that pauses after a gang's first Binding
(scheduler/extender/binder.py), so a test can act between two Bindings of one gang."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest
from kubernetes import client

from scheduler.extender.binder import PAUSE_ENV
from tests.e2e.conftest import clique_scheduler_on
from tests.e2e.helpers import gpu_pod, wait_for
from tests.e2e.test_extender import NVL, bound, gang_pod, new_pool, running_on

PAUSE_S = 4.0


@pytest.fixture(scope="module")
def paused_clique(control_plane, tmp_path_factory):
    with clique_scheduler_on(control_plane, tmp_path_factory.mktemp("extender") / "extender.log",
                             env={PAUSE_ENV: str(PAUSE_S)}) as handle:
        yield handle


def _bind(port: int, name: str, node: str, uid: str = "", ns: str = "default") -> str:
    body = json.dumps({"PodName": name, "PodNamespace": ns, "PodUID": uid, "Node": node}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/bind", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        return json.loads(resp.read())["Error"]


def _statefulset(name: str, pool: str, replicas: int, gang_size: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"gang": name}},
                     "template": {"metadata": {"labels": {"gang": name},
                                               "annotations": {"clique.dev/gang-size": str(gang_size),
                                                               "clique.dev/topology-required": "nvlink"}},
                                  "spec": {"schedulerName": "clique-scheduler", "automountServiceAccountToken": False,
                                           "terminationGracePeriodSeconds": 0,
                                           "nodeSelector": {"clique.dev/pool": pool},
                                           "containers": [{"name": "w", "image": "registry.example/vllm:test",
                                                           "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}}}


def _uids(core, gang: str) -> dict[str, str]:
    return {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod("default", label_selector=f"gang={gang}").items}


def _hook_paused_on(log, pod: str) -> bool:
    return f"test hook: bound default/{pod}," in log.read_text()


def test_bindings_the_api_server_refuses_are_errors_and_unplanned_binds_send_nothing(k8s, paused_clique):
    core = client.CoreV1Api(k8s)
    pool, names, _ = new_pool(k8s, domains=1, hosts=2)
    port = paused_clique["port"]
    # a pending pod no scheduler serves (so it stays pending), and a pod the stock scheduler has bound
    waiting = gpu_pod(f"{pool}-wait", 8, scheduler="nobody-serves-this")
    core.create_namespaced_pod("default", waiting)
    placed = gpu_pod(f"{pool}-placed", 8)
    placed["spec"]["nodeSelector"] = {"kubernetes.io/hostname": names[0]}
    core.create_namespaced_pod("default", placed)
    wait_for(lambda: core.read_namespaced_pod(f"{pool}-placed", "default").spec.node_name, 60, "stock pod bound")
    wait_for(lambda: "ghost-node is unknown" in _bind(port, f"{pool}-wait", "ghost-node"), 10, "the extender sees the pod")

    wrong_uid = _bind(port, f"{pool}-wait", names[1], uid="00000000-0000-0000-0000-000000000000")
    assert "refused: 409" in wrong_uid and "UID" in wrong_uid, wrong_uid
    again = _bind(port, f"{pool}-placed", names[1], uid=core.read_namespaced_pod(f"{pool}-placed", "default").metadata.uid)
    assert "refused: 409" in again and "already assigned" in again, again
    assert "not a pending pod this extender knows" in _bind(port, "nope", names[1])
    assert "node ghost-node is unknown" in _bind(port, f"{pool}-wait", "ghost-node")
    pod = core.read_namespaced_pod(f"{pool}-wait", "default")
    assert not pod.spec.node_name, "a refused bind must leave the pod unbound"
    assert core.read_namespaced_pod(f"{pool}-placed", "default").spec.node_name == names[0]
    core.delete_namespaced_pod(f"{pool}-wait", "default", grace_period_seconds=0)


def test_a_gang_whose_second_binding_fails_is_rolled_back_and_then_placed_whole(k8s, paused_clique):
    core, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    pool, names, domain = new_pool(k8s, domains=2, hosts=2)
    g = f"{pool}-fail"
    apps.create_namespaced_stateful_set("default", _statefulset(g, pool, 2, 2))
    log = paused_clique["log"]
    wait_for(lambda: _hook_paused_on(log, f"{g}-0"), 60, "the first Binding made, the second held back")
    first = _uids(core, g)
    # between the two Bindings the second member is deleted: its Binding fails, the first is rolled back
    core.delete_namespaced_pod(f"{g}-1", "default", grace_period_seconds=0)
    wait_for(lambda: f"gang {g}-g0: binding failed" in log.read_text(), 30, "the failed Binding reported")
    wait_for(lambda: _uids(core, g).get(f"{g}-0") not in (None, first[f"{g}-0"]), 30, "bound member rolled back")
    placed = wait_for(lambda: (r := running_on(core, g)) and len(r) == 2 and r, 120, "gang Running whole afterwards")
    assert len({domain[n] for n in placed.values()}) == 1
    apps.delete_namespaced_stateful_set(g, "default")


def test_an_extender_killed_between_two_bindings_is_followed_by_one_that_completes_the_gang(k8s, paused_clique):
    core = client.CoreV1Api(k8s)
    pool, names, domain = new_pool(k8s, domains=2, hosts=3)
    g = f"{pool}-cut"
    for i in range(3):
        core.create_namespaced_pod("default", gang_pod(f"{g}-{i}", g, 3, pool=pool))
    log = paused_clique["log"]
    wait_for(lambda: _hook_paused_on(log, f"{g}-0"), 60, "the first Binding made, the others held back")
    proc = paused_clique["proc"]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    half = bound(core, g)
    assert len(half) == 1, f"expected one member bound when the extender died, got {half}"
    started = time.monotonic()
    paused_clique["restart"](env={PAUSE_ENV: "0"})
    ready = time.monotonic() - started
    placed = wait_for(lambda: (r := {p.metadata.name: p.spec.node_name for p in core.list_namespaced_pod(
        "default", label_selector=f"gang={g}").items if p.spec.node_name}) and len(r) == 3 and r, 5, "gang whole")
    whole = time.monotonic() - started
    print(f"restart to ready {ready:.1f}s, restart to gang whole {whole:.1f}s")
    assert whole <= 5.0 + ready, f"gang completed {whole - ready:.1f}s after the restarted extender was ready"
    assert len({domain[n] for n in placed.values()}) == 1 and placed[f"{g}-0"] == half[0]
    assert "pending member(s) join the 1 bound one(s)" in log.read_text()
    for i in range(3):
        core.delete_namespaced_pod(f"{g}-{i}", "default", grace_period_seconds=0)


def test_a_replacement_for_a_deleted_member_stays_in_its_gangs_nvlink_domain(k8s, paused_clique):
    core, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    # two domains of 6 hosts: the gang takes 4 of one, leaving 2 there and 6 in the other
    pool, names, domain = new_pool(k8s, domains=2, hosts=6)
    g = f"{pool}-rep"
    sts = _statefulset(g, pool, 4, 4)  # the Member policy: a replacement joins (the default restarts the gang whole)
    sts["spec"]["template"]["metadata"]["annotations"]["clique.dev/gang-restart-policy"] = "Member"
    apps.create_namespaced_stateful_set("default", sts)
    placed = wait_for(lambda: (r := running_on(core, g)) and len(r) == 4 and r, 120, "gang Running")
    home = {domain[n] for n in placed.values()}
    assert len(home) == 1
    old_uid = _uids(core, g)[f"{g}-2"]
    core.delete_namespaced_pod(f"{g}-2", "default", grace_period_seconds=0)

    def replaced():
        pod = next((p for p in core.list_namespaced_pod("default", label_selector=f"gang={g}").items
                    if p.metadata.name == f"{g}-2" and p.metadata.uid != old_uid and p.spec.node_name), None)
        return pod and pod.spec.node_name
    node = wait_for(replaced, 60, "the replacement bound")
    assert {domain[node]} == home, f"replacement went to {domain[node]}, its gang is in {home}"
    apps.delete_namespaced_stateful_set(g, "default")


def test_a_gang_that_cannot_fit_even_by_preemption_leaves_a_lower_priority_pod_running(k8s, paused_clique):
    core, sched = client.CoreV1Api(k8s), client.SchedulingV1Api(k8s)
    for name, value in (("clique-test-low", 10), ("clique-test-high", 1000)):
        try:
            sched.create_priority_class({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                         "metadata": {"name": name}, "value": value})
        except client.exceptions.ApiException as exc:
            assert exc.status == 409
    pool, names, _ = new_pool(k8s, domains=1, hosts=2)
    low = gpu_pod(f"{pool}-low", 8, scheduler="clique-scheduler", labels={"app": "low"})
    low["spec"]["nodeSelector"] = {"clique.dev/pool": pool}
    low["spec"]["priorityClassName"] = "clique-test-low"
    core.create_namespaced_pod("default", low)
    wait_for(lambda: core.read_namespaced_pod(f"{pool}-low", "default").status.phase == "Running", 60, "low Running")
    # 3 x 8 GPUs in one NVLink domain of 2 hosts: evicting the low pod could never make it fit
    g = f"{pool}-high"
    for i in range(3):
        pod = gang_pod(f"{g}-{i}", g, 3, pool=pool)
        pod["spec"]["priorityClassName"] = "clique-test-high"
        core.create_namespaced_pod("default", pod)

    def unschedulable():
        pod = core.read_namespaced_pod(f"{g}-0", "default")
        return any(c.type == "PodScheduled" and c.status == "False" for c in pod.status.conditions or [])
    wait_for(unschedulable, 60, "the gang judged unschedulable")
    for _ in range(20):  # kube-scheduler's PostFilter ran for each member: nothing was preempted
        assert core.read_namespaced_pod(f"{pool}-low", "default").status.phase == "Running"
        assert all(not core.read_namespaced_pod(f"{g}-{i}", "default").status.nominated_node_name for i in range(3))
        time.sleep(0.5)
    assert bound(core, g) == []
    for i in range(3):
        core.delete_namespaced_pod(f"{g}-{i}", "default", grace_period_seconds=0)
    core.delete_namespaced_pod(f"{pool}-low", "default", grace_period_seconds=0)
