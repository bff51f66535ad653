"""The `topology-placement` model makes the real kube-scheduler v1.37.2's decisions (its in-tree gang + topology
plugins, gates GenericWorkload and TopologyAwareWorkloadScheduling): a handful of seeded gangs, each a Workload
and its PodGroup, placed by the real scheduler and by the model on a snapshot of the same state. The named
exception: where scores tie, both break the tie at random, so a different outcome must be one the model scores
as high as its own pick (`TopologyPlacement.explains`). Runs its own control plane (the session one has no gates)."""

from __future__ import annotations

import uuid

import pytest

from simulations.kube_topology_check import FEATURE_GATES, RUNTIME_CONFIG, run_check
from simulations.model_check import check_spec


@pytest.fixture(scope="module")
def gated_plane():
    from simulations.controlplane import ControlPlane, ControlPlaneOptions

    with ControlPlane(ControlPlaneOptions(feature_gates=FEATURE_GATES, runtime_config=RUNTIME_CONFIG)) as cp:
        yield cp


def test_the_model_decides_as_the_real_kube_scheduler_gang_by_gang_up_to_random_tie_breaks(gated_plane):
    pool = f"ktm{uuid.uuid4().hex[:5]}"
    res = run_check(gated_plane, check_spec(pool, 2, 2, 2), gangs=8, seed=4, namespace=pool, say=lambda m: None)
    decisions = res.decisions
    assert len(decisions) == 8
    assert all(bool(d.real) == bool(d.model) for d in decisions), [(d.gang, d.real, d.model) for d in decisions]
    both = [d for d in decisions if d.real and d.model]
    assert len(both) >= 4, "most of the handful fit: the comparison is not vacuous"
    assert all(d.real_is_model_tie for d in both), [(d.gang, d.kind, d.real, d.model) for d in both
                                                     if not d.real_is_model_tie]
    # where the scores decide (a required level), the domains agree exactly
    assert any(d.kind.startswith("required") and d.real_domain == d.model_domain for d in both)
    fill = res.summary()
    assert fill["same_admission_share"] == 1.0 and fill["real_not_a_model_tie_share"] == 0.0
