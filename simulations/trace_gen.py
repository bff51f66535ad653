"""A synthetic day-long LLM request trace with a diurnal cycle, for the replay's speed check and for trying
policies on a day's shape (scaling down at night, ahead of the morning ramp). Pure: seed in, requests out.
It is NOT a stand-in for a public trace and no default anywhere is chosen from it.

Arrivals: a non-homogeneous Poisson process whose rate follows a day (a raised cosine between `trough` and
`peak` x the mean, lowest at 04:00, highest at 16:00), modulated by bursts: episodes that start as a Poisson
process (`bursts_per_hour`), last an exponential time (mean `burst_s`) and multiply the rate by `burst_x`.
Prompt and output lengths are lognormal (medians and spreads given). Written as Mooncake-style JSONL
(`timestamp` in ms, `input_length`, `output_length`), which `clique replay --trace FILE` reads.

    python -m simulations.trace_gen --out day.jsonl             # ~500,000 requests over 24 h
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from simulations.workloads import Request


def diurnal_trace(requests: int = 500_000, seed: int = 1, day_s: float = 86400.0, trough: float = 0.25,
                  peak: float = 1.75, bursts_per_hour: float = 4.0, burst_s: float = 60.0, burst_x: float = 3.0,
                  prompt_median: float = 1500, prompt_sigma: float = 0.8, output_median: float = 150,
                  output_sigma: float = 1.0) -> list[Request]:
    rng = np.random.default_rng(seed)
    mean_rate = requests / day_s
    grid = np.arange(0.0, day_s, 1.0)
    phase = 2 * math.pi * (grid - 4 * 3600) / day_s
    shape = trough + (peak - trough) * (1 - np.cos(phase)) / 2
    burst = np.ones_like(grid)
    t = rng.exponential(3600 / bursts_per_hour)
    while t < day_s:
        d = rng.exponential(burst_s)
        burst[int(t):int(min(day_s, t + d))] *= burst_x
        t += d + rng.exponential(3600 / bursts_per_hour)
    rate = shape * burst
    rate *= mean_rate * day_s / rate.sum()
    counts = rng.poisson(rate)
    times = np.repeat(grid, counts) + rng.random(int(counts.sum()))
    times.sort()
    k = len(times)
    prompts = np.maximum(1, rng.lognormal(math.log(prompt_median), prompt_sigma, k)).astype(int)
    outputs = np.maximum(1, rng.lognormal(math.log(output_median), output_sigma, k)).astype(int)
    return [Request(float(a), int(p), int(o)) for a, p, o in zip(times, prompts, outputs)]


def write_jsonl(reqs: list[Request], path: Path) -> None:
    with open(path, "w") as fh:
        for r in reqs:
            fh.write(json.dumps({"timestamp": round(r.time * 1000, 3), "input_length": r.prompt,
                                 "output_length": r.output}) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulations.trace_gen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    ap.add_argument("--requests", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hours", type=float, default=24.0)
    a = ap.parse_args(argv)
    if a.requests <= 0 or a.hours <= 0:
        print("trace_gen: --requests and --hours must be positive", file=sys.stderr)
        return 2
    reqs = diurnal_trace(a.requests, a.seed, a.hours * 3600)
    write_jsonl(reqs, a.out)
    print(f"trace_gen: {len(reqs)} requests over {a.hours:g} h -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
