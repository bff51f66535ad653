"""Where a `clique bench e2e` phase's time goes: kube-scheduler's own metrics, the extender's, and the CPU seconds
of every process on the machine's cores. Parsing and arithmetic are pure; `sample()` reads /metrics and /proc.

kube-scheduler metric names and labels: k8s.io/kubernetes v1.37.2 pkg/scheduler/metrics/metrics.go
(subsystem `scheduler`): schedule_attempts_total{result,profile}, scheduling_attempt_duration_seconds{result,profile},
scheduling_algorithm_duration_seconds (no labels),
framework_extension_point_duration_seconds{extension_point,status,profile}, batch_attempts_total{profile,result}
(OpportunisticBatching, beta and on by default since 1.35: pkg/features/kube_features.go).
kube-apiserver's (k8s.io/apiserver v0.37.2): apiserver_request_total and apiserver_request_duration_seconds
{verb,dry_run,group,version,resource,subresource,scope,component} (pkg/endpoints/metrics/metrics.go),
apiserver_admission_webhook_admission_duration_seconds{name,type,operation,rejected}
(pkg/admission/metrics/metrics.go).
"""

from __future__ import annotations

import os
import re
import ssl
import time
import urllib.request
from dataclasses import dataclass, field

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]
_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
WANTED = ("scheduler_schedule_attempts_total", "scheduler_scheduling_attempt_duration_seconds_sum",
          "scheduler_scheduling_attempt_duration_seconds_count", "scheduler_scheduling_algorithm_duration_seconds_sum", "scheduler_framework_extension_point_duration_seconds_sum",
          "scheduler_batch_attempts_total", "clique_extender_request_seconds_sum", "clique_extender_request_seconds_count",
          "clique_extender_filter_calls_total", "apiserver_request_total", "apiserver_request_duration_seconds_sum",
          "apiserver_admission_webhook_admission_duration_seconds_sum")


def parse_prometheus(text: str, wanted: tuple[str, ...] = WANTED) -> Series:
    """The samples of the named metrics in Prometheus text format, keyed by (name, sorted labels)."""
    out: Series = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _LINE.match(line)
        if not m or m.group(1) not in wanted:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[(m.group(1), tuple(sorted(_LABEL.findall(m.group(2) or ""))))] = value
    return out


def total(series: Series, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in series.items() if n == name and set(labels.items()) <= set(ls))


def delta(after: Series, before: Series) -> Series:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def by_label(series: Series, name: str, label: str, **labels: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, ls), v in series.items():
        d = dict(ls)
        if n == name and set(labels.items()) <= set(ls) and label in d:
            out[d[label]] = out.get(d[label], 0.0) + v
    return out


@dataclass
class Sample:
    at: float
    metrics: dict[str, Series] = field(default_factory=dict)  # source -> series
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds so far


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (/proc/PID/stat fields 14 and 15), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _get(url: str) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the components' self-signed serving certs
    with urllib.request.urlopen(url, timeout=10, context=ctx if url.startswith("https") else None) as resp:
        return resp.read().decode()


def sample(metric_urls: dict[str, str], pids: dict[str, int], readers: dict | None = None) -> Sample:
    """`readers`: source -> callable returning Prometheus text (for endpoints that need credentials)."""
    s = Sample(time.perf_counter())
    for source, url in metric_urls.items():
        try:
            s.metrics[source] = parse_prometheus(_get(url))
        except OSError:
            s.metrics[source] = {}
    for source, read in (readers or {}).items():
        try:
            s.metrics[source] = parse_prometheus(read())
        except Exception:  # noqa: BLE001 - a figure missing from the breakdown, not a failed benchmark
            s.metrics[source] = {}
    for name, pid in pids.items():
        c = cpu_seconds(pid)
        if c is not None:
            s.cpu[name] = c
    return s


