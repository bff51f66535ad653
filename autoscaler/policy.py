"""Autoscaling policies kept in ConfigMaps: schema, defaults and validation. Pure (dict in, Policy or errors out).

A policy lives in a ConfigMap labelled `clique.dev/autoscaling-policy: "true"`, under the data key `policy.yaml`.
Its schema mirrors HorizontalPodAutoscaler v2 wherever HPA has the concept (scaleTargetRef, minReplicas,
maxReplicas, metrics[].target, behavior with the same defaults) and adds what HPA lacks: the gang shape of one
replica (`podsPerReplica`, `gang`) for whole-gang, capacity-aware scaling, metric kinds for LLM serving, and
`dryRun`. Replicas always count replicas of the target (one LWS group, one DGD service replica = one gang); for a
target whose /scale counts pods (a StatefulSet of gang pods) set `scaleUnit: Pods` and the autoscaler moves
it in steps of `podsPerReplica`. `podsPerReplica` and `gang.gpusPerPod` may be left out: the autoscaler reads them
from the target (autoscaler/target_shape.py); written ones must agree with it, or the policy is invalid.

    scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet, name: decode}   # + service: for DynamoGraphDeployment
    minReplicas: 1
    maxReplicas: 8
    podsPerReplica: 2
    scaleUnit: Pods                        # Replicas (default) or Pods
    gang: {gpusPerPod: 8, topologyRequired: nvidia.com/gpu.clique}
    metrics:
    - type: QueueDepth                     # QueueDepth | KVCacheUsage | GPUMemory | Latency | Prometheus
      queueDepth: {engine: vllm, selector: {namespace: llm}}   # vllm:num_requests_waiting; or metric: <name>
      target: {type: AverageValue, averageValue: "8"}
    behavior: {scaleDown: {stabilizationWindowSeconds: 300}}

Instead of `metrics`, a policy may hand the decision to the look-ahead planner (autoscaler/planner.py) with a
`planner:` section (`PlannerSpec`; the daemon feeds it in autoscaler/planned.py):

    planner:
      role: Prefill                        # Prefill | Decode | Aggregated (this target's count: max of the two)
      prefillTokensPerSecond: 12000        # one replica, prompts within the TTFT SLO (measured)
      decodeSlots: 64                      # sequences one replica holds within the ITL SLO (measured)
      modelLoadSeconds: 120                # pod start + model load
      ttftSeconds: 2                       # the TTFT SLO
      attainment: 0.99                     # share of requests kept within it
      scaleToZero: false                   # needs minReplicas: 0
      engine: vllm                         # the counters and gauges read (PLANNER_METRICS)
      selector: {namespace: llm}
"""

from __future__ import annotations

import codecs
import math
import re
import reprlib
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import yaml

from topology.quantity import as_int, cpu_millis, parse_quantity
from topology.yamlfile import MAX_INT_CHARS, LimitedLoader, TooDeep

POLICY_LABEL = "clique.dev/autoscaling-policy"
POLICY_KEY = "policy.yaml"

