"""Autoscaler trace replay: a request trace through a fluid, time-stepped model of disaggregated prefill and
decode pools, each scaled by a policy. Pure (requests and config in, numbers out; time is simulated).

Model, per step of `step_s`:
    prefill  FIFO queue of prompts; ready replicas process `prefill_tokens_per_s` each (work-conserving),
             and no prompt finishes faster than one replica alone could; TTFT = prefill end - arrival
    decode   a finished prefill takes a slot (max_batch per ready decode replica) or waits for one; a
             sequence emits decode_tokens_per_s / (1 + itl_slowdown * occupancy) tokens/s;
             mean ITL = (slot wait + decode time) / output tokens
    scaling  each policy is evaluated every interval; a new replica serves after load_delay_s (model load);
             GPU-hours count every replica from the moment it is requested until it is removed
Policies: `clique` runs the autoscaler's real decision code (autoscaler.algorithm.decide) with its policy
objects; the baselines are HPA on GPU utilization (same code, HPA defaults), a KEDA-like queue threshold
(30 s polling, 300 s cooldown), Dynamo's load planner rule (+-1 replica per adjustment interval), fixed peak
provisioning, and an oracle that knows the future load (an unattainable reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from autoscaler.algorithm import History, Reading, decide, record
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
    # our policy's two knobs; defaults chosen from `frontier` on the Azure code trace: SLO first (98.6% there)
    prefill_target: float = 0.25  # prompt tokens/s arriving per prefill replica, as a share of its capacity
    scale_down_window_s: int = 600  # scale-down stabilization: bursts come back within minutes
    gpus_per_pod: int = 8
    interval_s: float = 15.0  # evaluation interval (ours, HPA)
    ttft_slo_s: float = 2.0
    itl_slo_ms: float = 50.0
    min_replicas: int = 1
    max_replicas: int = 16
    step_s: float = 0.25


@dataclass
class Pool:
    ready: int
    loading: list[float] = field(default_factory=list)  # times at which loading replicas become ready

    @property
    def total(self) -> int:
        return self.ready + len(self.loading)

    def set(self, n: int, now: float, delay: float) -> None:
        if n > self.total:
            self.loading += [now + delay] * (n - self.total)
        else:
            drop = self.total - n
            while drop and self.loading:  # cancel replicas still loading first
                self.loading.pop()
                drop -= 1
            self.ready -= drop

    def tick(self, now: float) -> None:
        done = [t for t in self.loading if t <= now]
        if done:
            self.ready += len(done)
            self.loading = [t for t in self.loading if t > now]


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
    prefill: int
    decode: int


@dataclass
class ReplayResult:
    policy: str
    ttft: list[float] = field(default_factory=list)
    itl_ms: list[float] = field(default_factory=list)
    gpu_hours: float = 0.0
    scale_events: int = 0
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (t, prefill, decode)
    cfg: ModelConfig | None = None

    def summary(self) -> dict:
        cfg = self.cfg or ModelConfig()
        n = max(1, len(self.ttft))
        return {"policy": self.policy, "requests": len(self.ttft),
                "ttft_slo_attainment": round(sum(t <= cfg.ttft_slo_s for t in self.ttft) / n, 4),
                "itl_slo_attainment": round(sum(x <= cfg.itl_slo_ms for x in self.itl_ms) / max(1, len(self.itl_ms)), 4),
                "p99_ttft_s": round(sorted(self.ttft)[int(0.99 * (n - 1))], 3) if self.ttft else None,
                "gpu_hours": round(self.gpu_hours, 2), "scale_events": self.scale_events}


Policy = Callable[[Signals], tuple[int, int]]  # -> desired (prefill, decode) replicas


# The metrics our policies read, as a serving stack would export them (the KWOK replay serves them for real).
QUEUED_TOKENS = "clique_sim_prefill_queued_prompt_tokens"
ARRIVAL_TPS = "clique_sim_prefill_arrival_prompt_tokens_per_second"
KV_USAGE = "clique_sim_decode_kv_usage_percent"


def clique_policy_docs(cfg: ModelConfig, endpoint: str | None = None, speedup: float = 1.0) -> dict[str, dict]:
    """Our autoscaling policies for the two pools, as the ConfigMaps hold them. Prefill scales on queued prompt
    work and on the arrival rate (cfg.prefill_target of capacity per replica: headroom for the trace's
    sub-minute bursts, which no reactive policy can follow with a 60 s model load); decode on KV occupancy (70%).
    Scale-up is immediate, scale-down waits cfg.scale_down_window_s. `endpoint`: read the metrics by Scrape from
    there; `speedup`: divide every time (interval, windows, rate-limit periods) for a time-compressed run."""
    secs = lambda s: max(1, round(s / speedup))  # noqa: E731 - the schema's periods are whole seconds
    src = {"source": "Scrape", "endpoints": [endpoint]} if endpoint else {}

    def doc(name: str, pods: int, metrics: list[dict], preferred: str | None) -> dict:
        d = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name},
             "minReplicas": cfg.min_replicas, "maxReplicas": cfg.max_replicas,
             "evaluationIntervalSeconds": cfg.interval_s / speedup, "metrics": metrics,
             "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                      "policies": [{"type": "Pods", "value": 4, "periodSeconds": secs(15)},
                                                   {"type": "Percent", "value": 100, "periodSeconds": secs(15)}]},
                          "scaleDown": {"stabilizationWindowSeconds": round(cfg.scale_down_window_s / speedup),
                                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": secs(15)}]}},
             "podsPerReplica": pods, "scaleUnit": "Pods",
             "gang": {"gpusPerPod": cfg.gpus_per_pod, **({"topologyPreferred": preferred} if preferred else {})}}
        return d

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


def clique_policy(cfg: ModelConfig) -> Policy:
    """Ours: the real decision code (autoscaler.algorithm.decide) on the policies of clique_policy_docs."""
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


def hpa_gpu_util(cfg: ModelConfig) -> Policy:
    """HPA on GPU utilization, target 80%, HPA's default behavior (300 s scale-down window)."""
    def policy_of(name: str) -> object:
        return parse_policy("replay", name, {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": cfg.min_replicas, "maxReplicas": cfg.max_replicas,
            "metrics": [{"type": "Prometheus", "prometheus": {"query": "DCGM_FI_DEV_GPU_UTIL"},
                         "target": {"type": "Value", "value": 80}}]})
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
    """KEDA-like: desired = ceil(queue length / threshold), scale-up at once, scale-down after the cooldown."""
    state = {"last_active": -1e9, "p": cfg.min_replicas, "d": cfg.min_replicas}

    def run(s: Signals) -> tuple[int, int]:
        want_p = max(cfg.min_replicas, min(cfg.max_replicas, math.ceil(s.prefill_queue_requests / threshold)))
        # decode has no request queue of its own: sequences waiting for a slot play that part
        want_d = max(cfg.min_replicas, min(cfg.max_replicas, s.decode + math.ceil(s.decode_waiting / threshold)))
        if want_p >= s.prefill or s.prefill_queue_requests:
            state["last_active"] = s.now
        p = want_p if want_p > s.prefill or s.now - state["last_active"] > cooldown_s else s.prefill
        return p, want_d
    return run


