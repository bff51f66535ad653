"""Pure parts of the model-vs-real-scheduler checks (simulations/model_check.py, kube_topology_check.py)."""

from __future__ import annotations

import pytest

from scheduler.placement.snapshots import snapshot_from_spec
from simulations import kube_topology_check as K
from simulations.model_check import (GIB, LEAF, SPINE, CheckResult, ClusterState, Decision, check_spec, check_workload,
                                     gang_of_kind, snapshot_with)
from topology.spec import parse_cluster_spec


def test_a_gang_kind_names_its_constraint_and_a_bad_one_says_which_kinds_exist():
    assert gang_of_kind("a", 2, 4, "required-spine").required_level == SPINE
    assert gang_of_kind("a", 2, 4, "preferred-leaf").preferred_level == LEAF
    g = gang_of_kind("a", 2, 4, "gang-only", cpu_per_gpu=16_000, memory_per_gpu=GIB)
    assert (g.required_level, g.preferred_level) == (None, None)
    assert (g.roles[0].cpu_millis, g.roles[0].memory) == (64_000, 4 * GIB)
    with pytest.raises(ValueError, match="required-leaf, required-spine"):
        gang_of_kind("a", 2, 4, "required-rack")


def test_the_kube_workload_asks_only_for_kinds_the_workload_api_has_with_cpu_in_step_with_gpus():
    hosts = [f"h{i}" for i in range(16)]
    _, gangs = check_workload(hosts, 8, 30, seed=1, kinds=K.KINDS, cpu_per_gpu=K.CPU_PER_GPU,
                              memory_per_gpu=K.MEMORY_PER_GPU)
    assert {cg.kind for cg in gangs} == set(K.KINDS)
    assert all(cg.gang.preferred_level is None for cg in gangs), "PodGroup has no preferred level"
    assert all(r.cpu_millis == r.gpus * 16_000 and r.memory == r.gpus * 128 * GIB
               for cg in gangs for r in cg.gang.roles)
    # the same seed draws the same shapes and pre-fill for Kueue's kinds and the kube kinds
    assert [cg.gang.shape() for cg in gangs] == [cg.gang.shape() for cg in check_workload(hosts, 8, 30, seed=1)[1]]


def test_a_gang_is_a_workload_and_the_podgroup_made_from_its_template_as_v1_37_publishes_them():
    _, gangs = check_workload([f"h{i}" for i in range(8)], 8, 12, seed=2, kinds=K.KINDS, cpu_per_gpu=1000)
    required = next(cg for cg in gangs if cg.gang.required_level)
    workload, podgroup = K.workload_objects(required)
    assert workload["apiVersion"] == podgroup["apiVersion"] == "scheduling.k8s.io/v1beta1"
    (tmpl,) = workload["spec"]["podGroupTemplates"]
    assert tmpl["schedulingPolicy"] == {"gang": {"minCount": required.gang.pod_count}}
    assert tmpl["schedulingConstraints"] == {"topology": [{"key": required.gang.required_level}]}
    assert podgroup["spec"]["workloadRef"] == {"workloadName": required.gang.name, "templateName": tmpl["name"]}
    assert podgroup["spec"]["schedulingConstraints"] == tmpl["schedulingConstraints"]
    loose = next(cg for cg in gangs if cg.kind == "gang-only")
    assert "schedulingConstraints" not in K.workload_objects(loose)[1]["spec"]
    pods = K.gang_pods(required, "pool")
    assert len(pods) == required.gang.pod_count
    assert all(p["spec"]["schedulingGroup"] == {"podGroupName": required.gang.name} for p in pods)
    res = pods[0]["spec"]["containers"][0]["resources"]
    assert res["requests"]["cpu"] == f"{required.gang.roles[0].gpus * 1000}m" and res["requests"] == res["limits"]


def test_a_refusal_is_the_podgroups_initially_scheduled_condition_false():
    assert K.refusal({"status": {}}) is None
    assert K.refusal({"status": {"conditions": [{"type": "PodGroupInitiallyScheduled", "status": "True"}]}}) is None
    assert K.refusal({"status": {"conditions": [{"type": "PodGroupInitiallyScheduled", "status": "False",
                                                 "reason": "Unschedulable", "message": "0/2 placements"}]}}) == \
        "0/2 placements"


def test_a_different_outcome_the_model_scores_as_high_is_counted_as_a_tie_not_a_disagreement():
    res = CheckResult(kinds=K.KINDS, decisions=[
        Decision("a", "required-leaf", "2x8", ["h0", "h1"], ["h4", "h5"], ("s0", "l0"), ("s0", "l1"),
                 real_is_model_tie=True),
        Decision("b", "required-leaf", "2x8", ["h2", "h3"], ["h6", "h7"], ("s0", "l0"), ("s0", "l1"),
                 real_is_model_tie=False),
        Decision("c", "gang-only", "2x8", ["h0", "h1"], ["h0", "h1"], ("s0", "l0"), ("s0", "l0"),
                 real_is_model_tie=True),
    ])
    s = res.summary()
    assert s["different_domain_share"] == round(2 / 3, 3)
    assert s["different_domain_not_a_tie_share"] == round(1 / 3, 3)
    assert s["real_not_a_model_tie_share"] == round(1 / 3, 3)
    assert set(s["by_kind"]) == set(K.KINDS)


def test_snapshot_with_carries_the_real_clusters_cpu_and_memory():
    base = snapshot_from_spec(parse_cluster_spec(check_spec("p", 1, 2, 2)))
    st = ClusterState()
    st.add("p-0000", 2, 32_000, 4 * GIB)
    h = snapshot_with(base, st).hosts["p-0000"]
    assert (h.gpus_used, h.pods_used, h.cpu_used, h.memory_used) == (2, 1, 32_000, 4 * GIB)
    legacy = snapshot_with(base, {"p-0000": 3}, {"p-0000": 1}).hosts["p-0000"]
    assert (legacy.gpus_used, legacy.pods_used, legacy.cpu_used) == (3, 1, 0)
