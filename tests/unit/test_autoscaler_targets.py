"""The pure half of scale targets (autoscaler/target_shape.py): the gang shape each target declares, DGD services
at v1alpha1 and v1beta1, the scaling-adapter rule, the preconditioned patch, pending replicas, and how a policy's
gang shape is resolved against its target."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler import target_shape as S
from autoscaler.policy import GangShape, parse_policy


def pod_template(gpus: int | None, annotations: dict | None = None, containers: int = 1) -> dict:
    c = [{"name": f"c{i}", "image": "x", **({"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
                                             if gpus is not None else {})} for i in range(containers)]
    return {"metadata": {"annotations": annotations or {}}, "spec": {"containers": c}}


def lws(size: int | None, worker_gpus: int, leader_gpus: int | None = None) -> dict:
    lwt: dict = {"workerTemplate": pod_template(worker_gpus)}
    if size is not None:
        lwt["size"] = size
    if leader_gpus is not None:
        lwt["leaderTemplate"] = pod_template(leader_gpus)
    return {"spec": {"replicas": 1, "leaderWorkerTemplate": lwt}}


# ---------------------------------------------------------------------------------------------- shapes
def test_lws_shape_is_its_size_and_worker_template_gpus():
    shape = S.lws_shape(lws(4, 8))
    assert (shape.pods, shape.gpus_per_pod, shape.leader_gpus) == (4, 8, None)
    assert shape.pods_from == "spec.leaderWorkerTemplate.size" and shape.counts == "Replicas"


def test_lws_without_size_is_a_group_of_one_as_the_lws_default():
    assert S.lws_shape(lws(None, 8)).pods == 1


def test_lws_leader_template_with_other_gpus_is_kept_apart():
    shape = S.lws_shape(lws(3, 8, leader_gpus=0))
    assert (shape.pods, shape.gpus_per_pod, shape.leader_gpus) == (3, 8, 0)


def test_statefulset_shape_reads_gang_size_annotation_and_gpus_summed_over_containers():
    sts = {"spec": {"template": pod_template(4, {"clique.dev/gang-size": "2"}, containers=2)}}
    shape = S.pod_template_shape(sts, "Pods")
    assert (shape.pods, shape.gpus_per_pod, shape.counts) == (2, 8, "Pods")


def test_pod_template_without_gpu_resources_declares_no_gpu_count():
    shape = S.pod_template_shape({"spec": {"template": pod_template(None)}}, "Pods")
    assert shape.gpus_per_pod is None and shape.pods is None


def test_gpu_request_wins_over_limit_and_fractions_are_refused():
    spec = {"containers": [{"name": "m", "resources": {"requests": {"nvidia.com/gpu": "2"},
                                                       "limits": {"nvidia.com/gpu": "2"}}}]}
    assert S.pod_spec_gpus(spec, "x") == 2
    with pytest.raises(S.ShapeError, match=r"containers\[0\].resources.limits\[nvidia.com/gpu\]"):
        S.pod_spec_gpus({"containers": [{"resources": {"limits": {"nvidia.com/gpu": "0.5"}}}]}, "spec.template.spec")


V1A = "nvidia.com/v1alpha1"
V1B = "nvidia.com/v1beta1"


def dgd_v1alpha1() -> dict:
    return {"metadata": {"resourceVersion": "7"}, "spec": {"services": {
        "Frontend": {"replicas": 1},
        "decode": {"replicas": 2, "multinode": {"nodeCount": 2}, "resources": {"limits": {"gpu": "8"}}},
        "prefill": {"replicas": 1, "scalingAdapter": {"enabled": True}},
        "bare": {"scalingAdapter": {}}}}}


def dgd_v1beta1() -> dict:
    main = {"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "4"}}}
    return {"metadata": {"resourceVersion": "9"}, "spec": {"components": [
        {"name": "Frontend", "type": "frontend", "replicas": 1},
        {"name": "decode", "type": "decode", "replicas": 3, "multinode": {"nodeCount": 4},
         "podTemplate": {"spec": {"containers": [main]}}},
        {"name": "prefill", "type": "prefill", "replicas": 1, "scalingAdapter": {}}]}}


def test_v1alpha1_service_is_found_in_the_services_map_with_its_multinode_shape():
    index, svc = S.dgd_service(dgd_v1alpha1(), V1A, "decode")
    assert index is None and S.dgd_replicas(svc) == 2
    shape = S.dgd_shape(svc, V1A, S.dgd_where(V1A, "decode", index))
    assert (shape.pods, shape.gpus_per_pod) == (2, 8)
    assert shape.gpus_from == "spec.services.decode.resources.limits.gpu"


def test_v1beta1_component_is_found_by_name_with_its_index_and_pod_template_gpus():
    index, svc = S.dgd_service(dgd_v1beta1(), V1B, "decode")
    assert index == 1 and S.dgd_replicas(svc) == 3
    shape = S.dgd_shape(svc, V1B, S.dgd_where(V1B, "decode", index))
    assert (shape.pods, shape.gpus_per_pod) == (4, 4)


def test_a_service_without_multinode_is_one_pod_per_replica():
    _, svc = S.dgd_service(dgd_v1beta1(), V1B, "Frontend")
    assert S.dgd_shape(svc, V1B, "x").pods == 1 and S.dgd_shape(svc, V1B, "x").gpus_per_pod is None


def test_missing_service_names_the_ones_there_and_a_v1alpha1_object_read_as_v1beta1_says_which_version():
    with pytest.raises(S.ShapeError, match="no component named 'worker'.*Frontend, decode, prefill"):
        S.dgd_service(dgd_v1beta1(), V1B, "worker")
    with pytest.raises(S.ShapeError, match="no service 'worker' in spec.services"):
        S.dgd_service(dgd_v1alpha1(), V1A, "worker")
    with pytest.raises(S.ShapeError, match="apiVersion nvidia.com/v1alpha1"):
        S.dgd_service(dgd_v1alpha1(), V1B, "decode")


def test_scaling_adapter_is_enabled_by_enabled_true_at_v1alpha1_and_by_presence_at_v1beta1():
    a, b = dgd_v1alpha1()["spec"]["services"], {c["name"]: c for c in dgd_v1beta1()["spec"]["components"]}
    assert S.dgd_adapter_enabled(a["prefill"], V1A)
    assert not S.dgd_adapter_enabled(a["bare"], V1A), "a bare {} is disabled at v1alpha1 (enabled defaults false)"
    assert not S.dgd_adapter_enabled(a["decode"], V1A)
    assert S.dgd_adapter_enabled(b["prefill"], V1B), "v1beta1 ScalingAdapter is a marker: {} enables it"
    assert not S.dgd_adapter_enabled(b["decode"], V1B)


def test_adapter_is_matched_by_its_dgd_ref_at_either_version_and_named_as_dynamo_names_it():
    old = {"spec": {"replicas": 1, "dgdRef": {"name": "llm", "serviceName": "VllmWorker"}}}
    new = {"spec": {"replicas": 1, "dgdRef": {"name": "llm", "componentName": "VllmWorker"}}}
    assert S.adapter_matches(old, "llm", "VllmWorker") and S.adapter_matches(new, "llm", "VllmWorker")
    assert not S.adapter_matches(new, "other", "VllmWorker") and not S.adapter_matches(new, "llm", "decode")
    assert S.adapter_ref(new) == ("llm", "VllmWorker")
    assert S.adapter_name("llm", "VllmWorker") == "llm-vllmworker"


def test_dgd_pods_are_selected_by_dynamo_labels():
    assert S.dgd_pod_selector("llm", "decode") == \
        "nvidia.com/dynamo-graph-deployment-name=llm,nvidia.com/dynamo-component=decode"


def apply_json_patch(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902 for the three forms the patch uses (test, add/replace on an object member), strict like the API
    server: a failed test refuses the whole patch."""
    import copy

    out = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p for p in op["path"].split("/")[1:]]
        node: object = out
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]  # type: ignore[index]
        assert isinstance(node, dict)
        if op["op"] == "test":
            if node.get(last) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            node[last] = op["value"]
    return out


