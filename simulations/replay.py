"""Autoscaler trace replay: a request trace through an event-driven model of disaggregated prefill and decode
pools, each scaled by a policy. Pure (requests and config in, numbers out; time is simulated).

Model (exact between evaluations; replica counts change only when a policy is evaluated, and a replica asked
for serves `load_delay_s` later):
    prefill  a FIFO queue served by the ready replicas, one prompt per replica at a time (`prefill_tokens_per_s`);
             a prompt starts when it is first in line and a replica is free; TTFT = prefill end - arrival
    decode   a finished prefill takes a slot (max_batch per ready decode replica) or waits for one, in order; a
             sequence emits decode_tokens_per_s / (1 + itl_slowdown * occupancy) tokens/s, the occupancy taken
             when it starts; mean ITL = (slot wait + decode time) / output tokens
    scaling  each policy is evaluated every interval of its own; scale-down cancels loading replicas first,
             then removes the idlest ready ones (their prompt in progress finishes); GPU-hours count every
             replica from the moment it is asked for until it is removed
Between two evaluations the prefill queue is a heap of replica free times (O(log n) per request), so a day of
500,000 requests replays in seconds per policy.

Policies (see `compare`): `clique` is the look-ahead planner (autoscaler.planner); `clique-reactive` the
daemon's HPA-style rules on queue and KV metrics (autoscaler.algorithm.decide, what `--kwok` runs); the
baselines are HPA on GPU utilization, a KEDA-like queue threshold, a +-1-per-minute load rule, Dynamo's planner
in throughput mode, Knative's KPA with its panic window, fixed peak provisioning; and an oracle that knows the
future load (an unattainable reference).
"""

from __future__ import annotations

import bisect
import heapq
import math
import multiprocessing as mp
import os
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from autoscaler.algorithm import History, Reading, decide, record
from autoscaler.planner import Observation, Planner, PlannerConfig
from autoscaler.policy import parse_policy
from simulations.workloads import Request


@dataclass(frozen=True)
class ModelConfig:
    prefill_tokens_per_s: float = 16000.0  # per prefill replica (TP8 H100, 70B-class model)
    decode_tokens_per_s: float = 40.0  # per sequence at an empty batch (25 ms ITL)
    max_batch: int = 64  # sequences per decode replica
    itl_slowdown: float = 0.6  # ITL grows by this factor at a full batch
    load_delay_s: float = 60.0  # model load before a new replica serves
    prefill_pods: int = 1  # pods per prefill replica
    decode_pods: int = 2  # pods per decode replica (a TP16 gang)
    # the reactive policy's two knobs (clique-reactive)
    prefill_target: float = 0.25  # prompt tokens/s arriving per prefill replica, as a share of its capacity
    scale_down_window_s: int = 600  # scale-down stabilization
    # the planner's SLO objective: the share of requests it plans to keep within the TTFT SLO
    attainment: float = 0.99
    scale_to_zero: bool = False  # the planner may take both pools to zero (minReplicas 0)
    gpus_per_pod: int = 8
    interval_s: float = 15.0  # evaluation interval (ours, HPA)
    ttft_slo_s: float = 2.0
    itl_slo_ms: float = 50.0
    min_replicas: int = 1
    max_replicas: int = 16
    step_s: float = 0.25  # the oracle's planning resolution is window_s; kept for the CLI and the KWOK loop
    bin_s: float = 1.0  # resolution of the arrival counters the planner and KPA read

    @property
    def slots_at_itl_slo(self) -> int:
        """Sequences one decode replica holds with ITL within the SLO (the profiled decode capacity)."""
        base_ms = 1000 / self.decode_tokens_per_s
        if base_ms > self.itl_slo_ms:
            return 1
        occ = (self.itl_slo_ms / base_ms - 1) / self.itl_slowdown if self.itl_slowdown > 0 else 1.0
        return max(1, min(self.max_batch, int(occ * self.max_batch)))


@dataclass
class Signals:
    """What a policy sees at an evaluation (as metrics would report it)."""

    now: float
    prefill_queue_tokens: float
    prefill_queue_requests: int
    prefill_busy: float  # share of prefill capacity used over the last interval (GPU utilization)
    prefill_arrival_tps: float  # prompt tokens/s arrived over the last interval
    decode_occupancy: float  # used slots / slots (KV-cache usage)
    decode_waiting: int  # sequences waiting for a slot
    prefill: int  # replicas asked for, loading ones included
    decode: int
    prefill_ready: int = 0
    decode_ready: int = 0
    decode_running: int = 0
    arrived_requests: int = 0  # over the last interval
    arrived_output_tokens: float = 0.0
    ttft_sum: float = 0.0  # prefills finished over the last interval (Dynamo's TTFT metric)
    ttft_count: int = 0
    bin_tokens: np.ndarray | None = None  # prompt tokens per bin_s since the last evaluation (counter increments)
    bin_requests: np.ndarray | None = None


@dataclass
class ReplayResult:
    policy: str
    ttft: list[float] = field(default_factory=list)
    itl_ms: list[float] = field(default_factory=list)
    gpu_hours: float = 0.0
    scale_events: int = 0
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (t, prefill, decode)
    cfg: ModelConfig | None = None
    feasible: np.ndarray | None = None  # per request: one replica can prefill it within the SLO
    cold_starts: int = 0  # a pool asked for from zero replicas
    cold_waits: int = 0  # requests that arrived while no prefill replica was ready
    reasons: list[str] = field(default_factory=list)  # the planner's last reasons (a few, for the report)

    def summary(self) -> dict:
        cfg = self.cfg or ModelConfig()
        n = max(1, len(self.ttft))
        ttft = np.asarray(self.ttft, float)
        ok = ttft <= cfg.ttft_slo_s
        feas = self.feasible if self.feasible is not None and len(self.feasible) == len(ttft) else np.ones(len(ttft), bool)
        out = {"policy": self.policy, "requests": len(self.ttft),
               "ttft_slo_attainment": round(float(ok.sum()) / n, 4),
               "ttft_slo_attainment_feasible": round(float(ok[feas].sum()) / max(1, int(feas.sum())), 4),
               "infeasible_share": round(1 - float(feas.sum()) / n, 4),
               "itl_slo_attainment": round(float((np.asarray(self.itl_ms) <= cfg.itl_slo_ms).sum()) / max(1, len(self.itl_ms)), 4),
               "p99_ttft_s": round(float(np.sort(ttft)[int(0.99 * (n - 1))]), 3) if len(ttft) else None,
               "gpu_hours": round(self.gpu_hours, 2), "scale_events": self.scale_events}
        if self.cold_starts or cfg.scale_to_zero:
            out.update({"cold_starts": self.cold_starts, "cold_start_waits": self.cold_waits})
        return out


