"""`clique bench e2e --rounds N` (simulations/bench_e2e.py): the phases alternate their order round by round, and
each Clique mode is compared with stock within the same round."""

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
