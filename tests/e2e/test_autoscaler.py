"""The autoscaler daemon (a real process) against real Prometheus, the real control plane and Clique's scheduler.

Prometheus (Debian's package) scrapes a synthetic exporter whose queue depth the test sets; the target is a
StatefulSet of 2-pod x 8-GPU gangs (TP16) scheduled by clique-scheduler onto KWOK nodes in NVLink domains of
two hosts, so each domain holds exactly one gang and the cluster holds three.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
import yaml
from kubernetes import client

from autoscaler.process import start_autoscaler, stop_autoscaler
from autoscaler.reconciler import STATUS_ANNOTATION
from simulations.controlplane.prometheus import Prometheus
from simulations.exporter import SyntheticExporter
from tests.e2e.helpers import wait_for
from tests.e2e.test_extender import NVL, new_pool

INTERVAL = 2  # evaluationIntervalSeconds of the test policy
WINDOW = 8  # its scale-down stabilization window


@pytest.fixture(scope="module")
def env(control_plane, clique_scheduler, tmp_path_factory):
    k8s = control_plane.api_client()
    core, apps = client.CoreV1Api(k8s), client.AppsV1Api(k8s)
    ns = f"as-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    prefix, nodes, domain = new_pool(k8s, domains=3, hosts=2)
    exporter = SyntheticExporter()
    exporter.queue(5, namespace=ns)
    prom = Prometheus([exporter.target]).start()
    prom.wait_for_series(f'vllm:num_requests_waiting{{namespace="{ns}"}}')
    apps.create_namespaced_stateful_set(ns, statefulset("decode", prefix, pods=2))
    good = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "decode"},
            "minReplicas": 1, "maxReplicas": 5, "podsPerReplica": 2, "scaleUnit": "Pods",
            "evaluationIntervalSeconds": INTERVAL,
            "gang": {"gpusPerPod": 8, "topologyRequired": NVL, "nodeSelector": {"clique.dev/pool": prefix}},
            "metrics": [{"type": "QueueDepth", "queueDepth": {"metric": "vllm:num_requests_waiting",
                                                              "selector": {"namespace": ns}},
                         "target": {"type": "AverageValue", "averageValue": 10}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": WINDOW}}}
    core.create_namespaced_config_map(ns, policy_cm("decode-policy", good))
    broken = dict(good, maxReplicas=0, metrics=[{"type": "QueueDepth", "target": {"type": "Average"}}])
    core.create_namespaced_config_map(ns, policy_cm("broken-policy", broken))
    core.create_namespaced_config_map(ns, policy_cm("not-yaml", "scaleTargetRef: [unclosed"))
    log = tmp_path_factory.mktemp("autoscaler") / "autoscaler.log"
    proc, port = start_autoscaler(control_plane.kubeconfig, log, prom.url, namespace=ns, preset="gb200-nvl72",
                                  lease_namespace=ns)
    try:
        yield {"core": core, "apps": apps, "ns": ns, "prefix": prefix, "domain": domain, "exporter": exporter,
               "prom": prom, "log": log, "port": port, "kubeconfig": control_plane.kubeconfig}
    finally:
        stop_autoscaler(proc)
        prom.close()
        exporter.close()
        core.delete_namespace(ns)
        k8s.close()


def statefulset(name: str, pool: str, pods: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": pods, "serviceName": name, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name},
                                               "annotations": {"clique.dev/gang-size": "2",
                                                               "clique.dev/topology-required": NVL}},
                                  "spec": {"schedulerName": "clique-scheduler", "automountServiceAccountToken": False,
                                           "nodeSelector": {"clique.dev/pool": pool},
                                           "containers": [{"name": "worker", "image": "registry.example/trtllm:test",
                                                           "args": ["--tp-size", "16"],
                                                           "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}}}


def policy_cm(name: str, doc) -> dict:
    return {"metadata": {"name": name, "labels": {"clique.dev/autoscaling-policy": "true"}},
            "data": {"policy.yaml": doc if isinstance(doc, str) else yaml.safe_dump(doc)}}


def replicas(env) -> int:
    return env["apps"].read_namespaced_stateful_set_scale("decode", env["ns"]).spec.replicas


def pods(env) -> list:
    return env["core"].list_namespaced_pod(env["ns"], label_selector="app=decode").items


def all_running(env, n: int) -> dict[str, str] | None:
    ps = [p for p in pods(env) if not p.metadata.deletion_timestamp]
    if len(ps) == n and all(p.status.phase == "Running" and p.spec.node_name for p in ps):
        return {p.metadata.name: p.spec.node_name for p in ps}
    return None


def events(env, name: str, reason: str) -> list[str]:
    evs = env["core"].list_namespaced_event(env["ns"], field_selector=f"involvedObject.name={name}").items
    return [e.message for e in evs if e.reason == reason]


def status(env, cm: str = "decode-policy") -> dict:
    ann = env["core"].read_namespaced_config_map(cm, env["ns"]).metadata.annotations or {}
    return json.loads(ann.get(STATUS_ANNOTATION, "{}"))


def gangs_in_one_domain(env, placed: dict[str, str]) -> None:
    by_gang: dict[int, set[str]] = {}
    for pod, node in placed.items():
        by_gang.setdefault(int(pod.rsplit("-", 1)[1]) // 2, set()).add(env["domain"][node])
    assert all(len(d) == 1 for d in by_gang.values()), f"a gang spans NVLink domains: {by_gang}"


def test_queue_spike_scales_up_within_one_evaluation_period_and_the_new_gang_runs(env):
    wait_for(lambda: all_running(env, 2), 60, "the first gang Running")
    env["exporter"].queue(20, namespace=env["ns"])
    t0 = time.monotonic()
    wait_for(lambda: replicas(env) == 4, 2 * INTERVAL + 3, "scale-up to 2 gangs (4 pods)", interval_s=0.1)
    took = time.monotonic() - t0
    placed = wait_for(lambda: all_running(env, 4), 60, "4 pods bound and Running")
    gangs_in_one_domain(env, placed)
    assert events(env, "decode", "ScaledUp"), "the decision is told on the target"
    print(f"metric change -> /scale patch: {took:.2f}s (interval {INTERVAL}s, scrape 1s)")


def test_scale_up_stops_at_placeable_capacity_and_says_so(env):
    wait_for(lambda: all_running(env, 4), 60, "2 gangs Running")
    env["exporter"].queue(50, namespace=env["ns"])  # wants 5 gangs; 3 NVLink domains hold 3
    wait_for(lambda: replicas(env) == 6, 2 * INTERVAL + 3, "partial scale-up to 3 gangs")
    msgs = wait_for(lambda: events(env, "decode", "BlockedByCapacity"), 10, "a BlockedByCapacity Event")
    assert "blocked by capacity" in msgs[0]
    placed = wait_for(lambda: all_running(env, 6), 60, "all 6 pods Running")
    gangs_in_one_domain(env, placed)
    time.sleep(2 * INTERVAL)
    assert replicas(env) == 6, "no further scale-up while nothing more fits"
    assert all(p.spec.node_name for p in pods(env)), "no pending gang was created"
    st = status(env)
    assert st["blockedByCapacity"] == 2 and st["desiredReplicas"] == 3


def test_load_drop_scales_down_only_after_the_stabilization_window(env):
    wait_for(lambda: all_running(env, 6), 60, "3 gangs Running")
    env["exporter"].queue(5, namespace=env["ns"])
    t0 = time.monotonic()
    while time.monotonic() - t0 < WINDOW - 1:
        assert replicas(env) == 6, f"scaled down after {time.monotonic() - t0:.1f}s, inside the {WINDOW}s window"
        time.sleep(0.2)
    wait_for(lambda: replicas(env) == 2, INTERVAL * 2 + 5, "scale-down to 1 gang after the window")
    wait_for(lambda: all_running(env, 2), 60, "2 pods left")


def test_prometheus_outage_holds_replicas_and_reports_it_then_resumes(env):
    env["exporter"].queue(20, namespace=env["ns"])
    wait_for(lambda: replicas(env) == 4, 2 * INTERVAL + 5, "back to 2 gangs")
    env["prom"].stop()
    env["exporter"].queue(0, namespace=env["ns"])  # would scale down to 1 if it were seen
    t0 = time.monotonic()
    while time.monotonic() - t0 < WINDOW + 2 * INTERVAL:
        assert replicas(env) == 4, "replicas must be held while Prometheus is unreachable"
        time.sleep(0.25)
    st = status(env)
    active = next(c for c in st["conditions"] if c["type"] == "ScalingActive")
    assert active["status"] == "False" and active["reason"] == "NoMetrics", st
    assert "query failed" in st["message"]
    assert events(env, "decode", "NoMetrics")
    env["prom"].start()
    wait_for(lambda: replicas(env) == 2, WINDOW + 4 * INTERVAL + 10, "scale-down once Prometheus is back")


def test_broken_policies_are_reported_and_the_good_one_keeps_scaling(env):
    for cm, needle in (("broken-policy", "maxReplicas"), ("not-yaml", "not valid YAML")):
        st = wait_for(lambda cm=cm: status(env, cm), 20, f"status of {cm}")
        assert st["valid"] is False and needle in st["error"]
        msgs = wait_for(lambda cm=cm: events(env, cm, "InvalidPolicy"), 20, f"InvalidPolicy Event on {cm}")
        assert needle in msgs[0]
    broken = status(env, "broken-policy")["error"]
    assert "metrics[0].target.type" in broken  # every problem named, with its field
    # the good policy scaled in the tests above, and is still being evaluated now
    assert status(env)["valid"] is True


def test_policy_edits_apply_without_restart(env):
    core, ns = env["core"], env["ns"]
    cm = core.read_namespaced_config_map("decode-policy", ns)
    doc = yaml.safe_load(cm.data["policy.yaml"])
    doc["minReplicas"] = 2
    core.patch_namespaced_config_map("decode-policy", ns, {"data": {"policy.yaml": yaml.safe_dump(doc)}})
    wait_for(lambda: replicas(env) == 4, 3 * INTERVAL + 5, "minReplicas 2 applied")
    doc["minReplicas"] = 1
    core.patch_namespaced_config_map("decode-policy", ns, {"data": {"policy.yaml": yaml.safe_dump(doc)}})


def test_status_command_prints_every_policy(env):
    out = subprocess.run([sys.executable, "-m", "clique", "autoscaler", "status", "--kubeconfig",
                          str(env["kubeconfig"]), "--namespace", env["ns"]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:6] == ["POLICY", "TARGET", "CURRENT", "DESIRED", "METRICS", "WHY"]
    row = next(line for line in lines if line.startswith(f"{env['ns']}/decode-policy"))
    assert "StatefulSet/decode" in row and "QueueDepth(vllm:num_requests_waiting)=" in row
    assert any(line.startswith(f"{env['ns']}/broken-policy") for line in lines)


def test_metrics_endpoint_reports_decisions(env):
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{env['port']}/metrics", timeout=5).read().decode()
    assert f'clique_autoscaler_policy_invalid{{policy="{env["ns"]}/broken-policy"}} 1.0' in text
    assert f'clique_autoscaler_scale_events_total{{direction="up",policy="{env["ns"]}/decode-policy"}}' in text
    assert "clique_autoscaler_leader 1.0" in text


def test_dynamo_graph_deployment_service_is_scaled_by_merge_patch(control_plane, k8s, env):
    """A DynamoGraphDeployment (its CRD installed here with an open schema; no Dynamo operator runs) is scaled
    through spec.services.<name>.replicas; the metric is read by scraping the exporter directly."""
    ext = client.ApiextensionsV1Api(k8s)
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "dynamographdeployments.nvidia.com"},
           "spec": {"group": "nvidia.com", "scope": "Namespaced",
                    "names": {"plural": "dynamographdeployments", "singular": "dynamographdeployment",
                              "kind": "DynamoGraphDeployment"},
                    "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    try:
        ext.create_custom_resource_definition(crd)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    custom, ns = client.CustomObjectsApi(k8s), env["ns"]

    def create():
        custom.create_namespaced_custom_object("nvidia.com", "v1alpha1", ns, "dynamographdeployments", {
            "apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {"name": "llm"},
            "spec": {"services": {"Frontend": {"replicas": 1}, "VllmPrefillWorker": {"replicas": 1}}}})
        return True
    wait_for(lambda: _try(create), 30, "the CRD served")
    env["exporter"].set("dynamo_frontend_queued_requests", 35, dynamo_component="prefill")
    env["core"].create_namespaced_config_map(ns, policy_cm("prefill-policy", {
        "scaleTargetRef": {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "name": "llm",
                           "service": "VllmPrefillWorker"},
        "minReplicas": 1, "maxReplicas": 4, "evaluationIntervalSeconds": 1,
        "metrics": [{"type": "QueueDepth", "queueDepth": {"source": "Scrape", "endpoints": [env["exporter"].url],
                                                          "selector": {"dynamo_component": "prefill"}},
                     "target": {"type": "AverageValue", "averageValue": 10}}]}))

    def svc_replicas():
        obj = custom.get_namespaced_custom_object("nvidia.com", "v1alpha1", ns, "dynamographdeployments", "llm")
        return obj["spec"]["services"]
    services = wait_for(lambda: (s := svc_replicas())["VllmPrefillWorker"]["replicas"] == 4 and s, 20,
                        "prefill service scaled to 4")
    assert services["Frontend"]["replicas"] == 1, "only the named service changes"


def _try(fn) -> bool:
    try:
        return fn()
    except client.ApiException:
        return False


def test_configmaps_that_used_to_crash_validation_are_reported_and_the_valid_policy_keeps_scaling(env):
    """Two policy ConfigMaps whose policy.yaml once made validation raise (brackets 10,000 deep, a RecursionError;
    `gpusPerPod: true`, a decimal error), which failed every tick for every policy: each is now reported (status
    annotation, InvalidPolicy Event, log line, metric) and the valid policy beside them still scales."""
    core, ns = env["core"], env["ns"]
    good = yaml.safe_load(core.read_namespaced_config_map("decode-policy", ns).data["policy.yaml"])
    wait_for(lambda: replicas(env) == 2, WINDOW + 4 * INTERVAL + 10, "the valid policy at 1 gang")
    core.create_namespaced_config_map(ns, policy_cm("deep-nesting", "[" * 10_000 + "]" * 10_000))
    core.create_namespaced_config_map(ns, policy_cm("bool-gpus", dict(good, gang=dict(good["gang"], gpusPerPod=True))))
    for cm, needle in (("deep-nesting", "nested more than 32 levels deep"), ("bool-gpus", "gang.gpusPerPod: true")):
        st = wait_for(lambda cm=cm: status(env, cm), 20, f"status of {cm}")
        assert st["valid"] is False and needle in st["error"], st
        msgs = wait_for(lambda cm=cm: events(env, cm, "InvalidPolicy"), 20, f"InvalidPolicy Event on {cm}")
        assert needle in msgs[0]
        assert f"invalid policy {ns}/{cm}" in env["log"].read_text()
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{env['port']}/metrics", timeout=5).read().decode()
    assert f'clique_autoscaler_policy_invalid{{policy="{ns}/deep-nesting"}} 1.0' in text
    assert f'clique_autoscaler_policy_invalid{{policy="{ns}/bool-gpus"}} 1.0' in text
    env["exporter"].queue(20, namespace=ns)
    wait_for(lambda: replicas(env) == 4, 2 * INTERVAL + 5, "the valid policy scaling up beside the invalid ones")
    env["exporter"].queue(5, namespace=ns)


def test_a_planner_policy_scales_on_prompt_token_counters_scraped_by_prometheus(env):
    """A `planner:` policy: the daemon feeds the look-ahead planner the increments of vLLM's counters (as the
    exporter publishes them, scraped by the real Prometheus every second) and scales the target to the plan, the
    plan's reason in the status and the ScaledUp Event. The target's pods select no node (they stay Pending), so
    they take nothing from the gangs above."""
    import threading

    core, apps, ns, exporter = env["core"], env["apps"], env["ns"], env["exporter"]
    labels = {"model_name": "planned", "engine": "0"}
    stop = threading.Event()

    def serve(tokens_per_s: float = 30_000, requests_per_s: float = 10) -> None:
        tokens = requests = 0.0
        while not stop.is_set():  # counters advancing at a steady load
            exporter.set("vllm:prompt_tokens_total", tokens, **labels)
            exporter.set("vllm:request_success_total", requests, finished_reason="stop", **labels)
            tokens, requests = tokens + tokens_per_s * 0.1, requests + requests_per_s * 0.1
            stop.wait(0.1)

    exporter.set("vllm:num_requests_waiting", 0, **labels)
    exporter.set("vllm:num_requests_running", 40, **labels)
    feeder = threading.Thread(target=serve, daemon=True)
    feeder.start()
    try:
        env["prom"].wait_for_series('vllm:prompt_tokens_total{model_name="planned"}')
        apps.create_namespaced_deployment(ns, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "planned"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "planned"}},
                     "template": {"metadata": {"labels": {"app": "planned"}},
                                  "spec": {"nodeSelector": {"clique.dev/pool": f"{env['prefix']}-none"},
                                           "containers": [{"name": "prefill",
                                                           "image": "registry.example/vllm:test"}]}}}})
        core.create_namespaced_config_map(ns, policy_cm("planned-policy", {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "planned"},
            "minReplicas": 1, "maxReplicas": 8, "evaluationIntervalSeconds": INTERVAL, "capacityAware": False,
            "planner": {"role": "Prefill", "prefillTokensPerSecond": 12_000, "decodeSlots": 64,
                        "modelLoadSeconds": 4, "ttftSeconds": 2, "engine": "vllm", "selector": labels}}))

        def planned():
            return apps.read_namespaced_deployment_scale("planned", ns).spec.replicas

        wait_for(lambda: planned() >= 3, 6 * INTERVAL + 10,
                 "the planner's scale-up (30,000 tok/s / 12,000 per replica)")
        st = wait_for(lambda: (s := status(env, "planned-policy")).get("planner", {}).get("reason") and s, 10,
                      "the planner's reason in the status")
        # 3 replicas carry the mean; the 1 s scrapes read by 2 s evaluations make the increments jitter, which
        # the burst headroom may answer with a fourth, never with maxReplicas
        assert 3 <= st["desiredReplicas"] <= 4, st
        assert st["planner"]["role"] == "Prefill" and st["planner"]["reason"].startswith("prefill ")
        assert "planner prefill = " in st["message"]
        msgs = wait_for(lambda: events(env, "planned", "ScaledUp"), 10, "a ScaledUp Event on the Deployment")
        assert "burst headroom" in msgs[0], msgs
    finally:
        stop.set()
        feeder.join(timeout=2)