Policy = Callable[[Signals], tuple[int, int]]  # -> desired (prefill, decode) replicas


# ----------------------------------------------------------------------------------------------- the engine

class _Pool:
    """Replicas of one pool: ready-at times, and for prefill a heap of (free at, ready at) per replica."""

    def __init__(self, n: int, now: float, heap: bool) -> None:
        self.use_heap = heap
        self.servers: list[tuple[float, float]] = [(now, now)] * n  # (free at, ready at)
        self.ready_at: list[float] = [now] * n  # sorted

    @property
    def total(self) -> int:
        return len(self.ready_at)

    def ready(self, t: float) -> int:
        return bisect.bisect_right(self.ready_at, t)

    def set(self, n: int, now: float, delay: float) -> None:
        cur = self.total
        if n > cur:
            for _ in range(n - cur):
                bisect.insort(self.ready_at, now + delay)
                if self.use_heap:
                    heapq.heappush(self.servers, (now + delay, now + delay))
            return
        drop = cur - n
        if not drop:
            return
        if self.use_heap:
            # loading ones first (the latest first), then the idlest ready ones
            order = sorted(self.servers, key=lambda s: (s[1] <= now, -s[1] if s[1] > now else s[0]))
            self.servers = order[drop:]
            heapq.heapify(self.servers)
            self.ready_at = sorted(s[1] for s in self.servers)
        else:
            loading = [t for t in self.ready_at if t > now]
            ready = [t for t in self.ready_at if t <= now]
            k = min(drop, len(loading))
            loading = loading[:len(loading) - k]
            ready = ready[:len(ready) - (drop - k)]
            self.ready_at = sorted(ready + loading)


def _bins(times: np.ndarray, weights: np.ndarray | None, bin_s: float, end: float) -> np.ndarray:
    n = int(math.ceil(end / bin_s)) + 2
    return np.bincount((times // bin_s).astype(np.int64), weights=weights, minlength=n)


def replay(requests: Sequence[Request], cfg: ModelConfig, name: str, policy: Policy,
           progress: Callable[[int, int], None] | None = None, oracle_mode: bool = False) -> ReplayResult:
    """One policy through the trace, evaluated every cfg.interval_s. `oracle_mode`: the fleet the policy asks
    for at 0 is there, ready, from the start (the oracle loads ahead of the trace)."""
    res = ReplayResult(name, cfg=cfg)
    n = len(requests)
    T = np.fromiter((r.time for r in requests), float, n)
    P = np.fromiter((r.prompt for r in requests), float, n)
    O = np.fromiter((r.output for r in requests), float, n)
    res.feasible = P <= cfg.prefill_tokens_per_s * cfg.ttft_slo_s
    cumP = np.concatenate(([0.0], np.cumsum(P)))
    cumO = np.concatenate(([0.0], np.cumsum(O)))
    Tl, Pl, Ol = T.tolist(), P.tolist(), O.tolist()
    end = (Tl[-1] if n else 0.0) + 600
    feasP = np.where(res.feasible, P, 0.0)
    btok = _bins(T, feasP, cfg.bin_s, end)
    breq = _bins(T, res.feasible.astype(float), cfg.bin_s, end)
    ttft = [0.0] * n
    itl = [0.0] * n
    zero = Signals(0, 0, 0, 0, 0, 0, 0, cfg.min_replicas, cfg.min_replicas)
    start = policy(zero) if oracle_mode else (cfg.min_replicas, cfg.min_replicas)
    pre, dec = _Pool(start[0], 0.0, heap=True), _Pool(start[1], 0.0, heap=False)
    cap, dtps, slow, mb = cfg.prefill_tokens_per_s, cfg.decode_tokens_per_s, cfg.itl_slowdown, cfg.max_batch
    head = 0  # requests before head have started prefill
    pending: list[tuple[float, int]] = []  # (prefill end, request) not yet in the decode line
    waiting: deque[int] = deque()  # finished prefill, waiting for a slot (in prefill-end order)
    wait_t: deque[float] = deque()
    active: list[float] = []  # decode end times
    last_admit = 0.0
    prefill_end = [0.0] * n
    t, interval, last_bin = 0.0, cfg.interval_s, 0
    busy_tokens, ttft_sum, ttft_cnt = 0.0, 0.0, 0
    res.timeline.append((0.0, pre.total, dec.total))
    while True:
        b = t + interval
        # prefill: FIFO over the replicas' free times, prompts arriving before b
        servers = pre.servers
        while head < n and Tl[head] < b and servers:
            free, ready_at = servers[0]
            s = Tl[head] if Tl[head] > free else free
            if s >= b:
                break
            fin = s + Pl[head] / cap
            heapq.heapreplace(servers, (fin, ready_at))
            ttft[head] = fin - Tl[head]
            prefill_end[head] = fin
            heapq.heappush(pending, (fin, head))
            busy_tokens += Pl[head]
            head += 1
        # decode: admit in prefill-end order, as slots free up or replicas become ready
        while pending and pending[0][0] < b:
            fin, r = heapq.heappop(pending)
            waiting.append(r)
            wait_t.append(fin)
            ttft_sum += fin - Tl[r]
            ttft_cnt += 1
        while waiting:
            r = waiting[0]
            at = wait_t[0] if wait_t[0] > last_admit else last_admit
            while True:
                while active and active[0] <= at:
                    heapq.heappop(active)
                slots = dec.ready(at) * mb
                if len(active) < slots:
                    break
                nxt = active[0] if active else math.inf
                k = bisect.bisect_right(dec.ready_at, at)
                if k < len(dec.ready_at) and dec.ready_at[k] < nxt:
                    nxt = dec.ready_at[k]
                at = nxt
                if at >= b:
                    break
            if at >= b:
                break
            occ = len(active) / slots
            dur = Ol[r] * (1 + slow * occ) / dtps
            heapq.heappush(active, at + dur)
            itl[r] = 1000 * (at - wait_t[0] + dur) / Ol[r]
            last_admit = at
            waiting.popleft()
            wait_t.popleft()
        res.gpu_hours += (pre.total * cfg.prefill_pods + dec.total * cfg.decode_pods) * cfg.gpus_per_pod * interval / 3600
        t = b
        while active and active[0] <= t:
            heapq.heappop(active)
        if (head >= n and not pending and not waiting and not active) or t >= end:
            break
        if progress:
            progress(head, n)
        # signals at t
        arrived = bisect.bisect_left(Tl, t)
        since = bisect.bisect_left(Tl, t - interval)
        p_ready = pre.ready(t)
        in_prog = [(f - t) * cap for f, ra in servers if f > t and ra <= t]
        q_tokens = float(cumP[arrived] - cumP[head]) + sum(in_prog)
        q_reqs = arrived - head + len(in_prog)
        d_slots = dec.ready(t) * mb
        nb = min(int(t // cfg.bin_s), len(btok))
        sig = Signals(t, q_tokens, q_reqs,
                      min(1.0, busy_tokens / (p_ready * cap * interval)) if p_ready else 1.0,
                      float(cumP[arrived] - cumP[since]) / interval, len(active) / max(1, d_slots),
                      len(waiting) + sum(1 for f, _ in pending if f <= t), pre.total, dec.total,
                      p_ready, dec.ready(t), len(active), arrived - since, float(cumO[arrived] - cumO[since]),
                      ttft_sum, ttft_cnt, btok[last_bin:nb], breq[last_bin:nb])
        last_bin = nb
        if p_ready == 0 and arrived > since:
            res.cold_waits += arrived - since
        busy_tokens, ttft_sum, ttft_cnt = 0.0, 0.0, 0
        want_p, want_d = policy(sig)
        for pool, want in ((pre, want_p), (dec, want_d)):
            if want != pool.total:
                res.scale_events += 1
                if pool.total == 0:
                    res.cold_starts += 1
                pool.set(want, t, cfg.load_delay_s)
        res.timeline.append((t, pre.total, dec.total))
    if progress:
        progress(n, n)
    done = head
    res.ttft = ttft[:done]
    res.itl_ms = [itl[i] for i in range(done) if itl[i] > 0]
    res.feasible = res.feasible[:done]
    reasons = getattr(policy, "reasons", None)
    if reasons:
        res.reasons = list(reasons)[-3:]
    return res


# --------------------------------------------------------------------------------------------- our policies

# The metrics our reactive policy reads, as a serving stack would export them (the KWOK replay serves them).
QUEUED_TOKENS = "clique_sim_prefill_queued_prompt_tokens"
ARRIVAL_TPS = "clique_sim_prefill_arrival_prompt_tokens_per_second"
KV_USAGE = "clique_sim_decode_kv_usage_percent"


def clique_policy_docs(cfg: ModelConfig, endpoint: str | None = None, speedup: float = 1.0) -> dict[str, dict]:
    """The daemon's reactive policies for the two pools, as the ConfigMaps hold them. Prefill scales on queued
    prompt work and on the arrival rate (cfg.prefill_target of capacity per replica); decode on KV occupancy
    (70%). Scale-up is immediate, scale-down waits cfg.scale_down_window_s. `endpoint`: read the metrics by
    Scrape from there; `speedup`: divide every time (interval, windows, rate-limit periods) for a
    time-compressed run."""
    secs = lambda s: max(1, round(s / speedup))  # noqa: E731 - the schema's periods are whole seconds
    src = {"source": "Scrape", "endpoints": [endpoint]} if endpoint else {}

    def doc(name: str, pods: int, metrics: list[dict], preferred: str | None) -> dict:
        return {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name},
                "minReplicas": cfg.min_replicas, "maxReplicas": cfg.max_replicas,
                "evaluationIntervalSeconds": cfg.interval_s / speedup, "metrics": metrics,
                "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                         "policies": [{"type": "Pods", "value": 4, "periodSeconds": secs(15)},
                                                      {"type": "Percent", "value": 100, "periodSeconds": secs(15)}]},
                             "scaleDown": {"stabilizationWindowSeconds": round(cfg.scale_down_window_s / speedup),
                                           "policies": [{"type": "Percent", "value": 100, "periodSeconds": secs(15)}]}},
                "podsPerReplica": pods, "scaleUnit": "Pods",
                "gang": {"gpusPerPod": cfg.gpus_per_pod, **({"topologyPreferred": preferred} if preferred else {})}}

    backlog_target = cfg.prefill_tokens_per_s * cfg.ttft_slo_s * 0.5  # queued tokens per replica
    return {
        "prefill": doc("prefill", cfg.prefill_pods, [
            {"type": "QueueDepth", "queueDepth": {"metric": QUEUED_TOKENS, **src},
             "target": {"type": "AverageValue", "averageValue": backlog_target}},
            {"type": "QueueDepth", "queueDepth": {"metric": ARRIVAL_TPS, **src},
             "target": {"type": "AverageValue", "averageValue": cfg.prefill_target * cfg.prefill_tokens_per_s}}], None),
        "decode": doc("decode", cfg.decode_pods, [
            {"type": "KVCacheUsage", "kvCacheUsage": {"metric": KV_USAGE, "scale": 1, **src},
             "target": {"type": "Value", "value": 70}}], "leaf"),
    }


