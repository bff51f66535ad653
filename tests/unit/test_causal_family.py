"""The best-in-hindsight causal family (simulations/causal_family.py): what the 1.15x check is measured against."""

from __future__ import annotations

import numpy as np

from simulations.causal_family import family, member
from simulations.replay import ModelConfig, Signals
from simulations.workloads import Request

CFG = ModelConfig()


def sig(now: float, arrival_tps: float = 0.0, queue_tokens: float = 0.0) -> Signals:
    return Signals(now, queue_tokens, 0, 0.0, arrival_tps, 0.0, 0, 1, 1)


def test_a_member_keeps_its_floor_and_holds_a_reactive_peak_for_its_hold():
    run = member(CFG, floor=3, target=1.0, hold_s=60)
    assert run(sig(15))[0] == 3  # the floor
    assert run(sig(30, arrival_tps=4.5 * CFG.prefill_tokens_per_s))[0] == 5  # the arrival rate needs 5
    assert run(sig(75))[0] == 5  # held: 45 s since
    assert run(sig(91))[0] == 3  # the hold has passed
    assert run(sig(105, queue_tokens=7 * CFG.prefill_tokens_per_s * CFG.ttft_slo_s))[0] == 7  # drain in the SLO


def test_the_family_reports_the_best_member_within_the_budget_and_a_pareto_front():
    rng = np.random.default_rng(3)
    # 10 minutes: a quiet load with a 20 s burst every 3 minutes
    times = np.sort(np.concatenate([rng.uniform(0, 600, 600)] +
                                   [rng.uniform(s, s + 20, 150) for s in (150, 330, 510)]))
    reqs = [Request(float(t), int(rng.integers(500, 4000)), 100) for t in times]
    out = family(reqs, CFG, budget=1.5, goal=0.99)
    assert out["members"] == 84
    best = out["best_within_budget"]
    assert best is not None and best["gpu_hours"] <= 1.5 * out["oracle_gpu_hours"]
    front = out["pareto"]
    assert all(a["gpu_hours"] <= b["gpu_hours"] and a["ttft_slo_attainment"] < b["ttft_slo_attainment"]
               for a, b in zip(front, front[1:]))
    assert best["ttft_slo_attainment"] == max(p["ttft_slo_attainment"] for p in front
                                              if p["gpu_hours"] <= 1.5 * out["oracle_gpu_hours"])
