"""The scaling decision: HPA v2's algorithm plus whole gangs and placement capacity. Pure (no clock, no I/O):
readings, history and `now` in, a Decision out.

Steps, in HPA's order (pkg/controller/podautoscaler):
    1. per metric: a replica recommendation from the usage ratio, with tolerance; per-pod metrics apply the
       missing-metric rule (missing pods count as 0 on a scale-up, as the target on a scale-down) and the
       not-ready rule (not-ready pods count as 0 on a scale-up and are ignored otherwise)
    2. the maximum over metrics; if any metric is missing only a scale-up may happen, if all are, hold
    3. stabilization: the lowest recommendation of the scale-up window, the highest of the scale-down window
    4. rate limits from the behavior policies over past scale events, then min/max replicas
    5. ours: capacity. A scale-up goes only as far as the placement engine says more gangs fit right now
       (minus gangs still pending); the rest is reported as blocked by capacity.
Replicas are whole gangs throughout; per-pod metrics are converted with podsPerReplica.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from autoscaler.policy import MetricSpec, Policy, ScalingRules


class Reason(str, enum.Enum):
    WITHIN_TOLERANCE = "WithinTolerance"
    SCALE_UP = "ScaleUp"
    SCALE_DOWN = "ScaleDown"
    STABILIZED = "Stabilized"  # the window held a change back
    RATE_LIMITED = "RateLimited"
    MIN_MAX = "MinMaxReplicas"
    CAPACITY_BLOCKED = "BlockedByCapacity"
    METRICS_MISSING = "MetricsMissing"  # some missing: only up allowed
    NO_METRICS = "NoMetrics"  # all missing: hold
    SCALING_DISABLED = "ScalingDisabled"  # target at 0 replicas, as HPA


@dataclass(frozen=True)
class PodSample:
    """One pod's value of a per-pod metric (None: the pod has no sample)."""

    pod: str
    ready: bool
    value: float | None


@dataclass(frozen=True)
class Reading:
    """What the metric sources returned for one metric spec."""

    spec: MetricSpec
    value: float | None = None  # aggregated value (Value / AverageValue targets)
    pods: tuple[PodSample, ...] = ()  # per-pod metrics
    error: str | None = None  # why it is missing (Prometheus down, no series, ...)

    @property
    def ok(self) -> bool:
        return self.error is None and (self.value is not None or any(p.value is not None for p in self.pods))


@dataclass(frozen=True)
class MetricOutcome:
    name: str
    replicas: int | None  # recommendation; None when missing
    current_value: float | None  # in the target's unit
    target: float
    ratio: float | None
    error: str | None = None


@dataclass
class History:
    """Per-policy memory between evaluations (the autoscaler's only state; lost on restart, as HPA's)."""

    recommendations: list[tuple[float, int]] = field(default_factory=list)  # (time, unstabilized recommendation)
    up_events: list[tuple[float, int]] = field(default_factory=list)  # (time, replicas added)
    down_events: list[tuple[float, int]] = field(default_factory=list)  # (time, replicas removed)

    def prune(self, now: float, keep_s: float) -> None:
        self.recommendations = [r for r in self.recommendations if now - r[0] <= keep_s]
        self.up_events = [e for e in self.up_events if now - e[0] <= keep_s]
        self.down_events = [e for e in self.down_events if now - e[0] <= keep_s]


@dataclass(frozen=True)
class Capacity:
    """What the placement engine said about more replicas of this gang shape."""

    fits: int  # more whole gangs that can be placed now, within the gang's topology constraint
    pending: int = 0  # gangs of this target created but not yet bound (they will take capacity first)
    reason: str = ""  # the engine's reason when fits is short


@dataclass(frozen=True)
class Decision:
    current: int  # gangs now
    desired: int  # gangs to set
    reason: Reason
    message: str
    metrics: tuple[MetricOutcome, ...]
    blocked_by_capacity: int = 0  # gangs wanted but not placeable
    unstabilized: int | None = None  # the raw recommendation (recorded in History)

    @property
    def changed(self) -> bool:
        return self.desired != self.current


def _within(ratio: float, up: ScalingRules, down: ScalingRules) -> bool:
    # HPA >= 1.33 allows separate tolerances per direction (HPAConfigurableTolerance)
    return (1 - down.tolerance) <= ratio <= (1 + up.tolerance)


