"""The KWOK scenario runner: the simulators' workloads, time-compressed, on a real control plane (its own, started
by the runner) with clique-scheduler + extender, the stock kube-scheduler, and the real autoscaler daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import yaml

from scheduler.placement import all_policies
from scheduler.placement.snapshots import snapshot_from_spec
from simulations.kwok_scenario import ScenarioOptions, run_scenario
from simulations.placement_sim import simulate
from scheduler.placement.types import Gang, Role
from simulations.workloads import Arrival, dynamo_mix
from topology.spec import parse_cluster_spec

SMALL = {"name": "small",
         "levels": [{"name": "spine", "label": "clique.dev/spine", "hostsPerDomain": 16},
                    {"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 4}],
         "pools": [{"name": "big", "hosts": 8, "gpus": 8, "cpu": "128", "memory": "768Gi"},
                   {"name": "mid", "hosts": 16, "gpus": 8, "cpu": "96", "memory": "512Gi"},
                   {"name": "small", "hosts": 8, "gpus": 2, "cpu": "64", "memory": "256Gi"}]}


def clique(*args: str, timeout: int = 300) -> dict:
    out = subprocess.run([sys.executable, "-m", "clique", *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_openb_fill_on_the_api_server_matches_the_offline_simulator_and_clique_packs_tighter(tmp_path):
    spec = tmp_path / "small.yaml"
    spec.write_text(yaml.safe_dump(SMALL))
    result = clique("simulate", "--kwok", "--cluster", str(spec), "--workload", "openb-multigpu50",
                    "--output", str(tmp_path), "--json")
    assert result["simulation"] == "kwok-placement" and result["mode"] == "fill" and "Alibaba" in result["attribution"]
    real = {r["scheduler"]: r for r in result["results"]}
    offline = {r["policy"]: r for r in result["offline"]}
    assert set(real) == {"clique", "stock"} and set(offline) == {"clique", "default-spread"}
    for name, twin in (("clique", "clique"), ("stock", "default-spread")):
        r = real[name]
        assert r["first_failure_at"] is not None and r["watch_errors"] == 0, r
        assert r["first_failure_reason"].startswith("Unschedulable"), r
        # what the API server shows follows the offline model of the same scheduler
        assert abs(r["allocation_ratio_at_first_failure"] - offline[twin]["allocation_ratio_at_first_failure"]) <= 0.1, (r, offline[twin])
    assert real["clique"]["allocation_ratio_at_first_failure"] > real["stock"]["allocation_ratio_at_first_failure"]
    assert real["clique"]["unallocated_gpus"] < real["stock"]["unallocated_gpus"]
    assert (tmp_path / "kwok-openb-multigpu50.png").stat().st_size > 10_000


def test_timed_dynamo_mix_binds_gangs_whole_and_deletes_them_when_the_trace_says_they_depart():
    spec = parse_cluster_spec(SMALL)
    base = snapshot_from_spec(spec)
    arrivals = dynamo_mix(24, seed=3, rate_per_s=0.1, mean_duration_s=60)
    log: list[str] = []
    results = run_scenario(base, arrivals, True, ScenarioOptions(schedulers=("clique",), speedup=10, settle_s=10),
                           say=log.append)
    r = results[0].summary()
    assert r["partial_gangs"] == 0 and r["watch_errors"] == 0, (r, log)
    assert r["gangs"] == len(arrivals) == r["placed"] + r["failed"]
    assert r["pods"] == sum(a.gang.pod_count for a in arrivals)
    assert r["placed"] >= len(arrivals) - 2, (r, log)  # offline, every gang is placed by the last arrival
    assert r["departed"] > 0, "trace departures delete the gangs' pods"
    twin = simulate(next(p for p in all_policies(1) if p.name == "clique"), base, arrivals, True,
                    until=max(a.time for a in arrivals)).summary()
    for level in ("spine", "leaf"):  # the real run keeps gangs together as the offline model does, give or take
        assert r["one_domain_share"][level] >= twin["one_domain_share"][level] - 0.2, (r, twin)
    assert r["speedup"] == 10 and len([w for w in results[0].waits_s if w >= 0]) == r["placed"]


def test_a_gated_gang_that_asks_to_wait_for_one_leaf_waits_for_a_departure_instead_of_splitting():
    """Gated through the shipped webhook (--gated): two 3-host gangs leave one host free in each 4-host leaf, so the
    third gang (2 hosts, preferred leaf, clique.dev/topology-preferred-wait 120 trace-s) could only go split; it
    holds, and takes the leaf the 30 s gang frees."""
    spec = parse_cluster_spec({"name": "two-leaves", "levels": [{"name": "leaf", "label": "clique.dev/leaf",
                                                                  "hostsPerDomain": 4}],
                               "pools": [{"name": "p", "hosts": 8, "gpus": 8}]})
    gang = lambda name, hosts: Gang(name, (Role("worker", hosts, 8),), preferred_level="leaf")  # noqa: E731
    arrivals = [Arrival(0, gang("long", 3), 600), Arrival(1, gang("short", 3), 30), Arrival(2, gang("waits", 2), 600),
                Arrival(60, Gang("last", (Role("pod", 1, 1),)), None)]  # the run ends at the last arrival
    log: list[str] = []
    (res,) = run_scenario(snapshot_from_spec(spec), arrivals, True,
                          ScenarioOptions(schedulers=("clique",), speedup=10, settle_s=10, gated=True,
                                          preferred_wait_s=12), say=log.append)
    r = res.summary()
    assert r["placed"] == 4 and r["partial_gangs"] == 0 and r["watch_errors"] == 0, (r, log)
    assert r["gang_domains"]["waits"] == {"leaf": 1}, r["gang_domains"]
    assert r["gang_domains"]["long"] == r["gang_domains"]["short"] == {"leaf": 1}
    assert r["gang_waits_s"]["waits"] >= 25, r["gang_waits_s"]  # bound after the short gang left (trace time 31)


def test_replay_on_the_control_plane_runs_the_real_planner_and_reports_it_beside_the_offline_run(tmp_path):
    result = clique("replay", "--kwok", "--limit", "600", "--kwok-speedup", "30", "--output", str(tmp_path), "--json")
    assert result["simulation"] == "autoscaling-kwok" and result["requests"] == 600
    real, offline, oracle = result["results"]
    # the daemon runs the look-ahead planner (fed by a real Prometheus); its offline twin is `clique`
    assert real["policy"] == "clique (API server)" and offline["policy"] == "clique" and oracle["policy"] == "oracle"
    assert real["requests"] == 600, "every request was served by replicas the cluster bound"
    assert 0 < real["ttft_slo_attainment"] <= 1 and real["gpu_hours"] > 0
    # 48 hosts hold every replica the policies allow: a gang asked for is bound within seconds of real time
    # (x30 in trace time), never left waiting for capacity
    assert real["longest_pending_s"] <= 300, real
    # the real loop decides as the offline planner does (issue #16 item 6: 31.3% against 87.2%, when the daemon
    # spread each evaluation's counter increase over its 15 s): the daemon's path offline decides the same, and
    # the API server's run differs only by the control loop's seconds
    twin = result["daemon_path_offline"]
    assert twin["ttft_slo_attainment"] == offline["ttft_slo_attainment"], (twin, offline)
    assert real["evaluations"] > 0 and real["scrapes"] > 0
    if real["kept_time"]:  # on a machine too loaded for 30x the run says so instead (evaluations late or held)
        assert real["scale_events"] >= 1, "the autoscaler patched the StatefulSets"
        assert real["ttft_slo_attainment"] >= offline["ttft_slo_attainment"] - 0.05, (real, offline)
    else:
        warnings.warn(f"the replay did not keep time at 30x on this machine, its attainment is not compared: {real}")