# The queue and KV-cache gauges of each serving engine, named as the engine publishes them (read in the upstream
# source at the version given). `engine:` in queueDepth / kvCacheUsage picks a row; `metric:` names any gauge.
# Every KV gauge here is a 0..1 fraction.
ENGINE_METRICS: dict[str, dict[str, str]] = {
    # ai-dynamo/dynamo 1.6.1 (PyPI ai-dynamo-runtime 1.6.1): lib/runtime/src/metrics/prometheus_names.rs, as
    # generated into dynamo/prometheus_names.py: frontend_service.QUEUED_REQUESTS "queued_requests" under
    # name_prefix.FRONTEND "dynamo_frontend" (lib/llm/src/http/service/metrics.rs joins them with "_"; the
    # DYN_METRICS_PREFIX variable replaces the prefix); kvstats.GPU_CACHE_USAGE_PERCENT "gpu_cache_usage_percent"
    # under name_prefix.COMPONENT "dynamo_component" (components/src/dynamo/common/utils/prometheus.py). Dynamo
    # 0.6.1 named the KV gauge dynamo_component_kvstats_gpu_cache_usage_percent (write it as metric: there).
    "dynamo": {"QueueDepth": "dynamo_frontend_queued_requests",
               "KVCacheUsage": "dynamo_component_gpu_cache_usage_percent"},
    # vllm-project/vllm v0.33.0 vllm/v1/metrics/loggers.py (read in its PyPI sdist; also in v0.10.2, beside the
    # deprecated vllm:gpu_cache_usage_perc, which v0.33.0 no longer has)
    "vllm": {"QueueDepth": "vllm:num_requests_waiting", "KVCacheUsage": "vllm:kv_cache_usage_perc"},
    # sgl-project/sglang v0.5.23 python/sglang/srt/observability/metrics_collector.py
    "sglang": {"QueueDepth": "sglang:num_queue_reqs", "KVCacheUsage": "sglang:token_usage"},
    # NVIDIA/TensorRT-LLM tensorrt_llm/metrics/collector.py at main commit 050f80def8df (metric_prefix "trtllm_";
    # these gauges came with PRs #11243 and #12545 and are set only with enable_iter_perf_stats); the first
    # release tag holding them was not confirmed. TensorRT-LLM 1.1.0rc5 (Dynamo 0.6.x) has neither.
    "trtllm": {"QueueDepth": "trtllm_num_requests_waiting", "KVCacheUsage": "trtllm_kv_cache_utilization"},
}
ENGINES = tuple(ENGINE_METRICS)
# What the planner reads per engine (`planner.engine`): counters of prompt tokens and of requests (their increments
# between evaluations), and the gauges of requests waiting and running. prometheus_client exposes a Counter named X
# as X_total (checked with prometheus_client 0.26.0's generate_latest). vllm-project/vllm v0.33.0 (its PyPI sdist
# vllm-0.33.0.tar.gz) vllm/v1/metrics/loggers.py, PrometheusStatLogger: Counter "vllm:prompt_tokens" ("Number of
# prefill tokens processed"), Counter "vllm:request_success" (label finished_reason, one per finished request),
# Gauges "vllm:num_requests_running" and "vllm:num_requests_waiting". Both counters count work
# done, not arrivals: while the pool is saturated the excess shows in the waiting gauge, which the planner drains.
# Other engines: name the four series with promptTokensMetric, requestsMetric, waitingMetric, runningMetric.
PLANNER_METRICS: dict[str, dict[str, str]] = {
    "vllm": {"promptTokens": "vllm:prompt_tokens_total", "requests": "vllm:request_success_total",
             "waiting": "vllm:num_requests_waiting", "running": "vllm:num_requests_running"},
}
PLANNER_SIGNALS = ("promptTokens", "requests", "waiting", "running")
PLANNER_ROLES = ("Prefill", "Decode", "Aggregated")
DEFAULT_ENGINE = {"QueueDepth": "dynamo", "KVCacheUsage": "vllm"}  # neither engine nor metric given
# GPU framebuffer memory as dcgm-exporter publishes it (NVIDIA/dcgm-exporter 4.5.3-4.8.2 etc/default-counters.csv):
# DCGM_FI_DEV_FB_USED / _FREE / _RESERVED, gauges in MiB (DCGM v4.5.3 dcgmlib/src/DcgmCacheManager.cpp: NVML bytes
# / 2**20). No dcgm-exporter release has byte-valued framebuffer fields. usedMetric / freeMetric rename the pair.
DCGM_FB_MIB = ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE")
# Not a default counter (add it to the counters CSV): used / (total - reserved), a 0..1 fraction per GPU (DCGM
# v4.5.3 dcgmlib/dcgm_fields.h; DCGM v4.6.0 renames it DCGM_FI_DEV_FB_USED_RATIO and keeps this name as an alias).
DCGM_FB_USED_FRACTION = "DCGM_FI_DEV_FB_USED_PERCENT"
# metric type -> the key of its settings, HPA-style (type: Pods -> pods: {...})
BODY_KEYS = {"QueueDepth": "queueDepth", "KVCacheUsage": "kvCacheUsage", "GPUMemory": "gpuMemory",
             "Latency": "latency", "Prometheus": "prometheus"}