def recommend(reading: Reading, current: int, policy: Policy) -> MetricOutcome:
    """Step 1 for one metric: a replica (gang) recommendation."""
    spec, tgt = reading.spec, reading.spec.target
    up, down = policy.scale_up, policy.scale_down
    if not reading.ok:
        return MetricOutcome(spec.name, None, None, tgt.value, None, reading.error or "no samples")
    if spec.per_pod and reading.pods:
        return _per_pod(reading, current, policy)
    value = float(reading.value if reading.value is not None else 0.0)
    if tgt.type == "AverageValue":  # external metric, total over the target: desired = ceil(total / target)
        ratio = value / (tgt.value * max(current, 1))
        rec = current if _within(ratio, up, down) else math.ceil(value / tgt.value)
        return MetricOutcome(spec.name, rec, value / max(current, 1), tgt.value, ratio)
    # Value and Utilization on one aggregated number: scale in proportion
    ratio = value / tgt.value
    rec = current if _within(ratio, up, down) else math.ceil(ratio * current)
    return MetricOutcome(spec.name, rec, value, tgt.value, ratio)


def _per_pod(reading: Reading, current: int, policy: Policy) -> MetricOutcome:
    """HPA's calcPlainMetricReplicas / resource rules over pods, then pods -> whole gangs."""
    spec, target = reading.spec, reading.spec.target.value
    up, down = policy.scale_up, policy.scale_down
    ppr = policy.pods_per_replica
    current_pods = current * ppr
    ready = {p.pod: p.value for p in reading.pods if p.ready and p.value is not None}
    missing = [p.pod for p in reading.pods if p.ready and p.value is None]
    unready = [p.pod for p in reading.pods if not p.ready]
    if not ready:
        return MetricOutcome(spec.name, None, None, target, None, "no ready pod has a sample")
    avg = sum(ready.values()) / len(ready)
    ratio = avg / target
    scale_up_with_unready = bool(unready) and ratio > 1
    if not scale_up_with_unready and not missing:
        if _within(ratio, up, down):
            return MetricOutcome(spec.name, current, avg, target, ratio)
        pods = math.ceil(ratio * len(ready))
        return MetricOutcome(spec.name, math.ceil(pods / ppr), avg, target, ratio)
    values = dict(ready)
    for p in missing:
        values[p] = target if ratio < 1 else 0.0
    if scale_up_with_unready:
        for p in unready:
            values[p] = 0.0
    new_ratio = (sum(values.values()) / len(values)) / target
    if _within(new_ratio, up, down) or (ratio > 1 > new_ratio) or (ratio < 1 < new_ratio):
        return MetricOutcome(spec.name, current, avg, target, new_ratio)
    pods = math.ceil(new_ratio * len(values))
    if (new_ratio < 1 and pods > current_pods) or (new_ratio > 1 and pods < current_pods):
        return MetricOutcome(spec.name, current, avg, target, new_ratio)
    return MetricOutcome(spec.name, math.ceil(pods / ppr), avg, target, new_ratio)


def _change_in_period(events: list[tuple[float, int]], now: float, period: int) -> int:
    return sum(n for t, n in events if now - t < period)


def _rate_limit(current: int, history: History, rules: ScalingRules, now: float, up: bool) -> int:
    """HPA's calculateScaleUpLimitWithScalingRules (up) and calculateScaleDownLimitWithBehaviors (down): each
    policy proposes a bound from the replicas at the start of its period; selectPolicy Max takes the bound that
    allows the biggest change, Min the smallest."""
    if rules.select == "Disabled" or not rules.policies:
        return current
    biggest_change = max if up else min
    pick = biggest_change if rules.select == "Max" else (min if up else max)
    proposals = []
    for p in rules.policies:
        start = (current - _change_in_period(history.up_events, now, p.period_s)
                 + _change_in_period(history.down_events, now, p.period_s))
        if p.type == "Pods":
            proposals.append(start + p.value if up else start - p.value)
        else:  # up rounds up, or a small target could never grow; down truncates, as HPA
            proposals.append(math.ceil(start * (1 + p.value / 100)) if up else int(start * (1 - p.value / 100)))
    return pick(proposals)


def scale_up_limit(current: int, history: History, rules: ScalingRules, now: float) -> int:
    return _rate_limit(current, history, rules, now, up=True)


def scale_down_limit(current: int, history: History, rules: ScalingRules, now: float) -> int:
    return _rate_limit(current, history, rules, now, up=False)


def clamp_to_capacity(desired: int, current: int, capacity: Capacity | None, policy: Policy) -> tuple[int, int, str]:
    """Never a replica that cannot be placed: a scale-up is cut to the whole gangs that fit now (less those still
    pending). Returns (desired, replicas blocked, a note saying so or "")."""
    if desired <= current or capacity is None or not policy.capacity_aware:
        return desired, 0, ""
    room = max(0, capacity.fits - capacity.pending)
    if desired - current <= room:
        return desired, 0, ""
    blocked = desired - current - room
    note = (f"{blocked} more replica(s) of {policy.gang.pods}x{policy.gang.gpus_per_pod} GPUs blocked by capacity"
            + (f" ({capacity.reason})" if capacity.reason else "")
            + (f"; {capacity.pending} still pending" if capacity.pending else ""))
    return current + room, blocked, note


