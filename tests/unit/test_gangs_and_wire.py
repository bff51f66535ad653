"""Gang recognition from users' labels, pod requests, and the extender wire format."""

from __future__ import annotations

import pytest

from scheduler.extender.wire import (FilterResult, WireError, binding_result_json, parse_binding_args,
                                     parse_extender_args, priorities_json)
from scheduler.gangs import declared_tp_size, pod_request, recognize, size_from_object


def pod(name="p", labels=None, annotations=None, ns="infer", spec=None, owners=None):
    md = {"name": name, "namespace": ns, "labels": labels or {}, "annotations": annotations or {}}
    if owners:
        md["ownerReferences"] = owners
    return {"metadata": md, "spec": spec or {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}


@pytest.mark.parametrize("scenario, p, expect", [
    ("clique annotations", pod(annotations={"clique.dev/gang": "llama", "clique.dev/gang-size": "4",
                                            "clique.dev/topology-required": "nvlink"}),
     ("clique", "llama", 4, "worker", "nvlink")),
    ("LeaderWorkerSet leader", pod(labels={"leaderworkerset.sigs.k8s.io/name": "ds", "leaderworkerset.sigs.k8s.io/group-index": "2",
                                           "leaderworkerset.sigs.k8s.io/worker-index": "0"},
                                   annotations={"leaderworkerset.sigs.k8s.io/size": "4"}),
     ("lws", "ds-2", 4, "leader", None)),
    ("LeaderWorkerSet worker", pod(labels={"leaderworkerset.sigs.k8s.io/name": "ds", "leaderworkerset.sigs.k8s.io/group-index": "2",
                                           "leaderworkerset.sigs.k8s.io/worker-index": "3"},
                                   annotations={"leaderworkerset.sigs.k8s.io/size": "4"}),
     ("lws", "ds-2", 4, "worker", None)),
    ("Volcano without its PodGroup read yet", pod(annotations={"scheduling.k8s.io/group-name": "pg"}),
     ("volcano", "pg", None, "worker", None)),
    ("coscheduling", pod(labels={"scheduling.x-k8s.io/pod-group": "pg2"}), ("coscheduling", "pg2", None, "worker", None)),
    ("Grove PodGang", pod(labels={"grove.io/podgang": "gang-a"}), ("grove", "gang-a", None, "worker", None)),
    ("PodGroup API", pod(spec={"schedulingGroup": {"podGroupName": "wl"}, "containers": []}),
     ("podgroup", "wl", None, "worker", None)),
    ("annotated StatefulSet", pod("trt-0", annotations={"clique.dev/gang-size": "2"},
                                  owners=[{"kind": "StatefulSet", "name": "trt"}]), ("statefulset", "trt-g0", 2, "leader", None)),
    ("StatefulSet second gang, worker", pod("trt-3", annotations={"clique.dev/gang-size": "2"},
                                            owners=[{"kind": "StatefulSet", "name": "trt"}]),
     ("statefulset", "trt-g1", 2, "worker", None)),
    ("plain pod", pod("solo"), ("single", "solo", 1, "pod", None)),
])
def test_gang_is_recognized_from_the_labels_users_already_have(scenario, p, expect):
    g = recognize(p)
    assert (g.source, g.name, g.size, g.role, g.required_level) == expect
    assert g.namespace == "infer"


def test_podgroup_sizes_come_from_the_object_the_caller_read():
    g = recognize(pod(annotations={"scheduling.k8s.io/group-name": "pg"}), sizes={"PodGroup infer/pg": 3})
    assert g.size == 3 and g.key == "infer/volcano/pg"


def test_pod_request_sums_containers_and_takes_init_container_maximum():
    spec = {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "4"}, "requests": {"cpu": "2", "memory": "1Gi"}}},
                           {"resources": {"requests": {"cpu": "500m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "8"}}}]}
    r = pod_request({"spec": spec})
    assert (r.gpus, r.cpu_millis, r.memory) == (4, 8000, 2**30)


def test_declared_tensor_parallel_size_is_read_from_args():
    spec = {"containers": [{"command": ["python3", "-m", "vllm.entrypoints"], "args": ["--tensor-parallel-size", "16"]}]}
    assert declared_tp_size({"spec": spec}) == 16
    assert declared_tp_size({"spec": {"containers": [{"args": ["--tp=8"]}]}}) == 8
    assert declared_tp_size(pod()) is None


def test_extender_args_use_go_field_names_in_any_case():
    args = parse_extender_args({"Pod": pod(), "NodeNames": ["a", "b"]})
    assert args.node_names == ["a", "b"] and not args.full_nodes
    args = parse_extender_args({"pod": pod(), "nodes": {"items": [{"metadata": {"name": "a"}}]}})
    assert args.node_names == ["a"] and args.full_nodes


@pytest.mark.parametrize("body, message", [
    ([], "expected a JSON object"),
    ({"NodeNames": ["a"]}, "ExtenderArgs.Pod: expected a Pod object"),
    ({"Pod": pod(), "NodeNames": "a"}, "NodeNames: expected a list"),
    ({"Pod": pod()}, "neither NodeNames nor Nodes"),
    ({"Pod": pod(), "Nodes": {"items": [{}]}}, r"Nodes.items\[0\]: node without metadata.name"),
])
def test_malformed_extender_args_name_the_field(body, message):
    with pytest.raises(WireError, match=message):
        parse_extender_args(body)


def test_binding_args_and_replies():
    b = parse_binding_args({"PodName": "p", "PodNamespace": "ns", "PodUID": "u", "Node": "n"})
    assert (b.pod_name, b.node) == ("p", "n")
    with pytest.raises(WireError, match="ExtenderBindingArgs.Node"):
        parse_binding_args({"PodName": "p", "PodNamespace": "ns", "PodUID": "u"})
    assert FilterResult(["a"], {"b": "why"}).to_json() == {
        "NodeNames": ["a"], "Nodes": None, "FailedNodes": {"b": "why"}, "FailedAndUnresolvableNodes": {}, "Error": ""}
    assert priorities_json({"a": 42, "b": -1}) == [{"Host": "a", "Score": 10}, {"Host": "b", "Score": 0}]
    assert binding_result_json("boom") == {"Error": "boom"}


@pytest.mark.parametrize("source, obj, expect", [
    ("volcano", {"spec": {"minMember": 4}}, (4, None)),
    ("coscheduling", {"spec": {"minMember": "2"}}, (2, None)),
    ("podgroup", {"spec": {"schedulingPolicy": {"gang": {"minCount": 3}},
                           "schedulingConstraints": {"topology": [{"key": "nvidia.com/gpu.clique"}]}}},
     (3, "nvidia.com/gpu.clique")),
    ("podgroup", {"spec": {"schedulingPolicy": {"basic": {}}}}, (1, None)),
    ("grove", {"spec": {"podgroups": [{"name": "prefill", "minReplicas": 2}, {"name": "decode", "minReplicas": 4}]}},
     (6, None)),
    ("volcano", {"spec": {}}, (None, None)),
])
def test_gang_size_is_read_from_the_object_that_holds_it(source, obj, expect):
    facts = size_from_object(source, obj)
    assert (facts.size, facts.required) == expect


def test_topology_from_the_podgroup_applies_unless_the_pod_says_otherwise():
    p = pod(spec={"schedulingGroup": {"podGroupName": "wl"}, "containers": []})
    g = recognize(p, {"PodGroup infer/wl": 2}, {"PodGroup infer/wl": "nvidia.com/gpu.clique"})
    assert (g.size, g.required_level) == (2, "nvidia.com/gpu.clique")
    p["metadata"]["annotations"]["clique.dev/topology-required"] = "zone"
    assert recognize(p, {"PodGroup infer/wl": 2}, {"PodGroup infer/wl": "nvidia.com/gpu.clique"}).required_level == "zone"


def test_a_podgroup_with_the_basic_policy_is_placed_pod_by_pod():
    p = pod("wl-a", spec={"schedulingGroup": {"podGroupName": "wl"}, "containers": []})
    size = size_from_object("podgroup", {"spec": {"schedulingPolicy": {"basic": {}}}}).size
    g = recognize(p, {"PodGroup infer/wl": size})
    assert (g.source, g.name, g.size) == ("single", "wl-a", 1)
