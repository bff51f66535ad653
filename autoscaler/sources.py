"""Metric sources: PromQL through prometheus-api-client, or a direct scrape of an exporter's /metrics (the node
agent serves DCGM-named GPU memory the same way). Side effects: HTTP reads only.

`build_query` is pure and tested on its own; `read_metric` turns a MetricSpec into a Reading and never raises:
an unreachable Prometheus, an empty result or an unparsable exposition becomes Reading.error, which the
algorithm treats as a missing metric (hold, never scale down on it).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable

from autoscaler.algorithm import PodSample, Reading
from autoscaler.planned import PlannerSignals
from autoscaler.policy import DCGM_FB_MIB, MetricSpec, PlannerSpec

log = logging.getLogger("clique.autoscaler.sources")
MiB = 2**20
# The labels dcgm-exporter puts the GPU's pod in (NVIDIA/dcgm-exporter 4.5.3-4.8.2
# internal/pkg/transformation/const.go). Prometheus renames a scraped label exported_<name> when the target has a
# label of that name and honor_labels is off, as in dcgm-exporter's Helm chart (deployment/values.yaml:
# serviceMonitor.honorLabels: false): then `pod` / `namespace` are dcgm-exporter's own and the GPU's pod is in
# exported_pod / exported_namespace. Per-pod queries read either.
POD_LABELS = ("namespace", "pod", "container")


def _matchers(pairs: tuple[tuple[str, str], ...]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs) + "}" if pairs else ""


def _per_pod(spec: MetricSpec, metric: str) -> str:
    """`metric` with the selector, its series labelled with their pod in `spec.pod_label` whether Prometheus kept
    the label or renamed it exported_<label>. A selector on namespace / pod / container matches either spelling."""
    src = f"{metric}{_matchers(spec.selector)}"
    renamed = tuple((f"exported_{k}" if k in POD_LABELS else k, v) for k, v in spec.selector)
    if renamed != spec.selector:
        src = f"({src} or {metric}{_matchers(renamed)})"
    by = spec.pod_label
    return f'label_replace({src}, "{by}", "$1", "exported_{by}", "(.+)")'


def build_query(spec: MetricSpec) -> str:
    """The PromQL for one metric spec. Per-pod kinds return one series per pod (label `spec.pod_label`)."""
    sel, by = _matchers(spec.selector), spec.pod_label
    if spec.query:
        return spec.query

    def series(metric: str) -> str:
        return _per_pod(spec, metric) if spec.per_pod else f"{metric}{sel}"

    def agg(op: str) -> str:
        return f"{op} by ({by})" if spec.per_pod else op

    if spec.type == "QueueDepth":
        return f"sum({spec.metric}{sel})"
    if spec.type == "KVCacheUsage":
        inner = f"{agg('avg')} ({series(spec.metric or '')})"
        return f"{inner} * {spec.scale:g}" if spec.scale != 1 else inner
    if spec.type == "GPUMemory":
        if spec.metric:  # DCGM_FI_DEV_FB_USED_PERCENT: a 0..1 fraction per GPU
            return f"100 * {agg('avg')} ({series(spec.metric)})"
        used = f"{agg('sum')} ({series(spec.used_metric or DCGM_FB_MIB[0])})"  # MiB
        if spec.target.type == "AverageValue":  # bytes per pod (or in total when not per pod)
            return f"{used} * {MiB}"
        free = f"{agg('sum')} ({series(spec.free_metric or DCGM_FB_MIB[1])})"
        return f"100 * {used} / ({used} + {free})"
    if spec.type == "Latency":
        return (f"histogram_quantile({spec.quantile:g}, sum by (le) (rate({spec.metric}_bucket{sel}"
                f"[{spec.window}])))")
    raise ValueError(f"metric type {spec.type} has no query")


@dataclass(frozen=True)
class TargetPod:
    name: str
    ready: bool


class PrometheusSource:
    """PromQL queries through prometheus-api-client (a blocking client, so each call runs in a thread)."""

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url
        # no retries: the next evaluation is the retry, and a down Prometheus must not stall the loop
        self.client = PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=0), timeout=timeout_s)

    async def query(self, promql: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.client.custom_query, promql)


async def read_metric(spec: MetricSpec, prometheus: PrometheusSource | None, pods: Iterable[TargetPod],
                      http: Any = None) -> Reading:
    """One Reading for one spec; errors are captured in the Reading."""
    try:
        if spec.source == "Scrape":
            return await _read_scrape(spec, http)
        if prometheus is None:
            return Reading(spec, error="no Prometheus URL configured (--prometheus-url)")
        promql = build_query(spec)
        try:
            result = await prometheus.query(promql)
        except Exception as exc:  # requests/urllib3 errors, HTTP errors, bad PromQL: all mean "missing"
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            return Reading(spec, error=f"Prometheus {prometheus.url} query failed: {first}")
        return _from_vector(spec, result, list(pods), promql)
    except Exception as exc:  # a defect in one metric must not stop the others
        log.exception("metric %s failed", spec.name)
        return Reading(spec, error=f"{type(exc).__name__}: {exc}")


def _value(sample: dict[str, Any]) -> float | None:
    try:
        v = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def _from_vector(spec: MetricSpec, result: list[dict[str, Any]], pods: list[TargetPod], promql: str) -> Reading:
    if spec.per_pod:
        by_pod: dict[str, float] = {}
        for s in result:
            labels = s.get("metric") or {}  # a query override may leave the renamed label as it came
            pod, v = labels.get(f"exported_{spec.pod_label}") or labels.get(spec.pod_label), _value(s)
            if pod is not None and v is not None:
                by_pod[pod] = v
        if not pods:
            return Reading(spec, error="the target has no pods to read")
        samples = tuple(PodSample(p.name, p.ready, by_pod.get(p.name)) for p in pods)
        if not any(s.value is not None for s in samples):
            return Reading(spec, pods=samples, error=f"no series for the target's pods from {promql}")
        return Reading(spec, pods=samples)
    values = [v for s in result if (v := _value(s)) is not None]
    if not values:
        return Reading(spec, error=f"no samples from {promql}")
    return Reading(spec, value=sum(values))


async def _read_scrape(spec: MetricSpec, http: Any) -> Reading:
    """Read exporters' /metrics directly: no Prometheus round trip, so the freshest value."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    own = http is None
    session = http or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
    samples: list[tuple[str, dict[str, str], float]] = []
    errors = []
    try:
        for url in spec.endpoints:
            try:
                async with session.get(url) as resp:
                    if resp.status != 200:
                        errors.append(f"{url}: HTTP {resp.status}")
                        continue
                    text = await resp.text()
                for fam in text_string_to_metric_families(text):
                    for s in fam.samples:
                        samples.append((s.name, dict(s.labels), float(s.value)))
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                errors.append(f"{url}: {type(exc).__name__} {exc}".strip())
    finally:
        if own:
            await session.close()
    sel = dict(spec.selector)

    def pick(name: str) -> list[float]:
        return [v for n, labels, v in samples if n == name and all(labels.get(k) == x for k, x in sel.items())
                and not math.isnan(v)]

    value: float | None = None
    if spec.type == "QueueDepth":
        vals = pick(spec.metric or "")
        value = sum(vals) if vals else None
    elif spec.type == "KVCacheUsage":
        vals = pick(spec.metric or "")
        value = sum(vals) / len(vals) * spec.scale if vals else None
    elif spec.type == "GPUMemory" and spec.metric:  # DCGM_FI_DEV_FB_USED_PERCENT, 0..1 per GPU
        vals = pick(spec.metric)
        value = 100 * sum(vals) / len(vals) if vals else None
    elif spec.type == "GPUMemory":
        used = [v * MiB for v in pick(spec.used_metric or DCGM_FB_MIB[0])]
        free = [v * MiB for v in pick(spec.free_metric or DCGM_FB_MIB[1])]
        if used and spec.target.type == "AverageValue":
            value = sum(used) / len(used)
        elif used and free:
            value = 100 * sum(used) / (sum(used) + sum(free))
    if value is None:
        name = spec.metric or f"{spec.used_metric or DCGM_FB_MIB[0]} / {spec.free_metric or DCGM_FB_MIB[1]}"
        why = "; ".join(errors) if errors else f"no {name} samples matching {sel or '{}'}"
        return Reading(spec, error=f"scrape: {why}")
    return Reading(spec, value=value)


