"""A planner that looks ahead: replicas for a disaggregated prefill/decode deployment from a forecast of the load
over the next model-load time, not only from the present reading. Deterministic, no clock and no I/O: the caller
(the daemon, or `clique replay`) passes an Observation per evaluation and applies the Plan it gets back; the
planner's only state is its own history of observations.

Inputs (what a daemon can scrape; see `Observation`):
    prompt tokens and requests arrived per short bin (increments of counters such as vLLM's
        `vllm:prompt_tokens_total` and `vllm:request_success_total` or the frontend's request counter, read
        every `bin_s`),
    prompt requests and tokens waiting for prefill (queue depth, e.g. `vllm:num_requests_waiting`),
    decode sequences in flight (running + waiting for a slot, e.g. `vllm:num_requests_running` + waiting),
    the replicas each pool has (asked for, loading ones included).
Per-replica capacity comes from the policy (`PlannerConfig`), measured once per model and hardware:
    prefill_tokens_per_s: prompt tokens/s one prefill replica sustains while prompts of the workload's length
        finish within the TTFT SLO (a load test at rising request rates, e.g. vLLM's benchmark_serving or
        Dynamo's profiler, reading the throughput where TTFT p99 reaches the SLO);
    decode_slots: the most concurrent sequences one decode replica holds with ITL within its SLO (the same
        load test at rising --max-concurrency, reading where ITL p99 reaches the SLO; at most the KV cache's
        capacity in sequences of the workload's length).

Each evaluation (horizon h = load_s + interval_s: what is asked for now serves from one model load on, and the
next decision can change it only after that):
    1. forecast the prompt tokens/s over [now, now + h]: the highest of the present level, a recent trend
       (forecast.trend, kept only when significant) and a time-of-day profile (forecast.SeasonalProfile, once
       a day has been seen);
    2. burst headroom from the observed distribution of short-term peaks: replay the last `history_s` of
       arrivals per bin, scaled by forecast / the history's mean, through a fluid FIFO queue
       (forecast.replicas_for_attainment): the fewest replicas that keep `attainment` of the requests within
       the TTFT SLO;
    3. queue drain: the backlog plus the forecast arrivals served within h;
    4. decode: the `attainment` quantile of sequences in flight over the history, scaled by its own forecast,
       over the slots of a replica;
    5. scale-up at once; scale-down only to the most any evaluation of the last load_s asked for (a replica
       dropped and needed again within one model load costs more than keeping it);
    6. scale to zero (`scale_to_zero`): a pool goes to 0 after `idle_to_zero_s` without arrivals and an empty
       queue; any queued request (queue depth > 0) activates it again, the cold start (one model load) paid by
       the requests that wait.
The Plan's `reason` names the forecast and the headroom behind each number.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from autoscaler.forecast import SeasonalProfile, Trend, replicas_for_attainment, trend


@dataclass(frozen=True)
class PlannerConfig:
    prefill_tokens_per_s: float  # one prefill replica, at the TTFT SLO (measured, see the module docstring)
    decode_slots: int  # sequences one decode replica holds within the ITL SLO (measured)
    load_s: float  # request to serving: pod start + model load
    ttft_slo_s: float
    interval_s: float = 15.0  # evaluation interval
    attainment: float = 0.99  # share of requests the plan keeps within the TTFT SLO (the SLO objective)
    history_s: float = 3600.0  # how much of the past the burst distribution is read from
    trend_window_s: float = 1800.0  # the trend's fit window
    bin_s: float = 1.0  # resolution of the arrival counters
    season_slot_s: float = 900.0  # time-of-day profile resolution
    min_prefill: int = 1
    max_prefill: int = 16
    min_decode: int = 1
    max_decode: int = 16
    scale_to_zero: bool = False  # both pools may go to 0 when idle
    idle_to_zero_s: float = 600.0  # idle this long before going to zero (ten model loads of 60 s)

    def __post_init__(self) -> None:
        problems = [f"{k} must be > 0, got {getattr(self, k)}" for k in
                    ("prefill_tokens_per_s", "decode_slots", "ttft_slo_s", "interval_s", "history_s", "bin_s")
                    if not getattr(self, k) > 0]
        if not 0 < self.attainment < 1:
            problems.append(f"attainment must be in (0, 1), got {self.attainment}")
        if self.load_s < 0:
            problems.append(f"load_s must be >= 0, got {self.load_s}")
        for lo, hi in (("min_prefill", "max_prefill"), ("min_decode", "max_decode")):
            if not 0 <= getattr(self, lo) <= getattr(self, hi):
                problems.append(f"need 0 <= {lo} <= {hi}, got {getattr(self, lo)} and {getattr(self, hi)}")
        if problems:
            raise ValueError("planner config: " + "; ".join(problems))

    @property
    def horizon_s(self) -> float:
        return self.load_s + self.interval_s


@dataclass(frozen=True)
class Observation:
    """One evaluation's readings. `prompt_tokens` and `requests` are the counters' increments per bin of
    `bin_s` since the previous observation, oldest first (bins that one replica could not prefill within the
    SLO already left out, if the caller knows them: nobody can serve those in time)."""

    now: float
    prompt_tokens: Sequence[float]
    requests: Sequence[float]
    queue_requests: int  # waiting for prefill
    queue_tokens: float  # their prompt tokens (requests x mean prompt when only the count is exported)
    decode_in_flight: int  # running + waiting for a slot
    prefill_replicas: int  # asked for, loading ones included
    decode_replicas: int


@dataclass(frozen=True)
class Plan:
    prefill: int
    decode: int
    reason: str
    forecast_prompt_tps: float
    burst_replicas: int  # what the burst headroom alone asks for
    queue_replicas: int  # what draining the queue alone asks for
    decode_forecast: float  # sequences in flight the decode plan covers


@dataclass
class Planner:
    """The planner's memory between evaluations (lost on restart, like HPA's: it rebuilds within history_s)."""

    cfg: PlannerConfig
    tokens: deque = field(default_factory=deque)  # per bin, the last history_s
    requests: deque = field(default_factory=deque)
    rates: deque = field(default_factory=deque)  # (t, prompt tokens/s over the evaluation)
    inflight: deque = field(default_factory=deque)  # (t, decode sequences in flight)
    recs: deque = field(default_factory=deque)  # (t, prefill, decode) recommendations of the last load_s
    season: SeasonalProfile | None = None
    decode_season: SeasonalProfile | None = None
    last_t: float | None = None
    last_arrival_t: float = -math.inf

    def __post_init__(self) -> None:
        self.season = SeasonalProfile(self.cfg.season_slot_s)
        self.decode_season = SeasonalProfile(self.cfg.season_slot_s)

    def observe(self, obs: Observation) -> Plan:
        cfg = self.cfg
        keep_bins = int(round(cfg.history_s / cfg.bin_s))
        toks, reqs = list(obs.prompt_tokens), list(obs.requests)
        if len(toks) != len(reqs):
            raise ValueError(f"observation at {obs.now}: {len(toks)} token bins but {len(reqs)} request bins")
        self.tokens.extend(toks)
        self.requests.extend(reqs)
        while len(self.tokens) > keep_bins:
            self.tokens.popleft()
            self.requests.popleft()
        dt = obs.now - self.last_t if self.last_t is not None else len(toks) * cfg.bin_s
        self.last_t = obs.now
        if sum(reqs) > 0:
            self.last_arrival_t = obs.now
        if dt > 0:
            rate = sum(toks) / dt
            self.rates.append((obs.now, rate))
            self.inflight.append((obs.now, float(obs.decode_in_flight)))
            self.season.add(obs.now, rate, dt)
            self.decode_season.add(obs.now, float(obs.decode_in_flight), dt)
        keep_s = max(cfg.history_s, cfg.trend_window_s)
        for q in (self.rates, self.inflight):
            while q and q[0][0] <= obs.now - keep_s:
                q.popleft()
        h = cfg.horizon_s

        # 1. prefill forecast over the horizon
        ts = np.array([t for t, _ in self.rates])
        vs = np.array([v for _, v in self.rates])
        tr = trend(ts, vs, obs.now, cfg.trend_window_s)
        ratio = self.season.ratio(obs.now, h)
        forecast = max(tr.peak(h), tr.level * ratio if ratio else 0.0)
        # 2. burst headroom: the history's arrivals, scaled to the forecast, through a fluid queue
        tok = np.fromiter(self.tokens, float, len(self.tokens))
        req = np.fromiter(self.requests, float, len(self.requests))
        hist_mean = float(tok.sum()) / max(cfg.bin_s, len(tok) * cfg.bin_s)
        scale = forecast / hist_mean if hist_mean > 0 else 1.0
        if req.sum() > 0:
            burst, att = replicas_for_attainment(tok * scale, req, cfg.prefill_tokens_per_s, cfg.ttft_slo_s,
                                                 cfg.bin_s, cfg.attainment, 1, max(1, cfg.max_prefill))
        else:
            burst, att = 0, 1.0
        # 3. queue drain within the horizon
        # (at the higher of the forecast and the last interval's rate: what arrives now must be served too)
        present = self.rates[-1][1] if self.rates else 0.0
        drain = max(forecast, present)
        queue_n = math.ceil((obs.queue_tokens + drain * h) / (cfg.prefill_tokens_per_s * h)) if h > 0 else 0
        prefill = max(burst, queue_n if obs.queue_requests or drain > 0 else 0)
        # 4. decode: the attainment quantile of sequences in flight, scaled by its forecast
        dts = np.array([t for t, _ in self.inflight])
        dvs = np.array([v for _, v in self.inflight])
        dtr = trend(dts, dvs, obs.now, cfg.trend_window_s)
        dratio = self.decode_season.ratio(obs.now, h)
        dforecast = max(dtr.peak(h), dtr.level * dratio if dratio else 0.0)
        dmean = float(dvs.mean()) if len(dvs) else 0.0
        quant = float(np.quantile(dvs, cfg.attainment)) if len(dvs) else 0.0
        dneed = max(quant * (dforecast / dmean if dmean > 0 else 1.0), float(obs.decode_in_flight))
        decode = math.ceil(dneed / cfg.decode_slots)

        # 6. scale to zero / activation; then the bounds
        idle = obs.now - self.last_arrival_t >= cfg.idle_to_zero_s and not obs.queue_requests
        notes = []
        lo_p, lo_d = cfg.min_prefill, cfg.min_decode
        if cfg.scale_to_zero:
            lo_p = lo_d = 0
            if idle:
                prefill = decode = 0
                notes.append(f"idle {obs.now - self.last_arrival_t:.0f}s >= {cfg.idle_to_zero_s:.0f}s: to zero")
            elif obs.queue_requests or obs.decode_in_flight:
                prefill, decode = max(prefill, 1), max(decode, 1)
        else:
            lo_p, lo_d = max(1, lo_p), max(1, lo_d)
        prefill = min(max(prefill, lo_p), cfg.max_prefill)
        decode = min(max(decode, lo_d), cfg.max_decode)
        # 5. scale-down waits one model load
        self.recs.append((obs.now, prefill, decode))
        while self.recs and self.recs[0][0] <= obs.now - cfg.load_s:
            self.recs.popleft()
        if not (cfg.scale_to_zero and idle):
            held_p = max(p for _, p, _ in self.recs)
            held_d = max(d for _, _, d in self.recs)
            if held_p > prefill or held_d > decode:
                notes.append(f"scale-down held at {held_p}/{held_d} for one model load ({cfg.load_s:.0f}s)")
            prefill, decode = max(prefill, min(held_p, obs.prefill_replicas)), max(decode, min(held_d, obs.decode_replicas))

        season = f", time-of-day x{ratio:.2f}" if ratio else ""
        reason = (f"prefill {prefill}: prompt {tr.level:.0f} tok/s now, forecast {forecast:.0f} over the next "
                  f"{h:.0f}s (trend {tr.slope * 60:+.0f} tok/s per min{season}); burst headroom: the last "
                  f"{len(tok) * cfg.bin_s / 60:.0f} min of {cfg.bin_s:g}s arrivals x{scale:.2f} keep "
                  f"{att:.1%} within TTFT {cfg.ttft_slo_s:g}s with {burst}; queue {obs.queue_requests} "
                  f"({obs.queue_tokens:.0f} tokens) drains in {h:.0f}s with {queue_n}. decode {decode}: "
                  f"p{cfg.attainment * 100:g} in flight {quant:.0f} x{dforecast / dmean if dmean > 0 else 1:.2f} "
                  f"(now {obs.decode_in_flight}) over {cfg.decode_slots} slots"
                  + ("; " + "; ".join(notes) if notes else ""))
        return Plan(prefill, decode, reason, forecast, burst, queue_n, dneed)
