"""Watch faults on the real control plane: the extender's watches meet a 410 Gone forced by etcd compaction and
relist, or lose the API server to a restart and come back (resumed, or relisted after a 410: the restarted API
server decides); afterwards its per-node usage (GET /debug/usage) equals a fresh count from the API server:
nothing lost, nothing counted twice.

How a compaction reaches a client: kube-apiserver serves watches from its watch cache, which keeps its own
history, so compacting etcd alone changes nothing a client sees (a watch from a compacted resourceVersion is
still served). The cache's own etcd watches, though, resume after an etcd restart from the last revision of
their key range they received; once etcd has compacted past it they get `mvcc: required revision has been
compacted`, the cache reinitialises, its clients' watches end, and each client resuming from its older
resourceVersion gets `410 Gone: too old resource version` (k8s.io/apiserver v0.37.2
pkg/storage/cacher/watch_cache_history.go GetIntervalLocked; pkg/storage/etcd3/watcher.go). So the test writes
objects outside the pods' key range, compacts etcd at the head revision through its gRPC gateway
(`POST /v3/kv/compaction`, etcd v3.6 api/etcdserverpb/rpc.proto), then restarts etcd. Pods change right after
each fault, while the extender's watch is still away, so the relist has something to catch up with.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import pytest
from kubernetes import client

from scheduler.gangs import pod_request
from tests.e2e.conftest import clique_scheduler_on
from tests.e2e.helpers import gpu_pod, wait_for
from tests.e2e.test_extender import gang_pods, new_pool, running_on


@pytest.fixture(scope="module")
def clique(control_plane, tmp_path_factory):
    with clique_scheduler_on(control_plane, tmp_path_factory.mktemp("extender") / "extender.log") as handle:
        yield handle


def _debug(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/usage", timeout=10) as resp:
        return json.loads(resp.read())


def _fresh_usage(core) -> dict[str, dict[str, int]]:
    """Per-node usage of bound, non-terminal pods, counted from a fresh list (as the extender should hold it)."""
    usage: dict[str, list[int]] = {}
    for pod in json.loads(core.list_pod_for_all_namespaces(_preload_content=False).data)["items"]:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        r = pod_request(pod)
        acc = usage.setdefault(node, [0, 0, 0, 0])
        for i, v in enumerate((r.gpus, r.cpu_millis, r.memory, 1)):
            acc[i] += v
    return {n: dict(zip(("gpus", "cpu_millis", "memory", "pods"), u)) for n, u in usage.items() if any(u)}


def _usage_matches(core, port: int) -> dict | None:
    """The extender's usage when it equals a fresh count (both read twice, so a change in between is not taken
    for a match); None otherwise."""
    fresh = _fresh_usage(core)
    held = _debug(port)
    return held if held["usage"] == fresh == _fresh_usage(core) else None


def _etcd(control_plane, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{control_plane.ports['etcd']}{path}",
                                 data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _bound_pod(name: str, node: str) -> dict:
    pod = gpu_pod(name, 8, labels={"app": "watch-faults"})
    pod["spec"]["nodeName"] = node  # bound at creation: no scheduler involved, the watch must still see it
    pod["spec"]["terminationGracePeriodSeconds"] = 0
    return pod


def _workload(k8s, core, hosts: int = 4) -> tuple[str, list[str]]:
    pool, names, _ = new_pool(k8s, domains=2, hosts=hosts)
    gang_pods(core, f"{pool}-g", 2, pool=pool)
    wait_for(lambda: len(running_on(core, f"{pool}-g")) == 2, 90, "a 2x8 gang Running")
    return pool, names


def _churn(core, pool: str, names: list[str]) -> None:
    """Changes the extender's watch has to catch up on: one pod bound at creation, one gang member deleted."""
    core.create_namespaced_pod("default", _bound_pod(f"{pool}-late", names[-1]))
    core.delete_namespaced_pod(f"{pool}-g-0", "default", grace_period_seconds=0)


def _cleanup(core, pool: str) -> None:
    for name in (f"{pool}-late", f"{pool}-g-0", f"{pool}-g-1"):
        try:
            core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
        except client.exceptions.ApiException as exc:
            assert exc.status == 404


