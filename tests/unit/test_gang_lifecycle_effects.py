"""The thin effect layers of gang health and gang preemption, against in-memory state and a recording binder:
what they delete, with which UIDs, and which budgets they honour."""

from __future__ import annotations

import asyncio

from scheduler.extender.health_loop import GangHealth
from scheduler.extender.preemption import _refused_by_budget, selector_matches
from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from scheduler.placement.preemption import VictimPod, VictimUnit
from topology.levels import levels_from_labels


class RecordingBinder:
    def __init__(self) -> None:
        self.deleted: list[tuple[list[str], dict[str, str]]] = []
        self.events: list[tuple[str, str]] = []

    async def delete_pods(self, keys, why, uids=None):
        self.deleted.append((list(keys), dict(uids or {})))
        return []

    async def event(self, pod, reason, message, warning=False):
        self.events.append((pod["metadata"]["name"], reason))


def _node(name: str, ready: str = "True") -> dict:
    return {"metadata": {"name": name, "labels": {"nvidia.com/gpu.clique": "d0"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "64", "memory": "512Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": ready,
                                       "lastTransitionTime": "2026-12-01T10:00:00Z"}]}}


def _member(i: int, node: str) -> dict:
    return {"metadata": {"name": f"web-{i}", "namespace": "default", "uid": f"u{i}",
                         "creationTimestamp": "2026-12-01T10:00:00Z", "annotations": {"clique.dev/gang-size": "2"},
                         "ownerReferences": [{"kind": "StatefulSet", "name": "web", "controller": True}]},
            "spec": {"nodeName": node, "schedulerName": "clique-scheduler",
                     "containers": [{"name": "w", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
            "status": {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True",
                                                           "lastTransitionTime": "2026-12-01T10:00:01Z"}]}}


async def test_a_member_deleted_on_the_watch_restarts_its_gang_by_uid_and_its_own_deletions_are_not_losses(
        monkeypatch):
    from scheduler.extender import gang_health

    monkeypatch.setattr(gang_health, "DELETION_SETTLE_S", 0.0)  # the settle itself: tests/unit/test_gang_health.py
    state = ClusterState(levels_from_labels(["nvidia.com/gpu.clique"], ["nvlink"]))
    ext = Extender(state, api_client=None)
    ext.binder = binder = RecordingBinder()
    health = GangHealth(ext)
    state._set_nodes([_node("n0"), _node("n1")])
    state._set_pods([_member(0, "n0"), _member(1, "n1")])
    health.observe(state.take_touched_gangs())
    await health.tick()
    assert binder.deleted == []  # healthy
    state._pod_event("DELETED", _member(1, "n1"))  # deleted by hand
    health.observe(state.take_touched_gangs())
    await health.tick()
    assert binder.deleted == [(["default/web-0"], {"default/web-0": "u0"})]
    assert "default/web-0" not in state.pods  # forgotten at once, and not counted as a new loss
    assert not health.losses
    await asyncio.sleep(0)  # the Events are sent in the background
    assert ("web-0", "GangRestarted") in binder.events and ("web-0", "GangBroken") in binder.events
    assert health.restarted_total.labels("statefulset")._value.get() == 1


async def test_a_gang_on_a_node_that_just_went_notready_waits_for_its_grace():
    state = ClusterState(levels_from_labels(["nvidia.com/gpu.clique"], ["nvlink"]))
    ext = Extender(state, api_client=None)
    ext.binder = binder = RecordingBinder()
    health = GangHealth(ext, default_grace_s=10**9)
    state._set_nodes([_node("n0"), _node("n1", ready="False")])
    state._set_pods([_member(0, "n0"), _member(1, "n1")])
    health.observe(state.take_touched_gangs())
    await health.tick()
    assert binder.deleted == [] and health.broken  # broken, restart pending
    health.default_grace_s = 1  # the node has been NotReady since 2026-12-01T10:00:00Z
    await health.tick()
    assert binder.deleted and sorted(binder.deleted[0][0]) == ["default/web-0", "default/web-1"]


def test_budget_selectors_and_allowances_are_read_as_the_api_defines_them():
    assert selector_matches({}, {"a": "b"}) and not selector_matches(None, {"a": "b"})
    assert selector_matches({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["low"]}]},
                            {"tier": "low"})
    assert not selector_matches({"matchLabels": {"tier": "low"}}, {"tier": "high"})
    pods = {f"default/p{i}": {"metadata": {"labels": {"app": "x"}}} for i in range(3)}
    pdb = {"metadata": {"name": "keep", "namespace": "default", "generation": 1},
           "spec": {"selector": {"matchLabels": {"app": "x"}}},
           "status": {"observedGeneration": 1, "disruptionsAllowed": 1}}
    one = VictimUnit("p0", 1, (VictimPod("default/p0", "n0", (8, 0, 0, 1)),))
    two = VictimUnit("g", 1, (VictimPod("default/p1", "n1", (8, 0, 0, 1)), VictimPod("default/p2", "n2", (8, 0, 0, 1))),
                     gang=True)
    assert _refused_by_budget([one], [pdb], pods) == ""
    assert "allows 1 disruption(s), the victims would be 2" in _refused_by_budget([two], [pdb], pods)
    assert "allows 1" in _refused_by_budget([one, VictimUnit("p1", 1, (two.pods[0],))], [pdb], pods)
    stale = {**pdb, "metadata": {**pdb["metadata"], "generation": 2}}
    assert "not processed yet" in _refused_by_budget([one], [stale], pods)
    other_ns = {**pdb, "metadata": {**pdb["metadata"], "namespace": "prod"}}
    assert _refused_by_budget([two], [other_ns], pods) == ""