def test_v1beta1_patch_sets_only_that_components_replicas_on_the_object_as_read():
    obj = dgd_v1beta1()
    patched = apply_json_patch(obj, S.dgd_replicas_patch(1, "decode", "9", 5))
    assert [c.get("replicas") for c in patched["spec"]["components"]] == [1, 5, 1]


def test_v1beta1_patch_is_refused_after_a_concurrent_edit_or_a_reordered_list():
    obj = dgd_v1beta1()
    moved = dict(obj, spec={"components": list(reversed(obj["spec"]["components"]))})
    with pytest.raises(ValueError, match="/spec/components/1/name"):
        apply_json_patch(moved, [op for op in S.dgd_replicas_patch(1, "prefill", "9", 5)])
    edited = dict(obj, metadata={"resourceVersion": "10"})
    with pytest.raises(ValueError, match="resourceVersion"):
        apply_json_patch(edited, S.dgd_replicas_patch(1, "decode", "9", 5))


# ---------------------------------------------------------------------------------------------- pending
def test_unbound_leaders_are_pending_groups_one_each():
    assert S.pending_replicas(3, "leaders", pods_per_replica=4) == 3


def test_unbound_pods_of_a_pod_selector_count_in_whole_replicas():
    assert S.pending_replicas(5, "pods", pods_per_replica=4) == 2
    assert S.pending_replicas(0, "pods", pods_per_replica=4) == 0


def test_lws_hpa_selector_is_recognised_as_leaders_only():
    assert S.selects_leaders_only("leaderworkerset.sigs.k8s.io/name=x,leaderworkerset.sigs.k8s.io/worker-index=0")
    assert not S.selects_leaders_only("leaderworkerset.sigs.k8s.io/name=x")
    assert not S.selects_leaders_only(None)