def planner_queries(spec: PlannerSpec, window_s: float | None = None) -> dict[str, str]:
    """The PromQL per planner signal: counters unaggregated (one series each, their increments are taken per series
    so that one pod's reset does not look like negative load), gauges summed. `window_s`: the counters as a range
    selector over that many seconds (whole milliseconds), so that every sample Prometheus holds comes back with its
    timestamp (autoscaler/planned.py says why)."""
    sel = _matchers(spec.selector)
    rng = f"[{max(1, math.ceil(window_s * 1000))}ms]" if window_s is not None else ""
    return {s: (f"{spec.metric(s)}{sel}{rng}" if s in ("promptTokens", "requests") else f"sum({spec.metric(s)}{sel})")
            for s in ("promptTokens", "requests", "waiting", "running")}


def _samples(series: dict[str, Any]) -> list[tuple[float, float]]:
    """A range vector's samples (prometheus/prometheus docs/querying/api.md, "Range vectors": result type
    `matrix`, each series with `values: [[<unix_time>, "<sample_value>"], ...]`), oldest first, NaN/Inf left out."""
    out = []
    for row in series.get("values") or []:
        try:
            t, v = float(row[0]), float(row[1])
        except (IndexError, TypeError, ValueError):
            continue
        if not (math.isnan(v) or math.isinf(v)):
            out.append((t, v))
    return sorted(out)


