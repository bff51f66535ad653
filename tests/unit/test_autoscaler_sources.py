"""PromQL built for each metric kind, and status rows for `clique autoscaler status`. Pure."""

from __future__ import annotations

import asyncio
import json

import pytest

from autoscaler.cli import status_rows
from autoscaler.policy import ENGINE_METRICS, PolicyError, parse_policy
from autoscaler.sources import TargetPod, _from_vector, _read_scrape, build_query
from simulations.exporter import SyntheticExporter


def spec(metric: dict):
    return parse_policy("ns", "p", {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                                    "maxReplicas": 3, "metrics": [metric]}).metrics[0]


def test_queue_depth_sums_the_named_metric_with_the_selector():
    s = spec({"type": "QueueDepth", "queueDepth": {"metric": "sglang:num_queue_reqs", "selector": {"model": 'a"b'}},
              "target": {"type": "AverageValue", "averageValue": 4}})
    assert build_query(s) == 'sum(sglang:num_queue_reqs{model="a\\"b"})'


def pod_of(metric: str) -> str:
    return f'label_replace({metric}, "pod", "$1", "exported_pod", "(.+)")'


def gpu(body: dict, target: dict | None = None):
    return spec({"type": "GPUMemory", "gpuMemory": body,
                 "target": target or {"type": "Utilization", "averageUtilization": 80}})


def test_gpu_memory_reads_dcgm_exporters_mib_gauges_per_pod():
    used, free = pod_of("DCGM_FI_DEV_FB_USED"), pod_of("DCGM_FI_DEV_FB_FREE")
    assert build_query(gpu({})) == (f"100 * sum by (pod) ({used}) / (sum by (pod) ({used}) + sum by (pod) ({free}))")
    # AverageValue is bytes per pod: MiB times 2**20
    avg = gpu({}, {"type": "AverageValue", "averageValue": "60Gi"})
    assert build_query(avg) == f"sum by (pod) ({used}) * 1048576"
    assert "BYTES" not in build_query(gpu({"usedMetric": "my_fb_used_mib"}))


def test_gpu_memory_reads_the_used_fraction_when_named():
    s = gpu({"metric": "DCGM_FI_DEV_FB_USED_PERCENT"})
    assert build_query(s) == f"100 * avg by (pod) ({pod_of('DCGM_FI_DEV_FB_USED_PERCENT')})"
    assert s.name == "GPUMemory(DCGM_FI_DEV_FB_USED_PERCENT)"


@pytest.mark.parametrize("body, target, needle", [
    ({"metric": "DCGM_FI_DEV_FB_USED_BYTES"}, None, "metrics[0].gpuMemory.metric: 'DCGM_FI_DEV_FB_USED_BYTES' is not"),
    ({"metric": "DCGM_FI_DEV_FB_USED"}, None, "leave it out to read DCGM_FI_DEV_FB_USED and DCGM_FI_DEV_FB_FREE"),
    ({"metric": "DCGM_FI_DEV_FB_USED_PERCENT"}, {"type": "AverageValue", "averageValue": 1},
     "DCGM_FI_DEV_FB_USED_PERCENT is a fraction and takes Utilization"),
    ({"metric": "DCGM_FI_DEV_FB_USED_PERCENT", "usedMetric": "x"}, None, "usedMetric / freeMetric name MiB gauges"),
])
def test_gpu_memory_refuses_names_that_are_not_dcgm_exporters(body, target, needle):
    with pytest.raises(PolicyError) as err:
        gpu(body, target)
    assert needle in str(err.value)


def test_per_pod_queries_find_the_pod_as_pod_or_exported_pod():
    """dcgm-exporter's Helm chart scrapes without honorLabels: Prometheus keeps dcgm-exporter's own pod and
    namespace in `pod` / `namespace` and moves the GPU's to exported_pod / exported_namespace."""
    s = gpu({"selector": {"namespace": "llm", "gpu": "0"}}, {"type": "AverageValue", "averageValue": 1})
    q = build_query(s)
    assert q == ('sum by (pod) (label_replace((DCGM_FI_DEV_FB_USED{gpu="0",namespace="llm"} or '
                 'DCGM_FI_DEV_FB_USED{gpu="0",exported_namespace="llm"}), "pod", "$1", "exported_pod", "(.+)")) '
                 '* 1048576')
    pods = [TargetPod("decode-0", True), TargetPod("decode-1", True)]
    # what Prometheus answers: the label_replace leaves the GPU's pod in `pod`
    reading = _from_vector(s, [{"metric": {"pod": "decode-0"}, "value": [0, "1024"]}], pods, q)
    assert [p.value for p in reading.pods] == [1024.0, None]
    # a query override that keeps the renamed label: exported_pod wins over dcgm-exporter's own pod
    raw = [{"metric": {"pod": "dcgm-exporter-x7k2p", "exported_pod": "decode-1"}, "value": [0, "7"]},
           {"metric": {"pod": "decode-0"}, "value": [0, "5"]}]
    assert [p.value for p in _from_vector(s, raw, pods, q).pods] == [5.0, 7.0]


def test_a_named_pod_label_is_read_the_same_way():
    s = spec({"type": "KVCacheUsage", "kvCacheUsage": {"podLabel": "instance_pod", "selector": {"pod": "a"}},
              "target": {"type": "Utilization", "averageUtilization": 70}})
    assert build_query(s) == ('avg by (instance_pod) (label_replace((vllm:kv_cache_usage_perc{pod="a"} or '
                              'vllm:kv_cache_usage_perc{exported_pod="a"}), "instance_pod", "$1", '
                              '"exported_instance_pod", "(.+)")) * 100')