@given(st.integers(0, 10_000), st.integers(1, 64))
def test_pending_pods_are_covered_by_the_fewest_whole_replicas(unbound, pods):
    n = S.pending_replicas(unbound, "pods", pods)
    assert n * pods >= unbound and (n - 1) * pods < unbound or n == 0 == unbound


# ---------------------------------------------------------------------------------------------- resolving
def policy(extra: dict) -> GangShape:
    doc = {"scaleTargetRef": {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "w"},
           "maxReplicas": 4, "metrics": [{"type": "QueueDepth", "target": {"type": "AverageValue",
                                                                            "averageValue": 5}}], **extra}
    return parse_policy("ns", "p", doc).gang


def test_policy_records_which_shape_fields_it_wrote():
    assert policy({}).stated == frozenset()
    assert policy({"podsPerReplica": 4, "gang": {"gpusPerPod": 8}}).stated == {"podsPerReplica", "gang.gpusPerPod"}
    assert policy({"gang": {"topologyRequired": "x"}}).stated == frozenset()


def test_a_policy_that_omits_the_shape_gets_it_from_the_target():
    gang, problems = S.resolve_gang(policy({"gang": {"topologyRequired": "x"}}), "Replicas", S.lws_shape(lws(4, 8)),
                                    "LeaderWorkerSet/w")
    assert problems == [] and (gang.pods, gang.gpus_per_pod, gang.topology_required) == (4, 8, "x")


def test_a_policy_that_agrees_with_its_target_is_valid():
    gang, problems = S.resolve_gang(policy({"podsPerReplica": 4, "gang": {"gpusPerPod": 8}}), "Replicas",
                                    S.lws_shape(lws(4, 8)), "LeaderWorkerSet/w")
    assert problems == [] and (gang.pods, gang.gpus_per_pod) == (4, 8)


def test_a_policy_that_contradicts_its_target_names_each_field_and_the_fix():
    _, problems = S.resolve_gang(policy({"podsPerReplica": 2, "gang": {"gpusPerPod": 4}}), "Pods",
                                 S.lws_shape(lws(4, 8)), "LeaderWorkerSet/w")
    assert len(problems) == 3
    assert problems[0].startswith("podsPerReplica: 2 but LeaderWorkerSet/w spec.leaderWorkerTemplate.size says 4")
    assert "gang.gpusPerPod: 4 but LeaderWorkerSet/w spec.leaderWorkerTemplate.workerTemplate asks for 8" in problems[1]
    assert problems[2].startswith("scaleUnit: Pods but LeaderWorkerSet/w counts replicas")


def test_a_statefulset_of_gangs_scaled_in_replicas_is_told_to_use_pods():
    shape = S.pod_template_shape({"spec": {"template": pod_template(8, {"clique.dev/gang-size": "2"})}}, "Pods")
    _, problems = S.resolve_gang(GangShape(), "Replicas", shape, "StatefulSet/decode")
    assert problems and "write scaleUnit: Pods" in problems[0]
    gang, problems = S.resolve_gang(GangShape(), "Pods", shape, "StatefulSet/decode")
    assert problems == [] and (gang.pods, gang.gpus_per_pod) == (2, 8)


def test_a_target_that_declares_nothing_leaves_the_policy_as_written():
    g = policy({"podsPerReplica": 3, "gang": {"gpusPerPod": 2}})
    assert S.resolve_gang(g, "Replicas", None, "X/y") == (g, [])
    assert S.resolve_gang(g, "Replicas", S.TargetShape(), "X/y") == (g, [])


@given(st.integers(1, 16), st.integers(0, 8), st.integers(1, 16), st.integers(0, 8), st.booleans(), st.booleans())
def test_resolved_shape_is_the_targets_and_a_problem_is_named_exactly_when_a_stated_field_differs(
        tp, tg, pp, pg, state_pods, state_gpus):
    stated = frozenset({"podsPerReplica"} if state_pods else set()) | ({"gang.gpusPerPod"} if state_gpus else set())
    gang = GangShape(pods=pp, gpus_per_pod=pg, stated=stated)
    resolved, problems = S.resolve_gang(gang, "Replicas", S.TargetShape(tp, tg), "T/t")
    assert (resolved.pods, resolved.gpus_per_pod) == (tp, tg)
    assert any(p.startswith("podsPerReplica") for p in problems) == (state_pods and pp != tp)
    assert any(p.startswith("gang.gpusPerPod") for p in problems) == (state_gpus and pg != tg)


def test_lws_leader_selector_is_the_one_the_lws_controller_writes():
    sel = S.lws_leader_selector("w")
    assert sel == "leaderworkerset.sigs.k8s.io/name=w,leaderworkerset.sigs.k8s.io/worker-index=0"
    assert S.selects_leaders_only(sel)
