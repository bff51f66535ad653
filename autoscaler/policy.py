"""Autoscaling policies kept in ConfigMaps: schema, defaults and validation. Pure (dict in, Policy or errors out).

A policy lives in a ConfigMap labelled `clique.dev/autoscaling-policy: "true"`, under the data key `policy.yaml`.
Its schema mirrors HorizontalPodAutoscaler v2 wherever HPA has the concept (scaleTargetRef, minReplicas,
maxReplicas, metrics[].target, behavior with the same defaults) and adds what HPA lacks: the gang shape of one
replica (`podsPerReplica`, `gang`) for whole-gang, capacity-aware scaling, metric kinds for LLM serving, and
`dryRun`. Replicas always count replicas of the target (one LWS group, one DGD service replica = one gang); for a
target whose /scale counts pods (a StatefulSet of gang pods) set `scaleUnit: Pods` and the autoscaler moves
it in steps of `podsPerReplica`.

    scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet, name: decode}   # + service: for DynamoGraphDeployment
    minReplicas: 1
    maxReplicas: 8
    podsPerReplica: 2
    scaleUnit: Pods                        # Replicas (default) or Pods
    gang: {gpusPerPod: 8, topologyRequired: nvidia.com/gpu.clique}
    metrics:
    - type: QueueDepth                     # QueueDepth | KVCacheUsage | GPUMemory | Latency | Prometheus
      queueDepth: {metric: vllm:num_requests_waiting, selector: {namespace: llm}}
      target: {type: AverageValue, averageValue: "8"}
    behavior: {scaleDown: {stabilizationWindowSeconds: 300}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

POLICY_LABEL = "clique.dev/autoscaling-policy"
POLICY_KEY = "policy.yaml"

QUEUE_METRICS = ("dynamo_frontend_queued_requests", "vllm:num_requests_waiting", "sglang:num_queue_reqs")
KV_METRICS = ("vllm:kv_cache_usage_perc", "dynamo_component_kvstats_gpu_cache_usage_percent")
# dcgm-exporter < 4.9 reports framebuffer memory in MiB under these names; >= 4.9 renamed the fields and
# reports bytes. Both are accepted (the byte names can be overridden: usedMetric / freeMetric).
DCGM_LEGACY = ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE")
DCGM_BYTES = ("DCGM_FI_DEV_FB_USED_BYTES", "DCGM_FI_DEV_FB_FREE_BYTES")
# metric type -> the key of its settings, HPA-style (type: Pods -> pods: {...})
BODY_KEYS = {"QueueDepth": "queueDepth", "KVCacheUsage": "kvCacheUsage", "GPUMemory": "gpuMemory",
             "Latency": "latency", "Prometheus": "prometheus"}
METRIC_TYPES = tuple(BODY_KEYS)
TARGET_TYPES = ("Value", "AverageValue", "Utilization")
SOURCES = ("Prometheus", "Scrape")


class PolicyError(ValueError):
    """Everything wrong with one policy, each problem naming its field and the fix."""

    def __init__(self, where: str, problems: list[str]) -> None:
        super().__init__(f"{where}: " + "; ".join(problems))
        self.where = where
        self.problems = problems


@dataclass(frozen=True)
class ScaleTargetRef:
    api_version: str
    kind: str
    name: str
    service: str | None = None  # DynamoGraphDeployment: spec.services.<service>.replicas

    def describe(self) -> str:
        return f"{self.kind}/{self.name}" + (f" service {self.service}" if self.service else "")


@dataclass(frozen=True)
class MetricTarget:
    type: str  # Value | AverageValue | Utilization
    value: float  # the number for that type (Utilization in percent)


@dataclass(frozen=True)
class MetricSpec:
    type: str  # one of METRIC_TYPES
    target: MetricTarget
    source: str = "Prometheus"  # Prometheus | Scrape
    metric: str | None = None  # metric name (queue / KV / histogram)
    query: str | None = None  # full PromQL (type Prometheus, or an override)
    selector: tuple[tuple[str, str], ...] = ()  # label matchers added to the query
    endpoints: tuple[str, ...] = ()  # Scrape: /metrics URLs
    quantile: float = 0.9  # Latency
    window: str = "1m"  # Latency rate window
    per_pod: bool = False  # values grouped by pod (missing / not-ready rules apply)
    pod_label: str = "pod"
    used_metric: str | None = None  # GPUMemory overrides
    free_metric: str | None = None
    scale: float = 1.0  # multiply raw values (fractions -> percent for Utilization)

    @property
    def name(self) -> str:
        return f"{self.type}({self.metric or self.query or 'dcgm'})"


@dataclass(frozen=True)
class ScalingPolicy:
    type: str  # Pods | Percent
    value: int
    period_s: int


@dataclass(frozen=True)
class ScalingRules:
    stabilization_s: int
    select: str  # Max | Min | Disabled
    policies: tuple[ScalingPolicy, ...]
    tolerance: float = 0.1


DEFAULT_UP = ScalingRules(0, "Max", (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)))
DEFAULT_DOWN = ScalingRules(300, "Max", (ScalingPolicy("Percent", 100, 15),))


@dataclass(frozen=True)
class GangShape:
    pods: int = 1
    gpus_per_pod: int = 0
    cpu_millis_per_pod: int = 0
    memory_per_pod: int = 0
    topology_required: str | None = None
    topology_preferred: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()  # the pods' nodeSelector: the what-if counts only these nodes


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str  # the ConfigMap's name
    target: ScaleTargetRef
    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricSpec, ...]
    scale_up: ScalingRules = DEFAULT_UP
    scale_down: ScalingRules = DEFAULT_DOWN
    gang: GangShape = field(default_factory=GangShape)
    scale_unit: str = "Replicas"  # Replicas | Pods
    interval_s: float = 15.0
    dry_run: bool = False
    capacity_aware: bool = True

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def pods_per_replica(self) -> int:
        return self.gang.pods

    def to_scale(self, replicas: int) -> int:
        """The value written to the target's replicas for this many gangs."""
        return replicas * self.gang.pods if self.scale_unit == "Pods" else replicas

    def from_scale(self, value: int) -> int:
        """Gangs the target's replicas stand for (a partial gang counts as one: it must be completed or removed)."""
        return math.ceil(value / self.gang.pods) if self.scale_unit == "Pods" else value