def dynamo_planner(cfg: ModelConfig, adjust_s: float = 60) -> Policy:
    """Dynamo's load planner rule: every adjustment interval, +1 when load is above 80% of capacity (or a
    queue waits), -1 when below 40%, per pool."""
    state = {"next": 0.0}

    def run(s: Signals) -> tuple[int, int]:
        if s.now < state["next"]:
            return s.prefill, s.decode
        state["next"] = s.now + adjust_s
        load = s.prefill_arrival_tps / max(1e-9, s.prefill * cfg.prefill_tokens_per_s)
        p = s.prefill + (1 if load > 0.8 or s.prefill_queue_requests > 2 * s.prefill else -1 if load < 0.4 else 0)
        d = s.decode + (1 if s.decode_occupancy > 0.8 or s.decode_waiting else -1 if s.decode_occupancy < 0.4 else 0)
        clamp = lambda n: max(cfg.min_replicas, min(cfg.max_replicas, n))  # noqa: E731
        return clamp(p), clamp(d)
    return run


def _need(requests: Sequence[Request], cfg: ModelConfig, t0: float, t1: float, util: float = 0.8,
          bucket_s: float = 5.0) -> tuple[int, int]:
    """Replicas the load arriving in [t0, t1) needs at `util`: the busiest `bucket_s` slice of prompt tokens
    (bursts, not the average, decide TTFT), and the decode sequences in flight on average."""
    span = max(1e-9, t1 - t0)
    buckets: dict[int, int] = {}
    seq_s = 0.0
    for r in requests:
        if t0 <= r.time < t1:
            buckets[int((r.time - t0) // bucket_s)] = buckets.get(int((r.time - t0) // bucket_s), 0) + r.prompt
            seq_s += r.output / cfg.decode_tokens_per_s
    peak_tps = max(buckets.values(), default=0) / min(bucket_s, span)
    p = math.ceil(peak_tps / (cfg.prefill_tokens_per_s * util))
    d = math.ceil(seq_s / span / (cfg.max_batch * util))
    clamp = lambda n: max(cfg.min_replicas, min(cfg.max_replicas, n))  # noqa: E731
    return clamp(p), clamp(d)


def fixed_peak(requests: Sequence[Request], cfg: ModelConfig, window_s: float = 60) -> Policy:
    end = requests[-1].time if requests else 0
    peak = [0, 0]
    t = 0.0
    while t <= end:
        p, d = _need(requests, cfg, t, t + window_s)
        peak = [max(peak[0], p), max(peak[1], d)]
        t += window_s / 2
    return lambda s: (peak[0], peak[1])


def _prefill_window(queue: list[list[float]], arrivals: Sequence[Request], n: int, t0: float, t1: float,
                    cfg: ModelConfig) -> tuple[list[list[float]], bool]:
    """The replay's prefill rules (FIFO, work-conserving, no prompt faster than one replica) with `n` replicas
    from t0, the window's arrivals joining at their times. Returns the queue at t1 and whether every prompt
    queued or arriving by t1 finishes within the TTFT SLO if `n` replicas keep serving after t1."""
    q = [list(x) for x in queue]
    per = cfg.prefill_tokens_per_s * cfg.step_s
    i, now, ok, state = 0, t0, True, None
    horizon = t1 + cfg.ttft_slo_s + cfg.step_s
    while now < horizon and (q or i < len(arrivals)):
        while i < len(arrivals) and arrivals[i].time <= now:
            q.append([arrivals[i].time, float(arrivals[i].prompt)])
            i += 1
        budget, k = n * per, 0
        while k < len(q) and budget > 1e-9 and k < n:
            take = min(q[k][1], budget, per)
            q[k][1] -= take
            budget -= take
            k += 1
        finish = now + cfg.step_s
        for x in q:
            if x[1] <= 1e-9 and finish - x[0] > cfg.ttft_slo_s + 1e-9:
                ok = False
        q = [x for x in q if x[1] > 1e-9]
        if any(finish - x[0] > cfg.ttft_slo_s + 1e-9 for x in q):
            ok = False
        now = finish
        if state is None and now >= t1 - 1e-9:  # carried over: the queue and what arrived since the last step
            state = [list(x) for x in q] + [[r.time, float(r.prompt)] for r in arrivals[i:]]
        if not ok:
            break
    return (state if state is not None else q), ok


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


def oracle_plan(requests: Sequence[Request], cfg: ModelConfig, window_s: float = 5.0) -> tuple[list, list]:
    """A clairvoyant plan that serves every prompt within the TTFT SLO (those no single replica can prefill in
    time excepted) at the fewest GPU-hours a plan of `window_s` steps can: per window, the fewest prefill
    replicas that keep every prompt within the SLO (the queue carried over from the window before), decode
    replicas for the most sequences in flight at a full batch; then replica lifetimes that start a model load
    ahead and bridge short gaps (`_slots`). Returns (prefill lifetimes, decode lifetimes)."""
    end = (requests[-1].time if requests else 0) + window_s
    windows = int(math.ceil(end / window_s))
    too_big = cfg.prefill_tokens_per_s * cfg.ttft_slo_s  # tokens one replica prefills within the SLO
    servable = [r for r in requests if r.prompt <= too_big]
    need_p, queue, i, n = [], [], 0, cfg.min_replicas
    for w in range(windows):
        t0, t1 = w * window_s, (w + 1) * window_s
        j = i
        while j < len(servable) and servable[j].time < t1:
            j += 1
        arrivals = servable[i:j]
        lo = max(cfg.min_replicas, n - 1) if queue else cfg.min_replicas
        for n in range(lo, cfg.max_replicas + 1):
            state, ok = _prefill_window(queue, arrivals, n, t0, t1, cfg)
            if ok:
                break
        queue, i = state, j
        need_p.append(n)
    # decode: sequences in flight, each lasting its output at the slowest (full batch) rate
    slow = cfg.decode_tokens_per_s / (1 + cfg.itl_slowdown)
    delta = [0] * (windows + int(max((r.output for r in requests), default=0) / slow / window_s) + 2)
    for r in requests:
        a = int(r.time // window_s)
        delta[a] += 1
        delta[a + int(math.ceil(r.output / slow / window_s))] -= 1
    need_d, live = [], 0
    for w in range(windows):
        live += delta[w]
        need_d.append(max(cfg.min_replicas, min(cfg.max_replicas, math.ceil(live / cfg.max_batch))))
    # one step early: a replica asked for at t is counted ready from the step after t + load
    return (_slots(need_p, window_s, cfg.load_delay_s, cfg.min_replicas, cfg.step_s),
            _slots(need_d, window_s, cfg.load_delay_s, cfg.min_replicas, cfg.step_s))


def oracle(requests: Sequence[Request], cfg: ModelConfig) -> Policy:
    """Knows the future: holds the replicas of `oracle_plan` (loading ones included) at every moment."""
    pre, dec = oracle_plan(requests, cfg)

    def run(s: Signals) -> tuple[int, int]:
        return (sum(1 for a, b in pre if a <= s.now < b) or cfg.min_replicas,
                sum(1 for a, b in dec if a <= s.now < b) or cfg.min_replicas)
    return run


def replay(requests: Sequence[Request], cfg: ModelConfig, name: str, policy: Policy,
           progress: Callable[[int, int], None] | None = None, oracle_mode: bool = False) -> ReplayResult:
    res = ReplayResult(name, cfg=cfg)
    start = policy(Signals(0, 0, 0, 0, 0, 0, 0, cfg.min_replicas, cfg.min_replicas)) if oracle_mode else None
    pre = Pool(start[0] if start else cfg.min_replicas)
    dec = Pool(start[1] if start else cfg.min_replicas)
    queue: list[list] = []  # [arrival, remaining prompt tokens, output tokens]
    active: list[list] = []  # [decode ready time, tokens left, output tokens]
    waiting: list[list] = []  # [prefill end time, output tokens]
    i, now, n = 0, 0.0, len(requests)
    end = (requests[-1].time if requests else 0) + 600
    next_eval, busy_work, arrived_tokens, window_start = 0.0, 0.0, 0.0, 0.0
    while now < end and (i < n or queue or active or waiting):
        while i < n and requests[i].time <= now:
            r = requests[i]
            queue.append([r.time, float(r.prompt), r.output])
            arrived_tokens += r.prompt
            i += 1
            if progress and i % 500 == 0:
                progress(i, n)
        pre.tick(now)
        dec.tick(now)
        # prefill: work-conserving FIFO, no prompt faster than one replica
        budget = pre.ready * cfg.prefill_tokens_per_s * cfg.step_s
        used = 0.0
        k = 0
        while k < len(queue) and budget - used > 1e-9 and k < max(1, pre.ready):
            q = queue[k]
            take = min(q[1], budget - used, cfg.prefill_tokens_per_s * cfg.step_s)
            q[1] -= take
            used += take
            k += 1
        busy_work += used
        done = [q for q in queue if q[1] <= 1e-9]
        if done:
            queue = [q for q in queue if q[1] > 1e-9]
            for q in done:
                finish = now + cfg.step_s
                res.ttft.append(finish - q[0])
                waiting.append([finish, q[2]])
        # decode: slots, then progress
        slots = dec.ready * cfg.max_batch
        while waiting and len(active) < slots:
            w = waiting.pop(0)
            active.append([w[0], float(w[1]), w[1]])
        occ = len(active) / max(1, slots)
        rate = cfg.decode_tokens_per_s / (1 + cfg.itl_slowdown * occ)
        still = []
        for a in active:
            a[1] -= rate * cfg.step_s
            if a[1] <= 0:
                res.itl_ms.append(1000 * (now + cfg.step_s - a[0]) / a[2])
            else:
                still.append(a)
        active = still
        # scaling
        if now >= next_eval:
            span = max(cfg.step_s, now - window_start)
            sig = Signals(now, sum(q[1] for q in queue), len(queue),
                          min(1.0, busy_work / max(1e-9, pre.ready * cfg.prefill_tokens_per_s * span)) if pre.ready else 1.0,
                          arrived_tokens / span, occ, len(waiting), pre.total, dec.total)
            want_p, want_d = policy(sig)
            for pool, want in ((pre, want_p), (dec, want_d)):
                if want != pool.total:
                    res.scale_events += 1
                    pool.set(want, now, cfg.load_delay_s)
            busy_work, arrived_tokens, window_start = 0.0, 0.0, now
            next_eval = now + cfg.interval_s
            res.timeline.append((now, pre.total, dec.total))
        res.gpu_hours += (pre.total * cfg.prefill_pods + dec.total * cfg.decode_pods) * cfg.gpus_per_pod \
            * cfg.step_s / 3600
        now += cfg.step_s
    if progress:
        progress(n, n)
    return res


def compare(requests: Sequence[Request], cfg: ModelConfig,
            progress: Callable[[str, int, int], None] | None = None) -> list[ReplayResult]:
    policies = [("clique", clique_policy(cfg), False), ("hpa-gpu-util", hpa_gpu_util(cfg), False),
                ("keda-queue", keda_queue(cfg), False), ("dynamo-planner", dynamo_planner(cfg), False),
                ("fixed-peak", fixed_peak(requests, cfg), False), ("oracle", oracle(requests, cfg), True)]
    # the oracle acts at every step (it has nothing to measure); the others at their evaluation interval
    return [replay(requests, replace(cfg, interval_s=cfg.step_s) if om else cfg, name, pol,
                   (lambda d, n, name=name: progress(name, d, n)) if progress else None, oracle_mode=om)
            for name, pol, om in policies]


def replay_table(results: list[ReplayResult]) -> str:
    rows = [r.summary() for r in results]
    oracle_h = next((r["gpu_hours"] for r in rows if r["policy"] == "oracle"), None)
    head = (f"{'policy':20} {'TTFT SLO':>9} {'ITL SLO':>8} {'p99 TTFT s':>10} {'GPU-hours':>10} "
            f"{'x oracle':>8} {'scale events':>12}")
    return "\n".join([head] + [
        f"{r['policy']:20} {r['ttft_slo_attainment']:>9.1%} {r['itl_slo_attainment']:>8.1%} {r['p99_ttft_s']:>10} "
        f"{r['gpu_hours']:>10.1f} {(r['gpu_hours'] / oracle_h if oracle_h else 0):>8.2f} {r['scale_events']:>12}"
        for r in rows])


def replay_plots(results: list[ReplayResult], requests: Sequence[Request], cfg: ModelConfig, path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a0, a1) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    bucket = 30.0
    counts: dict[int, int] = {}
    for r in requests:
        counts[int(r.time // bucket)] = counts.get(int(r.time // bucket), 0) + r.prompt
    xs = sorted(counts)
    a0.plot([x * bucket / 60 for x in xs], [counts[x] / bucket for x in xs], color="#555")
    a0.set_ylabel("prompt tokens/s")
    a0.set_title("request load (trace) and prefill replicas per policy", fontsize=10)
    for r in results:
        if r.timeline:
            t, p, _ = zip(*r.timeline)
            a1.step([x / 60 for x in t], p, where="post", label=r.policy, lw=2.2 if r.policy == "clique" else 1.1)
    a1.set_ylabel("prefill replicas")
    a1.set_xlabel("minutes")
    a1.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


@dataclass(frozen=True)
class FrontierPoint:
    prefill_target: float
    scale_down_window_s: int
    ttft_slo_attainment: float
    gpu_hours: float


def frontier(requests: Sequence[Request], cfg: ModelConfig, targets: Sequence[float] = (0.15, 0.2, 0.25, 0.3, 0.35, 0.5),
             windows: Sequence[int] = (300, 600, 900)) -> list[FrontierPoint]:
    """Our policy over its two knobs (utilization target, scale-down window): what each costs and attains."""
    out = []
    for w in windows:
        for t in targets:
            c = replace(cfg, prefill_target=t, scale_down_window_s=w)
            s = replay(requests, c, "clique", clique_policy(c)).summary()
            out.append(FrontierPoint(t, w, s["ttft_slo_attainment"], s["gpu_hours"]))
    return out


def frontier_verdict(points: Sequence[FrontierPoint], oracle_hours: float, goal: float = 0.99,
                     budget: float = 1.15) -> str:
    """How far our policy is from the goal (>= 99% attainment at <= 1.15x the oracle's GPU-hours)."""
    within = [p for p in points if p.gpu_hours <= budget * oracle_hours]
    meets = [p for p in points if p.ttft_slo_attainment >= goal]
    best = max(within, key=lambda p: p.ttft_slo_attainment, default=None)
    cheap = min(meets, key=lambda p: p.gpu_hours, default=None)
    parts = [f"goal: >= {goal:.0%} TTFT attainment at <= {budget:g}x the oracle's {oracle_hours:.1f} GPU-hours"]
    def desc(p: FrontierPoint) -> str:
        return (f"{p.ttft_slo_attainment:.1%} at {p.gpu_hours:.1f} GPU-hours = {p.gpu_hours / oracle_hours:.2f}x "
                f"(target {p.prefill_target:.0%}, window {p.scale_down_window_s}s)")

    parts.append(f"best within budget: {desc(best)}" if best else
                 f"no setting within budget, the cheapest: {desc(min(points, key=lambda p: p.gpu_hours))}")
    parts.append(f"cheapest at >= {goal:.0%}: {desc(cheap)}" if cheap else
                 f"no setting reaches {goal:.0%}, the best: {desc(max(points, key=lambda p: p.ttft_slo_attainment))}")
    return "; ".join(parts)


def frontier_plot(points: Sequence[FrontierPoint], results: Sequence[ReplayResult], path, goal: float = 0.99,
                  budget: float = 1.15) -> str:
    """Attainment against GPU-hours: our policy's settings (a line per scale-down window), every baseline, the
    oracle, and the goal's corner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r.policy: r.summary() for r in results}
    oracle_h = rows["oracle"]["gpu_hours"] if "oracle" in rows else None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for w in sorted({p.scale_down_window_s for p in points}):
        ps = sorted((p for p in points if p.scale_down_window_s == w), key=lambda p: p.gpu_hours)
        ax.plot([p.gpu_hours for p in ps], [p.ttft_slo_attainment for p in ps], "o-", ms=4,
                label=f"clique, scale-down window {w}s")
        for p in ps:
            ax.annotate(f"{p.prefill_target:.0%}", (p.gpu_hours, p.ttft_slo_attainment), fontsize=6,
                        xytext=(3, -8), textcoords="offset points")
    for name, s in rows.items():
        marker = "*" if name == "oracle" else "s"
        ax.plot([s["gpu_hours"]], [s["ttft_slo_attainment"]], marker, ms=12 if name == "oracle" else 7,
                color="black" if name == "oracle" else None, label=f"{name} (default settings)" if name == "clique"
                else name)
    if oracle_h:
        ax.axvspan(0, budget * oracle_h, ymin=0, ymax=1, color="#2a7ab9", alpha=0.06)
        ax.axhline(goal, color="#2a7ab9", lw=0.8, ls="--")
        ax.text(budget * oracle_h, goal, f" goal: >= {goal:.0%} at <= {budget:g}x oracle", fontsize=7, va="bottom")
    ax.set_xlabel("GPU-hours")
    ax.set_ylabel("TTFT SLO attainment")
    ax.set_title("what each autoscaling policy pays for what it attains (up and left is better)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
