"""Where the look-ahead planner's GPU-hours go, against the baselines (`python -m simulations.planner_budget`).

Replays a trace with the planner (autoscaler/planner.py, as `clique replay` runs it) and with the baselines named
(keda-queue, dynamo-throughput, load-step-pm1 and the oracle by default), and reports:
    per policy   GPU-hours of the prefill and of the decode pool, per phase of `phase_s`, and the TTFT misses per
                 phase (with TTFT and ITL attainment overall);
    the planner  its GPU-hours split by the constraint that set each replica count, layer on layer (each
                 evaluation's count, built up from its floor; a layer's GPU-hours are the replicas it adds over
                 the one below it, for one evaluation interval):
                     prefill  floor (minReplicas, at least 1) -> queue drain -> burst headroom without the
                              thin-evidence prior (a twin planner with `prior=False` fed the same observations)
                              -> the prior -> the scale-down hold;
                     decode   floor -> the sequences in flight now -> + the attainment quantile of the peak rise
                              -> the forecast of the level (trend, time of day, last horizon's mean) -> the hold.
Pure apart from reading the trace; JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from typing import Sequence

import numpy as np

from autoscaler.planner import Observation, Planner, _quantile, _z
from simulations.replay import (ORACLE_INTERVAL_S, ModelConfig, Policy, ReplayResult, Signals, dynamo_throughput,
                                keda_queue, load_step_pm1, oracle, planner_config, replay)
from simulations.workloads import Request, data_file, load_requests

PREFILL_LAYERS = ("floor", "queue", "burst", "prior", "hold")
DECODE_LAYERS = ("floor", "in_flight", "quantile", "forecast", "hold")


def _layers(cuts: Sequence[int], final: int) -> list[int]:
    """Replicas each layer adds: cuts are the counts with each constraint added (non-decreasing once clipped to
    the final count, which the hold may raise above all of them)."""
    tops = [min(max(cuts[:i + 1]), final) for i in range(len(cuts))] + [final]
    return [tops[0]] + [b - a for a, b in zip(tops, tops[1:])]


def traced_planner(cfg: ModelConfig, attainment: float | None = None) -> tuple[Policy, list[dict]]:
    """The planner as `clique replay` runs it, plus a per-evaluation record of what set its counts."""
    pc = planner_config(cfg, attainment)
    main, twin = Planner(pc), Planner(replace(pc, prior=False))
    rows: list[dict] = []

    def run(s: Signals) -> tuple[int, int]:
        obs = Observation(s.now, s.bin_tokens if s.bin_tokens is not None else np.zeros(0),
                          s.bin_requests if s.bin_requests is not None else np.zeros(0), s.prefill_queue_requests,
                          s.prefill_queue_tokens, s.decode_running + s.decode_waiting, s.prefill, s.decode)
        plan, bare = main.observe(obs), twin.observe(obs)
        floor = max(1, pc.min_prefill)
        p_cuts = [floor, plan.queue_replicas, bare.burst_replicas, plan.burst_replicas]
        rises = np.array([r for _, r in main.decode_rises])
        v = float(obs.decode_in_flight)
        up = max(0.0, _quantile(rises, pc.attainment)) if len(rises) else _z(pc.attainment) * math.sqrt(
            max(0.0, plan.decode_forecast))
        slots = pc.decode_slots
        d_cuts = [max(1, pc.min_decode), math.ceil(v / slots - 1e-9), math.ceil((v + up) / slots - 1e-9),
                  math.ceil(plan.decode_forecast / slots - 1e-9)]
        rows.append({"t": s.now, "prefill": plan.prefill, "decode": plan.decode,
                     "p": _layers(p_cuts, plan.prefill), "d": _layers(d_cuts, plan.decode)})
        return plan.prefill, plan.decode
    return run, rows


def _pool_hours(res: ReplayResult, cfg: ModelConfig, interval: float, phase_s: float) -> dict[int, list[float]]:
    """GPU-hours of each pool per phase, from the replay's timeline (counts after each evaluation)."""
    tl = res.timeline + [(res.timeline[-1][0] + interval, 0, 0)]
    out: dict[int, list[float]] = {}
    for (t0, p, d), (t1, _, _) in zip(tl, tl[1:]):
        acc = out.setdefault(int(t0 // phase_s), [0.0, 0.0])
        acc[0] += p * cfg.prefill_pods * cfg.gpus_per_pod * (t1 - t0) / 3600
        acc[1] += d * cfg.decode_pods * cfg.gpus_per_pod * (t1 - t0) / 3600
    return out


def budget(requests: Sequence[Request], cfg: ModelConfig, phase_s: float = 600.0,
           baselines: Sequence[str] = ("keda-queue", "dynamo-throughput", "load-step-pm1", "oracle")) -> dict:
    """The report of the module docstring, as a dict."""
    if not requests:
        raise ValueError("planner_budget: the trace has no requests")
    if phase_s <= 0:
        raise ValueError(f"planner_budget: phase_s must be > 0, got {phase_s}")
    makers = {"keda-queue": (lambda: keda_queue(cfg), 30.0, False),
              "dynamo-throughput": (lambda: dynamo_throughput(cfg), cfg.interval_s, False),
              "load-step-pm1": (lambda: load_step_pm1(cfg), cfg.interval_s, False),
              "oracle": (lambda: oracle(requests, cfg), ORACLE_INTERVAL_S, True)}
    unknown = [b for b in baselines if b not in makers]
    if unknown:
        raise ValueError(f"planner_budget: unknown baselines {unknown}; choose from {sorted(makers)}")
    planner, rows = traced_planner(cfg)
    runs = [("clique", planner, cfg.interval_s, False)] + [(b, makers[b][0](), makers[b][1], makers[b][2])
                                                           for b in baselines]
    arrival = np.fromiter((r.time for r in requests), float, len(requests))
    policies = {}
    for name, pol, interval, oracle_mode in runs:
        res = replay(requests, replace(cfg, interval_s=interval), name, pol, oracle_mode=oracle_mode)
        s = res.summary()
        hours = _pool_hours(res, cfg, interval, phase_s)
        late = np.asarray(res.ttft) > cfg.ttft_slo_s
        misses = np.bincount((arrival[:len(late)][late] // phase_s).astype(np.int64))
        policies[name] = {
            "ttft_slo_attainment": s["ttft_slo_attainment"], "itl_slo_attainment": s["itl_slo_attainment"],
            "gpu_hours": s["gpu_hours"],
            "prefill_gpu_hours": round(sum(h[0] for h in hours.values()), 2),
            "decode_gpu_hours": round(sum(h[1] for h in hours.values()), 2),
            "phases": [{"phase": k, "prefill_gpu_hours": round(h[0], 2), "decode_gpu_hours": round(h[1], 2),
                        "ttft_misses": int(misses[k]) if k < len(misses) else 0}
                       for k, h in sorted(hours.items())]}
    gpu = {"p": cfg.prefill_pods * cfg.gpus_per_pod, "d": cfg.decode_pods * cfg.gpus_per_pod}
    layers = {f"{pool}_{name}": 0.0 for pool, names in (("prefill", PREFILL_LAYERS), ("decode", DECODE_LAYERS))
              for name in names}
    per_phase: dict[int, dict[str, float]] = {}
    for row in rows:
        ph = per_phase.setdefault(int(row["t"] // phase_s), {k: 0.0 for k in layers})
        for pool, key, names in (("prefill", "p", PREFILL_LAYERS), ("decode", "d", DECODE_LAYERS)):
            for name, n in zip(names, row[key]):
                h = n * gpu[key] * cfg.interval_s / 3600
                layers[f"{pool}_{name}"] += h
                ph[f"{pool}_{name}"] += h
    n_phases = int(arrival[-1] // phase_s) + 1
    load = [{"phase": k, "requests": int(((arrival >= k * phase_s) & (arrival < (k + 1) * phase_s)).sum())}
            for k in range(n_phases)]
    return {"phase_s": phase_s, "decode_slots": planner_config(cfg).decode_slots, "load": load,
            "policies": policies, "planner_layers_gpu_hours": {k: round(v, 2) for k, v in layers.items()},
            "planner_layers_per_phase": [{"phase": k, **{n: round(v, 2) for n, v in ph.items()}}
                                         for k, ph in sorted(per_phase.items())]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simulations.planner_budget", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", default="azure-conv", help="azure-code, azure-conv, or a path (e.g. a trace_gen day)")
    ap.add_argument("--phase-s", type=float, default=600.0, help="phase length for the per-phase split, seconds")
    ap.add_argument("--limit", type=int, default=None, help="only the first N requests")
    args = ap.parse_args(argv)
    try:
        requests = load_requests(data_file(args.trace), args.limit)
        out = {"trace": args.trace, **budget(requests, ModelConfig(), args.phase_s)}
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"planner_budget: {exc}", file=sys.stderr)
        return 2
    for name, p in out["policies"].items():
        print(f"{name:18} TTFT {p['ttft_slo_attainment']:.2%}  ITL {p['itl_slo_attainment']:.2%}  "
              f"GPU-h {p['gpu_hours']:.1f} = prefill {p['prefill_gpu_hours']:.1f} + decode {p['decode_gpu_hours']:.1f}")
    print("planner layers (GPU-h): " + ", ".join(f"{k} {v:.1f}" for k, v in out["planner_layers_gpu_hours"].items()))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
