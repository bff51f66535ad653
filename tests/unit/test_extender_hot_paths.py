"""The shortcuts on the extender's per-request and per-tick paths (issue #20, filter p99 at 15,000 nodes) decide
exactly what the full checks they replace decide: the node-name check of NodeNames, the cached exclusion of the
nodes kube-scheduler did not pass, the nodes a pod's own spec refuses, and the gangs the periodic health look
picks because a node of theirs is gone or NotReady."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.extender.health_loop import GangHealth
from scheduler.extender.nodefit import judges_labels, node_refusal
from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from scheduler.extender.wire import WireError, parse_extender_args
from simulations.controlplane.kwok_nodes import node_manifest
from topology.levels import levels_from_labels, preset
from topology.spec import parse_cluster_spec

POD = {"metadata": {"name": "p", "namespace": "default"}, "spec": {}}


@pytest.mark.parametrize("names", [[1], ["a", None], [["a"]], [{"a": "b"}], ["a", True]])
def test_node_names_that_are_not_all_strings_are_refused_naming_the_field(names):
    with pytest.raises(WireError, match="ExtenderArgs.NodeNames: expected a list of node names"):
        parse_extender_args({"Pod": POD, "NodeNames": names})


def test_a_list_of_names_changed_in_place_after_a_filter_is_not_taken_for_the_same_list():
    spec = parse_cluster_spec({"name": "u", "pools": [{"name": "u", "hosts": 6, "gpus": 8}],
                               "levels": [{"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 2}]})
    state = ClusterState(preset("generic"))
    state._set_nodes([node_manifest(h, ready=True) for h in spec.hosts()])
    ext = Extender(state, None)
    names = parse_extender_args({"Pod": POD, "NodeNames": [h.name for h in spec.hosts()]}).node_names
    snapshot = state.snapshot()
    assert ext._excluded(names, snapshot) == []
    dropped = names.pop()
    assert ext._excluded(names, snapshot) == [dropped]


_labels = st.dictionaries(st.sampled_from(["zone", "pool", "gpu"]), st.sampled_from(["a", "b"]), max_size=3)
_taint = st.fixed_dictionaries({"key": st.sampled_from(["gpu", "dedicated"]), "value": st.sampled_from(["", "x"]),
                                "effect": st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"])})
_expr = st.fixed_dictionaries({"key": st.sampled_from(["zone", "pool"]),
                               "operator": st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
                               "values": st.lists(st.sampled_from(["a", "b"]), max_size=2)})
_pod_spec = st.fixed_dictionaries({}, optional={
    "nodeSelector": _labels,
    "affinity": st.just({}) | st.fixed_dictionaries({"nodeAffinity": st.fixed_dictionaries({
        "requiredDuringSchedulingIgnoredDuringExecution": st.fixed_dictionaries({
            "nodeSelectorTerms": st.lists(st.fixed_dictionaries({"matchExpressions": st.lists(_expr, max_size=2)}),
                                          max_size=2)})})}),
    "tolerations": st.lists(st.fixed_dictionaries({"key": st.sampled_from(["gpu", ""]),
                                                   "operator": st.sampled_from(["Exists", "Equal"])}), max_size=2)})


@settings(max_examples=150, deadline=None)
@given(nodes=st.lists(st.tuples(_labels, st.lists(_taint, max_size=2)), min_size=1, max_size=8),
       specs=st.lists(_pod_spec, min_size=1, max_size=3))
def test_the_nodes_a_pods_own_spec_refuses_are_those_node_refusal_names(nodes, specs):
    state = ClusterState(levels_from_labels(["zone"], ["zone"]))
    manifests = []
    for i, (labels, taints) in enumerate(nodes):
        m = {"metadata": {"name": f"n{i}", "labels": labels},
             "spec": {"taints": taints},
             "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}}
        manifests.append(m)
    state._set_nodes(manifests)
    ext = Extender(state, None)
    pods = [{"metadata": {"name": f"p{i}", "namespace": "default"}, "spec": s} for i, s in enumerate(specs)]
    got = ext._refused_by_spec(pods, state.snapshot())
    want = [n for n in state.snapshot().hosts
            if any(node_refusal(p, n, state.nodes[n].labels, state.nodes[n].taints) for p in pods)]
    assert got == want
    if not any(judges_labels(p) for p in pods):  # only taints can refuse then
        assert all(state.nodes[n].taints for n in got)


def _node(name: str, ready: str = "True") -> dict:
    return {"metadata": {"name": name, "labels": {"nvidia.com/gpu.clique": "d0"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "64", "memory": "512Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": ready,
                                       "lastTransitionTime": "2026-12-01T10:00:00Z"}]}}


def _member(gang: str, i: int, node: str) -> dict:
    return {"metadata": {"name": f"{gang}-{i}", "namespace": "default", "uid": f"{gang}{i}",
                         "annotations": {"clique.dev/gang": gang, "clique.dev/gang-size": "2"}},
            "spec": {"nodeName": node, "schedulerName": "clique-scheduler",
                     "containers": [{"name": "w", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
            "status": {"phase": "Running"}}


async def test_the_periodic_health_look_picks_exactly_the_gangs_with_a_node_gone_or_notready():
    state = ClusterState(levels_from_labels(["nvidia.com/gpu.clique"], ["nvlink"]))
    ext = Extender(state, api_client=None)
    ext.event = lambda *a, **k: None  # Events need the API; not what this test is about
    health = GangHealth(ext)
    state._set_nodes([_node(f"n{i}") for i in range(6)])
    state._set_pods([_member(g, i, f"n{2 * k + i}") for k, g in enumerate(("ok", "sick", "lost")) for i in range(2)])
    health.observe(state.take_touched_gangs())
    await health.tick()  # the first look records each gang's nodes
    looked: list[str] = []
    real_look = health._look

    async def recording_look(key, now, mono):
        looked.append(key)
        await real_look(key, now, mono)

    health._look = recording_look
    await health.tick()
    assert looked == []  # nothing pending, every node Ready and present
    state._node_event("MODIFIED", _node("n3", ready="False"))  # a node of "sick"
    state._node_event("DELETED", _node("n4"))  # a node of "lost"
    await health.tick()
    keys = {k.rsplit("/", 1)[-1]: k for k in state.gang_index}
    assert looked == sorted([keys["lost"], keys["sick"]])
