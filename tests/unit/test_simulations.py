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
    arrivals, timed = openb_pods(data_file("openb-multigpu50"), limit=6000)
    ours = simulate(CliqueEngine(), base, arrivals, timed)
    spread = simulate(DefaultSpread(), base, arrivals, timed)
    assert spread.first_failure_index is not None, "spreading fragments the cluster within 6,000 pods"
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
    assert names == ["clique", "hpa-gpu-util", "keda-queue", "dynamo-planner", "fixed-peak", "oracle"]


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
    assert rep["simulation"] == "autoscaling" and len(rep["results"]) == 6
    assert {"ttft_slo_attainment", "itl_slo_attainment", "gpu_hours", "scale_events"} <= set(rep["results"][0])
    assert (tmp_path / "replay.png").stat().st_size > 0