def signal_values(s: Signals, cfg: ModelConfig) -> dict[str, float]:
    """The exported metrics at one evaluation: queued prompt tokens, prompt tokens/s arriving, and KV usage in
    percent (sequences waiting for a slot count as over 100%)."""
    return {QUEUED_TOKENS: s.prefill_queue_tokens, ARRIVAL_TPS: s.prefill_arrival_tps,
            KV_USAGE: 100 * s.decode_occupancy + 100 * s.decode_waiting / max(1, s.decode * cfg.max_batch)}


def clique_reactive(cfg: ModelConfig) -> Policy:
    """The daemon's reactive rules: the real decision code (autoscaler.algorithm.decide) on the policies of
    clique_policy_docs. This is what `clique replay --kwok` runs through the real daemon today."""
    docs = clique_policy_docs(cfg)
    pre, dec = (parse_policy("replay", name, docs[name]) for name in ("prefill", "decode"))
    hist = {"p": History(), "d": History()}

    def run(s: Signals) -> tuple[int, int]:
        v = signal_values(s, cfg)
        dp = decide(pre, s.prefill, [Reading(m, value=v[m.metric]) for m in pre.metrics], hist["p"], s.now)  # type: ignore[attr-defined]
        dd = decide(dec, s.decode, [Reading(m, value=v[m.metric]) for m in dec.metrics], hist["d"], s.now)  # type: ignore[attr-defined]
        record(hist["p"], dp, s.now, applied=True)
        record(hist["d"], dd, s.now, applied=True)
        return dp.desired, dd.desired
    return run


clique_policy = clique_reactive  # the name kwok_replay and older callers use


def planner_config(cfg: ModelConfig, attainment: float | None = None) -> PlannerConfig:
    """The planner's policy for the replayed deployment: capacities as a profile would measure them (prefill
    tokens/s per replica; decode slots within the ITL SLO), the load time, the SLO and its objective."""
    lo = 0 if cfg.scale_to_zero else cfg.min_replicas
    return PlannerConfig(prefill_tokens_per_s=cfg.prefill_tokens_per_s, decode_slots=cfg.slots_at_itl_slo,
                         load_s=cfg.load_delay_s, ttft_slo_s=cfg.ttft_slo_s, interval_s=cfg.interval_s,
                         attainment=cfg.attainment if attainment is None else attainment, bin_s=cfg.bin_s,
                         min_prefill=lo, max_prefill=cfg.max_replicas, min_decode=lo, max_decode=cfg.max_replicas,
                         scale_to_zero=cfg.scale_to_zero)


