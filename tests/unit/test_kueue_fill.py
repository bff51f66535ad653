"""The kueue-tas fill's stop signal read from Kueue's Workload objects, and its inputs (pure parts)."""

from __future__ import annotations

import csv

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulations.kueue_fill import (QUOTA_FACTOR, kueue_pod, queues_for, rejection_kind, workload_pods,
                                    workload_verdict)
from simulations.simulate_cli import thinned_node_list

# messages as v0.17.0 formats them (flavorassigner.go Assignment.Message, tas_flavor_snapshot.go notFitMessage,
# flavorassigner.go fitsResourceQuota)
TAS_NONE = "couldn't assign flavors to pod set main: topology \"scenario-kueue-tas-tas\" doesn't allow to fit any of 1 pod(s)"
TAS_SOME = "couldn't assign flavors to pod set main: topology \"t\" allows to fit only 2 out of 4 pod(s)"
QUOTA = ("couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor t, "
         "4 more needed")
MISSING = "couldn't assign flavors to pod set main: resource example.com/fpga unavailable in ClusterQueue"


def workload(*conditions: dict, owners: tuple[str, ...] = ("p0",)) -> dict:
    return {"metadata": {"name": "pod-p0-1a2b3", "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": o, "uid": o} for o in owners]},
            "status": {"conditions": list(conditions)}}


def quota_reserved(status: str, reason: str, message: str = "") -> dict:
    return {"type": "QuotaReserved", "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize("message,kind", [(TAS_NONE, "topology"), (TAS_SOME, "topology"), (QUOTA, "quota"),
                                          (MISSING, "missing-resource")])
def test_a_pending_workload_with_the_flavor_assigners_message_is_rejected_and_says_which_check_failed(message, kind):
    v = workload_verdict(workload(quota_reserved("False", "Pending", message)))
    assert (v.state, v.kind, v.message) == ("rejected", kind, message)


@pytest.mark.parametrize("cond", [
    quota_reserved("False", "Pending", "Workload no longer fits after processing another workload"),  # setSkipped
    quota_reserved("False", "Pending", "ClusterQueue c is inactive"),
    quota_reserved("False", "Waiting", "waiting for all admitted workloads to be in PodsReady condition"),
    quota_reserved("False", "Pending", ""),
])
def test_skips_waits_and_inactive_queues_are_not_rejections(cond):
    assert workload_verdict(workload(cond)).state == "waiting"


def test_a_new_workload_waits_and_one_with_quota_reserved_holds_a_reservation():
    assert workload_verdict(workload()).state == "waiting"
    assert workload_verdict({"metadata": {"name": "w"}}).state == "waiting"
    assert workload_verdict(workload(quota_reserved("True", "QuotaReserved", "Quota reserved in ClusterQueue c"),
                                     {"type": "Admitted", "status": "True", "reason": "Admitted"})).state == "reserved"


def test_a_workload_stands_for_its_pod_owners_only():
    wl = workload(owners=("a", "b"))
    wl["metadata"]["ownerReferences"].append({"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "j"})
    assert workload_pods(wl) == ["a", "b"]
    assert workload_pods({"metadata": {}}) == []


@given(st.text(max_size=80))
def test_rejection_kind_is_always_one_of_the_four(text):
    assert rejection_kind(text) in {"topology", "quota", "missing-resource", "other"}


def test_single_pods_get_only_the_queue_label_and_gangs_become_pod_groups_with_their_level():
    pod = {"metadata": {"name": "p", "labels": {"x": "1"}, "annotations": {}}, "spec": {}}
    single = kueue_pod(pod, 1, "p")
    assert single["metadata"]["labels"] == {"x": "1", "kueue.x-k8s.io/queue-name": "tas"}
    assert "kueue.x-k8s.io/queue-name" not in pod["metadata"]["labels"]  # the input is not changed
    member = kueue_pod(pod, 4, "g", required="clique.dev/leaf")
    assert member["metadata"]["labels"]["kueue.x-k8s.io/pod-group-name"] == "g"
    assert member["metadata"]["annotations"] == {"kueue.x-k8s.io/pod-group-total-count": "4",
                                                 "kueue.x-k8s.io/podset-required-topology": "clique.dev/leaf"}


def test_the_cluster_queue_quota_is_twice_the_clusters_allocatable_so_quota_is_never_the_reason():
    q = queues_for("ns", ["clique.dev/spine", "clique.dev/leaf"],
                   {"nvidia.com/gpu": 32, "cpu": 256_000, "memory": 2**40, "example.com/none": 0}, {"type": "kwok"})
    assert QUOTA_FACTOR == 2
    assert dict(q.quotas) == {"nvidia.com/gpu": "64", "cpu": "512000m", "memory": str(2 * 2**40)}
    topology, flavor, cq, lq = q.manifests()
    assert [lv["nodeLabel"] for lv in topology["spec"]["levels"]] == ["clique.dev/spine", "clique.dev/leaf",
                                                                     "kubernetes.io/hostname"]
    assert flavor["spec"]["nodeLabels"] == {"type": "kwok"} and lq["metadata"]["namespace"] == "ns"
    assert cq["spec"]["resourceGroups"][0]["coveredResources"] == ["cpu", "memory", "nvidia.com/gpu"]


def test_node_stride_keeps_every_kth_node_in_the_overlays_order(tmp_path):
    src = tmp_path / "nodes.csv"
    rows = [{"sn": f"n{i:02d}", "cpu_milli": "1000", "memory_mib": "1024", "gpu": str(8 if i % 2 else 2),
             "model": "A" if i < 6 else "B"} for i in range(12)]
    with open(src, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = thinned_node_list(src, 3, tmp_path / "out" / "thin.csv")
    with open(out, newline="") as fh:
        kept = [r["sn"] for r in csv.DictReader(fh)]
    order = [r["sn"] for r in sorted(rows, key=lambda r: (r["model"], -int(r["gpu"]), r["sn"]))]
    assert kept == order[::3] and len(kept) == 4