def _num(v: Any) -> float:
    from topology.quantity import QuantityError, parse_quantity

    if isinstance(v, bool):
        raise ValueError("a number, not true/false")
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(parse_quantity(str(v)))
    except (QuantityError, ValueError) as exc:
        raise ValueError(f"{v!r} is not a number or quantity") from exc


def parse_policy(namespace: str, name: str, text: str | Mapping[str, Any]) -> Policy:
    """Validate one policy (YAML text or a dict). Raises PolicyError listing every problem found."""
    where = f"ConfigMap {namespace}/{name} key {POLICY_KEY}"
    errs: list[str] = []
    if isinstance(text, str):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PolicyError(where, [f"not valid YAML ({str(exc).splitlines()[0]}); fix the syntax"]) from exc
    else:
        doc = text
    if not isinstance(doc, dict):
        raise PolicyError(where, ["must be a mapping with scaleTargetRef, minReplicas, maxReplicas and metrics"])
    known = {"scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior", "podsPerReplica", "gang",
             "scaleUnit", "evaluationIntervalSeconds", "dryRun", "capacityAware"}
    for k in doc:
        if k not in known:
            errs.append(f"unknown field {k!r} (known: {', '.join(sorted(known))})")

    ref = doc.get("scaleTargetRef") or {}
    target = None
    if not isinstance(ref, dict) or not all(ref.get(k) for k in ("apiVersion", "kind", "name")):
        errs.append("scaleTargetRef: needs apiVersion, kind and name (e.g. {apiVersion: apps/v1, kind: StatefulSet, "
                    "name: decode})")
    else:
        if ref["kind"] == "DynamoGraphDeployment" and not ref.get("service"):
            errs.append("scaleTargetRef.service: a DynamoGraphDeployment target needs the service name whose "
                        "spec.services.<service>.replicas is scaled")
        target = ScaleTargetRef(str(ref["apiVersion"]), str(ref["kind"]), str(ref["name"]), ref.get("service"))

    def integer(key: str, default: int | None, low: int) -> int:
        v = doc.get(key, default)
        if v is None:
            errs.append(f"{key}: required (an integer >= {low})")
            return low
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            errs.append(f"{key}: {v!r} must be an integer >= {low}")
            return low
        return v

    lo = integer("minReplicas", 1, 0)
    hi = integer("maxReplicas", None, 1)
    if hi < lo:
        errs.append(f"maxReplicas ({hi}) is below minReplicas ({lo}); raise maxReplicas or lower minReplicas")
    ppr = integer("podsPerReplica", 1, 1)
    unit = doc.get("scaleUnit", "Replicas")
    if unit not in ("Replicas", "Pods"):
        errs.append(f"scaleUnit: {unit!r} must be Replicas (the target counts gangs) or Pods (it counts pods)")
    interval = doc.get("evaluationIntervalSeconds", 15)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        errs.append(f"evaluationIntervalSeconds: {interval!r} must be a positive number")
        interval = 15
    gang = _gang(doc.get("gang") or {}, ppr, errs)
    metrics = tuple(m for i, raw in enumerate(doc.get("metrics") or []) if (m := _metric(i, raw, errs)) is not None)
    if not doc.get("metrics"):
        errs.append("metrics: at least one metric is needed (e.g. a QueueDepth metric)")
    beh = doc.get("behavior") or {}
    if not isinstance(beh, dict):
        errs.append("behavior: must be a mapping with scaleUp and/or scaleDown")
        beh = {}
    up = _rules("behavior.scaleUp", beh.get("scaleUp"), DEFAULT_UP, errs)
    down = _rules("behavior.scaleDown", beh.get("scaleDown"), DEFAULT_DOWN, errs)
    for flag in ("dryRun", "capacityAware"):
        if flag in doc and not isinstance(doc[flag], bool):
            errs.append(f"{flag}: {doc[flag]!r} must be true or false")
    if errs:
        raise PolicyError(where, errs)
    assert target is not None
    return Policy(namespace, name, target, lo, hi, metrics, up, down, gang, unit, float(interval),
                  bool(doc.get("dryRun", False)), bool(doc.get("capacityAware", True)))


