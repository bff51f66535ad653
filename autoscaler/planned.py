"""The daemon's side of the look-ahead planner (autoscaler/planner.py), for a policy with a `planner:` section.
Pure: what Prometheus answered in, an Observation for the planner and then a Decision out. The reconciler does the
queries (autoscaler/sources.py `read_planner_signals`) and keeps one `PlannerFeed` per policy.

Signals (the series of `PlannerSpec.series`, e.g. vLLM's; see policy.PLANNER_METRICS):
    promptTokens, requests  counters, read per series; their increments since the previous evaluation (a series
                            whose value fell was reset, e.g. its pod restarted: its increment is the new value; a
                            series not seen before counts from its first reading on, as Prometheus' increase() does)
    waiting                 gauge, summed: requests waiting for prefill (the Observation's queue_requests; its
                            tokens are estimated as waiting x the mean prompt of the planner's history)
    running                 gauge, summed: decode_in_flight = running + waiting
    the target's replicas   from its /scale, as the planner's prefill and decode replicas

Bins: the planner wants arrivals per short bin (1 s, as `clique replay` feeds it). Each evaluation reads every
sample Prometheus holds of the counters since the last one it used (a range selector, `metric[<window>]`), and
each increment between two consecutive samples is spread evenly over the 1 s bins of the time between them (the
scrape interval; `binned_increments`). The bins run from where the previous evaluation's ended to the newest
sample (what is known, not up to the evaluation's clock). So the bins are as fine as the scrape interval: with a
1 s scrape they are the replay's bins; with 15-30 s scrapes a burst shorter than the scrape interval is averaged
into it, so scrape the serving pods' counters every second for the burst headroom to see bursts. An evaluation
that finds no new sample feeds the planner no bins, and the next one takes both intervals. When Prometheus answers
without timestamps (a plain vector), the increase since the previous evaluation is spread over the evaluation's
bins. (That was the only path before, and it averaged every burst over the 15 s evaluation interval: on the Azure
code trace's first 600 requests the daemon's planner reached 31.3% TTFT attainment where the offline planner
reaches 87.2%, its burst headroom never seeing a burst; tests/unit/test_planner_daemon_twin.py.) Bins as long as
the interval would not do either: the planner's fluid queue takes a bin's arrivals as simultaneous, so a 15 s bin
against a 2 s TTFT SLO would always ask for maxReplicas. The counters count work done (prefill tokens processed,
requests finished), not arrivals: while the pool is saturated the excess shows in the waiting gauge, not in the
bins. The first evaluation after a start only reads the counters and holds. Scale to zero: idle time counts from
that first reading, and sequences in flight or waiting count as activity (the request counter counts finished
requests, and a long generation finishes late).

Decision: the plan's count for the target's role (Prefill: plan.prefill, Decode: plan.decode, Aggregated: the
larger), then minReplicas / maxReplicas and the placement capacity clamp, as for metric policies. HPA's
stabilization windows and behavior rate limits do not apply: the planner holds scale-downs for one model load
itself. Any signal missing: hold the current replicas and feed the planner nothing (the next evaluation's
increments then span both intervals).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from autoscaler.algorithm import Capacity, Decision, MetricOutcome, Reason, clamp_to_capacity
from autoscaler.planner import Observation, Plan, Planner, PlannerConfig
from autoscaler.policy import MAX_REPLICAS, Policy, PlannerSpec

SeriesKey = frozenset  # a series' labels, as frozenset of (name, value)
Sample = tuple[float, float]  # (unix seconds, value) as Prometheus returns a range vector's samples
FIRST_WINDOW_S = 300.0  # the first reading's range: Prometheus' default lookback (`--query.lookback-delta=5m` in
# `prometheus --help`, v2.42.0), so it finds the series an instant query would
BIN_S = 1.0  # the planner's bins (the module docstring says how an evaluation's increase is spread over them),
# or half the TTFT SLO when that is shorter: the fluid queue takes a bin's arrivals as simultaneous, so a bin must
# be well inside the SLO (a time-compressed replay has SLOs of a fraction of a second)


@dataclass(frozen=True)
class PlannerSignals:
    """One evaluation's answers: counters per series, gauges summed; `error` names what could not be read."""

    counters: Mapping[str, Mapping[SeriesKey, float]] = field(default_factory=dict)  # promptTokens, requests
    gauges: Mapping[str, float] = field(default_factory=dict)  # waiting, running
    error: str | None = None
    # the counters' samples per series, oldest first, when Prometheus answered a range selector (else empty)
    samples: Mapping[str, Mapping[SeriesKey, Sequence[Sample]]] = field(default_factory=dict)


