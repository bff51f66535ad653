"""The extender's victim index (scheduler/extender/state.py) and the check that a decision made on a copy still
holds (scheduler/extender/preemption.py stale_decision). Pure: ClusterState fed directly, no API server."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.extender.preemption import stale_decision, units_by_scan
from scheduler.extender.state import ClusterState
from scheduler.placement.preemption import Decision, VictimPod, VictimUnit, choose_victims
from scheduler.placement.types import Gang, Role
from simulations.controlplane.kwok_nodes import node_manifest
from topology.levels import preset
from topology.spec import parse_cluster_spec

NODES = [f"n{i}" for i in range(4)]


def _pod(name: str, node: str | None, prio: int | None, gang: str | None = None, gpus: int = 2,
         terminating: bool = False, phase: str = "Running") -> dict:
    md: dict = {"name": name, "namespace": "d", "uid": f"uid-{name}",
                "annotations": {"clique.dev/gang": gang, "clique.dev/gang-size": "2"} if gang else {}}
    if terminating:
        md["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict = {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}
    if node:
        spec["nodeName"] = node
    if prio is not None:
        spec["priority"] = prio
    return {"metadata": md, "spec": spec, "status": {"phase": phase}}


event = st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), st.integers(0, 7),
                  st.sampled_from([None, *NODES]), st.sampled_from([None, 0, 5, 50]),
                  st.sampled_from([None, "g1", "g2"]), st.integers(0, 8), st.booleans(),
                  st.sampled_from(["Running", "Pending", "Succeeded"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(event, max_size=40), st.sampled_from([1, 6, 51, 100]), st.sampled_from(["", "d/clique/g1"]))
def test_the_victim_index_after_any_event_sequence_equals_a_scan_of_every_pod(events, below, exclude):
    state = ClusterState(preset("generic"))
    raw: dict[str, dict] = {}  # the pods as the API has them (live ones)
    for typ, i, node, prio, gang, gpus, term, phase in events:
        p = _pod(f"p{i}", node, prio, gang, gpus, term, phase)
        state._pod_event(typ, p)
        if typ == "DELETED" or phase == "Succeeded":
            raw.pop(f"d/p{i}", None)
        else:
            raw[f"d/p{i}"] = copy.deepcopy(p)
    exclude_key = exclude or None
    assert state.victim_units(below, exclude=exclude_key) == units_by_scan(raw, exclude, below)
    live = [(p["spec"].get("priority") or 0) for p in raw.values()
            if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")]
    assert state.lowest_bound_priority() == (min(live) if live else None)


def test_a_gang_victim_is_one_unit_at_its_highest_pods_priority():
    state = ClusterState(preset("generic"))
    state._set_pods([_pod("a", "n0", 1, "g1"), _pod("b", "n1", 9, "g1"), _pod("c", "n2", 3)])
    units = state.victim_units(10)
    assert [(u.id, u.priority, u.gang, len(u.pods)) for u in units] == [("d/c", 3, False, 1),
                                                                        ("d/clique/g1", 9, True, 2)]
    assert [u.id for u in state.victim_units(5)] == ["d/c"]  # the gang has a pod of priority 9: not below 5


def _state_with_nodes() -> ClusterState:
    spec = parse_cluster_spec({"name": "u", "pools": [{"name": "u", "hosts": 4, "gpus": 8}],
                               "levels": [{"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 2}]})
    state = ClusterState(preset("generic"))
    state._set_nodes([node_manifest(h, ready=True) for h in spec.hosts()])
    return state


def _decide(state: ClusterState) -> tuple[Decision, list[VictimUnit], Gang]:
    gang = Gang("hp", (Role("worker", 1, 8),))
    units = state.victim_units(100)
    d = choose_victims(state.snapshot(), gang, 100, units)
    assert d.preempts
    return d, [u for u in units if u.id in d.victims], gang


def _full(state: ClusterState) -> None:
    names = sorted(state.nodes)
    state._set_pods([_pod(f"v{i}", n, 1, gpus=8) for i, n in enumerate(names)])


def test_a_decision_still_holds_when_nothing_it_relies_on_changed():
    state = _state_with_nodes()
    _full(state)
    d, chosen, gang = _decide(state)
    state._pod_event("ADDED", _pod("unrelated", None, 0))  # a pending pod elsewhere: irrelevant
    assert stale_decision(d, chosen, state, state.snapshot(), gang) == ""


def test_a_victim_deleted_or_changed_meanwhile_makes_the_decision_stale():
    state = _state_with_nodes()
    _full(state)
    d, chosen, gang = _decide(state)
    victim = chosen[0].pods[0].key.split("/", 1)[1]
    host = chosen[0].pods[0].host
    state._pod_event("MODIFIED", _pod(victim, host, 1, gpus=8, terminating=True))
    assert "is gone" in stale_decision(d, chosen, state, state.snapshot(), gang)


def test_a_place_taken_by_a_pod_bound_meanwhile_makes_the_decision_stale():
    state = _state_with_nodes()
    names = sorted(state.nodes)
    # the victim holds 4 GPUs, 4 are free: the preemptor's 8 need both
    state._set_pods([_pod("v", names[0], 1, gpus=4)] + [_pod(f"k{i}", n, 500, gpus=8) for i, n in enumerate(names[1:])])
    d, chosen, gang = _decide(state)
    assert d.places == (("worker", names[0]),)
    state._pod_event("ADDED", _pod("late", names[0], 500, gpus=4))  # bound while the thread decided
    assert "no longer has room" in stale_decision(d, chosen, state, state.snapshot(), gang)


def test_victim_units_are_frozen_copies_that_later_events_do_not_change():
    state = _state_with_nodes()
    _full(state)
    before = state.victim_units(100)
    snapshot = list(before)
    state._pod_event("DELETED", _pod("v0", sorted(state.nodes)[0], 1, gpus=8))
    assert before == snapshot and all(isinstance(u.pods[0], VictimPod) for u in before)
    assert len(state.victim_units(100)) == len(before) - 1