def _gang(raw: Any, pods: int, errs: list[str]) -> GangShape:
    from topology.quantity import QuantityError, as_int, cpu_millis

    if not isinstance(raw, dict):
        errs.append("gang: must be a mapping (gpusPerPod, cpuPerPod, memoryPerPod, topologyRequired, "
                    "topologyPreferred, nodeSelector)")
        return GangShape(pods)
    known = {"gpusPerPod", "cpuPerPod", "memoryPerPod", "topologyRequired", "topologyPreferred", "nodeSelector"}
    for k in raw:
        if k not in known:
            errs.append(f"gang.{k}: unknown field (known: {', '.join(sorted(known))})")
    try:
        gpus = as_int(raw.get("gpusPerPod", 0))
        cpu = cpu_millis(raw.get("cpuPerPod", 0))
        mem = as_int(raw.get("memoryPerPod", 0))
    except QuantityError as exc:
        errs.append(f"gang: {exc}")
        return GangShape(pods)
    sel = raw.get("nodeSelector") or {}
    if not isinstance(sel, dict):
        errs.append("gang.nodeSelector: must map node label keys to values, like the pods' nodeSelector")
        sel = {}
    return GangShape(pods, gpus, cpu, mem, raw.get("topologyRequired"), raw.get("topologyPreferred"),
                     tuple(sorted((str(k), str(v)) for k, v in sel.items())))


