"""Summaries of the benchmarks: `clique bench e2e --rounds N` (simulations/bench_e2e.py) alternates the phases' order
round by round and compares each Clique mode with stock within the same round; `clique bench extender` reads the
extender's own latency histogram (scheduler/extender/bench.py)."""

from __future__ import annotations

from simulations.bench_e2e import phase_order, summary


def test_every_other_round_runs_the_phases_in_reverse_so_no_mode_is_always_last():
    order = phase_order(("stock", "clique-webhook"), 4)
    assert order == [(1, "stock"), (1, "clique-webhook"), (2, "clique-webhook"), (2, "stock"),
                     (3, "stock"), (3, "clique-webhook"), (4, "clique-webhook"), (4, "stock")]
    assert phase_order(("stock",), 1) == [(1, "stock")]


def test_shares_are_taken_within_a_round_and_their_median_reported():
    rows = [{"round": 1, "scheduler": "stock", "pods_per_s": 85.0},
            {"round": 1, "scheduler": "clique-webhook", "pods_per_s": 81.6},
            {"round": 2, "scheduler": "clique-webhook", "pods_per_s": 77.7},
            {"round": 2, "scheduler": "stock", "pods_per_s": 93.4},
            {"round": 3, "scheduler": "stock", "pods_per_s": 80.0},
            {"round": 3, "scheduler": "clique-webhook", "pods_per_s": 80.0}]
    s = summary(rows)
    assert s["stock"] == {"pods_per_s": [85.0, 93.4, 80.0], "pods_per_s_median": 85.0}
    assert s["clique-webhook"]["share_of_stock"] == [0.96, 0.832, 1.0]
    assert s["clique-webhook"]["share_of_stock_median"] == 0.96
    assert "share_of_stock" not in summary([r for r in rows if r["scheduler"] != "stock"])["clique-webhook"]


def test_the_extenders_own_histogram_gives_a_bound_on_p99_and_the_share_over_5_ms():
    from scheduler.extender.bench import server_side

    inf = float("inf")
    before = {0.001: 10, 0.0025: 20, 0.005: 30, 0.01: 30, inf: 30}
    after = {0.001: 60, 0.0025: 200, 0.005: 226, 0.01: 229, inf: 230}  # 200 more: 196 within 5 ms, 1 over 10 ms
    assert server_side(before, after) == {"requests": 200, "p99_le_ms": 10.0, "over_5ms": 0.02}
    assert server_side(after, after) == {"requests": 0, "p99_le_ms": None, "over_5ms": None}
