"""The chaos run's autoscaled workload (simulations/bench_chaos.py scaled_manifests): a policy the daemon accepts,
reading its metric by Scrape from the harness's exporter, on a StatefulSet of the chaos gang shape; the queue
cycle asks for every replica count between the bounds. Pure."""

from __future__ import annotations

import math

import yaml

from autoscaler.policy import POLICY_LABEL, parse_policy
from simulations.bench_chaos import NVL, QUEUE_CYCLE, SCALED_PODS, scaled_manifests


def test_the_autoscaled_workload_is_a_scrape_policy_on_a_statefulset_of_two_pod_gangs():
    sts, cm = scaled_manifests("chaosab12c", "chaosab12c", "http://127.0.0.1:9/metrics")
    assert cm["metadata"]["labels"] == {POLICY_LABEL: "true"}
    policy = parse_policy("chaosab12c", cm["metadata"]["name"], yaml.safe_load(cm["data"]["policy.yaml"]))
    (metric,) = policy.metrics
    assert (metric.source, metric.endpoints, metric.metric) == ("Scrape", ("http://127.0.0.1:9/metrics",),
                                                                "vllm:num_requests_waiting")
    assert (policy.target.kind, policy.target.name, policy.gang.pods, policy.gang.topology_required) == (
        "StatefulSet", sts["metadata"]["name"], SCALED_PODS, NVL)
    tpl = sts["spec"]["template"]
    assert tpl["metadata"]["annotations"]["clique.dev/gang-size"] == str(SCALED_PODS)
    assert tpl["spec"]["nodeSelector"] == {"clique.dev/pool": "chaosab12c"}
    assert sts["spec"]["replicas"] == SCALED_PODS * policy.min_replicas
    wanted = {min(policy.max_replicas, max(policy.min_replicas, math.ceil(q / metric.target.value)))
              for q in QUEUE_CYCLE}
    assert wanted == set(range(policy.min_replicas, policy.max_replicas + 1))