async def read_planner_signals(spec: PlannerSpec, prometheus: PrometheusSource | None,
                               window_s: float | None = None) -> PlannerSignals:
    """The planner's signals for one evaluation; never raises (what failed is in `error`). `window_s`: read the
    counters' samples of that many seconds back (PlannerSignals.samples), not only their latest values."""
    if prometheus is None:
        return PlannerSignals(error="no Prometheus URL configured (--prometheus-url)")
    queries = planner_queries(spec, window_s)
    answers = await asyncio.gather(*(prometheus.query(q) for q in queries.values()), return_exceptions=True)
    counters: dict[str, dict[frozenset, float]] = {}
    gauges: dict[str, float] = {}
    ranges: dict[str, dict[frozenset, list[tuple[float, float]]]] = {}
    errors = []
    for (signal, promql), result in zip(queries.items(), answers):
        if isinstance(result, BaseException):
            first = str(result).splitlines()[0][:200] if str(result) else type(result).__name__
            errors.append(f"{signal}: Prometheus {prometheus.url} query failed: {first}")
            continue
        result = result or []
        if any("values" in s for s in result):  # a range vector: every sample, with its timestamp
            rows = {frozenset((s.get("metric") or {}).items()): got for s in result if (got := _samples(s))}
            samples = [(dict(k), r[-1][1]) for k, r in rows.items()]
            if rows:
                ranges[signal] = rows
        else:
            samples = [(s.get("metric") or {}, v) for s in result if (v := _value(s)) is not None]
        if not samples:
            errors.append(f"{signal}: no samples from {promql}")
        elif signal in ("promptTokens", "requests"):
            counters[signal] = {frozenset(labels.items()): v for labels, v in samples}
        else:
            gauges[signal] = sum(v for _, v in samples)
    return PlannerSignals(counters, gauges, "; ".join(errors) or None, ranges)
