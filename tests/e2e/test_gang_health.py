"""Gang health on the real control plane (kube-apiserver, kube-controller-manager with the StatefulSet and node
lifecycle controllers, kwok, clique-scheduler + extender): a bound gang that loses a node or a member is restarted
whole, placed again in one NVLink domain, and is never left partly bound.

A node goes NotReady as a real one does: kwok stops managing it (its annotation changed, so it no longer answers
for it) and its Ready condition turns False; the node lifecycle controller then taints it."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

from kubernetes import client, watch

from tests.e2e.helpers import wait_for
from tests.e2e.test_binder_and_recovery import _statefulset
from tests.e2e.test_extender import new_pool

GRACE_S = 3


class PodLog:
    """Every pod event of one gang (label gang=<name>) as the API server sends it, with our receive time."""

    def __init__(self, core, gang: str) -> None:
        self.events: list[tuple[float, str, str, str, str]] = []  # (t, type, name, uid, node)
        self.error: Exception | None = None
        self._w = watch.Watch()
        self._core, self._gang = core, gang
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self._w.stream(self._core.list_namespaced_pod, "default", label_selector=f"gang={self._gang}",
                                     timeout_seconds=300):
                p = ev["object"]
                self.events.append((time.monotonic(), ev["type"], p.metadata.name, p.metadata.uid,
                                    p.spec.node_name or ""))
        except Exception as exc:  # noqa: BLE001 - the connection closes when the test stops the watch
            self.error = exc

    def stop(self) -> None:
        self._w.stop()
        self._thread.join(timeout=5)

    def bound_over_time(self, old: set[str]) -> list[tuple[float, int, int]]:
        """(t, old members still present, new members bound) after each event."""
        present_old, bound_new, out = set(), set(), []
        for t, typ, _, uid, node in self.events:
            if uid in old:
                (present_old.discard if typ == "DELETED" else present_old.add)(uid)
            elif typ == "DELETED":
                bound_new.discard(uid)
            elif node:
                bound_new.add(uid)
            out.append((t, len(present_old), len(bound_new)))
        return out


def _gang(core, g: str) -> dict[str, tuple[str, str]]:
    return {p.metadata.name: (p.metadata.uid, p.spec.node_name or "")
            for p in core.list_namespaced_pod("default", label_selector=f"gang={g}").items
            if not p.metadata.deletion_timestamp}


def _sts(name: str, pool: str, annotations: dict[str, str] | None = None) -> dict:
    sts = _statefulset(name, pool, 4, 4)
    sts["spec"]["template"]["metadata"]["annotations"].update(annotations or {})
    return sts


def _running_whole(core, g: str, old: set[str]):
    pods = {p.metadata.name: p for p in core.list_namespaced_pod("default", label_selector=f"gang={g}").items}
    if len(pods) == 4 and all(p.status.phase == "Running" and p.metadata.uid not in old and p.spec.node_name
                              for p in pods.values()):
        return {n: p.spec.node_name for n, p in pods.items()}
    return None


def _assert_never_partial(log: PodLog, old: set[str]) -> None:
    """No new member bound while an old one was still there, and the new ones bound together."""
    timeline = log.bound_over_time(old)
    assert all(new == 0 for _, present_old, new in timeline if present_old), "new members bound beside old ones"
    firsts = [t for t, _, new in timeline if new >= 1]
    whole = [t for t, _, new in timeline if new == 4]
    assert firsts and whole and whole[0] - firsts[0] < 3.0, "the new gang was bound piecemeal"


def test_a_gang_on_a_node_that_goes_notready_is_recreated_whole_in_one_healthy_domain(k8s, clique_scheduler):
    core, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    pool, names, domain = new_pool(k8s, domains=2, hosts=4)
    g = f"{pool}-nr"
    apps.create_namespaced_stateful_set("default", _sts(g, pool, {"clique.dev/gang-restart-grace": str(GRACE_S)}))
    placed = wait_for(lambda: _running_whole(core, g, set()), 120, "gang Running")
    assert len({domain[n] for n in placed.values()}) == 1
    old = {uid for uid, _ in _gang(core, g).values()}
    sick = placed[f"{g}-0"]
    log = PodLog(core, g)
    try:
        # kwok stops answering for the node (it manages only nodes annotated kwok.x-k8s.io/node=fake), and its
        # Ready condition turns False, as a kubelet that lost its runtime reports it
        core.patch_node(sick, {"metadata": {"annotations": {"kwok.x-k8s.io/node": "stopped-by-test"}}})
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        core.patch_node_status(sick, {"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "stopped by the test",
             "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}]}})
        t_sick = time.monotonic()
        wait_for(lambda: not (set(uid for uid, _ in _gang(core, g).values()) & old), GRACE_S + 10,
                 "the old members deleted within grace + 10 s")
        restarted = time.monotonic() - t_sick
        again = wait_for(lambda: _running_whole(core, g, old), 90, "the gang Running again, whole")
        whole = time.monotonic() - t_sick
        print(f"NotReady -> old members deleted {restarted:.1f}s (grace {GRACE_S}s), -> Running whole {whole:.1f}s")
        assert sick not in again.values()
        assert len({domain[n] for n in again.values()}) == 1 and len(set(again.values())) == 4
        assert {domain[n] for n in again.values()} != {domain[sick]}  # its domain has 3 healthy hosts left
        time.sleep(1)
        _assert_never_partial(log, old)
        events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={g}-1").items
        reasons = {e.reason for e in events}
        assert {"GangBroken", "GangRestarted"} <= reasons, reasons
        assert any(f"on node {sick}, NotReady" in e.message for e in events if e.reason == "GangRestarted")
    finally:
        log.stop()
        apps.delete_namespaced_stateful_set(g, "default")
        core.delete_node(sick)


def test_a_statefulset_gang_that_loses_one_member_by_hand_is_restarted_whole(k8s, clique_scheduler):
    core, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    pool, names, domain = new_pool(k8s, domains=2, hosts=4)
    g = f"{pool}-del"
    apps.create_namespaced_stateful_set("default", _sts(g, pool))
    wait_for(lambda: _running_whole(core, g, set()), 120, "gang Running")
    old = {uid for uid, _ in _gang(core, g).values()}
    log = PodLog(core, g)
    try:
        core.delete_namespaced_pod(f"{g}-2", "default", grace_period_seconds=0)
        t0 = time.monotonic()
        wait_for(lambda: not (set(uid for uid, _ in _gang(core, g).values()) & old), 10,
                 "every old member deleted within 10 s")
        restarted = time.monotonic() - t0
        again = wait_for(lambda: _running_whole(core, g, old), 90, "the gang Running again, whole")
        print(f"member deleted -> gang restarted {restarted:.1f}s -> Running whole {time.monotonic() - t0:.1f}s")
        assert len({domain[n] for n in again.values()}) == 1
        time.sleep(1)
        timeline = log.bound_over_time(old)
        # the StatefulSet's replacement for the deleted member may join the survivors for a moment before the
        # gang is restarted; what never happens is a new gang bound beside members of the old one it replaces
        assert timeline[-1][2] == 4
        text = " ".join(e.message for e in core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={g}-0").items if e.reason == "GangRestarted")
        assert "restarting it whole" in text and "StatefulSet default/" in text, text
    finally:
        log.stop()
        apps.delete_namespaced_stateful_set(g, "default")


def test_a_drained_node_moves_its_gang_whole(k8s, clique_scheduler):
    core, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    pool, names, domain = new_pool(k8s, domains=2, hosts=4)
    g = f"{pool}-drain"
    apps.create_namespaced_stateful_set("default", _sts(g, pool))
    placed = wait_for(lambda: _running_whole(core, g, set()), 120, "gang Running")
    old = {uid for uid, _ in _gang(core, g).values()}
    node = placed[f"{g}-1"]
    try:
        # what kubectl drain does: cordon, then evict the node's pods through the Eviction API
        core.patch_node(node, {"spec": {"unschedulable": True}})
        core.create_namespaced_pod_eviction(f"{g}-1", "default", {
            "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": f"{g}-1", "namespace": "default"}})
        again = wait_for(lambda: _running_whole(core, g, old), 90, "the gang Running again, whole")
        assert node not in again.values() and len({domain[n] for n in again.values()}) == 1
        assert {domain[n] for n in again.values()} != {domain[node]}
    finally:
        apps.delete_namespaced_stateful_set(g, "default")
        core.patch_node(node, {"spec": {"unschedulable": False}})
