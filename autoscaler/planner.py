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
    2. burst headroom from what past horizons brought, conditioned on what the planner knew when it decided:
       every evaluation's horizon, once it has passed, is kept with its class (the replicas the arrival rate of
       the horizon before it needed, ceil(rate / prefill_tokens_per_s): 0 = idle) and the requests a fluid FIFO
       queue of n replicas would have kept past the TTFT SLO over it, for every n (forecast.window_misses);
       over the last `history_s`, the cheapest per-class counts whose misses stay within (1 - attainment) of
       all requests (forecast.cheapest_plan_of_sums, a Lagrangian: the miss budget goes where holding replicas
       costs the most per request saved, e.g. long idle stretches) give the count for the present class.
       Thin evidence (a rule of succession): each class also counts one horizon it has not shown, its own worst
       (the worst of any class while it has shown no arrivals) with prompts one replica's worth heavier, so a
       quiet class seen k times after a burst still covers a burst with weight 1/(k+1). Before any horizon has
       passed: the arrivals so far, scaled to the forecast, through the fluid queue;
    3. queue drain: the backlog plus the forecast arrivals served within h;
    4. decode: the sequences in flight now plus the `attainment` quantile, over the history, of how far they
       rose above a reading at their peak within the horizon after it (the highest reading up to h later minus
       the reading: the peak, not the level where the horizon ends, is what the slots must hold before a
       replica asked for now can serve), and at least the forecast of the level over h (trend, time of day,
       or the last horizon's mean if higher); over the slots of a replica. Before any horizon has passed, the
       forecast's z(attainment) x square root (a Poisson count's spread) stands in for the quantile;
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
from statistics import NormalDist
from typing import Sequence

import numpy as np

from autoscaler.forecast import (ClassPlan, SeasonalProfile, Trend, cheapest_plan_of_sums, replicas_for_attainment,
                                 trend, window_misses)


def _quantile(values: np.ndarray, q: float) -> float:
    """np.quantile's default (linear) for one q, without its overhead."""
    v = np.sort(values)
    x = q * (len(v) - 1)
    i = int(x)
    return float(v[i] + (v[min(i + 1, len(v) - 1)] - v[i]) * (x - i))


