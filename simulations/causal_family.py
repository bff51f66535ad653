"""How far a causal policy can get on a trace: the best member, chosen in hindsight, of a broad family of causal
policies (a fixed prefill floor plus reactive scale-up held for a while), against the oracle's GPU-hours.

Each member is causal (it sees only the past); only the choice of its three numbers is made knowing the whole
trace, so the best member bounds from above what such rules reach with any defaults. A member, every evaluation:
    prefill = the most, over the last `hold_s`, of max(floor, ceil(arrival rate of the last interval /
              (target x a replica's prompt tokens/s)), ceil(queued prompt tokens / (a replica's tokens/s x TTFT
              SLO)))   (the queue term drains the backlog within the SLO)
    decode  = ceil(sequences in flight / (0.7 x the slots within the ITL SLO)), at least 1
over floor 1..7, target 0.25 / 0.5 / 1 of capacity, hold 0 / 60 / 300 / 600 s (84 members).

    python -m simulations.causal_family [--trace azure-code] [--budget 1.15] [--goal 0.99]
prints the Pareto points and, as JSON on the last line, the best attainment within `budget` x the oracle's
GPU-hours and the cheapest member reaching `goal`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import replace
from typing import Sequence

from simulations.replay import (ORACLE_INTERVAL_S, ModelConfig, Policy, Signals, oracle, replay, run_replays)
from simulations.workloads import Request, data_file, load_requests

FLOORS = range(1, 8)
TARGETS = (0.25, 0.5, 1.0)
HOLDS_S = (0, 60, 300, 600)


def member(cfg: ModelConfig, floor: int, target: float, hold_s: float) -> Policy:
    """One causal policy of the family (see the module docstring)."""
    asked: list[tuple[float, int]] = []
    cap = cfg.prefill_tokens_per_s

    def run(s: Signals) -> tuple[int, int]:
        want = max(floor, math.ceil(s.prefill_arrival_tps / (target * cap)),
                   math.ceil(s.prefill_queue_tokens / (cap * cfg.ttft_slo_s)))
        asked.append((s.now, min(cfg.max_replicas, want)))
        while asked and asked[0][0] <= s.now - hold_s - 1e-9 and len(asked) > 1:
            asked.pop(0)
        p = max(n for _, n in asked)
        d = max(1, math.ceil((s.decode_running + s.decode_waiting) / (0.7 * cfg.slots_at_itl_slo)))
        return p, d
    return run


def family(requests: Sequence[Request], cfg: ModelConfig, budget: float = 1.15, goal: float = 0.99) -> dict:
    grid = list(itertools.product(FLOORS, TARGETS, HOLDS_S))
    sums = run_replays([(requests, f"floor {f}, target {u:g}, hold {h}s", member(cfg, f, u, h), cfg, False, True)
                        for f, u, h in grid])
    orc = replay(requests, replace(cfg, interval_s=ORACLE_INTERVAL_S), "oracle", oracle(requests, cfg),
                 oracle_mode=True)
    orc.cfg = cfg
    oh = orc.summary()["gpu_hours"]
    pts = [{"floor": f, "target": u, "hold_s": h, "ttft_slo_attainment": s["ttft_slo_attainment"],
            "gpu_hours": s["gpu_hours"], "x_oracle": round(s["gpu_hours"] / oh, 3)} for (f, u, h), s in zip(grid, sums)]
    within = [p for p in pts if p["gpu_hours"] <= budget * oh]
    meets = [p for p in pts if p["ttft_slo_attainment"] >= goal]
    pareto, best = [], -1.0
    for p in sorted(pts, key=lambda p: (p["gpu_hours"], -p["ttft_slo_attainment"])):
        if p["ttft_slo_attainment"] > best:
            pareto.append(p)
            best = p["ttft_slo_attainment"]
    return {"oracle_gpu_hours": oh, "members": len(pts), "budget_x_oracle": budget, "goal": goal,
            "best_within_budget": max(within, key=lambda p: (p["ttft_slo_attainment"], -p["gpu_hours"]), default=None),
            "cheapest_at_goal": min(meets, key=lambda p: p["gpu_hours"], default=None), "pareto": pareto}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulations.causal_family", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default="azure-code", help="azure-code, azure-conv, or a path")
    ap.add_argument("--budget", type=float, default=1.15, help="GPU-hours, as a multiple of the oracle's")
    ap.add_argument("--goal", type=float, default=0.99, help="TTFT-SLO attainment")
    args = ap.parse_args(argv)
    try:
        requests = load_requests(data_file(args.trace))
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"causal_family: cannot read the trace {args.trace!r}: {exc}", file=sys.stderr)
        return 2
    out = {"trace": args.trace, **family(requests, ModelConfig(), args.budget, args.goal)}
    for p in out["pareto"]:
        print(f"pareto: {p['ttft_slo_attainment']:.2%} at {p['gpu_hours']:.1f} GPU-hours ({p['x_oracle']:.2f}x): "
              f"floor {p['floor']}, target {p['target']:g}, hold {p['hold_s']} s")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
