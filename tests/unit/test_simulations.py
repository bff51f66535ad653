"""The simulators on real trace files (small slices): placement fill-until-failure and the autoscaling replay.
Pure: no cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scheduler.placement import CliqueEngine
from scheduler.placement.baselines import DefaultSpread
from simulations.placement_sim import simulate
from simulations.replay import ModelConfig, compare, replay
from simulations.workloads import data_file, dynamo_mix, load_requests, openb_cluster, openb_pods

ROOT = Path(__file__).parents[2]


def test_openb_cluster_and_pods_load_with_their_real_shapes():
    base = openb_cluster()
    assert len(base.hosts) == 1213 and sum(h.gpus for h in base.hosts.values()) == 6212
    assert [lv.name for lv in base.topology.levels] == ["spine", "leaf"]
    arrivals, timed = openb_pods(data_file("openb-multigpu50"), limit=50)
    assert not timed and len(arrivals) == 50 and arrivals[0].gang.roles[0].gpus == 1
    timed_arrivals, timed2 = openb_pods(data_file("openb-default"), limit=50)
    assert timed2 and all(a.duration is not None and a.duration >= 0 for a in timed_arrivals)


def test_fill_until_failure_clique_leaves_fewer_gpus_than_spreading():
    base = openb_cluster()
    # 2,500 of the trace's pods suffice: spreading first fails after about 1,600 of them (6,000 pods took
    # 2.4 times as long for the same verdict)
    arrivals, timed = openb_pods(data_file("openb-multigpu50"), limit=2500)
    ours = simulate(CliqueEngine(), base, arrivals, timed)
    spread = simulate(DefaultSpread(), base, arrivals, timed)
    assert spread.first_failure_index is not None, "spreading fragments the cluster within 2,500 pods"
    assert ours.first_failure_index is None or ours.first_failure_index > spread.first_failure_index
    assert ours.placed >= spread.placed


def test_timed_dynamo_mix_places_gangs_whole_and_measures_waits():
    from scheduler.placement.snapshots import snapshot_from_spec
    from topology.spec import load_cluster_spec

    base = snapshot_from_spec(load_cluster_spec(ROOT / "simulations" / "demo-offline-cluster.yaml"))
    res = simulate(CliqueEngine(), base, dynamo_mix(150, seed=3, rate_per_s=0.2), timed=True)
    s = res.summary()
    assert s["partial_gangs"] == 0 and s["placed"] > 0
    assert res.one_domain_share and 0 <= min(res.one_domain_share.values()) <= 1
    assert len(res.waits_s) == res.placed


def test_replay_serves_every_request_and_the_fixed_fleet_counts_gpu_hours():
    reqs = load_requests(data_file("azure-code"), limit=800)
    cfg = ModelConfig()
    fixed = replay(reqs, cfg, "fixed-8", lambda s: (8, 1), oracle_mode=True)
    assert len(fixed.ttft) == 800 and len(fixed.itl_ms) == 800
    hours = (reqs[-1].time + 600) / 3600  # upper bound on simulated time
    assert 0 < fixed.gpu_hours <= (8 * cfg.prefill_pods + cfg.decode_pods) * cfg.gpus_per_pod * hours + 1e-6
    assert fixed.scale_events == 0
    names = [r.policy for r in compare(reqs, cfg)]
    assert names == ["clique", "clique-reactive", "hpa-gpu-util", "keda-queue", "load-step-pm1", "dynamo-throughput",
                     "kpa-panic", "fixed-peak", "oracle"]


def test_mooncake_jsonl_is_read(tmp_path):
    p = tmp_path / "trace.jsonl"
    p.write_text('{"timestamp": 1000, "input_length": 100, "output_length": 5}\n'
                 '{"timestamp": 2500, "input_length": 50, "output_length": 0}\n')
    reqs = load_requests(p)
    assert [(r.time, r.prompt, r.output) for r in reqs] == [(0.0, 100, 5), (1.5, 50, 1)]


def test_simulate_and_replay_commands_end_with_their_json_line(tmp_path):
    def run(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "clique", *args, "--output", str(tmp_path), "--json"],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    sim = run("simulate", "--cluster", str(ROOT / "simulations" / "demo-offline-cluster.yaml"),
              "--workload", "openb-multigpu50", "--limit", "1200", "--policies", "clique,default-spread")
    assert sim["simulation"] == "placement" and [r["policy"] for r in sim["results"]] == ["clique", "default-spread"]
    assert {"allocation_ratio_at_first_failure", "unallocated_gpus", "one_domain_share", "p99_solve_ms"} <= set(sim["results"][0])
    assert (tmp_path / "placement-openb-multigpu50-allocation.png").stat().st_size > 0
    rep = run("replay", "--limit", "600")
    assert rep["simulation"] == "autoscaling" and len(rep["results"]) == 9
    assert {"ttft_slo_attainment", "itl_slo_attainment", "gpu_hours", "scale_events"} <= set(rep["results"][0])
    assert (tmp_path / "replay.png").stat().st_size > 0


def test_oracle_replica_lifetimes_keep_the_floor_load_ahead_and_bridge_short_gaps():
    from simulations.replay import _slots

    need = [1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4, 1]
    lives = _slots(need, window_s=5.0, load_s=60.0, floor=1)
    for w, n in enumerate(need):  # every window has at least its need serving (loaded before it starts)
        t = w * 5.0
        assert sum(1 for a, b in lives if a + 60.0 <= t + 1e-9 and t < b or a <= 0 and t < b) >= n, (w, lives)
    assert (0.0, 110.0) in lives, "the floor replica lives the whole trace"
    # replicas 2 and 3 are needed at 10 s and again at 100 s: 80 s apart, more than a 60 s load, so reloaded
    assert sorted(b for a, b in lives if b == 20.0) == [20.0, 20.0]
    bridged = _slots([2, 0, 0, 0, 2], window_s=5.0, load_s=60.0, floor=0)
    assert bridged == [(-60.0, 25.0), (-60.0, 25.0)], "a 15 s gap costs less than a reload: kept"


def test_oracle_meets_the_ttft_slo_for_every_prompt_one_replica_could_prefill_in_time():
    from simulations.replay import oracle

    reqs = load_requests(data_file("azure-code"), limit=2500)
    cfg = ModelConfig()
    res = replay(reqs, cfg.__class__(**{**cfg.__dict__, "interval_s": cfg.step_s}), "oracle", oracle(reqs, cfg),
                 oracle_mode=True)
    servable = sum(r.prompt <= cfg.prefill_tokens_per_s * cfg.ttft_slo_s for r in reqs)
    assert sum(t <= cfg.ttft_slo_s for t in res.ttft) >= servable
    fixed = replay(reqs, cfg, "fixed-16", lambda s: (16, 16), oracle_mode=True)
    assert res.gpu_hours < fixed.gpu_hours / 2, "clairvoyance costs far less than the largest fleet"


def test_our_policy_documents_are_valid_policies_and_scale_their_times_with_the_speedup():
    from autoscaler.policy import parse_policy
    from simulations.replay import clique_policy_docs, frontier_verdict, FrontierPoint

    docs = clique_policy_docs(ModelConfig(), "http://127.0.0.1:9/metrics", speedup=10)
    pre = parse_policy("ns", "prefill", docs["prefill"])
    dec = parse_policy("ns", "decode", docs["decode"])
    assert pre.interval_s == 1.5 and pre.scale_down.stabilization_s == 60 and pre.scale_unit == "Pods"
    assert all(m.source == "Scrape" for m in pre.metrics + dec.metrics) and dec.gang.pods == 2
    verdict = frontier_verdict([FrontierPoint("clique", "a", 0.995, 55.0), FrontierPoint("clique", "b", 0.8, 40.0)], 50.0)
    assert "best within budget: 99.5% at 55.0 GPU-hours = 1.10x" in verdict and "cheapest at >= 99%: 99.5%" in verdict


def test_kwok_nodes_carry_the_snapshot_topology_and_gang_pods_name_their_levels_by_label():
    from scheduler.placement.types import Gang, Role
    from simulations.kwok_scenario import gang_pods, host_specs

    base = openb_cluster()
    specs = {h.name: h for h in host_specs(base)}
    assert len(specs) == 1213 and sum(h.gpus for h in specs.values()) == 6212
    h = specs["openb-node-0000"]
    assert h.labels["type"] == "kwok" and h.labels["clique.dev/leaf"].startswith("leaf-")
    assert h.cpu_millis == 64000 and h.memory_bytes == 262144 * 2**20

    gang = Gang("TP16_Replica.3", (Role("leader", 1, 8, 4000, 2**30, one_per_host=True), Role("worker", 1, 8)),
                required_level="nvlink", preferred_level="leaf")
    pods = gang_pods(7, gang, "clique-scheduler", "run-1", {"nvlink": "nvidia.com/gpu.clique", "leaf": "clique.dev/leaf"})
    assert [p.name for p in pods] == ["tp16-replica-3-leader-0", "tp16-replica-3-worker-0"]
    ann = pods[0].manifest["metadata"]["annotations"]
    assert ann == {"clique.dev/gang": "tp16-replica-3", "clique.dev/gang-size": "2", "clique.dev/role": "leader",
                   "clique.dev/topology-required": "nvidia.com/gpu.clique",
                   "clique.dev/topology-preferred": "clique.dev/leaf"}
    res = pods[0].manifest["spec"]["containers"][0]["resources"]
    assert res["limits"] == {"nvidia.com/gpu": "8"} and res["requests"]["cpu"] == "4000m"
    single = gang_pods(0, Gang("openb-pod-0001", (Role("pod", 1, 0, 6000, 2**30),)), "default-scheduler", "run-1")
    assert single[0].name == "openb-pod-0001" and single[0].manifest["metadata"]["annotations"] == {}
    assert "nvidia.com/gpu" not in single[0].manifest["spec"]["containers"][0]["resources"]["requests"]