def _z(attainment: float) -> float:
    """The standard normal quantile of `attainment` (2.33 at 0.99)."""
    return NormalDist().inv_cdf(attainment)


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
    prior: bool = True  # burst headroom also counts, once per class, a horizon one replica worse than any seen

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
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per bin, the last history_s
    requests: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rates: deque = field(default_factory=deque)  # (t, prompt tokens/s over the evaluation)
    inflight: deque = field(default_factory=deque)  # (t, decode sequences in flight)
    decode_open: deque = field(default_factory=deque)  # [t, in flight, highest since] of readings whose
    # horizon runs
    decode_rises: deque = field(default_factory=deque)  # (t, peak rise within the horizon after t)
    recs: deque = field(default_factory=deque)  # (t, prefill, decode) recommendations of the last load_s
    season: SeasonalProfile | None = None
    decode_season: SeasonalProfile | None = None
    last_t: float | None = None
    last_arrival_t: float = -math.inf
    nbins: int = 0  # bins observed since the start (absolute bin index of the next one)
    open_windows: deque = field(default_factory=deque)  # (t, first bin, class) of evaluations whose horizon runs
    windows: deque = field(default_factory=deque)  # (t, class, misses[n], requests, replicas it needs, tokens
    # and requests per bin) of the horizons that ended, the last history_s
    class_sums: dict = field(default_factory=dict)  # class -> [windows, misses[n] summed, requests summed]
    _prior_cache: dict = field(default_factory=dict)  # (t of the worst window, its need) -> the prior's misses[n]

    def __post_init__(self) -> None:
        self.season = SeasonalProfile(self.cfg.season_slot_s)
        self.decode_season = SeasonalProfile(self.cfg.season_slot_s)

    def observe(self, obs: Observation) -> Plan:
        cfg = self.cfg
        keep_bins = int(round(cfg.history_s / cfg.bin_s))
        toks, reqs = list(obs.prompt_tokens), list(obs.requests)
        if len(toks) != len(reqs):
            raise ValueError(f"observation at {obs.now}: {len(toks)} token bins but {len(reqs)} request bins")
        self.tokens = np.concatenate((self.tokens, np.asarray(toks, float)))[-keep_bins:]
        self.requests = np.concatenate((self.requests, np.asarray(reqs, float)))[-keep_bins:]
        self.nbins += len(toks)
        dt = obs.now - self.last_t if self.last_t is not None else len(toks) * cfg.bin_s
        self.last_t = obs.now
        if sum(reqs) > 0:
            self.last_arrival_t = obs.now
        if dt > 0:
            rate = sum(toks) / dt
            self.rates.append((obs.now, rate))
            self.inflight.append((obs.now, float(obs.decode_in_flight)))
            self._close_decode(obs.now, float(obs.decode_in_flight))
            self.season.add(obs.now, rate, dt)
            self.decode_season.add(obs.now, float(obs.decode_in_flight), dt)
        keep_s = max(cfg.history_s, cfg.trend_window_s)
        for q in (self.rates, self.inflight, self.decode_rises):
            while q and q[0][0] <= obs.now - keep_s:
                q.popleft()
        h = cfg.horizon_s

        # 1. prefill forecast over the horizon
        ts = np.array([t for t, _ in self.rates])
        vs = np.array([v for _, v in self.rates])
        tr = trend(ts, vs, obs.now, cfg.trend_window_s)
        ratio = self.season.ratio(obs.now, h)
        forecast = max(tr.peak(h), tr.level * ratio if ratio else 0.0)
        # 2. burst headroom: what the horizons of past evaluations of the same class brought (class = the
        # replicas the last horizon's arrival rate needs), and the cheapest per-class counts that would have
        # kept `attainment` of the history's requests within the SLO (forecast.cheapest_class_plan)
        tok, req = self.tokens, self.requests
        hb = max(1, int(round(h / cfg.bin_s)))
        recent = float(tok[-hb:].sum()) / (min(hb, len(tok)) * cfg.bin_s) if len(tok) else 0.0
        cls = math.ceil(recent / cfg.prefill_tokens_per_s - 1e-9)
        self._close_windows(tok, req, hb, obs.now)
        self.open_windows.append((obs.now, self.nbins, cls))
        burst, att, basis = self._burst(tok, req, forecast, cls)
        # 3. queue drain within the horizon
        # (at the higher of the forecast and the last interval's rate: what arrives now must be served too)
        present = self.rates[-1][1] if self.rates else 0.0
        drain = max(forecast, present)
        queue_n = math.ceil((obs.queue_tokens + drain * h) / (cfg.prefill_tokens_per_s * h)) if h > 0 else 0
        prefill = max(burst, queue_n if obs.queue_requests or drain > 0 else 0)
        # 4. decode: in flight now plus the attainment quantile of the peak rise within one horizon over the
        # history, at least its forecast (trend, time of day, or the last horizon's mean if higher)
        dts = np.array([t for t, _ in self.inflight])
        dvs = np.array([v for _, v in self.inflight])
        dtr = trend(dts, dvs, obs.now, cfg.trend_window_s)
        dratio = self.decode_season.ratio(obs.now, h)
        dforecast = max(dtr.peak(h), dtr.level * dratio if dratio else 0.0,
                        float(dvs[dts > obs.now - h].mean()) if len(dvs) else 0.0)
        rise = np.array([r for _, r in self.decode_rises])
        up = max(0.0, _quantile(rise, cfg.attainment)) if len(rise) else _z(cfg.attainment) * math.sqrt(dforecast)
        dneed = max(dforecast, float(obs.decode_in_flight) + up)
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
            prefill = max(prefill, min(held_p, obs.prefill_replicas))
            decode = max(decode, min(held_d, obs.decode_replicas))

        season = f", time-of-day x{ratio:.2f}" if ratio else ""
        reason = (f"prefill {prefill}: prompt {tr.level:.0f} tok/s now, forecast {forecast:.0f} over the next "
                  f"{h:.0f}s (trend {tr.slope * 60:+.0f} tok/s per min{season}); burst headroom {burst}: "
                  f"{basis}; queue {obs.queue_requests} ({obs.queue_tokens:.0f} tokens) drains in {h:.0f}s "
                  f"with {queue_n}. decode {decode}: in flight {obs.decode_in_flight} now + {up:.0f} "
                  f"(p{cfg.attainment * 100:g} peak rise within {h:.0f}s), forecast {dforecast:.0f}, over "
                  f"{cfg.decode_slots} slots"
                  + ("; " + "; ".join(notes) if notes else ""))
        return Plan(prefill, decode, reason, forecast, burst, queue_n, dneed)

    def _close_decode(self, now: float, inflight: float) -> None:
        """Keep, for every reading of sequences in flight, the highest reading after it up to the first one at or
        past one horizon later; once that one is in, its peak rise (that highest minus the reading) is final."""
        for rec in self.decode_open:
            rec[2] = max(rec[2], inflight)
        while self.decode_open and self.decode_open[0][0] + self.cfg.horizon_s <= now:
            t, v, top = self.decode_open.popleft()
            self.decode_rises.append((t, top - v))
        self.decode_open.append([now, inflight, -math.inf])

    def _close_windows(self, tok: np.ndarray, req: np.ndarray, hb: int, now: float) -> None:
        """The horizons of past evaluations that have ended: their arrivals' misses per replica count."""
        cfg = self.cfg
        offset = self.nbins - len(tok)  # absolute index of tok[0]
        while self.open_windows and self.open_windows[0][1] + hb <= self.nbins:
            t, first, c = self.open_windows.popleft()
            i = first - offset
            if i < 0:
                continue
            w_tok, w_req = tok[i:i + hb], req[i:i + hb]
            miss = window_misses(w_tok, w_req, cfg.prefill_tokens_per_s, cfg.ttft_slo_s, cfg.bin_s,
                                 max(1, cfg.max_prefill))
            need = int(np.argmax(miss <= 0)) if (miss <= 0).any() else len(miss)
            self.windows.append((t, c, miss, float(w_req.sum()), need, w_tok.copy(), w_req.copy()))
            agg = self.class_sums.setdefault(c, [0, np.zeros(len(miss)), 0.0])
            agg[0] += 1
            agg[1] = agg[1] + miss
            agg[2] += float(w_req.sum())
        while self.windows and self.windows[0][0] <= now - cfg.history_s:
            t, c, miss, r = self.windows.popleft()[:4]
            agg = self.class_sums[c]
            agg[0] -= 1
            if agg[0] == 0:
                del self.class_sums[c]
            else:
                agg[1] = agg[1] - miss
                agg[2] -= r

    def _prior(self) -> dict[int, tuple[np.ndarray, float]]:
        """Per class, the horizon not seen yet but thought possible: the worst one the class has shown (the most
        replicas needed, then the most requests; the worst of any class while it has shown no arrivals), its
        prompts one replica's worth heavier (x (n + 1) / n), as misses[n] and requests."""
        cfg = self.cfg
        worst: dict[int, tuple] = {}
        for w in self.windows:
            if w[3] > 0 and (w[1] not in worst or (w[4], w[3]) > (worst[w[1]][4], worst[w[1]][3])):
                worst[w[1]] = w
        if not worst:
            return {}
        overall = max(worst.values(), key=lambda w: (w[4], w[3]))
        out = {}
        for c in {w[1] for w in self.windows}:
            w = worst.get(c, overall)
            key = (w[0], w[4])
            if key not in self._prior_cache:
                need = max(1, w[4])
                self._prior_cache[key] = window_misses(w[5] * (need + 1) / need, w[6], cfg.prefill_tokens_per_s,
                                                       cfg.ttft_slo_s, cfg.bin_s, max(1, cfg.max_prefill))
            out[c] = (self._prior_cache[key], w[3])
        live = {(w[0], w[4]) for w in worst.values()}
        for key in [k for k in self._prior_cache if k not in live]:
            del self._prior_cache[key]
        return out

    def _burst(self, tok: np.ndarray, req: np.ndarray, forecast: float, cls: int) -> tuple[int, float, str]:
        """The burst headroom (replicas, the attainment it had over the history, and why)."""
        cfg = self.cfg
        hi = max(1, cfg.max_prefill)
        if self.windows and sum(a[2] for a in self.class_sums.values()) > 0:
            rows = self.windows
            cls_seen = sorted(self.class_sums)
            count = np.array([float(self.class_sums[c][0]) for c in cls_seen])
            sums = np.stack([self.class_sums[c][1] for c in cls_seen])
            total = sum(self.class_sums[c][2] for c in cls_seen)
            if cfg.prior:  # one more window per class (cheapest_class_plan's `prior`)
                prior = self._prior()
                count = count + np.array([1.0 if c in prior else 0.0 for c in cls_seen])
                sums = sums + np.stack([prior[c][0] if c in prior else np.zeros(sums.shape[1]) for c in cls_seen])
                total += sum(prior[c][1] for c in cls_seen if c in prior)
            plan: ClassPlan = cheapest_plan_of_sums(cls_seen, count, sums, total, cfg.attainment, 1, hi)
            seen = sorted(plan.replicas)
            below = [c for c in seen if c <= cls]
            near = below[-1] if below else seen[0]
            n = plan.replicas[near] + max(0, cls - near)  # a class above all seen: its own excess on top
            n_cls = sum(1 for w in rows if w[1] == near)
            return (min(hi, n), plan.attainment,
                    f"class {cls} (the last {cfg.horizon_s:.0f}s needed {cls}); {n_cls} of {len(rows)} past horizons "
                    f"of class {near} -> {plan.replicas[near]}, the cheapest per-class plan keeping "
                    f"{plan.attainment:.1%} of the last {len(rows) * cfg.interval_s / 60:.0f} min within TTFT "
                    f"{cfg.ttft_slo_s:g}s")
        # no horizon has ended yet: the arrivals so far, scaled to the forecast, through a fluid queue
        hist_mean = float(tok.sum()) / max(cfg.bin_s, len(tok) * cfg.bin_s)
        scale = forecast / hist_mean if hist_mean > 0 else 1.0
        if req.sum() > 0:
            n, att = replicas_for_attainment(tok * scale, req, cfg.prefill_tokens_per_s, cfg.ttft_slo_s,
                                             cfg.bin_s, cfg.attainment, 1, hi)
        else:
            n, att = 0, 1.0
        return n, att, (f"no horizon seen yet: the last {len(tok) * cfg.bin_s / 60:.0f} min of arrivals x{scale:.2f} "
                        f"keep {att:.1%} within TTFT {cfg.ttft_slo_s:g}s with {n}")