METRIC_TYPES = tuple(BODY_KEYS)
TARGET_TYPES = ("Value", "AverageValue", "Utilization")
SOURCES = ("Prometheus", "Scrape")
# bounds that keep every number finite and every YAML document shallow, whatever a ConfigMap holds
MAX_REPLICAS = 100_000
MAX_PODS_PER_REPLICA = 1_000
MAX_GPUS_PER_POD = 1_024
MAX_POLICY_VALUE = 1_000_000  # behavior policies' value (Pods, or Percent, which may exceed 100)
MAX_QUANTITY = 1e18  # target values, cpuPerPod (cores), memoryPerPod (bytes)
MAX_DEPTH = 32  # YAML collections nested deeper than this are refused (a policy nests about 6)


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
    service: str | None = None  # DynamoGraphDeployment: spec.services.<service> / spec.components[name=<service>]

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
    metric: str | None = None  # metric name (queue / KV / histogram / GPUMemory used fraction)
    query: str | None = None  # full PromQL (type Prometheus, or an override)
    selector: tuple[tuple[str, str], ...] = ()  # label matchers added to the query
    endpoints: tuple[str, ...] = ()  # Scrape: /metrics URLs
    quantile: float = 0.9  # Latency
    window: str = "1m"  # Latency rate window
    per_pod: bool = False  # values grouped by pod (missing / not-ready rules apply)
    pod_label: str = "pod"  # read as exported_<pod_label> where Prometheus renamed it (the target has it too)
    used_metric: str | None = None  # GPUMemory: the MiB gauges (default DCGM_FB_MIB)
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
    leader_gpus: int | None = None  # GPUs of the first pod when they differ from the others (an LWS leaderTemplate)
    # the shape fields the policy wrote ("podsPerReplica", "gang.gpusPerPod"); the others are read from the target
    # (autoscaler.target_shape.resolve_gang), and a written one that contradicts the target makes the policy invalid
    stated: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PlannerSpec:
    """The `planner:` section: per-replica capacities measured once per model and hardware (see
    autoscaler/planner.py), the SLO, and the series the daemon reads. Replicas bounds come from the policy's
    minReplicas / maxReplicas and the evaluation interval from evaluationIntervalSeconds."""

    role: str  # Prefill | Decode | Aggregated: which of the plan's counts this target takes
    prefill_tokens_per_s: float
    decode_slots: int
    load_s: float
    ttft_slo_s: float
    attainment: float = 0.99
    scale_to_zero: bool = False
    idle_to_zero_s: float = 600.0
    history_s: float = 3600.0
    engine: str = "vllm"
    selector: tuple[tuple[str, str], ...] = ()
    series: tuple[tuple[str, str], ...] = ()  # (signal, metric name) for each of PLANNER_SIGNALS

    def metric(self, signal: str) -> str:
        return dict(self.series)[signal]


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
    planner: PlannerSpec | None = None  # set: the look-ahead planner decides, not the metrics

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


# ---------------------------------------------------------------------------------------------- reading YAML
class _Loader(LimitedLoader):
    """topology/yamlfile.py's SafeLoader with limits, at a policy's depth."""

    max_depth = MAX_DEPTH


