"""The event-driven replay (simulations/replay.py): its queue model, the baselines as modelled from upstream,
scale to zero, the oracle, the frontier, and the diurnal trace generator."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.replay import (ModelConfig, Signals, compare, dynamo_throughput, fixed_fleet, frontier,
                                frontier_verdict, kpa_panic, oracle, replay)
from simulations.trace_gen import diurnal_trace, main as trace_main
from simulations.workloads import Request, data_file, load_requests


def sig(now, **kw):
    base = dict(now=now, prefill_queue_tokens=0, prefill_queue_requests=0, prefill_busy=0, prefill_arrival_tps=0,
                decode_occupancy=0, decode_waiting=0, prefill=1, decode=1, prefill_ready=1, decode_ready=1)
    base.update(kw)
    return Signals(**base)


def test_one_replica_serves_prompts_in_arrival_order_one_at_a_time():
    cfg = ModelConfig(prefill_tokens_per_s=1000, min_replicas=1)
    reqs = [Request(0.0, 1000, 4), Request(0.5, 1000, 4), Request(10.0, 500, 4)]
    res = replay(reqs, cfg, "fixed-1", fixed_fleet(cfg, 1, 1))
    assert res.ttft == pytest.approx([1.0, 1.5, 0.5])  # the second waits for the first; the third finds it free
    two = replay(reqs, cfg, "fixed-2", fixed_fleet(cfg, 2, 1), oracle_mode=True)
    assert two.ttft == pytest.approx([1.0, 1.0, 0.5])


def test_a_replica_asked_for_serves_one_model_load_later_and_costs_from_the_ask():
    cfg = ModelConfig(prefill_tokens_per_s=1000, load_delay_s=60, interval_s=15)
    reqs = [Request(t, 750, 2) for t in np.arange(0, 200, 0.5)]  # 1,500 tokens/s on 1,000-token/s replicas
    res = replay(reqs, cfg, "up", lambda s: (2 if s.now >= 15 else 1, 1))
    assert res.scale_events == 1
    ttft = np.array(res.ttft)
    t = np.array([r.time for r in reqs])
    assert ttft[(t > 60) & (t < 75)].min() > 15  # a backlog builds until the second replica serves at 75 s
    assert ttft[t > 170].max() == pytest.approx(0.75)  # and is gone ~75 s later (500 tokens/s of spare capacity)
    assert res.gpu_hours > (1 * 1 + 1 * 2) * 8 * 200 / 3600


def test_decode_waits_for_a_slot_when_the_batch_is_full():
    cfg = ModelConfig(prefill_tokens_per_s=1e9, max_batch=1, decode_tokens_per_s=10, itl_slowdown=0.0)
    res = replay([Request(0.0, 1, 10), Request(0.0, 1, 10)], cfg, "fixed", fixed_fleet(cfg, 1, 1))
    assert sorted(res.itl_ms) == pytest.approx([100.0, 200.0], rel=1e-3)  # the second waited a whole sequence


def test_dynamo_throughput_sizes_from_the_interval_average_at_the_profiled_throughput():
    cfg = ModelConfig()
    pol = dynamo_throughput(cfg, adjust_s=180)
    assert pol(sig(0)) == (1, 1)
    # 180 s at 40,000 prompt tokens/s, 20 requests/s of 100 output tokens; TTFT as profiled (no correction)
    for k in range(1, 13):
        out = pol(sig(15 * k, prefill_arrival_tps=40000, arrived_requests=300, arrived_output_tokens=30000,
                      ttft_sum=300 * 2000 / 16000, ttft_count=300))
    assert out == (3, 2)  # ceil(40k / 16k); ceil(2,000 tok/s / 1,600 tok/s per replica at the ITL SLO)
    assert pol(sig(195, prefill_arrival_tps=1e6, arrived_requests=1)) == (3, 2)  # held until the next adjustment


def test_kpa_panics_on_a_burst_and_does_not_scale_down_while_panicking():
    cfg = ModelConfig()
    pol = kpa_panic(cfg)
    calm = np.full(2, 5000.0)
    for k in range(30):
        p, _ = pol(sig(2 * k, bin_tokens=calm, prefill=1, prefill_ready=1))
    assert p == 1
    burst = np.full(2, 60000.0)
    for now in (62, 64, 66):
        p, _ = pol(sig(now, bin_tokens=burst, prefill=1, prefill_ready=1))
    assert p == 6  # the 6 s panic window sees 60k tokens/s: ceil(60k / 11.2k), over 200% of one replica
    p2, _ = pol(sig(64, bin_tokens=calm, prefill=p, prefill_ready=1))
    assert p2 == p  # in panic: no scale-down


def test_scale_to_zero_activates_on_a_queued_request_and_the_cold_start_shows():
    cfg = ModelConfig(scale_to_zero=True)
    reqs = [Request(float(t), 2000, 10) for t in range(0, 60)] + [Request(3000.0 + t, 2000, 10) for t in range(10)]
    from simulations.replay import clique_planner

    res = replay(reqs, cfg, "clique", clique_planner(cfg))
    s = res.summary()
    assert s["cold_starts"] >= 1 and s["cold_start_waits"] >= 1, s
    late = np.array(res.ttft)[-10:]
    assert late.max() >= cfg.load_delay_s - cfg.interval_s, "the requests after the idle gap paid a model load"
    always_on = replay(reqs, ModelConfig(), "clique", clique_planner(ModelConfig()))
    assert res.gpu_hours < always_on.gpu_hours


def test_every_policy_runs_and_attainment_is_reported_over_feasible_requests_too():
    reqs = load_requests(data_file("azure-code"), limit=1500)
    big = [Request(reqs[-1].time + 1, 10**6, 5)]  # no single replica prefills this within 2 s
    results = compare(reqs + big, ModelConfig())
    for r in results:
        s = r.summary()
        assert s["requests"] == 1501 and s["infeasible_share"] == pytest.approx(1 / 1501, abs=1e-4)
        assert s["ttft_slo_attainment_feasible"] >= s["ttft_slo_attainment"]
    orc = next(r for r in results if r.policy == "oracle").summary()
    assert orc["ttft_slo_attainment_feasible"] == 1.0


def test_the_oracle_is_cheaper_than_a_fleet_that_also_meets_the_slo():
    reqs = load_requests(data_file("azure-code"), limit=1500)
    cfg = ModelConfig()
    orc = replay(reqs, cfg.__class__(**{**cfg.__dict__, "interval_s": 5.0}), "oracle", oracle(reqs, cfg),
                 oracle_mode=True).summary()
    fixed = replay(reqs, cfg, "fixed-8", fixed_fleet(cfg, 8, 1), oracle_mode=True).summary()
    assert orc["ttft_slo_attainment"] == 1.0 and orc["gpu_hours"] < fixed["gpu_hours"]


def test_the_frontier_sweeps_each_policy_and_the_verdict_names_unmatched_baselines():
    reqs = load_requests(data_file("azure-code"), limit=600)
    points = frontier(reqs, ModelConfig())
    assert {"clique", "kpa-panic", "dynamo-throughput", "clique-reactive", "fixed"} <= {p.policy for p in points}
    verdict = frontier_verdict(points, oracle_hours=min(p.gpu_hours for p in points))
    assert verdict.startswith("goal: >= 99% TTFT attainment") and ("baseline points" in verdict or "every baseline" in verdict)


def test_the_diurnal_trace_has_a_day_cycle_and_is_reproducible(tmp_path):
    a = diurnal_trace(20000, seed=3)
    assert len(a) == pytest.approx(20000, rel=0.05) and a == diurnal_trace(20000, seed=3)
    hours = np.bincount((np.array([r.time for r in a]) // 3600).astype(int), minlength=24)
    assert hours[16] > 3 * hours[4], "afternoon peak, night trough"
    out = tmp_path / "day.jsonl"
    assert trace_main(["--out", str(out), "--requests", "2000", "--hours", "1"]) == 0
    back = load_requests(out)
    assert len(back) > 1500 and back[0].time == 0.0
    assert trace_main(["--out", str(out), "--requests", "0"]) == 2


def test_replays_in_worker_processes_give_the_same_results_as_one_after_another():
    from dataclasses import replace

    from simulations.replay import clique_planner, run_replays

    reqs = load_requests(data_file("azure-code"), limit=400)
    cfg = ModelConfig()
    jobs = [(reqs, "clique", clique_planner(cfg), cfg, False, True),
            (reqs, "fixed", fixed_fleet(cfg, 2, 1), replace(cfg, interval_s=60.0), False, True),
            (reqs, "kpa", kpa_panic(cfg), replace(cfg, interval_s=2.0), False, False)]
    serial = run_replays(jobs, workers=1)
    fresh = [(reqs, "clique", clique_planner(cfg), cfg, False, True),  # policies keep state: new ones
             (reqs, "fixed", fixed_fleet(cfg, 2, 1), replace(cfg, interval_s=60.0), False, True),
             (reqs, "kpa", kpa_panic(cfg), replace(cfg, interval_s=2.0), False, False)]
    forked = run_replays(fresh, workers=2)
    assert serial[:2] == forked[:2] and serial[2].summary() == forked[2].summary()
    assert serial[2].ttft == forked[2].ttft


def test_the_kwok_planner_policies_are_valid_and_compress_time_by_the_speedup():
    from autoscaler.policy import parse_policy
    from simulations.kwok_replay import PLANNER_SERIES, planner_policy_docs, planner_values

    cfg = ModelConfig()
    docs = planner_policy_docs(cfg, speedup=30)
    pre, dec = (parse_policy("replay", name, docs[name]) for name in ("prefill", "decode"))
    assert pre.planner.role == "Prefill" and dec.planner.role == "Decode"
    assert pre.planner.prefill_tokens_per_s == cfg.prefill_tokens_per_s * 30
    assert pre.planner.load_s == pytest.approx(cfg.load_delay_s / 30) and pre.interval_s == pytest.approx(0.5)
    assert set(dict(pre.planner.series).values()) == set(PLANNER_SERIES)
    s = sig(15, prefill_queue_requests=3, decode_running=5, decode_waiting=2)
    assert planner_values(s, 1e5, 40, "prefill") == {"vllm:prompt_tokens_total": 1e5, "vllm:request_success_total": 40,
                                                     "vllm:num_requests_waiting": 3, "vllm:num_requests_running": 0}
    # each pool's series, selected by its policy: the decode pool's in flight (running + waiting) is 5 + 2
    assert planner_values(s, 1e5, 40, "decode")["vllm:num_requests_waiting"] == 2
    assert planner_values(s, 1e5, 40, "decode")["vllm:num_requests_running"] == 5
    assert (dict(pre.planner.selector), dict(dec.planner.selector)) == ({"pool": "prefill"}, {"pool": "decode"})