def planner_config(policy: Policy) -> PlannerConfig:
    """The Planner's config for this policy: capacities and SLO from `planner:`, bounds from min/maxReplicas, the
    evaluation interval; 1 s bins (see the module docstring)."""
    spec = policy.planner
    assert spec is not None
    lo = 0 if spec.scale_to_zero else max(1, policy.min_replicas)
    # the planner may ask for more than maxReplicas (up to 4x), so that the decision can say it was held there
    hi = min(MAX_REPLICAS, 4 * policy.max_replicas)
    return PlannerConfig(prefill_tokens_per_s=spec.prefill_tokens_per_s, decode_slots=spec.decode_slots,
                         load_s=spec.load_s, ttft_slo_s=spec.ttft_slo_s, interval_s=policy.interval_s,
                         attainment=spec.attainment, history_s=max(spec.history_s, policy.interval_s),
                         bin_s=min(BIN_S, spec.ttft_slo_s / 2), min_prefill=lo, max_prefill=hi, min_decode=lo, max_decode=hi,
                         scale_to_zero=spec.scale_to_zero, idle_to_zero_s=spec.idle_to_zero_s)


def increments(previous: Mapping[SeriesKey, float] | None, current: Mapping[SeriesKey, float]) -> float:
    """What a counter added between two readings, summed over its series (resets and new series as the module
    docstring says)."""
    if previous is None:
        return 0.0
    total = 0.0
    for key, v in current.items():
        before = previous.get(key)
        if before is None:
            continue
        total += v - before if v >= before else v
    return total


