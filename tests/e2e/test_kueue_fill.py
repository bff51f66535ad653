"""The KWOK fill with the real Kueue v0.17.0 TAS as the scheduler (`clique simulate --kwok --schedulers kueue-tas`):
Kueue's pods wait behind scheduling gates and are never marked Unschedulable, so the fill stops at the first Workload
Kueue rejects (simulations/kueue_fill.py). On a tiny cluster whose first rejection is known in advance: four 8-GPU
nodes, four 6-GPU pods (one per node, whatever the placement), then a 4-GPU pod that no node holds.

Starts its own control plane with the Kueue manager (run_scenario), like test_kwok_scenarios.py; Kueue is built
once (cached); the test skips only when Go is missing.
"""

from __future__ import annotations

from scheduler.placement.snapshots import snapshot_from_spec
from scheduler.placement.types import Gang, Role
from simulations.kwok_scenario import ScenarioOptions, run_scenario
from simulations.workloads import Arrival
from tests.e2e.helpers import built_or_skip
from topology.spec import parse_cluster_spec

TINY = {"name": "tiny", "levels": [{"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 2}],
        "pools": [{"name": "tiny", "hosts": 4, "gpus": 8, "cpu": "64", "memory": "512Gi"}]}


def test_the_fill_stops_at_the_first_workload_kueue_rejects_with_the_gpus_it_had_reserved():
    built_or_skip("kueue")
    base = snapshot_from_spec(parse_cluster_spec(TINY))
    gpus = [6, 6, 6, 6, 4, 1]
    arrivals = [Arrival(float(i), Gang(f"p{i}", (Role("pod", 1, g, 1000, 2**30),)), None) for i, g in enumerate(gpus)]
    log: list[str] = []
    # window 1: each pod is created once the one before is decided, so Kueue sees them in file order
    (res,) = run_scenario(base, arrivals, False, ScenarioOptions(schedulers=("kueue-tas",), window=1, settle_s=15),
                          say=log.append)
    r = res.summary()
    assert r["stop_signal"] == "workload" and r["first_failure_kind"] == "topology", (r, log)
    assert r["first_failure_at"] == 4 and "doesn't allow to fit any of 1 pod(s)" in r["first_failure_reason"], r
    assert r["placed"] == 4 and r["gangs"] == 5 and r["pods"] == 5, r  # the fill stopped there
    assert r["unallocated_gpus"] == 8 and r["stranded_gpus"] == 8, r  # 2 free GPUs on each node
    assert r["allocation_ratio_at_first_failure"] == 0.75 and r["reserved_unbound"] == 0, r
    assert r["watch_errors"] == 0 and r["offline_twin"] == "kueue-bestfit"
    # the ClusterQueue had quota for twice the cluster, so quota was never the reason
    assert any("nvidia.com/gpu': '64'" in line for line in log), log


def test_timed_gangs_with_the_real_kueue_wait_for_a_departure_and_are_then_placed_whole_in_one_leaf():
    built_or_skip("kueue")
    base = snapshot_from_spec(parse_cluster_spec(TINY))  # 2 leaves of 2 hosts x 8 GPUs

    def gang(name: str) -> Gang:
        return Gang(name, (Role("worker", 2, 8, 1000, 2**30),), required_level="leaf")

    # a and b fill both leaves; c arrives into the full cluster and is admitted only once a has departed. The run
    # lasts until the last arrival (as the offline simulator's does), so a late single pod d keeps it going.
    arrivals = [Arrival(0.0, gang("a"), 20.0), Arrival(1.0, gang("b"), 200.0), Arrival(2.0, gang("c"), 5.0),
                Arrival(60.0, Gang("d", (Role("pod", 1, 1, 1000, 2**30),)), 5.0)]
    log: list[str] = []
    (res,) = run_scenario(base, arrivals, True, ScenarioOptions(schedulers=("kueue-tas",), speedup=10, settle_s=20),
                          say=log.append)
    r = res.summary()
    assert r["stop_signal"] == "workload" and r["first_failure_kind"] == "topology", (r, log)  # c, rejected first
    assert r["placed"] >= 3 and r["partial_gangs"] == 0 and r["watch_errors"] == 0, (r, log)
    assert r["one_domain_share"]["leaf"] == 1.0, r  # each pod group inside one leaf, as its annotation requires
    assert max(res.waits_s) >= 18, res.waits_s  # c waited for a's departure (a lives 20 s of trace time)
    assert r["departed"] >= 1, r  # a's trace departure deleted it (c's may come after the last arrival, the end)
