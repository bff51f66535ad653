"""The compact forms the extender's state keeps (scheduler/extender/state.py, slim.py) hold exactly what a scan
of the pods gives: the gang index after any event sequence, the request tuples shared, the conditions the
readers use. Pure: ClusterState fed directly, no API server."""

from __future__ import annotations

import copy
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.extender.gangbook import scheduled_at
from scheduler.extender.gang_health import how_gone
from scheduler.extender.slim import Slimmer
from scheduler.extender.state import ClusterState
from scheduler.gangs import is_single_key, recognize
from topology.levels import preset


def _pod(i: int, gang: str | None, node: str | None, phase: str = "Running") -> dict:
    ann = {"clique.dev/gang": gang, "clique.dev/gang-size": "3"} if gang else {}
    spec: dict = {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": f"p{i}", "namespace": "d", "uid": f"u{i}", "annotations": ann}, "spec": spec,
            "status": {"phase": phase}}


event = st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), st.integers(0, 6),
                  st.sampled_from([None, "g1", "g2"]), st.sampled_from([None, "n0", "n1"]),
                  st.sampled_from(["Running", "Pending", "Failed"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(event, max_size=40))
def test_the_gang_index_after_any_event_sequence_equals_a_scan_and_keeps_no_empty_gang(events):
    state = ClusterState(preset("generic"))
    live: dict[str, dict] = {}
    for typ, i, gang, node, phase in events:
        p = _pod(i, gang, node, phase)
        state._pod_event(typ, p)
        if typ == "DELETED" or phase == "Failed":
            live.pop(f"d/p{i}", None)
        else:
            live[f"d/p{i}"] = copy.deepcopy(p)
    scan: dict[str, set[str]] = {}
    for key, p in live.items():
        scan.setdefault(recognize(p).key, set()).add(key)
    assert {g: set(keys) for g, keys in state.gang_index.items()} == scan
    for g, keys in scan.items():
        assert [p["metadata"]["name"] for p in state.gang_members(g)] == [k.split("/")[1] for k in sorted(keys)]
    assert all(isinstance(v, set) or len(v) == 1 for v in state.gang_index.values())
    assert state.gang_members("d/clique/none") == []


def test_pods_asking_the_same_share_one_request_tuple_in_usage_and_the_victim_index():
    state = ClusterState(preset("generic"))
    for i in range(3):
        state._pod_event("ADDED", _pod(i, None, "n0"))
    reqs = {id(state._contrib[f"d/p{i}"].request) for i in range(3)}
    assert len(reqs) == 1 and state.usage["n0"] == [24, 0, 0, 3]
    units = state.victim_units(1)
    assert [u.id for u in units] == ["d/p0", "d/p1", "d/p2"] and not any(u.gang for u in units)
    assert {id(u.pods[0].request) for u in units} == reqs


def test_a_slim_pod_keeps_of_its_conditions_what_the_gang_readers_use():
    raw = {"metadata": {"name": "p", "namespace": "d", "uid": "u"}, "spec": {"nodeName": "n0"}, "status": {
        "phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "observedGeneration": 1,
             "lastTransitionTime": "2026-11-30T08:15:42Z"},
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
             "message": "Eviction API: evicting", "lastTransitionTime": "2026-11-30T08:16:00Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-30T08:15:50Z"}]}}
    slim = Slimmer().pod(raw)
    assert scheduled_at(slim) == scheduled_at(raw) is not None
    assert how_gone(slim) == how_gone(raw) == ("evicted", "EvictionByEvictionAPI")
    assert slim["status"]["conditions"] == [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-30T08:15:42Z"},
        {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
         "message": "Eviction API: evicting", "lastTransitionTime": "2026-11-30T08:16:00Z"}]


def test_a_bound_pod_is_one_victim_pod_in_usage_and_the_victim_index_and_only_a_gang_member_names_its_unit():
    state = ClusterState(preset("generic"))
    state._pod_event("ADDED", _pod(0, None, "n0"))
    state._pod_event("ADDED", _pod(1, "g1", "n1"))
    assert state._contrib["d/p0"] is state._victims["d/p0"][1]  # a unit of one pod: its own entry
    assert state._contrib["d/p1"] is state._victims["d/clique/g1"]["d/p1"][1]
    assert state._victim_unit_of == {"d/p1": "d/clique/g1"}
    state._pod_event("DELETED", _pod(0, None, "n0"))
    state._pod_event("DELETED", _pod(1, "g1", "n1"))
    assert not state._victims and not state._victim_unit_of and not state._contrib
    assert state.usage == {"n0": [0, 0, 0, 0], "n1": [0, 0, 0, 0]} and state.lowest_bound_priority() is None


def test_lists_in_a_slim_pod_are_exactly_as_long_as_their_items():
    slim = Slimmer().pod(_pod(0, None, "n0") | {"status": {"phase": "Running", "conditions": [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-30T08:15:42Z"}]}})
    assert sys.getsizeof(slim["status"]["conditions"]) == sys.getsizeof([None])
    assert slim["status"]["conditions"] == [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-30T08:15:42Z"}]


def test_gang_health_watches_gangs_never_pods_that_are_gangs_of_their_own():
    from scheduler.extender.health_loop import GangHealth
    from scheduler.extender.service import Extender

    state = ClusterState(preset("generic"))
    for i, gang in enumerate([None, None, "g1", "g1"]):
        state._pod_event("ADDED", _pod(i, gang, "n0"))
    health = GangHealth(Extender(state, api_client=None))
    touched = state.take_touched_gangs()
    assert touched == {"d/single/p0", "d/single/p1", "d/clique/g1"}
    health.observe(touched)
    assert health.watched == {"d/clique/g1"}
    assert [is_single_key(k) for k in sorted(touched)] == [False, True, True]


PART = st.sampled_from([None, {"a": "1"}, {"a": "2"}, {"a": "1", "b": "x"}])
GATES = st.sampled_from([None, [], [{"name": "clique.dev/placement"}], [{"name": "other"}]])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(PART, PART, GATES, st.sampled_from(["Pending", "Running"])), min_size=1, max_size=6))
def test_a_pod_slimmed_against_its_previous_version_equals_one_slimmed_afresh(versions):
    # the previous version's parts (and the last part shared) are reused only where equal: the result is the same
    slimmer = Slimmer()
    previous = None
    for labels, annotations, gates, phase in versions:
        pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"containers": [{"name": "c"}]},
               "status": {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "False"}]}}
        for part, key, value in (("metadata", "labels", labels), ("metadata", "annotations", annotations),
                                 ("spec", "schedulingGates", gates)):
            if value is not None:
                pod[part][key] = copy.deepcopy(value)
        slim = slimmer.pod(copy.deepcopy(pod), previous)
        assert slim == Slimmer().pod(copy.deepcopy(pod))
        if previous is not None and labels is not None and previous["metadata"].get("labels") == labels:
            assert slim["metadata"]["labels"] is previous["metadata"]["labels"], "an unchanged part is reused"
        previous = slim