def clique_planner(cfg: ModelConfig, attainment: float | None = None) -> Policy:
    """Ours: the look-ahead planner (autoscaler.planner) on the metrics a daemon scrapes."""
    planner = Planner(planner_config(cfg, attainment))
    reasons: deque[str] = deque(maxlen=3)

    def run(s: Signals) -> tuple[int, int]:
        toks = s.bin_tokens if s.bin_tokens is not None else np.zeros(0)
        reqs = s.bin_requests if s.bin_requests is not None else np.zeros(0)
        plan = planner.observe(Observation(s.now, toks, reqs, s.prefill_queue_requests, s.prefill_queue_tokens,
                                           s.decode_running + s.decode_waiting, s.prefill, s.decode))
        if (plan.prefill, plan.decode) != (s.prefill, s.decode):
            reasons.append(f"t={s.now:.0f}s {s.prefill}/{s.decode} -> {plan.prefill}/{plan.decode}: {plan.reason}")
        return plan.prefill, plan.decode
    run.reasons = reasons  # type: ignore[attr-defined]
    return run


# ----------------------------------------------------------------------------------------------- baselines

def _clamp(cfg: ModelConfig, n: int) -> int:
    return max(cfg.min_replicas, min(cfg.max_replicas, n))


def hpa_gpu_util(cfg: ModelConfig, target: float = 80) -> Policy:
    """HPA on GPU utilization, target 80%, HPA's default behavior (300 s scale-down window)."""
    def policy_of(name: str) -> object:
        return parse_policy("replay", name, {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": cfg.min_replicas, "maxReplicas": cfg.max_replicas,
            "metrics": [{"type": "Prometheus", "prometheus": {"query": "DCGM_FI_DEV_GPU_UTIL"},
                         "target": {"type": "Value", "value": target}}]})
    pre, dec = policy_of("prefill"), policy_of("decode")
    hist = {"p": History(), "d": History()}

    def run(s: Signals) -> tuple[int, int]:
        # a decode GPU is "busy" whenever it holds any sequence: utilization saturates early
        dbusy = 100 * min(1.0, s.decode_occupancy * 8)
        dp = decide(pre, s.prefill, [Reading(pre.metrics[0], value=100 * s.prefill_busy)], hist["p"], s.now)  # type: ignore[attr-defined]
        dd = decide(dec, s.decode, [Reading(dec.metrics[0], value=dbusy)], hist["d"], s.now)  # type: ignore[attr-defined]
        record(hist["p"], dp, s.now, applied=True)
        record(hist["d"], dd, s.now, applied=True)
        return dp.desired, dd.desired
    return run


def keda_queue(cfg: ModelConfig, threshold: int = 10, cooldown_s: float = 300) -> Policy:
    """KEDA-like: desired = ceil(queue length / threshold), scale-up at once, scale-down after the cooldown
    (KEDA's defaults: pollingInterval 30 s, cooldownPeriod 300 s; evaluated every 30 s in `compare`)."""
    state = {"last_active": -1e9}

    def run(s: Signals) -> tuple[int, int]:
        want_p = _clamp(cfg, math.ceil(s.prefill_queue_requests / threshold))
        # decode has no request queue of its own: sequences waiting for a slot play that part
        want_d = _clamp(cfg, s.decode + math.ceil(s.decode_waiting / threshold))
        if want_p >= s.prefill or s.prefill_queue_requests:
            state["last_active"] = s.now
        p = want_p if want_p > s.prefill or s.now - state["last_active"] > cooldown_s else s.prefill
        return p, want_d
    return run


def load_step_pm1(cfg: ModelConfig, adjust_s: float = 60) -> Policy:
    """A +-1 load rule (what this replay called `dynamo-planner` before): every adjustment interval, +1 when
    load is above 80% of capacity (or a queue waits), -1 when below 40%, per pool."""
    state = {"next": 0.0}

    def run(s: Signals) -> tuple[int, int]:
        if s.now < state["next"]:
            return s.prefill, s.decode
        state["next"] = s.now + adjust_s
        load = s.prefill_arrival_tps / max(1e-9, s.prefill * cfg.prefill_tokens_per_s)
        p = s.prefill + (1 if load > 0.8 or s.prefill_queue_requests > 2 * s.prefill else -1 if load < 0.4 else 0)
        d = s.decode + (1 if s.decode_occupancy > 0.8 or s.decode_waiting else -1 if s.decode_occupancy < 0.4 else 0)
        return _clamp(cfg, p), _clamp(cfg, d)
    return run


# Dynamo's planner, throughput-based (SLA) mode, as ai-dynamo/dynamo describes and implements it:
#   docs: docs.nvidia.com/dynamo/v-0-9-1/design-docs/planner-design (steps: metrics every adjustment_interval,
#     correction factors, load prediction, replicas from profiled throughput);
#   code: components/src/dynamo/planner/utils/prefill_planner.py and decode_planner.py
#     (_compute_replica_requirements; commits 002a7c3 and 0ff5001), planner_core.py (observe_traffic_stats:
#     num_req, isl, osl, ttft averaged over the interval), defaults.py (adjustment_interval = 180 s,
#     min_endpoint = 1; load_predictor "arima" by default, "constant" among the choices).
# Modelled: the `constant` predictor (next interval = this interval); ARIMA (pmdarima) is not reproduced.
DYNAMO_VERSION = "ai-dynamo/dynamo v0.9.x planner, throughput mode, constant predictor"


