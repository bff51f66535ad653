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
from autoscaler.policy import DCGM_BYTES, DCGM_LEGACY, MetricSpec

log = logging.getLogger("clique.autoscaler.sources")
MiB = 2**20


def _matchers(spec: MetricSpec) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in spec.selector) + "}" if spec.selector else ""


def build_query(spec: MetricSpec) -> str:
    """The PromQL for one metric spec. Per-pod kinds return one series per pod (label `spec.pod_label`)."""
    sel, by = _matchers(spec), spec.pod_label
    if spec.query:
        return spec.query
    if spec.type == "QueueDepth":
        return f"sum({spec.metric}{sel})"
    if spec.type == "KVCacheUsage":
        inner = f"avg by ({by}) ({spec.metric}{sel})" if spec.per_pod else f"avg({spec.metric}{sel})"
        return f"{inner} * {spec.scale:g}" if spec.scale != 1 else inner
    if spec.type == "GPUMemory":
        used_b, free_b = spec.used_metric or DCGM_BYTES[0], spec.free_metric or DCGM_BYTES[1]
        agg = f"sum by ({by})" if spec.per_pod else "sum"
        # legacy fields are MiB, the renamed ones bytes: accept either, in bytes
        used = f"({agg} ({DCGM_LEGACY[0]}{sel}) * {MiB} or {agg} ({used_b}{sel}))"
        if spec.target.type == "AverageValue":  # bytes per pod (or in total when not per pod)
            return used
        free = f"({agg} ({DCGM_LEGACY[1]}{sel}) * {MiB} or {agg} ({free_b}{sel}))"
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
            pod, v = (s.get("metric") or {}).get(spec.pod_label), _value(s)
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
    elif spec.type == "GPUMemory":
        used = [v * MiB for v in pick(DCGM_LEGACY[0])] or pick(spec.used_metric or DCGM_BYTES[0])
        free = [v * MiB for v in pick(DCGM_LEGACY[1])] or pick(spec.free_metric or DCGM_BYTES[1])
        if used and spec.target.type == "AverageValue":
            value = sum(used) / len(used)
        elif used and free:
            value = 100 * sum(used) / (sum(used) + sum(free))
    if value is None:
        why = "; ".join(errors) if errors else f"no {spec.metric or 'DCGM framebuffer'} samples matching {sel or '{}'}"
        return Reading(spec, error=f"scrape: {why}")
    return Reading(spec, value=value)