def load_yaml(text: str | bytes, where: str, multi: bool = False) -> list[Any]:
    """The YAML documents of `text` (bytes must be UTF-8). Raises PolicyError, and only that, for anything else."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            utf16 = text.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
            raise PolicyError(where, [f"not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start}"
                                      f"{', a UTF-16 byte-order mark' if utf16 else ''}); save it as UTF-8"]) from None
    try:
        loader = _Loader(text)  # already reads the start of the text, which may be refused
        try:
            if not multi:
                return [loader.get_single_data()]
            docs = []
            while loader.check_data():
                docs.append(loader.get_data())
            return docs
        finally:
            loader.dispose()
    except TooDeep:
        raise PolicyError(where, [f"YAML nested more than {MAX_DEPTH} levels deep; a policy nests far less, check "
                                  "the brackets"]) from None
    except Exception as exc:  # YAMLError, or what PyYAML's constructors raise on `!!bool maybe`, `2001-13-45`, ...
        detail = ": ".join(x for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or \
            (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not isinstance(exc, yaml.YAMLError):
            detail = f"cannot read a value: {detail}"
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        raise PolicyError(where, [f"not valid YAML ({at}{detail[:200]}); fix the syntax"]) from None


# ---------------------------------------------------------------------------------------------- field checks
# Each appends "<field path>: <what is wrong and what to write>" to errs and returns a usable value (the default
# when the field is wrong), so that one pass reports every problem.
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4


def _show(v: Any) -> str:
    """A value for an error message, short however large, deep or self-referencing it is."""
    if isinstance(v, bool):
        return "true" if v else "false"  # as YAML spells it
    try:
        return _REPR.repr(v)
    except ValueError:  # an int too long to print
        return "a number too long to print"


def _mapping(at: str, v: Any, errs: list[str], what: str) -> dict:
    if v is None or isinstance(v, dict):
        return v or {}
    errs.append(f"{at}: {_show(v)} must be a mapping ({what})")
    return {}


def _list(at: str, v: Any, errs: list[str], what: str) -> list:
    if v is None or isinstance(v, list):
        return v or []
    errs.append(f"{at}: {_show(v)} must be a list ({what})")
    return []


def _string(at: str, v: Any, errs: list[str], default: str | None = None) -> str | None:
    if v is None or (isinstance(v, str) and v):
        return default if v is None else v
    errs.append(f"{at}: {_show(v)} must be a non-empty string (quote it if YAML reads it as something else)")
    return default


def _number(at: str, v: Any, errs: list[str], low: float, high: float, default: Any = None, *,
            integer: bool = False, quantity: bool = False, low_open: bool = False, high_open: bool = False,
            hint: str = "") -> Any:
    """A finite number within the bounds (an int where `integer`; a Kubernetes quantity such as "500m" or "64Gi"
    also where `quantity`, returned as a Decimal). Missing: `default`, or an error when there is none."""
    kind = "an integer" if integer else "a number or quantity" if quantity else "a number"
    lo, hi = (str(int(b)) if float(b).is_integer() and abs(b) < 1e15 else f"{b:g}" for b in (low, high))
    bounds = (f"from {lo} to {hi}" if not (low_open or high_open) else
              f"{'above' if low_open else 'at least'} {lo} and {'below' if high_open else 'at most'} {hi}")
    want = f"{kind} {bounds}{hint}"
    if v is None:
        if default is None:
            errs.append(f"{at}: required ({want})")
            return low
        return default
    x: Any = None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and (quantity or isinstance(v, int) or not integer):
        x = v
    elif quantity and isinstance(v, str):
        try:
            x = parse_quantity(v)
        except (ValueError, ArithmeticError):  # QuantityError, decimal.InvalidOperation / Overflow
            x = None
    if x is None or not (isinstance(x, int) or math.isfinite(x)) or not (low < x if low_open else low <= x) \
            or not (x < high if high_open else x <= high):
        errs.append(f"{at}: {_show(v)} must be {want}")
        return low if default is None else default
    return x


def _labels(at: str, v: Any, errs: list[str]) -> tuple[tuple[str, str], ...]:
    """A map of label names to values (strings, or integers YAML read from unquoted digits)."""
    m = _mapping(at, v, errs, "label names to values")
    if all(isinstance(k, str) and (isinstance(x, str) or (type(x) is int and abs(x) < 10**MAX_INT_CHARS))
           for k, x in m.items()):
        return tuple(sorted((k, str(x)) for k, x in m.items()))
    errs.append(f"{at}: {_show(v)} must map label names to string values")
    return ()


# ---------------------------------------------------------------------------------------------- the schema
def parse_policy(namespace: str, name: str, text: str | bytes | Mapping[str, Any], where: str | None = None) -> Policy:
    """Validate one policy (YAML text or a dict). Raises PolicyError listing every problem found, and nothing else."""
    where = where or f"ConfigMap {namespace}/{name} key {POLICY_KEY}"
    doc = load_yaml(text, where)[0] if isinstance(text, (str, bytes)) else text
    if not isinstance(doc, dict):
        raise PolicyError(where, [f"{_show(doc)} must be a mapping with scaleTargetRef, minReplicas, maxReplicas "
                                  "and metrics"])
    errs: list[str] = []
    known = {"scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior", "podsPerReplica", "gang",
             "scaleUnit", "evaluationIntervalSeconds", "dryRun", "capacityAware", "planner"}
    for k in doc:
        if k not in known:
            errs.append(f"unknown field {_show(k)} (known: {', '.join(sorted(known))})")

    ref = _mapping("scaleTargetRef", doc.get("scaleTargetRef"), errs, "apiVersion, kind, name")
    target = None
    if not all(ref.get(k) for k in ("apiVersion", "kind", "name")):
        errs.append("scaleTargetRef: needs apiVersion, kind and name (e.g. {apiVersion: apps/v1, kind: StatefulSet, "
                    "name: decode})")
    else:
        api_version, kind, ref_name = (_string(f"scaleTargetRef.{k}", ref[k], errs, "?")
                                       for k in ("apiVersion", "kind", "name"))
        service = _string("scaleTargetRef.service", ref.get("service"), errs)
        if kind == "DynamoGraphDeployment" and not service:
            errs.append("scaleTargetRef.service: a DynamoGraphDeployment target needs the service to scale: its key "
                        "in spec.services (nvidia.com/v1alpha1) or its name in spec.components (nvidia.com/v1beta1)")
        target = ScaleTargetRef(api_version, kind, ref_name, service)

    lo = _number("minReplicas", doc.get("minReplicas"), errs, 0, MAX_REPLICAS, 1, integer=True)
    hi = _number("maxReplicas", doc.get("maxReplicas"), errs, 1, MAX_REPLICAS, integer=True)
    if hi < lo:
        errs.append(f"maxReplicas ({hi}) is below minReplicas ({lo}); raise maxReplicas or lower minReplicas")
    ppr = _number("podsPerReplica", doc.get("podsPerReplica"), errs, 1, MAX_PODS_PER_REPLICA, 1, integer=True)
    unit = doc.get("scaleUnit", "Replicas")
    if unit not in ("Replicas", "Pods"):
        errs.append(f"scaleUnit: {_show(unit)} must be Replicas (the target counts gangs) or Pods (it counts pods)")
    interval = _number("evaluationIntervalSeconds", doc.get("evaluationIntervalSeconds"), errs, 0, 3600, 15,
                       low_open=True)
    gang = _gang(doc.get("gang"), ppr, errs)
    gang = replace(gang, stated=frozenset(
        ({"podsPerReplica"} if doc.get("podsPerReplica") is not None else set())
        | ({"gang.gpusPerPod"} if isinstance(doc.get("gang"), dict) and doc["gang"].get("gpusPerPod") is not None
           else set())))
    raw_metrics = _list("metrics", doc.get("metrics"), errs, "of metric mappings")
    metrics = tuple(m for i, raw in enumerate(raw_metrics) if (m := _metric(i, raw, errs)) is not None)
    planner = _planner(doc.get("planner"), lo, errs) if "planner" in doc else None
    if "planner" in doc and raw_metrics:
        errs.append("metrics: a policy with planner: is decided by the planner alone; remove metrics, or the "
                    "planner section to scale on the metrics")
    elif not raw_metrics and "planner" not in doc:
        errs.append("metrics: at least one metric is needed (e.g. a QueueDepth metric), or a planner: section")
    beh = _mapping("behavior", doc.get("behavior"), errs, "with scaleUp and/or scaleDown")
    up = _rules("behavior.scaleUp", beh.get("scaleUp"), DEFAULT_UP, errs)
    down = _rules("behavior.scaleDown", beh.get("scaleDown"), DEFAULT_DOWN, errs)
    for flag in ("dryRun", "capacityAware"):
        if flag in doc and not isinstance(doc[flag], bool):
            errs.append(f"{flag}: {_show(doc[flag])} must be true or false")
    if errs:
        raise PolicyError(where, errs)
    assert target is not None
    return Policy(namespace, name, target, lo, hi, metrics, up, down, gang, unit, float(interval),
                  bool(doc.get("dryRun", False)), bool(doc.get("capacityAware", True)), planner)


def _planner(raw: Any, min_replicas: int, errs: list[str]) -> PlannerSpec | None:
    at = "planner"
    n = len(errs)
    body = _mapping(at, raw, errs, "role, prefillTokensPerSecond, decodeSlots, modelLoadSeconds, ttftSeconds, ...")
    known = {"role", "prefillTokensPerSecond", "decodeSlots", "modelLoadSeconds", "ttftSeconds", "attainment",
             "scaleToZero", "idleToZeroSeconds", "historySeconds", "engine", "selector",
             *(f"{s}Metric" for s in PLANNER_SIGNALS)}
    for k in body:
        if k not in known:
            errs.append(f"{at}.{_show(k)}: unknown field (known: {', '.join(sorted(known))})")
    role = body.get("role", "Aggregated")
    if role not in PLANNER_ROLES:
        errs.append(f"{at}.role: {_show(role)} must be Prefill (the target is the prefill pool), Decode (the decode "
                    "pool) or Aggregated (one pool serves both: the larger of the two counts)")
    tps = _number(f"{at}.prefillTokensPerSecond", body.get("prefillTokensPerSecond"), errs, 0, MAX_QUANTITY,
                  low_open=True, hint=" (prompt tokens/s one replica sustains within the TTFT SLO, measured)")
    slots = _number(f"{at}.decodeSlots", body.get("decodeSlots"), errs, 1, MAX_REPLICAS * 1000, integer=True,
                    hint=" (sequences one replica holds within the ITL SLO, measured)")
    load = _number(f"{at}.modelLoadSeconds", body.get("modelLoadSeconds"), errs, 0, 86400,
                   hint=" (pod start + model load)")
    ttft = _number(f"{at}.ttftSeconds", body.get("ttftSeconds"), errs, 0, 3600, low_open=True, hint=" (the TTFT SLO)")
    att = _number(f"{at}.attainment", body.get("attainment"), errs, 0, 1, 0.99, low_open=True, high_open=True,
                  hint=", a fraction such as 0.99")
    idle = _number(f"{at}.idleToZeroSeconds", body.get("idleToZeroSeconds"), errs, 0, 86400 * 7, 600)
    hist = _number(f"{at}.historySeconds", body.get("historySeconds"), errs, 60, 86400 * 7, 3600)
    stz = body.get("scaleToZero", False)
    if not isinstance(stz, bool):
        errs.append(f"{at}.scaleToZero: {_show(stz)} must be true or false")
        stz = False
    elif stz and min_replicas > 0:
        errs.append(f"{at}.scaleToZero: true needs minReplicas: 0 (it is {min_replicas}); set minReplicas to 0 or "
                    "scaleToZero to false")
    engine = body.get("engine", "vllm")
    names = {s: _string(f"{at}.{s}Metric", body.get(f"{s}Metric"), errs) for s in PLANNER_SIGNALS}
    if engine not in tuple(PLANNER_METRICS):
        errs.append(f"{at}.engine: {_show(engine)} must be one of {', '.join(PLANNER_METRICS)} (for another engine "
                    "name its series with " + ", ".join(f"{s}Metric" for s in PLANNER_SIGNALS) + ")")
        engine = "vllm"
    series = tuple((s, names[s] or PLANNER_METRICS[engine][s]) for s in PLANNER_SIGNALS)
    sel = _labels(f"{at}.selector", body.get("selector"), errs)
    if len(errs) > n:
        return None
    return PlannerSpec(role, float(tps), int(slots), float(load), float(ttft), float(att), stz, float(idle),
                       float(hist), engine, sel, series)


def _gang(raw: Any, pods: int, errs: list[str]) -> GangShape:
    raw = _mapping("gang", raw, errs, "gpusPerPod, cpuPerPod, memoryPerPod, topologyRequired, topologyPreferred, "
                                      "nodeSelector")
    known = {"gpusPerPod", "cpuPerPod", "memoryPerPod", "topologyRequired", "topologyPreferred", "nodeSelector"}
    for k in raw:
        if k not in known:
            errs.append(f"gang.{_show(k)}: unknown field (known: {', '.join(sorted(known))})")
    gpus = _number("gang.gpusPerPod", raw.get("gpusPerPod"), errs, 0, MAX_GPUS_PER_POD, 0, quantity=True)
    cpu = _number("gang.cpuPerPod", raw.get("cpuPerPod"), errs, 0, MAX_QUANTITY, 0, quantity=True, hint=" cores")
    mem = _number("gang.memoryPerPod", raw.get("memoryPerPod"), errs, 0, MAX_QUANTITY, 0, quantity=True,
                  hint=" bytes (e.g. 64Gi)")
    return GangShape(pods, as_int(gpus), cpu_millis(cpu), as_int(mem),
                     _string("gang.topologyRequired", raw.get("topologyRequired"), errs),
                     _string("gang.topologyPreferred", raw.get("topologyPreferred"), errs),
                     _labels("gang.nodeSelector", raw.get("nodeSelector"), errs))


def _metric(i: int, raw: Any, errs: list[str]) -> MetricSpec | None:
    at = f"metrics[{i}]"
    if not isinstance(raw, dict):
        errs.append(f"{at}: must be a mapping with type, <type in camelCase> and target")
        return None
    typ = raw.get("type")
    if typ not in METRIC_TYPES:
        errs.append(f"{at}.type: {_show(typ)} is not one of {', '.join(METRIC_TYPES)}")
        return None
    body_key = BODY_KEYS[typ]
    n = len(errs)
    body = _mapping(f"{at}.{body_key}", raw.get(body_key), errs, "the settings of this metric type")
    t = _mapping(f"{at}.target", raw.get("target"), errs, "type and its value")
    ttype = t.get("type")
    if ttype not in TARGET_TYPES:
        errs.append(f"{at}.target.type: {_show(ttype)} must be one of {', '.join(TARGET_TYPES)}")
        return None
    vkey = {"Value": "value", "AverageValue": "averageValue", "Utilization": "averageUtilization"}[ttype]
    tval = _number(f"{at}.target.{vkey}", t.get(vkey), errs, 0, MAX_QUANTITY, quantity=True, low_open=True,
                   hint=f" for target type {ttype}")
    source = body.get("source", "Prometheus")
    if source not in SOURCES:
        errs.append(f"{at}.{body_key}.source: {_show(source)} must be Prometheus or Scrape")
    sel = _labels(f"{at}.{body_key}.selector", body.get("selector"), errs)
    endpoints = tuple(_list(f"{at}.{body_key}.endpoints", body.get("endpoints"), errs, "of /metrics URLs"))
    for j, url in enumerate(endpoints):
        _string(f"{at}.{body_key}.endpoints[{j}]", url, errs)
    if source == "Scrape" and not endpoints:
        errs.append(f"{at}.{body_key}.endpoints: a Scrape source needs the /metrics URLs to read")
    if source == "Scrape" and typ in ("Latency", "Prometheus"):
        errs.append(f"{at}.{body_key}.source: {typ} needs PromQL; use source Prometheus")
    per_pod = typ in ("GPUMemory", "KVCacheUsage") and source == "Prometheus"
    if ttype == "Utilization" and typ not in ("GPUMemory", "KVCacheUsage"):
        errs.append(f"{at}.target.type: Utilization applies to GPUMemory and KVCacheUsage; use Value or AverageValue")

    def field_(key: str, default: str | None = None) -> str | None:
        return _string(f"{at}.{body_key}.{key}", body.get(key), errs, default)

    metric, query, scale, quantile, window = field_("metric"), field_("query"), 1.0, 0.9, "1m"
    pod_label, used, free = field_("podLabel", "pod"), field_("usedMetric"), field_("freeMetric")
    engine = body.get("engine")
    if engine is not None and typ not in ("QueueDepth", "KVCacheUsage"):
        errs.append(f"{at}.{body_key}.engine: applies to QueueDepth and KVCacheUsage; name the metric instead")
    elif engine is not None and engine not in ENGINES:
        errs.append(f"{at}.{body_key}.engine: {_show(engine)} must be one of {', '.join(ENGINES)}")
    elif engine is not None and metric:
        errs.append(f"{at}.{body_key}: give engine or metric, not both (engine {engine} reads "
                    f"{ENGINE_METRICS[engine][typ]})")
    if typ in ("QueueDepth", "KVCacheUsage"):
        metric = metric or ENGINE_METRICS[engine if engine in ENGINES else DEFAULT_ENGINE[typ]][typ]
    if typ == "KVCacheUsage":
        # every engine's KV gauge is a 0..1 fraction; a Utilization target is in percent
        scale = float(_number(f"{at}.kvCacheUsage.scale", body.get("scale"), errs, 0, 1e6,
                              100.0 if ttype == "Utilization" else 1.0, low_open=True))
    elif typ == "Latency":
        metric = field_("histogram") or metric
        if not metric:
            errs.append(f"{at}.latency.histogram: name the histogram, e.g. vllm:time_to_first_token_seconds")
        quantile = float(_number(f"{at}.latency.quantile", body.get("quantile"), errs, 0, 1, 0.9, low_open=True,
                                 high_open=True, hint=" (e.g. 0.9)"))
        window = field_("window", "1m")
        if not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", window or ""):
            errs.append(f"{at}.latency.window: {_show(window)} must be a PromQL duration such as 1m or 30s")
    elif typ == "Prometheus":
        if not query:
            errs.append(f"{at}.prometheus.query: a PromQL expression is required")
    elif typ == "GPUMemory":
        if ttype == "Value":
            errs.append(f"{at}.target.type: GPUMemory takes Utilization (percent) or AverageValue (bytes per pod)")
        if metric is not None and metric != DCGM_FB_USED_FRACTION:
            errs.append(f"{at}.gpuMemory.metric: {_show(metric)} is not a used-memory fraction; write "
                        f"{DCGM_FB_USED_FRACTION}, or leave it out to read {DCGM_FB_MIB[0]} and {DCGM_FB_MIB[1]} "
                        "(MiB; usedMetric / freeMetric rename them)")
        elif metric and ttype == "AverageValue":
            errs.append(f"{at}.target.type: {metric} is a fraction and takes Utilization; AverageValue (bytes per "
                        f"pod) reads {DCGM_FB_MIB[0]}")
        elif metric and (used or free):
            errs.append(f"{at}.gpuMemory: usedMetric / freeMetric name MiB gauges; drop them or the metric "
                        f"{metric}")
    if len(errs) > n:
        return None
    return MetricSpec(typ, MetricTarget(ttype, float(tval)), source, metric, query, sel, endpoints, quantile, window,
                      per_pod, pod_label, used, free, scale)


def _rules(at: str, raw: Any, default: ScalingRules, errs: list[str]) -> ScalingRules:
    if raw is None:
        return default
    if not isinstance(raw, dict):
        errs.append(f"{at}: {_show(raw)} must be a mapping (stabilizationWindowSeconds, selectPolicy, policies)")
        return default
    win = _number(f"{at}.stabilizationWindowSeconds", raw.get("stabilizationWindowSeconds"), errs, 0, 3600,
                  default.stabilization_s, integer=True)
    select = raw.get("selectPolicy", "Max")
    if select not in ("Max", "Min", "Disabled"):
        errs.append(f"{at}.selectPolicy: {_show(select)} must be Max, Min or Disabled")
    tol = float(_number(f"{at}.tolerance", raw.get("tolerance"), errs, 0, 1, 0.1, quantity=True, high_open=True,
                        hint=", a fraction such as 0.1"))
    policies = []
    for j, p in enumerate(_list(f"{at}.policies", raw.get("policies"), errs, "of {type, value, periodSeconds}")):
        if not isinstance(p, dict) or p.get("type") not in ("Pods", "Percent"):
            errs.append(f"{at}.policies[{j}].type: must be Pods or Percent")
            continue
        n = len(errs)
        v = _number(f"{at}.policies[{j}].value", p.get("value"), errs, 1, MAX_POLICY_VALUE, integer=True)
        per = _number(f"{at}.policies[{j}].periodSeconds", p.get("periodSeconds"), errs, 1, 1800, integer=True)
        if len(errs) == n:
            policies.append(ScalingPolicy(p["type"], v, per))
    return ScalingRules(win, select, tuple(policies) if "policies" in raw else default.policies, tol)


# ---------------------------------------------------------------------------------------------- files
def policies_in_file(path: str) -> list[Policy | PolicyError]:
    """Every policy in a file of policy documents or ConfigMap manifests (what `clique autoscaler validate` checks):
    a Policy, or a PolicyError whose `where` names the file (and document) and whose problems name each field.
    Never raises; a file with no policy in it is an error too."""
    try:
        with open(path, "rb") as f:
            docs = load_yaml(f.read(), path, multi=True)
    except OSError as exc:
        return [PolicyError(path, [f"cannot read it ({exc.strerror or exc})"])]
    except PolicyError as exc:
        return [exc]
    results: list[Policy | PolicyError] = []
    for i, doc in enumerate(docs):
        at = path if len(docs) == 1 else f"{path} document {i + 1}"
        if doc is None:
            continue
        if not isinstance(doc, dict):
            results.append(PolicyError(at, [f"{_show(doc)} must be a mapping: a policy (scaleTargetRef, minReplicas, "
                                            "maxReplicas, metrics) or a ConfigMap manifest"]))
            continue
        try:
            if doc.get("kind") != "ConfigMap":
                results.append(parse_policy("-", path, doc, where=at))
            elif (found := _configmap_policy(at, doc)) is not None:
                results.append(parse_policy(*found))
        except PolicyError as exc:
            results.append(exc)
    return results or [PolicyError(path, ["no policy found; write a policy mapping (scaleTargetRef, minReplicas, "
                                          f"maxReplicas, metrics) or a ConfigMap with data.{POLICY_KEY}"])]


def _configmap_policy(at: str, cm: dict) -> tuple[str, str, str, str] | None:
    """(namespace, name, policy text, where) of a ConfigMap manifest; None for an unlabelled ConfigMap without a
    policy. Raises PolicyError for a malformed one."""
    errs: list[str] = []
    md = _mapping("metadata", cm.get("metadata"), errs, "name, namespace, labels")
    ns = _string("metadata.namespace", md.get("namespace"), errs, "default")
    name = _string("metadata.name", md.get("name"), errs, "?")
    data = _mapping("data", cm.get("data"), errs, f"with the key {POLICY_KEY}")
    labels = md.get("labels")
    labelled = isinstance(labels, dict) and labels.get(POLICY_LABEL) == "true"
    if POLICY_KEY not in data and labelled:
        errs.append(f"data.{POLICY_KEY}: missing; a ConfigMap labelled {POLICY_LABEL}=true holds its policy there")
    elif POLICY_KEY in data and not isinstance(data[POLICY_KEY], str):
        errs.append(f"data.{POLICY_KEY}: {_show(data[POLICY_KEY])} must be a string (the policy YAML, "
                    f"`{POLICY_KEY}: |` and the policy indented below it)")
    if errs:
        raise PolicyError(f"{at}: ConfigMap {ns}/{name}", errs)
    if POLICY_KEY not in data:
        return None
    return ns, name, data[POLICY_KEY], f"{at}: ConfigMap {ns}/{name} key {POLICY_KEY}"
