"""PromQL built for each metric kind, and status rows for `clique autoscaler status`. Pure."""

from __future__ import annotations

import json

from autoscaler.cli import status_rows
from autoscaler.policy import parse_policy
from autoscaler.sources import build_query


def spec(metric: dict):
    return parse_policy("ns", "p", {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                                    "maxReplicas": 3, "metrics": [metric]}).metrics[0]


def test_queue_depth_sums_the_named_metric_with_the_selector():
    s = spec({"type": "QueueDepth", "queueDepth": {"metric": "sglang:num_queue_reqs", "selector": {"model": 'a"b'}},
              "target": {"type": "AverageValue", "averageValue": 4}})
    assert build_query(s) == 'sum(sglang:num_queue_reqs{model="a\\"b"})'


def test_gpu_memory_accepts_legacy_mib_and_renamed_byte_fields_per_pod():
    q = build_query(spec({"type": "GPUMemory", "gpuMemory": {}, "target": {"type": "Utilization",
                                                                         "averageUtilization": 80}}))
    assert "sum by (pod) (DCGM_FI_DEV_FB_USED) * 1048576 or sum by (pod) (DCGM_FI_DEV_FB_USED_BYTES)" in q
    assert "DCGM_FI_DEV_FB_FREE_BYTES" in q and q.startswith("100 * ")


def test_kv_cache_fraction_becomes_percent_for_utilization_targets():
    s = spec({"type": "KVCacheUsage", "kvCacheUsage": {}, "target": {"type": "Utilization", "averageUtilization": 70}})
    assert build_query(s) == "avg by (pod) (vllm:kv_cache_usage_perc) * 100" and s.per_pod


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