def binned_increments(last: Mapping[SeriesKey, Sample], samples: Mapping[SeriesKey, Sequence[Sample]], end: float,
                      nbins: int, bin_s: float) -> tuple[list[float], dict[SeriesKey, Sample]]:
    """A counter's increments since `last` (per series, the last sample already counted) in `nbins` bins of `bin_s`
    ending at `end`, and the new `last`. Each increment between two consecutive samples (a fall is a reset: the new
    value) is spread evenly over the time between them, as much of it as lies within the bins (an increment from
    before the bins' start lands in their first part; a sample after `end`, e.g. another host's clock, in the last
    bin). A series not in `last` counts from its first sample on. Nothing is lost: the bins sum to the increments."""
    bins = [0.0] * max(0, nbins)
    start = end - nbins * bin_s
    new_last = dict(last)
    for key, rows in samples.items():
        prev = last.get(key)
        for t, v in rows:
            if prev is not None and t <= prev[0]:
                continue  # already counted
            if prev is None:
                prev = (t, v)
                continue
            inc = v - prev[1] if v >= prev[1] else v
            lo, hi = max(prev[0], start), min(t, end)
            prev = (t, v)
            if inc == 0 or not bins:
                continue
            if hi <= lo:  # the whole step outside the bins: the nearest bin
                bins[0 if t <= start else -1] += inc
                continue
            first = min(nbins - 1, int((lo - start) // bin_s))
            last_bin = min(nbins - 1, max(first, math.ceil((hi - start) / bin_s) - 1))
            for k in range(first, last_bin + 1):
                a = lo if k == first else max(lo, start + k * bin_s)
                b = hi if k == last_bin else min(hi, start + (k + 1) * bin_s)
                if b > a:
                    bins[k] += inc * (b - a) / (hi - lo)
        if prev is not None:
            new_last[key] = prev
    return bins, new_last


@dataclass
class PlannerFeed:
    """One policy's planner and what it needs between evaluations (lost on restart, rebuilt within historySeconds)."""

    spec: PlannerSpec
    planner: Planner
    last_counters: dict[str, dict[SeriesKey, float]] | None = None
    last_t: float | None = None
    last_plan: Plan | None = None
    last_obs: Observation | None = None
    last_samples: dict[str, dict[SeriesKey, Sample]] = field(default_factory=dict)  # per counter, the last sample used
    last_end: float | None = None  # where the last bins ended (the newest sample then)

    @classmethod
    def for_policy(cls, policy: Policy) -> "PlannerFeed":
        assert policy.planner is not None
        return cls(policy.planner, Planner(planner_config(policy)))

    def observation(self, now: float, signals: PlannerSignals, current: int) -> Observation:
        """The Observation of this evaluation (and remember the counters for the next one)."""
        cfg = self.planner.cfg
        counters = {k: dict(v) for k, v in signals.counters.items()}
        toks, reqs = [], []
        max_bins = max(1, round(cfg.history_s / cfg.bin_s))
        sampled = all(signals.samples.get(c) for c in ("promptTokens", "requests"))
        newest = max((t for c in ("promptTokens", "requests") for rows in signals.samples.get(c, {}).values()
                      for t, _ in rows), default=None)
        if self.last_counters is not None and self.last_t is not None and now > self.last_t:
            if sampled and newest is not None:
                # the bins run from where the last ones ended to the newest sample: what Prometheus holds is known
                # up to its last scrape, not up to now (bins up to now would leave the last ones empty and crowd
                # their arrivals into the next evaluation's first)
                span = newest - (self.last_end if self.last_end is not None else self.last_t)
                n = min(round(span / cfg.bin_s), max_bins)
                if n >= 1:  # n bins of about bin_s tile the span (a span longer than the history: its last bins)
                    width = span / n if n < max_bins else cfg.bin_s
                    toks, self.last_samples["promptTokens"] = binned_increments(
                        self.last_samples.get("promptTokens", {}), signals.samples["promptTokens"], newest, n, width)
                    reqs, self.last_samples["requests"] = binned_increments(
                        self.last_samples.get("requests", {}), signals.samples["requests"], newest, n, width)
                    self.last_end = newest
            else:  # no timestamps: the increase since the previous evaluation, spread over its bins
                n = min(max(1, round((now - self.last_t) / cfg.bin_s)), max_bins)
                tok = increments(self.last_counters.get("promptTokens"), counters.get("promptTokens", {}))
                req = increments(self.last_counters.get("requests"), counters.get("requests", {}))
                toks, reqs = [tok / n] * n, [req / n] * n
        if self.last_counters is None:  # the first reading: its last samples are where counting starts
            for c in ("promptTokens", "requests"):
                self.last_samples[c] = {k: rows[-1] for k, rows in signals.samples.get(c, {}).items() if rows}
            self.last_end = newest
        self.last_counters, self.last_t = counters, now
        waiting = max(0, round(signals.gauges.get("waiting", 0.0)))
        running = max(0, round(signals.gauges.get("running", 0.0)))
        seen_tok = sum(self.planner.tokens) + sum(toks)
        seen_req = sum(self.planner.requests) + sum(reqs)
        mean_prompt = seen_tok / seen_req if seen_req > 0 else 0.0
        return Observation(now, toks, reqs, waiting, waiting * mean_prompt, running + waiting, current, current)

    def plan(self, now: float, signals: PlannerSignals, current: int) -> Plan | None:
        """The plan of this evaluation; None on the first one, which only reads the counters (without a previous
        reading there is no increment, and a planner fed an empty bin would take it for an idle pool)."""
        priming = self.last_counters is None
        self.last_obs = self.observation(now, signals, current)
        if priming:
            # idle time counts from the daemon's first reading, not from the epoch
            self.planner.last_arrival_t = max(self.planner.last_arrival_t, now)
            return None
        if self.last_obs.decode_in_flight > 0 or self.last_obs.queue_requests > 0:
            # sequences in flight mean the pool is not idle, even while none finishes (the request counter counts
            # finished requests): scale-to-zero waits for idleToZeroSeconds after the last of them
            self.planner.last_arrival_t = max(self.planner.last_arrival_t, now)
        self.last_plan = self.planner.observe(self.last_obs)
        return self.last_plan

    def window_s(self, now: float) -> float:
        """How far back the next reading of the counters must reach: to the newest sample used so far (plus 1 s for
        another host's clock), at most historySeconds; FIRST_WINDOW_S before any."""
        used = [t for rows in self.last_samples.values() for t, _ in rows.values()]
        if not used:
            return FIRST_WINDOW_S
        return min(max(1.0, now - max(used) + 1.0), max(self.planner.cfg.history_s, FIRST_WINDOW_S))

    def prompt_rate(self) -> float | None:
        """Prompt tokens/s of the last observation's bins (None when it carried none)."""
        obs = self.last_obs
        if obs is None or not obs.prompt_tokens:
            return None
        return sum(obs.prompt_tokens) / (len(obs.prompt_tokens) * self.planner.cfg.bin_s)


def count_for_role(role: str, plan: Plan) -> int:
    return plan.prefill if role == "Prefill" else plan.decode if role == "Decode" else max(plan.prefill, plan.decode)


def outcomes(policy: Policy, current: int, signals: PlannerSignals, obs_rate: float | None,
             wanted: int | None) -> tuple[MetricOutcome, ...]:
    """The planner's inputs as status rows: prompt tokens/s against the current replicas' capacity, decode
    sequences in flight against their slots, and the queue."""
    spec = policy.planner
    assert spec is not None
    err = signals.error
    g = signals.gauges
    in_flight = g["running"] + g.get("waiting", 0.0) if "running" in g else None
    return (
        MetricOutcome(f"Planner({spec.metric('promptTokens')} tok/s)", wanted, obs_rate,
                      spec.prefill_tokens_per_s * max(current, 1), None, err),
        MetricOutcome(f"Planner({spec.metric('running')}+waiting)", wanted, in_flight,
                      float(spec.decode_slots * max(current, 1)), None, err),
        MetricOutcome(f"Planner({spec.metric('waiting')})", wanted, g.get("waiting"), 0.0, None, err),
    )


def hold_decision(policy: Policy, current: int, signals: PlannerSignals) -> Decision:
    """A signal could not be read (hold, NoMetrics: the planner is not fed), or this was the first reading of the
    counters (hold, nothing to plan from yet)."""
    if signals.error:
        return Decision(current, current, Reason.NO_METRICS,
                        f"holding {current}: the planner's signals could not be read ({signals.error})",
                        outcomes(policy, current, signals, None, None))
    return Decision(current, current, Reason.WITHIN_TOLERANCE,
                    f"holding {current}: first reading of the planner's counters; it plans from the next "
                    "evaluation on (their increments)", outcomes(policy, current, signals, None, None))


def planned_decision(policy: Policy, current: int, plan: Plan, signals: PlannerSignals, rate: float | None,
                     capacity: Capacity | None = None) -> Decision:
    """The plan's count for this target, within min/maxReplicas and what fits now. Pure."""
    spec = policy.planner
    assert spec is not None
    wanted = count_for_role(spec.role, plan)
    rows = outcomes(policy, current, signals, rate, wanted)
    if current == 0 and policy.min_replicas > 0:
        return Decision(0, 0, Reason.SCALING_DISABLED, "the target has 0 replicas: autoscaling is off until it has "
                        "at least one (as HPA)", rows)
    notes = []
    desired = min(max(wanted, policy.min_replicas), policy.max_replicas)
    reason = Reason.WITHIN_TOLERANCE if desired == current else \
        Reason.SCALE_UP if desired > current else Reason.SCALE_DOWN
    if desired != wanted:
        reason = Reason.MIN_MAX
        notes.append(f"planner asked for {wanted}, held within {policy.min_replicas}..{policy.max_replicas}")
    desired, blocked, note = clamp_to_capacity(desired, current, capacity, policy)
    if note:
        reason = Reason.CAPACITY_BLOCKED
        notes.append(note)
    role = {"Prefill": "prefill", "Decode": "decode", "Aggregated": "max(prefill, decode)"}[spec.role]
    message = (f"{current} -> {desired} replicas (planner {role} = {wanted})" + ("; " + "; ".join(notes) if notes
                                                                                  else "") + f". {plan.reason}")
    return Decision(current, desired, reason, message, rows, blocked, desired)