def dynamo_throughput(cfg: ModelConfig, adjust_s: float = 180.0, derate: float = 1.0) -> Policy:
    """Every adjustment interval: predict the next interval's request count, ISL and OSL (constant predictor);
    prefill = ceil(num_req x ISL / interval x min(1, p_correction) / profiled prefill throughput per replica),
    p_correction = observed TTFT / the TTFT the profile expects at that ISL; decode = ceil(num_req x OSL /
    interval / profiled decode throughput per replica at the ITL SLO). `derate` scales the profiled
    throughputs (a user's headroom knob; 1 = as profiled)."""
    state = {"next": 0.0, "p": cfg.min_replicas, "d": cfg.min_replicas, "n": 0, "isl": 0.0, "osl": 0.0,
             "tt_sum": 0.0, "tt_n": 0, "t0": 0.0}
    p_cap = cfg.prefill_tokens_per_s * derate
    d_cap = cfg.slots_at_itl_slo * cfg.decode_tokens_per_s / (1 + cfg.itl_slowdown * cfg.slots_at_itl_slo / cfg.max_batch) * derate

    def run(s: Signals) -> tuple[int, int]:
        state["n"] += s.arrived_requests
        state["isl"] += s.prefill_arrival_tps * (s.now - state.get("last", 0.0))
        state["osl"] += s.arrived_output_tokens
        state["tt_sum"] += s.ttft_sum
        state["tt_n"] += s.ttft_count
        state["last"] = s.now
        if s.now < state["next"]:
            return state["p"], state["d"]
        state["next"] = s.now + adjust_s
        n = state["n"]
        if n and state["tt_n"]:  # metrics valid (Dynamo skips an interval with no traffic)
            isl, osl = state["isl"] / n, state["osl"] / n
            corr = (state["tt_sum"] / state["tt_n"]) / (isl / cfg.prefill_tokens_per_s)
            pred_tp = n * isl / adjust_s * min(1.0, corr)
            state["p"] = _clamp(cfg, max(1, math.ceil(pred_tp / p_cap)))
            state["d"] = _clamp(cfg, max(1, math.ceil(n * osl / adjust_s / d_cap)))
        state.update(n=0, isl=0.0, osl=0.0, tt_sum=0.0, tt_n=0)
        return state["p"], state["d"]
    return run


# Knative's KPA (knative/serving pkg/autoscaler/scaling/autoscaler.go, Scale(); defaults from
# pkg/autoscaler/config/config.go, commit 01e2d38: StableWindow 60 s, PanicWindowPercentage 10 (a 6 s panic
# window), PanicThresholdPercentage 200, TargetUtilization 0.7, MaxScaleUpRate 1000, MaxScaleDownRate 2,
# ScaleToZeroGracePeriod 30 s; the autoscaler ticks every 2 s). The metric, as AIBrix's KPA does for LLMs:
# prompt tokens/s for prefill (target 70% of a replica's capacity), sequences in flight for decode (70% of
# the slots within the ITL SLO).
def kpa_panic(cfg: ModelConfig, utilization: float = 0.7, stable_s: float = 60.0, panic_pct: float = 10.0,
              panic_threshold: float = 2.0, max_up: float = 1000.0, max_down: float = 2.0) -> Policy:
    panic_s = stable_s * panic_pct / 100
    bins: deque[float] = deque(maxlen=int(round(stable_s / cfg.bin_s)))
    dec_samples: deque[tuple[float, float]] = deque()
    st = {"p_panic": None, "p_max": 0, "d_panic": None, "d_max": 0}

    def decide_one(stable: float, panic: float, target: float, ready: int, key: str, now: float) -> int:
        ready_f = max(1.0, float(ready))
        up, down = math.ceil(max_up * ready_f), math.floor(ready_f / max_down)
        dspc, dppc = math.ceil(stable / target), math.ceil(panic / target)
        want_s = int(min(max(dspc, down), up))
        want_p = int(min(max(dppc, down), up))
        over = dppc / ready_f >= panic_threshold
        if over:
            st[key + "_panic"] = now
        elif st[key + "_panic"] is not None and st[key + "_panic"] + stable_s < now:
            st[key + "_panic"], st[key + "_max"] = None, 0
        want = want_s
        if st[key + "_panic"] is not None:
            want = max(want, want_p)
            st[key + "_max"] = max(st[key + "_max"], want)
            want = st[key + "_max"]
        return _clamp(cfg, want)

    def run(s: Signals) -> tuple[int, int]:
        if s.bin_tokens is not None:
            bins.extend(s.bin_tokens.tolist())
        k = max(1, int(round(panic_s / cfg.bin_s)))
        recent = list(bins)
        stable = sum(recent) / max(1, len(recent)) / cfg.bin_s
        panic = sum(recent[-k:]) / max(1, min(k, len(recent))) / cfg.bin_s
        p = decide_one(stable, panic, utilization * cfg.prefill_tokens_per_s, s.prefill_ready or s.prefill, "p", s.now)
        dec_samples.append((s.now, float(s.decode_running + s.decode_waiting)))
        while dec_samples and dec_samples[0][0] <= s.now - stable_s:
            dec_samples.popleft()
        vals = [v for _, v in dec_samples]
        pvals = [v for t, v in dec_samples if t > s.now - panic_s] or vals[-1:]
        d = decide_one(sum(vals) / len(vals), sum(pvals) / len(pvals), utilization * cfg.slots_at_itl_slo,
                       s.decode_ready or s.decode, "d", s.now)
        return p, d
    return run