def _metric(i: int, raw: Any, errs: list[str]) -> MetricSpec | None:
    at = f"metrics[{i}]"
    if not isinstance(raw, dict):
        errs.append(f"{at}: must be a mapping with type, <type in camelCase> and target")
        return None
    typ = raw.get("type")
    if typ not in METRIC_TYPES:
        errs.append(f"{at}.type: {typ!r} is not one of {', '.join(METRIC_TYPES)}")
        return None
    body_key = BODY_KEYS[typ]
    body = raw.get(body_key) or {}
    if not isinstance(body, dict):
        errs.append(f"{at}.{body_key}: must be a mapping")
        return None
    t = raw.get("target") or {}
    ttype = t.get("type") if isinstance(t, dict) else None
    if ttype not in TARGET_TYPES:
        errs.append(f"{at}.target.type: {ttype!r} must be one of {', '.join(TARGET_TYPES)}")
        return None
    vkey = {"Value": "value", "AverageValue": "averageValue", "Utilization": "averageUtilization"}[ttype]
    try:
        tval = _num(t.get(vkey))
        if tval <= 0:
            raise ValueError("must be above zero")
    except (ValueError, TypeError) as exc:
        errs.append(f"{at}.target.{vkey}: {t.get(vkey)!r}: {exc}; give a positive number for target type {ttype}")
        return None
    source = body.get("source", "Prometheus")
    if source not in SOURCES:
        errs.append(f"{at}.{body_key}.source: {source!r} must be Prometheus or Scrape")
        return None
    sel = body.get("selector") or {}
    if not isinstance(sel, dict) or not all(isinstance(v, (str, int)) for v in sel.values()):
        errs.append(f"{at}.{body_key}.selector: must map label names to values")
        sel = {}
    endpoints = tuple(body.get("endpoints") or ())
    if source == "Scrape" and not endpoints:
        errs.append(f"{at}.{body_key}.endpoints: a Scrape source needs the /metrics URLs to read")
    if source == "Scrape" and typ in ("Latency", "Prometheus"):
        errs.append(f"{at}.{body_key}.source: {typ} needs PromQL; use source Prometheus")
    per_pod = typ in ("GPUMemory", "KVCacheUsage") and source == "Prometheus"
    if ttype == "Utilization" and typ not in ("GPUMemory", "KVCacheUsage"):
        errs.append(f"{at}.target.type: Utilization applies to GPUMemory and KVCacheUsage; use Value or AverageValue")
    metric, query, scale = body.get("metric"), body.get("query"), 1.0
    if typ == "QueueDepth":
        metric = metric or QUEUE_METRICS[0]
    elif typ == "KVCacheUsage":
        metric = metric or KV_METRICS[0]
        # vLLM's gauge is a 0..1 fraction; a Utilization target is in percent
        scale = float(body.get("scale", 100.0 if ttype == "Utilization" else 1.0))
    elif typ == "Latency":
        metric = body.get("histogram") or metric
        if not metric:
            errs.append(f"{at}.latency.histogram: name the histogram, e.g. vllm:time_to_first_token_seconds")
        q = body.get("quantile", 0.9)
        if not isinstance(q, (int, float)) or not 0 < q < 1:
            errs.append(f"{at}.latency.quantile: {q!r} must be between 0 and 1 (e.g. 0.9)")
    elif typ == "Prometheus":
        if not query:
            errs.append(f"{at}.prometheus.query: a PromQL expression is required")
    elif typ == "GPUMemory" and ttype == "Value":
        errs.append(f"{at}.target.type: GPUMemory takes Utilization (percent) or AverageValue (bytes per pod)")
    return MetricSpec(typ, MetricTarget(ttype, tval), source, metric, query,
                      tuple(sorted((str(k), str(v)) for k, v in sel.items())), endpoints,
                      float(body.get("quantile", 0.9)) if typ == "Latency" else 0.9, str(body.get("window", "1m")),
                      per_pod, str(body.get("podLabel", "pod")), body.get("usedMetric"), body.get("freeMetric"), scale)


def _rules(at: str, raw: Any, default: ScalingRules, errs: list[str]) -> ScalingRules:
    if raw is None:
        return default
    if not isinstance(raw, dict):
        errs.append(f"{at}: must be a mapping")
        return default
    win = raw.get("stabilizationWindowSeconds", default.stabilization_s)
    if isinstance(win, bool) or not isinstance(win, int) or not 0 <= win <= 3600:
        errs.append(f"{at}.stabilizationWindowSeconds: {win!r} must be an integer from 0 to 3600")
        win = default.stabilization_s
    select = raw.get("selectPolicy", "Max")
    if select not in ("Max", "Min", "Disabled"):
        errs.append(f"{at}.selectPolicy: {select!r} must be Max, Min or Disabled")
    tol = raw.get("tolerance", 0.1)
    try:
        tol = _num(tol)
        if not 0 <= tol < 1:
            raise ValueError("outside 0..1")
    except ValueError as exc:
        errs.append(f"{at}.tolerance: {raw.get('tolerance')!r} ({exc}); give a fraction such as 0.1")
        tol = 0.1
    policies = []
    for j, p in enumerate(raw.get("policies") or []):
        if not isinstance(p, dict) or p.get("type") not in ("Pods", "Percent"):
            errs.append(f"{at}.policies[{j}].type: must be Pods or Percent")
            continue
        v, per = p.get("value"), p.get("periodSeconds")
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            errs.append(f"{at}.policies[{j}].value: {v!r} must be a positive integer")
            continue
        if isinstance(per, bool) or not isinstance(per, int) or not 0 < per <= 1800:
            errs.append(f"{at}.policies[{j}].periodSeconds: {per!r} must be an integer from 1 to 1800")
            continue
        policies.append(ScalingPolicy(p["type"], v, per))
    return ScalingRules(win, select, tuple(policies) if "policies" in raw else default.policies, tol)
