"""The real Kueue v0.17.0 (built from its Go module, run by the harness) with topology-aware scheduling on KWOK:
plain pod groups are admitted whole and bound inside their required leaf, a group that fits no leaf waits with
none of its pods bound, the `kueue-bestfit` model makes the real Kueue's decisions, and `clique bench e2e`
reports a kueue-tas row.

Kueue is built once (cached in ~/.cache/clique/bin/kueue-v0.17.0, like LWS); the tests skip only when that build
is impossible because Go is missing. The bench test runs first and starts (and stops) its own control plane
before this module's Kueue control plane starts, so only one of them runs at a time.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from simulations.controlplane import kueue as K
from simulations.controlplane.kwok_nodes import create_nodes, delete_nodes
from simulations.kueue_check import LEAF, SPINE, check_spec, run_check
from tests.e2e.helpers import built_or_skip, wait_for
from topology.spec import parse_cluster_spec


def test_bench_e2e_reports_kueue_tas_gangs_whole_in_one_nvlink_domain():
    built_or_skip("kueue")
    from simulations.bench_e2e import run

    rows = run(32, 120, say=lambda m: None, modes=("kueue-tas",), latency_gangs=2)
    (row,) = rows
    assert row["scheduler"] == "kueue-tas"
    assert row["pods_bound"] == row["pods"] == 16  # 4 gangs of 4 pods (half the cluster)
    assert row["partial_gangs"] == 0 and row["one_domain_share"] == 1.0
    assert row["pods_per_s"] > 0 and row["burst_gang_bound_s"]["p50"] is not None
    assert row["idle_gang_bound_s"]["gangs"] == 2
    assert row["breakdown"]["cpu_ms_per_pod"].get("kueue-controller-manager", 0) > 0


@pytest.fixture(scope="module")
def kueue_plane():
    built_or_skip("kueue")
    from simulations.controlplane import ControlPlane, ControlPlaneOptions

    with ControlPlane(ControlPlaneOptions(kueue=True)) as cp:
        assert K.METRICS_CERT_DIR.joinpath("tls.crt").exists()  # v0.17.0 main.go's fixed path, ours while it runs
        yield cp


@pytest.fixture
def api(kueue_plane):
    api = kueue_plane.api_client()
    yield api
    api.close()


def _pod(name: str, group: str, total: int, pool: str, gpus: int = 8) -> dict:
    labels, annotations = K.pod_group_meta(group, total, "tas", required=LEAF)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"nodeSelector": {"clique.dev/pool": pool}, "automountServiceAccountToken": False,
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}


def test_pod_groups_are_admitted_whole_inside_one_leaf_and_one_that_fits_no_leaf_waits_unbound(kueue_plane, api):
    pool = f"kt{uuid.uuid4().hex[:5]}"
    spec = parse_cluster_spec(check_spec(pool, 1, 2, 3))  # 2 leaves x 3 hosts x 8 GPUs
    leaf = {h.name: h.labels[LEAF] for h in spec.hosts()}
    names = create_nodes(api, spec.hosts())
    ns = pool
    kueue_plane.create_namespace(ns)
    queues = K.TasQueues(ns, [SPINE, LEAF], {"nvidia.com/gpu": 48}, node_labels={"clique.dev/pool": pool},
                         name=f"{pool}-tas")
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    try:
        K.setup_tas_queues(api, queues)
        for g in ("a", "b"):  # 2 x 8 GPUs each: one leaf each (BestFit: the second goes to the emptier leaf)
            for i in range(2):
                core.create_namespaced_pod(ns, _pod(f"{g}-{i}", g, 2, pool))
        placed = wait_for(lambda: (lambda b: b if len(b) == 4 else None)(
            {p.metadata.name: p.spec.node_name for p in core.list_namespaced_pod(ns).items if p.spec.node_name}),
            60, "both pod groups bound")
        for g in ("a", "b"):
            assert len({leaf[placed[f"{g}-{i}"]] for i in range(2)}) == 1, placed
        assert leaf[placed["a-0"]] != leaf[placed["b-0"]]
        for i in range(2):  # 2 more pods: each leaf has one free host left, so no leaf holds them
            core.create_namespaced_pod(ns, _pod(f"c-{i}", "c", 2, pool))
        reason = wait_for(lambda: _pending_reason(custom, ns, "c"), 60, "Kueue to leave pod group c pending")
        assert "topology" in reason, reason
        pending = [p for p in core.list_namespaced_pod(ns).items if p.metadata.name.startswith("c-")]
        assert not any(p.spec.node_name for p in pending)
        assert all(K.TOPOLOGY_GATE in [g.name for g in p.spec.scheduling_gates or []] for p in pending)
    finally:
        core.delete_collection_namespaced_pod(ns, grace_period_seconds=0)
        wait_for(lambda: _strip_finalizers_until_gone(core, ns), 60, f"pods of {ns} gone")
        K.delete_tas_queues(api, queues)
        delete_nodes(api, names)


def _pending_reason(custom, ns: str, name: str) -> str | None:
    try:
        wl = custom.get_namespaced_custom_object(K.GROUP, K.VERSION, ns, "workloads", name)
    except client.exceptions.ApiException:
        return None
    return next((c.get("message") for c in (wl.get("status") or {}).get("conditions") or []
                 if c["type"] == "QuotaReserved" and c["status"] == "False"), None)


def _strip_finalizers_until_gone(core, ns: str) -> bool:
    left = core.list_namespaced_pod(ns).items
    for p in left:  # Kueue keeps its finalizer on gated pods of a group it never admitted
        if p.metadata.deletion_timestamp and not p.spec.node_name and p.metadata.finalizers:
            core.patch_namespaced_pod(p.metadata.name, ns, {"metadata": {"finalizers": None}})
    return not left


def test_the_kueue_bestfit_model_makes_the_real_kueues_decisions(kueue_plane):
    res = run_check(kueue_plane, check_spec(f"km{uuid.uuid4().hex[:4]}", 2, 2, 2), gangs=10, seed=0,
                    namespace=f"km{uuid.uuid4().hex[:5]}", say=lambda m: None)
    s = res.summary()
    assert s["placed_real"] >= 4, s
    assert s["same_admission_share"] == 1.0 and s["different_domain_share"] == 0.0, s
    for d in res.decisions:
        if d.real and d.kind == "required-leaf":
            assert d.real_domain is not None, d  # bound inside one leaf
