"""Offline placement simulator: every placement policy (Clique's engine and the baselines) on the same workload,
event by event. Pure apart from the progress callback: a snapshot and arrivals in, numbers out.

Two modes, as the workload allows:
    fill     arrivals in file order, nothing leaves (openb multigpu50, as in the FGD paper's experiments):
             the cluster's allocation ratio and its unallocated GPUs when the first gang does not fit
    timed    arrivals and departures at trace times (openb default, synthetic Dynamo mix): a gang that does
             not fit waits (FIFO retries on every departure); wait times are measured
A pod-by-pod baseline that places part of a gang keeps those GPUs for the gang's lifetime, as its bound pods
would in a real cluster; the gang counts as not placed.

One-domain share (multi-pod gangs, per level) three ways: `one_domain_share` over the gangs the policy placed,
`one_domain_share_all` over every one that arrived (one still waiting at the end counts as not in one domain),
and `one_domain_share_common` (`with_common_share`) over the gangs every compared policy placed. A policy that
places fewer gangs is not credited by the last two for the ones it left out.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Sequence

from scheduler.placement.types import Plan, PlanStatus, Snapshot
from simulations.workloads import Arrival


@dataclass
class SimResult:
    policy: str
    gangs: int
    placed: int = 0
    failed: int = 0  # fill: did not fit; timed: still waiting at the end
    partial_gangs: int = 0
    gpus_held_by_partial: int = 0
    first_failure_index: int | None = None
    allocation_ratio_at_first_failure: float | None = None
    unallocated_gpus: int | None = None  # at first failure
    stranded_gpus: int | None = None  # at first failure: free GPUs on hosts too small for the failing pod
    final_allocation_ratio: float = 0.0
    one_domain_share: dict[str, float] = field(default_factory=dict)  # per level, multi-pod gangs placed
    # per level, every multi-pod gang that arrived: one not placed (still waiting at the end) counts as not in one
    one_domain_share_all: dict[str, float] = field(default_factory=dict)
    gang_domains: dict[str, dict[str, int]] = field(default_factory=dict)  # placed multi-pod gang: domains per level
    multi_gangs: int = 0  # multi-pod gangs that arrived
    solve_ms: list[float] = field(default_factory=list)
    waits_s: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (time or arrival index, allocated share)

    def summary(self) -> dict:
        return {"policy": self.policy, "gangs": self.gangs, "placed": self.placed, "failed": self.failed,
                "partial_gangs": self.partial_gangs, "gpus_held_by_partial_gangs": self.gpus_held_by_partial,
                "first_failure_at": self.first_failure_index,
                "allocation_ratio_at_first_failure": _r(self.allocation_ratio_at_first_failure),
                "unallocated_gpus": self.unallocated_gpus, "stranded_gpus": self.stranded_gpus,
                "final_allocation_ratio": _r(self.final_allocation_ratio),
                "one_domain_share": {k: _r(v) for k, v in self.one_domain_share.items()},
                "one_domain_share_all": {k: _r(v) for k, v in self.one_domain_share_all.items()},
                "multi_gangs": self.multi_gangs, "gang_domains": self.gang_domains,
                "p99_solve_ms": pct(self.solve_ms, 0.99), "mean_solve_ms": _r(sum(self.solve_ms) / max(1, len(self.solve_ms))),
                "mean_wait_s": _r(sum(self.waits_s) / len(self.waits_s)) if self.waits_s else 0.0,
                "p99_wait_s": pct(self.waits_s, 0.99), "waited": sum(1 for w in self.waits_s if w > 0)}


def pct(xs: list[float], q: float) -> float:
    """The q-quantile of xs (nearest rank), 0 for none."""
    return round(sorted(xs)[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else 0.0


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _used(snap: Snapshot) -> int:
    return sum(h.gpus_used for h in snap.hosts.values())


def simulate(policy, base: Snapshot, arrivals: Sequence[Arrival], timed: bool,
             progress: Callable[[int, int], None] | None = None, samples: int = 200,
             until: float | None = None) -> SimResult:
    """One policy over the workload. `policy.place(snapshot, gang) -> Plan` (engine or baseline). `until`: stop
    at this trace time (what is still waiting then counts as failed), as a KWOK run ends at its last arrival."""
    total = sum(h.gpus for h in base.hosts.values()) or 1
    levels = [lv.name for lv in base.topology.levels]
    res = SimResult(getattr(policy, "name", type(policy).__name__), len(arrivals))
    inside = {lv: 0 for lv in levels}
    multi = 0
    snap = base
    every = max(1, len(arrivals) // samples)
    events: list[tuple[float, int, int, object]] = []  # (time, kind 0=departure first, seq, payload)
    for i, a in enumerate(arrivals):
        heapq.heappush(events, (a.time, 1, i, a))
    waiting: list[Arrival] = []  # timed mode: arrived, did not fit yet (FIFO)
    arrived = 0
    departures = iter(range(10**12))  # unique tie-breaker: gangs are not comparable

    def try_place(a: Arrival, now: float) -> bool:
        nonlocal snap, multi
        plan = policy.place(snap, a.gang)
        res.solve_ms.append(plan.solve_ms)
        if plan.placed:
            snap = snap.apply(a.gang, plan)
            res.placed += 1
            if timed:
                res.waits_s.append(max(0.0, now - a.time))
            if a.gang.pod_count > 1:
                multi += 1
                paths = [snap.topology.host_paths[h] for h in plan.hosts()]
                doms = {lv: len({p[: d + 1] for p in paths}) for d, lv in enumerate(levels)}
                res.gang_domains[a.gang.name] = doms
                for lv in levels:
                    inside[lv] += doms[lv] == 1
            if timed and a.duration is not None:
                heapq.heappush(events, (now + a.duration, 0, next(departures), (a.gang, plan)))
            return True
        part = getattr(plan, "partial", ())
        if part:  # pod-by-pod baseline: the bound part holds its GPUs
            held = Plan(a.gang.name, PlanStatus.PLACED, tuple(part))
            snap = snap.apply(a.gang, held)
            res.partial_gangs += 1
            res.gpus_held_by_partial += sum(next(r.gpus for r in a.gang.roles if r.name == x.role) for x in part)
            if timed and a.duration is not None:
                heapq.heappush(events, (now + a.duration, 0, next(departures), (a.gang, held)))
        if res.first_failure_index is None:
            used = _used(snap)
            res.first_failure_index = arrived
            res.allocation_ratio_at_first_failure = used / total
            res.unallocated_gpus = total - used
            need = max(r.gpus for r in a.gang.roles)
            res.stranded_gpus = sum(f[0] for f in snap.free_vectors.values() if 0 < f[0] < need)
        return False

    while events and (until is None or events[0][0] <= until):
        now, kind, seq, payload = heapq.heappop(events)
        if kind == 0:  # departure: release, then let waiting gangs retry in arrival order
            gang, plan = payload  # type: ignore[misc]
            snap = snap.apply(gang, plan, sign=-1)
            waiting = [w for j, w in enumerate(waiting) if j >= 64 or not try_place(w, now)]
            continue
        a: Arrival = payload  # type: ignore[assignment]
        arrived += 1
        res.multi_gangs += a.gang.pod_count > 1
        if not try_place(a, now):
            if timed:
                waiting.append(a)
            else:
                res.failed += 1
        if arrived % every == 0:
            res.timeline.append((now if timed else arrived, _used(snap) / total))
            if progress:
                progress(arrived, len(arrivals))
    if timed:
        res.failed = len(waiting)
    res.final_allocation_ratio = _used(snap) / total
    res.one_domain_share = {lv: inside[lv] / multi for lv in levels} if multi else {}
    res.one_domain_share_all = {lv: inside[lv] / res.multi_gangs for lv in levels} if res.multi_gangs else {}
    if progress:
        progress(len(arrivals), len(arrivals))
    return res


def one_domain_share_common(summaries: Sequence[dict]) -> dict[str, float]:
    """Per level, the one-domain share of the first summary's placements over the multi-pod gangs that every
    summary placed (`gang_domains`): the same gangs for each scheduler, so one that placed fewer, or easier,
    gangs is not credited for the ones it left out. Empty when no gang was placed by all."""
    if not summaries:
        return {}
    common = set(summaries[0].get("gang_domains", {}))
    for s in summaries[1:]:
        common &= set(s.get("gang_domains", {}))
    if not common:
        return {}
    doms = summaries[0]["gang_domains"]
    levels = list(next(iter(doms.values())))
    return {lv: round(sum(doms[g][lv] == 1 for g in common) / len(common), 4) for lv in levels}


def with_common_share(summaries: list[dict]) -> list[dict]:
    """Each summary with `one_domain_share_common` (over the gangs all of them placed) and `common_gangs` added."""
    common = set.intersection(*(set(s.get("gang_domains", {})) for s in summaries)) if summaries else set()
    return [{**s, "one_domain_share_common": one_domain_share_common([s] + [o for o in summaries if o is not s]),
             "common_gangs": len(common)} for s in summaries]


def run_all(policies: Sequence, base: Snapshot, arrivals: Sequence[Arrival], timed: bool,
            progress: Callable[[str, int, int], None] | None = None) -> list[SimResult]:
    out = []
    for p in policies:
        name = getattr(p, "name", type(p).__name__)
        out.append(simulate(p, base, arrivals, timed, (lambda d, n, name=name: progress(name, d, n)) if progress else None))
    return out


def table(results: list[SimResult], timed: bool) -> str:
    """One row per policy. One-domain share at the innermost level three ways: over the multi-pod gangs the
    policy placed, over all that arrived (`all`: one still waiting counts as not in one domain), and over the
    gangs every policy placed (`common`)."""
    rows = with_common_share([r.summary() for r in results])
    inner = next((k for r in rows for k in reversed(list(r["one_domain_share"]))), None)
    head = (f"{'policy':20} {'placed':>7} {'partial':>7} {'alloc@1st fail':>14} {'unalloc GPUs':>12} "
            f"{'stranded':>8} {'final alloc':>11} {('1-' + inner) if inner else '1-domain':>10} {'all':>5} "
            f"{'common':>6} {'p99 ms':>7}" + (f" {'mean wait s':>11}" if timed else ""))
    lines = [head]
    for r in rows:
        a = r["allocation_ratio_at_first_failure"]
        lines.append(f"{r['policy']:20} {r['placed']:>7} {r['partial_gangs']:>7} "
                     f"{(f'{a:.1%}' if a is not None else 'never'):>14} {str(r['unallocated_gpus'] or '-'):>12} "
                     f"{str(r['stranded_gpus'] if r['stranded_gpus'] is not None else '-'):>8} "
                     f"{r['final_allocation_ratio']:>11.1%} "
                     f"{(format(r['one_domain_share'].get(inner, 0), '.0%') if inner else '-'):>10} "
                     f"{_share(r['one_domain_share_all'], inner):>5} {_share(r['one_domain_share_common'], inner):>6} "
                     f"{r['p99_solve_ms']:>7}" + (f" {r['mean_wait_s']:>11.0f}" if timed else ""))
    return "\n".join(lines)


def _share(shares: dict[str, float], level: str | None) -> str:
    v = shares.get(level) if level else None
    return "-" if v is None else f"{v:.0%}"


def finish_allocation_plot(fig, ax, timed: bool, title: str, path, fill_xlabel: str, verb: str) -> None:
    """Axes, legend and file of an allocation-over-the-run plot (trace hours, or arrivals in file order)."""
    import matplotlib.pyplot as plt

    ax.set_xlabel("trace time (h)" if timed else fill_xlabel)
    ax.set_ylabel(f"share of cluster GPUs {verb}")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(results: list[SimResult], timed: bool, out_prefix, title: str) -> list:
    """Allocation over the run, and unallocated GPUs at first failure, per policy (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        xs, ys = zip(*r.timeline) if r.timeline else ((), ())
        ax.plot([x / 3600 for x in xs] if timed else xs, ys, label=r.policy, lw=2.2 if r.policy == "clique" else 1.2)
    p = f"{out_prefix}-allocation.png"
    finish_allocation_plot(fig, ax, timed, title, p, "pods submitted (file order)", "allocated")
    paths.append(p)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    names = [r.policy for r in results]
    vals = [r.unallocated_gpus if r.unallocated_gpus is not None else 0 for r in results]
    ax.barh(names, vals, color=["#2a7ab9" if n == "clique" else "#9aa7b4" for n in names])
    ax.invert_yaxis()
    ax.set_title("unallocated GPUs when the first gang does not fit (lower is better)", fontsize=10)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v}", va="center", fontsize=8)
    fig.tight_layout()
    p = f"{out_prefix}-unallocated.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    return paths