def test_kv_cache_fraction_becomes_percent_for_utilization_targets():
    s = spec({"type": "KVCacheUsage", "kvCacheUsage": {}, "target": {"type": "Utilization", "averageUtilization": 70}})
    assert build_query(s) == f"avg by (pod) ({pod_of('vllm:kv_cache_usage_perc')}) * 100" and s.per_pod


@pytest.mark.parametrize("engine, queue, kv", [
    ("dynamo", "dynamo_frontend_queued_requests", "dynamo_component_gpu_cache_usage_percent"),
    ("vllm", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"),
    ("sglang", "sglang:num_queue_reqs", "sglang:token_usage"),
    ("trtllm", "trtllm_num_requests_waiting", "trtllm_kv_cache_utilization"),
])
def test_engine_picks_the_queue_and_kv_gauges_that_engine_publishes(engine, queue, kv):
    q = spec({"type": "QueueDepth", "queueDepth": {"engine": engine}, "target": {"type": "AverageValue",
                                                                               "averageValue": 4}})
    k = spec({"type": "KVCacheUsage", "kvCacheUsage": {"engine": engine},
              "target": {"type": "Utilization", "averageUtilization": 70}})
    assert (q.metric, k.metric) == (queue, kv) == (ENGINE_METRICS[engine]["QueueDepth"],
                                                    ENGINE_METRICS[engine]["KVCacheUsage"])
    assert build_query(q) == f"sum({queue})"
    assert build_query(k) == f"avg by (pod) ({pod_of(kv)}) * 100"  # every engine's KV gauge is a 0..1 fraction


def test_without_engine_or_metric_the_defaults_are_unchanged():
    q = spec({"type": "QueueDepth", "target": {"type": "AverageValue", "averageValue": 4}})
    k = spec({"type": "KVCacheUsage", "target": {"type": "AverageValue", "averageValue": 0.5}})
    assert (q.metric, k.metric, k.scale) == ("dynamo_frontend_queued_requests", "vllm:kv_cache_usage_perc", 1.0)


@pytest.mark.parametrize("metric, needle", [
    ({"type": "QueueDepth", "queueDepth": {"engine": "tgi"}},
     "metrics[0].queueDepth.engine: 'tgi' must be one of dynamo, vllm, sglang, trtllm"),
    ({"type": "KVCacheUsage", "kvCacheUsage": {"engine": "trtllm", "metric": "vllm:kv_cache_usage_perc"}},
     "metrics[0].kvCacheUsage: give engine or metric, not both (engine trtllm reads trtllm_kv_cache_utilization)"),
    ({"type": "GPUMemory", "gpuMemory": {"engine": "vllm"}},
     "metrics[0].gpuMemory.engine: applies to QueueDepth and KVCacheUsage"),
])
def test_a_wrong_engine_is_named(metric, needle):
    target = {"type": "Value", "value": 1} if metric["type"] == "QueueDepth" else \
        {"type": "Utilization", "averageUtilization": 70}
    with pytest.raises(PolicyError) as err:
        spec({**metric, "target": target})
    assert needle in str(err.value)


def test_scrape_reads_dcgm_mib_gauges_and_the_used_fraction():
    with SyntheticExporter() as exp:
        exp.gpu_memory("decode-0", "llm", used_mib=61_000, total_mib=81_000, gpus=2)
        exp.set("DCGM_FI_DEV_FB_USED_PERCENT", 0.25, gpu="0", pod="decode-0", namespace="llm")
        exp.set("DCGM_FI_DEV_FB_USED_PERCENT", 0.75, gpu="1", pod="decode-0", namespace="llm")

        def read(body, target=None):
            s = gpu({"source": "Scrape", "endpoints": [exp.url], "selector": {"namespace": "llm"}, **body}, target)
            return asyncio.run(_read_scrape(s, None))
        assert read({}).value == pytest.approx(100 * 61_000 / 81_000)
        assert read({}, {"type": "AverageValue", "averageValue": 1}).value == 61_000 * 2**20
        assert read({"metric": "DCGM_FI_DEV_FB_USED_PERCENT"}).value == pytest.approx(50.0)
        missing = read({"selector": {"namespace": "other"}})
        assert missing.value is None and "no DCGM_FI_DEV_FB_USED / DCGM_FI_DEV_FB_FREE samples" in missing.error


def test_latency_is_a_histogram_quantile_over_a_rate_window():
    s = spec({"type": "Latency", "latency": {"histogram": "vllm:time_to_first_token_seconds", "quantile": 0.95,
                                             "window": "2m"}, "target": {"type": "Value", "value": 0.5}})
    assert build_query(s) == ("histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket"
                              "[2m])))")


def test_status_rows_show_values_targets_and_why():
    cm = {"metadata": {"namespace": "llm", "name": "decode", "annotations": {"clique.dev/autoscaling-status": json.dumps({
        "valid": True, "target": "StatefulSet/decode", "currentReplicas": 2, "desiredReplicas": 3,
        "reason": "BlockedByCapacity", "message": "2 -> 3", "metrics": [{"name": "QueueDepth(q)", "value": 25.0,
                                                                          "target": 10.0}]})}}}
    row = status_rows([cm, {"metadata": {"namespace": "llm", "name": "new"}}])
    assert row[0]["metrics"] == "QueueDepth(q)=25/10" and row[0]["why"] == "BlockedByCapacity"
    assert row[1]["why"] == "not evaluated yet"
