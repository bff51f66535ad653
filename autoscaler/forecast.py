"""Load forecasts for the planner (autoscaler/planner.py). Pure and deterministic: numbers in, numbers out, no
clock and no I/O.

    trend      a least-squares line through the recent per-evaluation rates; its slope is kept only when it is
               significant (|t| >= 2), so noise is not extrapolated
    seasonal   a time-of-day profile (one value per slot of the day, smoothed across days); it forecasts only
               once a whole day has been seen, so a short trace never uses it
    bursts     a fluid FIFO queue replayed over the recent arrivals per short bin (the reflected random walk
               W_k = S_k - min(0, min_{j<=k} S_j) with S the cumulative sum of arrivals minus capacity): the
               share of requests that would have waited past the TTFT SLO with n replicas, and the fewest
               replicas that keep that share below a target
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DAY_S = 86400.0


@dataclass(frozen=True)
class Trend:
    level: float  # the fitted value now
    slope: float  # per second; 0 when not significant
    samples: int

    def at(self, dt: float) -> float:
        return max(0.0, self.level + self.slope * dt)

    def peak(self, horizon_s: float) -> float:
        """The highest value of the line over the next horizon_s (now included)."""
        return max(self.at(0.0), self.at(horizon_s))


def trend(ts: np.ndarray, values: np.ndarray, now: float, window_s: float, min_t: float = 2.0) -> Trend:
    """A line through the samples of the last window_s. With fewer than 4 samples the level is their mean and the
    slope 0; a slope whose t-statistic is below min_t is dropped (the level is then the window's mean)."""
    keep = ts > now - window_s
    t, v = ts[keep], values[keep]
    if len(t) == 0:
        return Trend(0.0, 0.0, 0)
    mean = float(v.mean())
    if len(t) < 4:
        return Trend(mean, 0.0, len(t))
    x = t - now
    xm = x.mean()
    sxx = float(((x - xm) ** 2).sum())
    if sxx <= 0:
        return Trend(mean, 0.0, len(t))
    slope = float(((x - xm) * (v - mean)).sum() / sxx)
    resid = v - (mean + slope * (x - xm))
    se = math.sqrt(float((resid ** 2).sum()) / max(1, len(t) - 2) / sxx)
    if se > 0 and abs(slope) / se < min_t or se == 0 and slope == 0:
        return Trend(mean, 0.0, len(t))
    return Trend(max(0.0, mean + slope * (0 - xm)), slope, len(t))


@dataclass
class SeasonalProfile:
    """The mean rate per slot of the day (slot_s long), an exponential average across days (weight `alpha` for
    the newest day). Forecasts once `DAY_S` of observations have been seen."""

    slot_s: float = 900.0
    alpha: float = 0.5
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    first: float | None = None
    _acc: tuple[int, float, float] | None = None  # (slot index since epoch, sum of rate x dt, dt)

    def __post_init__(self) -> None:
        n = int(round(DAY_S / self.slot_s))
        self.values = np.zeros(n)
        self.seen = np.zeros(n, dtype=bool)

    def add(self, t: float, rate: float, dt: float) -> None:
        if self.first is None:
            self.first = t - dt
        slot = int(t // self.slot_s)
        if self._acc is not None and self._acc[0] != slot:
            self._close()
        s, num, den = self._acc if self._acc is not None else (slot, 0.0, 0.0)
        self._acc = (slot, num + rate * dt, den + dt)

    def _close(self) -> None:
        assert self._acc is not None
        slot, num, den = self._acc
        self._acc = None
        if den <= 0:
            return
        k = slot % len(self.values)
        mean = num / den
        self.values[k] = mean if not self.seen[k] else self.alpha * mean + (1 - self.alpha) * self.values[k]
        self.seen[k] = True

    def ready(self, now: float) -> bool:
        return self.first is not None and now - self.first >= DAY_S and bool(self.seen.all())

    def ratio(self, now: float, horizon_s: float) -> float | None:
        """The profile's highest value over [now, now + horizon_s] over its value now (neighbouring slots
        averaged, so one noisy slot does not decide); None until a whole day has been seen."""
        if not self.ready(now):
            return None
        n = len(self.values)
        smooth = (np.roll(self.values, 1) + self.values + np.roll(self.values, -1)) / 3
        k0 = int(now // self.slot_s)
        k1 = int((now + horizon_s) // self.slot_s)
        base = smooth[k0 % n]
        if base <= 0:
            return None
        return float(max(smooth[k % n] for k in range(k0, k1 + 1)) / base)


def fluid_miss_share(tokens: np.ndarray, requests: np.ndarray, mean_prompt: np.ndarray, replicas: int,
                     per_replica_tps: float, slo_s: float, bin_s: float) -> float:
    """The share of requests that a fluid FIFO queue with `replicas` x `per_replica_tps` would have kept past
    `slo_s`: per bin, the backlog left by the bins before plus the bin's own arrivals must be served within the
    SLO, and no prompt is served faster than one replica (its mean prompt / per_replica_tps)."""
    total = float(requests.sum())
    if total <= 0:
        return 0.0
    if replicas <= 0:
        return 1.0
    cap = replicas * per_replica_tps
    s = np.cumsum(tokens - cap * bin_s)
    backlog = s - np.minimum.accumulate(np.minimum(s, 0.0))  # after each bin
    before = np.concatenate(([0.0], backlog[:-1]))
    delay = np.maximum((before + tokens) / cap, mean_prompt / per_replica_tps)
    return float(requests[delay > slo_s].sum() / total)


def replicas_for_attainment(tokens: np.ndarray, requests: np.ndarray, per_replica_tps: float, slo_s: float,
                            bin_s: float, attainment: float, lo: int, hi: int) -> tuple[int, float]:
    """The fewest replicas in [lo, hi] whose fluid replay of the bins keeps at least `attainment` of the
    requests within the SLO (hi if none does), and the attainment it gives. Prompts that one replica cannot
    prefill within the SLO are left out of the bins by the caller: nobody can serve them in time."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prompt = np.where(requests > 0, tokens / np.maximum(requests, 1e-12), 0.0)
    lo = max(lo, 1)
    if fluid_miss_share(tokens, requests, mean_prompt, hi, per_replica_tps, slo_s, bin_s) > 1 - attainment:
        return hi, 1 - fluid_miss_share(tokens, requests, mean_prompt, hi, per_replica_tps, slo_s, bin_s)
    a, b = lo, hi  # the share is monotone in replicas: binary search
    while a < b:
        m = (a + b) // 2
        if fluid_miss_share(tokens, requests, mean_prompt, m, per_replica_tps, slo_s, bin_s) <= 1 - attainment:
            b = m
        else:
            a = m + 1
    return a, 1 - fluid_miss_share(tokens, requests, mean_prompt, a, per_replica_tps, slo_s, bin_s)