def fixed_peak(requests: Sequence[Request], cfg: ModelConfig, util: float = 0.8, bucket_s: float = 5.0,
               window_s: float = 60.0) -> Policy:
    """Provisioned for the trace's peak, all the time: prefill for its busiest `bucket_s` of prompt tokens at
    `util`, decode for its busiest `window_s` of sequences in flight at `util`."""
    if not requests:
        return lambda s: (cfg.min_replicas, cfg.min_replicas)
    T = np.fromiter((r.time for r in requests), float, len(requests))
    P = np.fromiter((r.prompt for r in requests), float, len(requests))
    O = np.fromiter((r.output for r in requests), float, len(requests))
    peak_tps = np.bincount((T // bucket_s).astype(np.int64), weights=P).max() / bucket_s
    half = np.bincount((T // (window_s / 2)).astype(np.int64), weights=O / cfg.decode_tokens_per_s)
    seq = (half[:-1] + half[1:]).max() / window_s if len(half) > 1 else half.sum() / window_s
    p = _clamp(cfg, math.ceil(peak_tps / (cfg.prefill_tokens_per_s * util)))
    d = _clamp(cfg, math.ceil(seq / (cfg.max_batch * util)))
    return lambda s: (p, d)


def fixed_fleet(cfg: ModelConfig, prefill: int, decode: int) -> Policy:
    return lambda s: (prefill, decode)


# -------------------------------------------------------------------------------------------------- oracle

def _slots(need: list[int], window_s: float, load_s: float, floor: int, step_s: float = 0.0) -> list[tuple[float, float]]:
    """The cheapest replica lifetimes that have `need[w]` replicas serving through window w: replica k serves
    every window whose need is >= k, starts a model load earlier, and bridges gaps shorter than a load (keeping
    it costs less than loading it again). Returns (start, end) per lifetime, loading time included."""
    out = []
    for k in range(1, max(need + [floor]) + 1):
        runs, start = [], None
        for w, n in enumerate(need + [0]):
            on = w < len(need) and (n >= k or k <= floor)
            if on and start is None:
                start = w
            elif not on and start is not None:
                runs.append([start * window_s, w * window_s])
                start = None
        merged: list[list[float]] = []
        for a, b in runs:
            if merged and a - merged[-1][1] < load_s:
                merged[-1][1] = b
            else:
                merged.append([a, b])
        out += [(a - (0 if k <= floor and a == 0 else load_s + step_s), b) for a, b in merged]
    return out


def _resize(servers: list[float], n: int, now: float) -> list[float]:
    """The oracle's prefill replicas (free times) at a window start: new ones free now, removed ones the idlest."""
    s = sorted(servers)
    if n >= len(s):
        return s + [now] * (n - len(s))
    return s[len(s) - n:]


def _assign(servers: list[float], T: list[float], P: list[float], i: int, j: int, cap: float, slo: float,
            until: float | None) -> tuple[int, bool]:
    """FIFO prompts i..j-1 onto the heap `servers` (in place): with `until`, only those starting before it
    (returns where it stopped); without, all of them, checking each finishes within the SLO."""
    k = i
    while k < j:
        s = max(T[k], servers[0])
        if until is not None and s >= until:
            break
        fin = s + P[k] / cap
        if until is None and fin - T[k] > slo + 1e-9:
            return k, False
        heapq.heapreplace(servers, fin)
        k += 1
    return k, True


def oracle_plan(requests: Sequence[Request], cfg: ModelConfig, window_s: float = 5.0) -> tuple[list, list]:
    """A clairvoyant plan that serves every prompt within the TTFT SLO (those no single replica can prefill in
    time excepted) at the fewest GPU-hours a plan of `window_s` steps can: per window, the fewest prefill
    replicas that keep every prompt queued or arriving in it within the SLO (the replay's own FIFO model, the
    queue carried over from the window before), decode replicas for the most sequences in flight at a full
    batch; then replica lifetimes that start a model load ahead and bridge short gaps (`_slots`). The load is
    rounded up to whole windows. Returns (prefill lifetimes, decode lifetimes)."""
    end = (requests[-1].time if requests else 0) + window_s
    windows = int(math.ceil(end / window_s))
    too_big = cfg.prefill_tokens_per_s * cfg.ttft_slo_s
    servable = [r for r in requests if r.prompt <= too_big]
    T = [r.time for r in servable]
    P = [float(r.prompt) for r in servable]
    cap, slo = cfg.prefill_tokens_per_s, cfg.ttft_slo_s
    need_p: list[int] = []
    servers = [0.0] * cfg.min_replicas
    head, j, n = 0, 0, cfg.min_replicas
    for w in range(windows):
        t0, t1 = w * window_s, (w + 1) * window_s
        while j < len(T) and T[j] < t1:
            j += 1
        if head == j:  # nothing queued or arriving: the floor
            n = max(cfg.min_replicas, 0)
        else:
            def ok(m: int) -> bool:
                if m <= 0:
                    return False
                trial = _resize(servers, m, t0)
                heapq.heapify(trial)
                return _assign(trial, T, P, head, j, cap, slo, None)[1]
            m = max(1, n)
            if ok(m):
                while m - 1 >= max(1, cfg.min_replicas) and ok(m - 1):
                    m -= 1
            else:
                while m < cfg.max_replicas and not ok(m):
                    m += 1
            n = max(m, cfg.min_replicas)
        servers = _resize(servers, n, t0)
        heapq.heapify(servers)
        head, _ = _assign(servers, T, P, head, j, cap, slo, t1) if servers else (head, True)
        need_p.append(n)
    # decode: sequences in flight, each lasting its output at the slowest (full batch) rate
    slow = cfg.decode_tokens_per_s / (1 + cfg.itl_slowdown)
    Ta = np.fromiter((r.time for r in requests), float, len(requests))
    Oa = np.fromiter((r.output for r in requests), float, len(requests))
    a = (Ta // window_s).astype(np.int64)
    e = a + np.ceil(Oa / slow / window_s).astype(np.int64)
    size = max(windows, int(e.max(initial=0)) + 1) + 1
    live = np.cumsum(np.bincount(a, minlength=size) - np.bincount(e, minlength=size))[:windows]
    need_d = np.clip(np.ceil(live / cfg.max_batch), cfg.min_replicas, cfg.max_replicas).astype(int).tolist()
    load = math.ceil(cfg.load_delay_s / window_s) * window_s
    return (_slots(need_p, window_s, load, cfg.min_replicas), _slots(need_d, window_s, load, cfg.min_replicas))


def _count_at(lifetimes: list[tuple[float, float]]) -> Callable[[float], int]:
    starts = sorted(a for a, _ in lifetimes)
    ends = sorted(b for _, b in lifetimes)
    return lambda t: bisect.bisect_right(starts, t + 1e-9) - bisect.bisect_right(ends, t + 1e-9)


def oracle(requests: Sequence[Request], cfg: ModelConfig, window_s: float = 5.0) -> Policy:
    """Knows the future: holds the replicas of `oracle_plan` (loading ones included) at every moment; evaluate
    it every `window_s` (ORACLE_INTERVAL_S)."""
    pre, dec = oracle_plan(requests, cfg, window_s)
    cp, cd = _count_at(pre), _count_at(dec)
    return lambda s: (cp(s.now) or cfg.min_replicas, cd(s.now) or cfg.min_replicas)


ORACLE_INTERVAL_S = 5.0


# ------------------------------------------------------------------------------------------------- compare

def policies(requests: Sequence[Request], cfg: ModelConfig) -> list[tuple[str, Policy, float, bool]]:
    """Every policy of the comparison: (name, policy, evaluation interval, oracle mode)."""
    return [("clique", clique_planner(cfg), cfg.interval_s, False),
            ("clique-reactive", clique_reactive(cfg), cfg.interval_s, False),
            ("hpa-gpu-util", hpa_gpu_util(cfg), cfg.interval_s, False),
            ("keda-queue", keda_queue(cfg), 30.0, False),
            ("load-step-pm1", load_step_pm1(cfg), cfg.interval_s, False),
            ("dynamo-throughput", dynamo_throughput(cfg), cfg.interval_s, False),
            ("kpa-panic", kpa_panic(cfg), 2.0, False),
            ("fixed-peak", fixed_peak(requests, cfg), 60.0, False),
            ("oracle", oracle(requests, cfg), ORACLE_INTERVAL_S, True)]


def replay_workers() -> int:
    """Processes the replays of `compare` and `frontier` run in: CLIQUE_REPLAY_WORKERS, else the CPUs this
    process may use (1: in this process, one after another)."""
    raw = os.environ.get("CLIQUE_REPLAY_WORKERS", "")
    if raw:
        try:
            return max(1, int(raw))
        except ValueError:
            raise ValueError(f"CLIQUE_REPLAY_WORKERS must be a whole number of processes, got {raw!r}") from None
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


# The jobs of the pool being run: forked workers inherit them (policies are closures, which do not pickle).
_JOBS: list[tuple[Sequence[Request], str, Policy, ModelConfig, bool, bool]] = []


def _run_job(i: int) -> ReplayResult | dict:
    requests, name, pol, cfg, oracle_mode, summary_only = _JOBS[i]
    r = replay(requests, cfg, name, pol, oracle_mode=oracle_mode)
    return r.summary() if summary_only else r


def run_replays(jobs: list[tuple[Sequence[Request], str, Policy, ModelConfig, bool, bool]], workers: int | None = None,
                done: Callable[[int], None] | None = None) -> list:
    """Each job (requests, name, policy, config, oracle mode, summary only) replayed; in `workers` forked
    processes when more than one (each replay is independent and deterministic, so the results are the same
    as one after another). `done(i)` is called as job i finishes."""
    global _JOBS
    workers = replay_workers() if workers is None else workers
    if workers <= 1 or len(jobs) <= 1 or "fork" not in mp.get_all_start_methods():
        out = []
        for i in range(len(jobs)):
            _JOBS = jobs
            out.append(_run_job(i))
            if done:
                done(i)
        _JOBS = []
        return out
    _JOBS = jobs
    try:
        with mp.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            res = {}
            for i, r in pool.imap_unordered(_indexed_job, range(len(jobs))):
                res[i] = r
                if done:
                    done(i)
    finally:
        _JOBS = []
    return [res[i] for i in range(len(jobs))]


def _indexed_job(i: int) -> tuple[int, ReplayResult | dict]:
    return i, _run_job(i)


def compare(requests: Sequence[Request], cfg: ModelConfig,
            progress: Callable[[str, int, int], None] | None = None, workers: int | None = None) -> list[ReplayResult]:
    runs = policies(requests, cfg)
    jobs = [(requests, name, pol, replace(cfg, interval_s=interval), om, False) for name, pol, interval, om in runs]
    n = len(requests)
    out = run_replays(jobs, workers, (lambda i: progress(runs[i][0], n, n)) if progress else None)
    for r in out:
        r.cfg = cfg
    return out


def replay_table(results: list[ReplayResult]) -> str:
    rows = [r.summary() for r in results]
    oracle_h = next((r["gpu_hours"] for r in rows if r["policy"] == "oracle"), None)
    head = (f"{'policy':20} {'TTFT SLO':>9} {'feasible':>9} {'ITL SLO':>8} {'p99 TTFT s':>10} {'GPU-hours':>10} "
            f"{'x oracle':>8} {'scale events':>12}")
    lines = [head] + [
        f"{r['policy']:20} {r['ttft_slo_attainment']:>9.1%} {r['ttft_slo_attainment_feasible']:>9.1%} "
        f"{r['itl_slo_attainment']:>8.1%} {r['p99_ttft_s']:>10} "
        f"{r['gpu_hours']:>10.1f} {(r['gpu_hours'] / oracle_h if oracle_h else 0):>8.2f} {r['scale_events']:>12}"
        + (f"  cold starts {r['cold_starts']}, {r['cold_start_waits']} requests arrived at 0 ready"
           if "cold_starts" in r else "")
        for r in rows]
    if rows:
        lines.append(f"infeasible (no single replica prefills them within the TTFT SLO): "
                     f"{rows[0]['infeasible_share']:.2%} of requests; 'feasible' is attainment over the rest")
    return "\n".join(lines)


def replay_plots(results: list[ReplayResult], requests: Sequence[Request], cfg: ModelConfig, path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a0, a1) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    end = requests[-1].time if requests else 0
    bucket = 30.0 if end < 4 * 3600 else 300.0
    T = np.fromiter((r.time for r in requests), float, len(requests))
    P = np.fromiter((r.prompt for r in requests), float, len(requests))
    counts = np.bincount((T // bucket).astype(np.int64), weights=P) if len(T) else np.zeros(1)
    unit, label = (60, "minutes") if end < 4 * 3600 else (3600, "hours")
    a0.plot(np.arange(len(counts)) * bucket / unit, counts / bucket, color="#555")
    a0.set_ylabel("prompt tokens/s")
    a0.set_title("request load (trace) and prefill replicas per policy", fontsize=10)
    for r in results:
        if r.timeline:
            t, p, _ = zip(*r.timeline)
            a1.step([x / unit for x in t], p, where="post", label=r.policy, lw=2.2 if r.policy == "clique" else 1.0)
    a1.set_ylabel("prefill replicas")
    a1.set_xlabel(label)
    a1.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ------------------------------------------------------------------------------------------------ frontier

@dataclass(frozen=True)
class FrontierPoint:
    policy: str
    setting: str  # the knob and its value
    ttft_slo_attainment: float
    gpu_hours: float
    itl_slo_attainment: float | None = None  # the second SLO, for the verdict's both-SLO clause (None: not known)


def frontier_runs(requests: Sequence[Request], cfg: ModelConfig) -> list[tuple[str, str, Policy, float]]:
    """Each policy over its main knob (what a user would turn to buy attainment with GPU-hours): ours over its
    attainment objective, KPA over its target utilization, Dynamo over a derating of its profiled throughput,
    the reactive rules over their utilization target, and fixed fleets."""
    runs: list[tuple[str, str, Policy, float]] = []
    for a in (0.8, 0.9, 0.95, 0.98, 0.995):
        runs.append(("clique", f"attainment {a:g}", clique_planner(cfg, a), cfg.interval_s))
    for u in (0.2, 0.35, 0.5):
        runs.append(("kpa-panic", f"utilization {u:g}", kpa_panic(cfg, utilization=u), 2.0))
    for d in (0.25, 0.4, 0.6):
        runs.append(("dynamo-throughput", f"derate {d:g}", dynamo_throughput(cfg, derate=d), cfg.interval_s))
    for t in (0.15, 0.35):
        c = replace(cfg, prefill_target=t)
        runs.append(("clique-reactive", f"target {t:g}", clique_reactive(c), cfg.interval_s))
    peak_d = fixed_peak(requests, cfg)(Signals(0, 0, 0, 0, 0, 0, 0, 0, 0))[1]
    for n in (3, 4, 5, 6):
        runs.append(("fixed", f"{n} prefill", fixed_fleet(cfg, n, peak_d), 60.0))
    return runs


def frontier(requests: Sequence[Request], cfg: ModelConfig, results: Sequence[ReplayResult] = (),
             sweep: bool = True, workers: int | None = None) -> list[FrontierPoint]:
    """The frontier's points: every policy at its defaults (from `results`, when given) and, with `sweep`,
    over its knob (the sweeps in `workers` processes, see `run_replays`)."""
    out = [FrontierPoint(r.policy, "default", s["ttft_slo_attainment"], s["gpu_hours"], s["itl_slo_attainment"])
           for r in results for s in (r.summary(),)]
    runs = frontier_runs(requests, cfg) if sweep else []
    sums = run_replays([(requests, name, pol, replace(cfg, interval_s=interval), False, True)
                        for name, _, pol, interval in runs], workers)
    for (name, setting, _, _), s in zip(runs, sums):
        out.append(FrontierPoint(name, setting, s["ttft_slo_attainment"], s["gpu_hours"], s["itl_slo_attainment"]))
    return out


def frontier_verdict(points: Sequence[FrontierPoint], oracle_hours: float, goal: float = 0.99,
                     budget: float = 1.15, policy: str = "clique") -> str:
    """How far `policy` is from the goal (>= 99% attainment at <= 1.15x the oracle's GPU-hours), and whether
    another policy's point beats it. The goal and the matching are on TTFT attainment and GPU-hours; when every
    point knows its ITL attainment, a last clause adds the ITL axis (information only, the TTFT clauses are
    unchanged): the ITL attainment of each unmatched baseline point and how many of them are below the goal on
    ITL, and the points that are unmatched only once ITL counts as well (a policy that spends GPU-hours on decode
    buys ITL that a TTFT-only comparison does not show)."""
    ours = [p for p in points if p.policy == policy]
    parts = [f"goal: >= {goal:.0%} TTFT attainment at <= {budget:g}x the oracle's {oracle_hours:.1f} GPU-hours"]
    if not ours:
        return parts[0] + f"; no point of {policy}"

    def desc(p: FrontierPoint) -> str:
        return (f"{p.ttft_slo_attainment:.1%} at {p.gpu_hours:.1f} GPU-hours = {p.gpu_hours / oracle_hours:.2f}x "
                f"({p.policy}, {p.setting})")
    within = [p for p in ours if p.gpu_hours <= budget * oracle_hours]
    meets = [p for p in ours if p.ttft_slo_attainment >= goal]
    best = max(within, key=lambda p: p.ttft_slo_attainment, default=None)
    cheap = min(meets, key=lambda p: p.gpu_hours, default=None)
    parts.append(f"best within budget: {desc(best)}" if best else
                 f"no setting within budget, the cheapest: {desc(min(ours, key=lambda p: p.gpu_hours))}")
    parts.append(f"cheapest at >= {goal:.0%}: {desc(cheap)}" if cheap else
                 f"no setting reaches {goal:.0%}, the best: {desc(max(ours, key=lambda p: p.ttft_slo_attainment))}")
    others = [p for p in points if p.policy not in (policy, "oracle")]
    unmatched = [p for p in others if not any(o.ttft_slo_attainment >= p.ttft_slo_attainment
                                              and o.gpu_hours <= p.gpu_hours for o in ours)]
    parts.append("every baseline point is matched or beaten on both axes by one of ours" if not unmatched else
                 "baseline points none of ours matches on both axes: " + ", ".join(desc(p) for p in unmatched))
    if points and all(p.itl_slo_attainment is not None for p in points):
        def itl(p: FrontierPoint) -> float:
            return float(p.itl_slo_attainment or 0.0)
        both = [p for p in others if not any(o.ttft_slo_attainment >= p.ttft_slo_attainment and itl(o) >= itl(p)
                                             and o.gpu_hours <= p.gpu_hours for o in ours)]
        extra = [p for p in both if p not in unmatched]
        text = (f"with ITL as a third axis (ours reach {min(itl(p) for p in ours):.2%}-{max(itl(p) for p in ours):.2%} "
                f"ITL attainment)")
        if unmatched:
            below = sum(1 for p in unmatched if itl(p) < goal)
            text += (": the ITL attainment of the points above: "
                     + ", ".join(f"{itl(p):.2%} ({p.policy}, {p.setting})" for p in unmatched)
                     + f" ({below} of {len(unmatched)} below the {goal:.0%} goal)")
        text += ("; unmatched only once ITL counts too: " + ", ".join(
            f"{p.ttft_slo_attainment:.2%} TTFT / {itl(p):.2%} ITL at {p.gpu_hours:.1f} GPU-hours ({p.policy}, "
            f"{p.setting})" for p in extra) if extra else
            "; every baseline point matched on TTFT and GPU-hours is matched on ITL too" if unmatched else
            ": every baseline point is matched on TTFT, ITL and GPU-hours too")
        parts.append(text)
    return "; ".join(parts)


def frontier_plot(points: Sequence[FrontierPoint], results: Sequence[ReplayResult], path, goal: float = 0.99,
                  budget: float = 1.15) -> str:
    """Attainment against GPU-hours: each policy's points over its knob (a line), its default (a square), the
    oracle (a star), and the goal's corner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r.policy: r.summary() for r in results}
    oracle_h = rows["oracle"]["gpu_hours"] if "oracle" in rows else None
    fig, ax = plt.subplots(figsize=(9, 5))
    names = list(dict.fromkeys(p.policy for p in points))
    colors = {n: f"C{i % 10}" for i, n in enumerate(names)}
    for name in names:
        knob = sorted((p for p in points if p.policy == name and p.setting != "default"), key=lambda p: p.gpu_hours)
        if knob:
            ax.plot([p.gpu_hours for p in knob], [p.ttft_slo_attainment for p in knob], "o-", ms=3, lw=1,
                    color=colors[name], label=f"{name} over its knob", alpha=0.8)
            for p in knob:
                ax.annotate(p.setting.split()[-1], (p.gpu_hours, p.ttft_slo_attainment), fontsize=5,
                            xytext=(2, -7), textcoords="offset points", color=colors[name])
        for p in points:
            if p.policy == name and p.setting == "default":
                star = name == "oracle"
                ax.plot([p.gpu_hours], [p.ttft_slo_attainment], "*" if star else "s", ms=12 if star else 6,
                        color="black" if star else colors[name], label=f"{name} (defaults)")
    if oracle_h:
        ax.axvspan(0, budget * oracle_h, color="#2a7ab9", alpha=0.06)
        ax.axhline(goal, color="#2a7ab9", lw=0.8, ls="--")
        ax.text(budget * oracle_h, goal, f" goal: >= {goal:.0%} at <= {budget:g}x oracle", fontsize=7, va="bottom")
    lo = min((p.ttft_slo_attainment for p in points), default=0.9)
    ax.set_ylim(max(0.0, min(lo, 0.9) - 0.01), 1.002)
    ax.set_xlabel("GPU-hours")
    ax.set_ylabel("TTFT SLO attainment")
    ax.set_title("what each autoscaling policy pays for what it attains (up and left is better)", fontsize=10)
    ax.legend(fontsize=6, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