def breakdown(before: Sample, after: Sample, scheduler: str, profile: str, pods: int) -> dict:
    """Per-pod figures of one phase: kube-scheduler's attempts and time per extension point (`scheduler` is the
    metrics source of the kube-scheduler that served the phase, `profile` its profile), the extender's time per
    verb, and CPU milliseconds per bound pod of each process."""
    wall = max(1e-9, after.at - before.at)
    ks = delta(after.metrics.get(scheduler, {}), before.metrics.get(scheduler, {}))
    ext = delta(after.metrics.get("extender", {}), before.metrics.get("extender", {}))
    n = max(1, pods)
    attempts = by_label(ks, "scheduler_schedule_attempts_total", "result", profile=profile)
    attempt_s = total(ks, "scheduler_scheduling_attempt_duration_seconds_sum", profile=profile)
    # the algorithm (filter and score, extenders included) is the serial part of kube-scheduler's cycle; an
    # attempt's duration also counts its binding, which runs in parallel with the next pods' cycles
    cycle_s = total(ks, "scheduler_scheduling_algorithm_duration_seconds_sum")
    points = by_label(ks, "scheduler_framework_extension_point_duration_seconds_sum", "extension_point", profile=profile)
    cpu = {k: round(1000 * (after.cpu[k] - before.cpu.get(k, after.cpu[k])) / n, 2) for k in after.cpu}
    row = {
        "wall_s": round(wall, 1),
        "attempts_per_pod": {k: round(v / n, 2) for k, v in sorted(attempts.items())},
        "batched_per_pod": {k: round(v / n, 2) for k, v in sorted(
            by_label(ks, "scheduler_batch_attempts_total", "result", profile=profile).items())},
        # the scheduling cycle is serial: its share of the wall time says whether kube-scheduler was the bottleneck
        "attempt_ms_per_pod": round(1000 * attempt_s / n, 2),
        "cycle_ms_per_pod": round(1000 * cycle_s / n, 2),
        "cycle_busy_share": round(cycle_s / wall, 3),
        "extension_point_ms_per_pod": {k: round(1000 * v / n, 2) for k, v in sorted(points.items()) if v > 0},
        "cpu_ms_per_pod": dict(sorted(cpu.items())),
        "cpu_busy_share": round(sum(after.cpu[k] - before.cpu.get(k, after.cpu[k]) for k in after.cpu)
                                / (wall * (os.cpu_count() or 1)), 3),
    }
    api = delta(after.metrics.get("apiserver", {}), before.metrics.get("apiserver", {}))
    writes: dict[str, float] = {}
    reads: dict[str, float] = {}
    seconds: dict[str, float] = {}  # time inside kube-apiserver per (verb, resource): where its CPU likely goes
    webhook_s = 0.0
    for (name, ls), v in api.items():
        d = dict(ls)
        what = f"{d.get('verb')} {d.get('resource')}{'/' + d['subresource'] if d.get('subresource') else ''}"
        if name == "apiserver_request_total" and v > 0 and d.get("verb") != "WATCH":
            into = reads if d.get("verb") in ("GET", "LIST") else writes
            into[what] = into.get(what, 0.0) + v
        elif name == "apiserver_request_duration_seconds_sum" and v > 0 and d.get("verb") != "WATCH":
            seconds[what] = seconds.get(what, 0.0) + v
        elif name == "apiserver_admission_webhook_admission_duration_seconds_sum" and v > 0:
            webhook_s += v
    if writes:
        row["api_writes_per_pod"] = {k: round(v / n, 2) for k, v in sorted(writes.items()) if v / n >= 0.01}
    if reads:
        row["api_reads_per_pod"] = {k: round(v / n, 2) for k, v in sorted(reads.items()) if v / n >= 0.01}
    if seconds:
        row["api_ms_per_pod"] = {k: round(1000 * v / n, 2) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])
                                 if 1000 * v / n >= 0.05}
    if webhook_s:
        row["webhook_ms_per_pod"] = round(1000 * webhook_s / n, 2)
    verbs = by_label(ext, "clique_extender_request_seconds_sum", "verb")
    if verbs:
        calls = by_label(ext, "clique_extender_request_seconds_count", "verb")
        row["extender_ms_per_pod"] = {v: round(1000 * s / n, 2) for v, s in sorted(verbs.items()) if s > 0}
        row["extender_calls_per_pod"] = {v: round(c / n, 2) for v, c in sorted(calls.items()) if c > 0}
        row["filter_scope_per_pod"] = {k: round(v / n, 2) for k, v in sorted(
            by_label(ext, "clique_extender_filter_calls_total", "scope").items())}
    return row