def decide(policy: Policy, current: int, readings: list[Reading], history: History, now: float,
           capacity: Capacity | None = None) -> Decision:
    """The whole decision for one evaluation. Does not modify `history`: call `record` with the result."""
    outcomes = tuple(recommend(r, current, policy) for r in readings)
    if current == 0 and policy.min_replicas > 0:
        return Decision(0, 0, Reason.SCALING_DISABLED, "the target has 0 replicas: autoscaling is off until it has "
                        "at least one (as HPA)", outcomes)
    valid = [o.replicas for o in outcomes if o.replicas is not None]
    missing = [o for o in outcomes if o.replicas is None]
    if not valid:
        why = "; ".join(f"{o.name}: {o.error}" for o in missing) or "no metrics configured"
        return Decision(current, current, Reason.NO_METRICS, f"holding {current}: no metric could be read ({why})",
                        outcomes)
    # phase 2: the maximum over metrics; missing metrics forbid scaling down
    raw = max(valid)
    reason, notes = Reason.WITHIN_TOLERANCE, []
    if missing and raw < current:
        raw = current
        reason = Reason.METRICS_MISSING
        notes.append("not scaling down while " + ", ".join(o.name for o in missing) + " cannot be read")
    # clamp to min/max before stabilizing (HPA records the clamped recommendation)
    rec = min(max(raw, policy.min_replicas), policy.max_replicas)
    # phase 3: stabilization windows
    up_cut, down_cut = now - policy.scale_up.stabilization_s, now - policy.scale_down.stabilization_s
    up_rec, down_rec = rec, rec
    for t, r in history.recommendations:
        if t > up_cut:
            up_rec = min(up_rec, r)
        if t > down_cut:
            down_rec = max(down_rec, r)
    stabilized = min(max(current, up_rec), down_rec)
    if stabilized != rec:
        reason = Reason.STABILIZED
        notes.append(f"recommendation {rec} held at {stabilized} by the stabilization window")
    # phase 4: rate limits and bounds
    desired = stabilized
    if desired > current:
        limit = max(scale_up_limit(current, history, policy.scale_up, now), current)
        if desired > limit:
            notes.append(f"scale-up limited to {limit} by behavior.scaleUp policies")
            desired, reason = limit, Reason.RATE_LIMITED
        if desired > policy.max_replicas:
            desired, reason = policy.max_replicas, Reason.MIN_MAX
    elif desired < current:
        limit = min(scale_down_limit(current, history, policy.scale_down, now), current)
        floor = max(policy.min_replicas, limit)
        if desired < floor:
            if limit > policy.min_replicas:
                notes.append(f"scale-down limited to {limit} by behavior.scaleDown policies")
                reason = Reason.RATE_LIMITED
            desired = floor
    if current > policy.max_replicas or current < policy.min_replicas:
        desired = min(max(desired, policy.min_replicas), policy.max_replicas)
        reason = Reason.MIN_MAX
    # phase 5: capacity (ours)
    desired, blocked, note = clamp_to_capacity(desired, current, capacity, policy)
    if note:
        reason = Reason.CAPACITY_BLOCKED
        notes.append(note)
    if desired != current and reason in (Reason.WITHIN_TOLERANCE, Reason.METRICS_MISSING, Reason.STABILIZED):
        reason = Reason.SCALE_UP if desired > current else Reason.SCALE_DOWN
    detail = ", ".join(f"{o.name}={_fmt(o.current_value)}/{_fmt(o.target)}" if o.replicas is not None
                       else f"{o.name} missing ({o.error})" for o in outcomes)
    message = f"{current} -> {desired} replicas ({detail})" + ("; " + "; ".join(notes) if notes else "")
    return Decision(current, desired, reason, message, outcomes, blocked, rec)


def record(history: History, decision: Decision, now: float, applied: bool, keep_s: float = 3600) -> None:
    """Remember the recommendation, and the scale event when the change was applied."""
    if decision.unstabilized is not None:
        history.recommendations.append((now, decision.unstabilized))
    if applied and decision.desired > decision.current:
        history.up_events.append((now, decision.desired - decision.current))
    elif applied and decision.desired < decision.current:
        history.down_events.append((now, decision.current - decision.desired))
    history.prune(now, keep_s)


def _fmt(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.4g}"