def _retrying(fn, timeout_s: float = 60.0):
    """An API call through the moments after a restart, when the API server may still refuse connections."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except Exception:  # noqa: BLE001
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


def test_etcd_compaction_forces_a_410_and_the_relist_loses_and_doubles_no_usage(control_plane, k8s, clique):
    core = client.CoreV1Api(k8s)
    pool, names = _workload(k8s, core)
    port = clique["port"]
    before = wait_for(lambda: _usage_matches(core, port), 30, "the extender's usage to equal a fresh count")
    # revisions outside the pods' key range: the cache's pod watch falls behind the head revision
    for i in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"{pool}-rev{i}"}})
    head = int(_etcd(control_plane, "/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
    _etcd(control_plane, "/v3/kv/compaction", {"revision": head, "physical": True})
    control_plane.restart_component("etcd", kill=True)
    _retrying(lambda: _churn(core, pool, names))

    def relisted():
        d = _debug(port)
        return d["expired"]["pods"] > before["expired"]["pods"] and d["lists"]["pods"] > before["lists"]["pods"] and d
    wait_for(relisted, 60, "the extender's pod watch to get 410 Gone and relist")
    # wait for the churn to have happened on the API server too (the deleted member may still be there a moment
    # after the restart, and the extender then rightly counts it): a fresh count that shows only the late pod
    held = wait_for(lambda: (u := _usage_matches(core, port)) and u["usage"].get(names[-1], {}).get("gpus") == 8
                    and u, 30, "the extender's usage to equal a fresh count with the churn applied")
    assert held["usage"].get(names[-1], {}).get("gpus") == 8, held["usage"].get(names[-1])
    for i in range(5):
        core.delete_namespaced_config_map(f"{pool}-rev{i}", "default")
    _cleanup(core, pool)
    wait_for(lambda: _usage_matches(core, port), 30, "the usage to equal a fresh count after the clean-up")


def test_after_a_kube_apiserver_restart_the_watches_come_back_with_no_lost_or_doubled_usage(control_plane, k8s, clique):
    core = client.CoreV1Api(k8s)
    pool, names = _workload(k8s, core)
    port = clique["port"]
    before = wait_for(lambda: _usage_matches(core, port), 30, "the extender's usage to equal a fresh count")
    control_plane.restart_component("kube-apiserver", kill=True)
    _retrying(lambda: _churn(core, pool, names))

    # Both watches come back: resumed from their resourceVersion, or, if the restarted API server's watch cache
    # starts after it (the usual case), relisted after a 410. Which one happens is the API server's choice; what
    # must hold is the usage below, which the pods changed while the watch was away make visible.
    def reconnected():
        d = _debug(port)
        return all(d["watches"][k] > before["watches"][k] for k in ("pods", "nodes")) and d
    after = wait_for(reconnected, 60, "both watches to reconnect to the restarted API server")
    print({k: {"relists": after["lists"][k] - before["lists"][k], "410s": after["expired"][k] - before["expired"][k]}
           for k in ("pods", "nodes")})
    # wait for the churn to have happened on the API server too (the deleted member may still be there a moment
    # after the restart, and the extender then rightly counts it): a fresh count that shows only the late pod
    held = wait_for(lambda: (u := _usage_matches(core, port)) and u["usage"].get(names[-1], {}).get("gpus") == 8
                    and u, 30, "the extender's usage to equal a fresh count with the churn applied")
    assert held["usage"].get(names[-1], {}).get("gpus") == 8
    # it still places gangs: a new 2x8 gang on the pool
    gang_pods(core, f"{pool}-h", 2, pool=pool)
    wait_for(lambda: len(running_on(core, f"{pool}-h")) == 2, 90, "a new gang Running after the restart")
    for i in range(2):
        core.delete_namespaced_pod(f"{pool}-h-{i}", "default", grace_period_seconds=0)
    _cleanup(core, pool)
    wait_for(lambda: _usage_matches(core, port), 30, "the usage to equal a fresh count after the clean-up")
