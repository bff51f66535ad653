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
from typing import Sequence

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


def window_misses(tokens: np.ndarray, requests: np.ndarray, per_replica_tps: float, slo_s: float, bin_s: float,
                  n_max: int) -> np.ndarray:
    """For one window of bins starting with an empty queue: misses[n], n = 0..n_max, the requests a fluid FIFO
    queue of n x `per_replica_tps` keeps past `slo_s` (as `fluid_miss_share`, every n at once; misses[0] is all
    of them: nothing serves)."""
    tokens = np.asarray(tokens, float)
    requests = np.asarray(requests, float)
    out = np.empty(n_max + 1)
    out[0] = requests.sum()
    if n_max <= 0 or len(tokens) == 0:
        out[1:] = 0.0
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prompt = np.where(requests > 0, tokens / np.maximum(requests, 1e-12), 0.0)
    cap = np.arange(1, n_max + 1, dtype=float)[:, None] * per_replica_tps
    s = np.cumsum(tokens[None, :] - cap * bin_s, axis=1)
    backlog = s - np.minimum.accumulate(np.minimum(s, 0.0), axis=1)
    before = np.concatenate((np.zeros((n_max, 1)), backlog[:, :-1]), axis=1)
    delay = np.maximum((before + tokens[None, :]) / cap, mean_prompt[None, :] / per_replica_tps)
    out[1:] = ((delay > slo_s) * requests[None, :]).sum(axis=1)
    return out


@dataclass(frozen=True)
class ClassPlan:
    """The cheapest per-class replica counts that would have kept `attainment` of the history's requests
    within the SLO: `replicas[c]` for each class seen, the Lagrange multiplier (replica-windows one avoided miss
    is worth) and the attainment the plan would have had over the history."""

    replicas: dict[int, int]
    price: float
    attainment: float


def cheapest_class_plan(classes: np.ndarray, misses: np.ndarray, requests: np.ndarray, attainment: float,
                        lo: int, hi: int, prior: dict[int, tuple[np.ndarray, float]] | None = None) -> ClassPlan:
    """Windows of the past (one row each: its class, misses[n] for n = 0..hi, its requests) and one replica
    count per class, the same for every window of the class (what a causal planner can do: it knows the class
    when it decides, not the window's arrivals). Minimises replica-windows subject to at most (1 - attainment)
    of all requests missed, by a Lagrangian: each class takes n minimising windows x n + price x misses(n), with
    the lowest price whose total misses fit the budget (the miss budget is spent where holding replicas costs
    the most per request saved, e.g. long idle stretches, instead of the same share in every class).

    `prior[c]` (misses[n], requests) of a window not seen but thought possible in class c: the class also counts
    it once (a rule of succession: a class seen k times gives what it has not shown yet the weight 1/(k+1)), so
    that thin evidence keeps headroom and the prior fades as the class's own windows accumulate."""
    classes = np.asarray(classes, int)
    misses = np.asarray(misses, float)
    requests = np.asarray(requests, float)
    if prior:
        uniq = [c for c in sorted(prior) if c in set(classes.tolist())]
        classes = np.concatenate((classes, np.array(uniq, int)))
        misses = np.concatenate((misses, np.stack([np.asarray(prior[c][0], float) for c in uniq])))
        requests = np.concatenate((requests, np.array([float(prior[c][1]) for c in uniq])))
    cls = sorted(set(classes.tolist()))
    count = np.array([float((classes == c).sum()) for c in cls])
    sums = np.stack([misses[classes == c].sum(axis=0) for c in cls]) if cls else np.zeros((0, misses.shape[1]))
    return cheapest_plan_of_sums(cls, count, sums, float(requests.sum()), attainment, lo, hi)


_PRICES = np.geomspace(1e-9, 1e9, 73)  # the price grid, 1/4 decade apart; refined between its two neighbours


def cheapest_plan_of_sums(cls: Sequence[int], count: np.ndarray, sums: np.ndarray, total: float,
                          attainment: float, lo: int, hi: int) -> ClassPlan:
    """`cheapest_class_plan` on per-class sums: windows per class, misses[n] summed over the class's windows
    (class x n, n = 0..), and all requests (what a caller that keeps the sums up to date passes)."""
    lo = max(0, lo)
    hi = max(lo, min(hi, sums.shape[1] - 1))
    if not len(cls):
        return ClassPlan({}, 0.0, 1.0)
    m = np.asarray(sums, float)[:, lo:hi + 1]  # class x n
    count = np.asarray(count, float)
    ns = np.arange(lo, hi + 1, dtype=float)
    budget = (1 - attainment) * total
    rows = np.arange(len(cls))

    def picks(prices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.argmin(count[None, :, None] * ns[None, None, :] + prices[:, None, None] * m[None], axis=2)
        return idx, m[rows[None, :], idx].sum(axis=1)

    idx_all, miss_all = picks(_PRICES)  # misses fall as the price rises
    ok = np.nonzero(miss_all <= budget)[0]
    if not len(ok):
        k = len(_PRICES) - 1
    elif ok[0] == 0:
        k = 0
    else:
        fine = np.geomspace(_PRICES[ok[0] - 1], _PRICES[ok[0]], 33)
        f_idx, f_miss = picks(fine)
        j = int(np.nonzero(f_miss <= budget)[0][0])
        idx_all, miss_all, k = f_idx, f_miss, j
        price = float(fine[j])
    if len(ok) == 0 or ok[0] == 0:
        price = float(_PRICES[k])
    idx = idx_all[k].copy()

    def missed(ix: np.ndarray) -> float:
        return float(m[rows, ix].sum())
    # the Lagrangian's answer can overshoot the budget (its counts move in steps): take replicas back, the
    # classes with the most windows first, while the misses still fit
    for c in np.argsort(-count, kind="stable"):
        while idx[c] > 0 and missed(idx) - m[c, idx[c]] + m[c, idx[c] - 1] <= budget:
            idx[c] -= 1
    att = 1 - missed(idx) / total if total > 0 else 1.0
    return ClassPlan({c: int(ns[i]) for c, i in zip(cls, idx)}, price, att)
