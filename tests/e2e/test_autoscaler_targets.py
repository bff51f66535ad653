"""The autoscaler daemon (a real process) scaling the targets as their APIs publish them, on a real control plane
with the real LeaderWorkerSet controller (sigs.k8s.io/lws v0.8.0, its own module-scoped control plane like
test_lws.py; the session control plane stays LWS-free):

- DynamoGraphDeployment nvidia.com/v1alpha1 (spec.services.<name>) and nvidia.com/v1beta1 (spec.components[], a
  list keyed by name) and DynamoGraphDeploymentScalingAdapter, their CRDs written here from the published Go types
  (ai-dynamo/dynamo deploy/operator/api/v1alpha1 and v1beta1: dynamographdeployment_types.go,
  dynamocomponentdeployment_types.go, common.go, dynamographdeploymentscalingadapter_types.go). No Dynamo operator
  runs, so the test creates the pods the operator would, with the labels it stamps on them
  (deploy/operator/internal/consts/consts.go), and nothing converts between the two DGD versions: the v1alpha1
  tests run while the CRD serves v1alpha1 only (as Dynamo's releases before v1beta1 published it), the v1beta1 ones
  after v1beta1 is added as the storage version.
- LeaderWorkerSet groups scaled through /scale, and groups still pending counted by their unbound leaders.

Queue depth is read by scraping a synthetic exporter directly; KV-cache usage per pod through real Prometheus.
Every test's pods stay on KWOK nodes it creates (a clique.dev/pool of its own).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client

from autoscaler.policy import ScaleTargetRef
from autoscaler.process import start_autoscaler, stop_autoscaler
from autoscaler.reconciler import STATUS_ANNOTATION
from autoscaler.target_shape import DGD_COMPONENT_LABEL, DGD_NAME_LABEL
from autoscaler.targets import TargetError, Targets
from simulations.controlplane import ControlPlane, ControlPlaneOptions
from simulations.controlplane.kwok_nodes import create_nodes
from simulations.controlplane.lws import GROUP as LWS_GROUP
from simulations.controlplane.lws import PLURAL as LWS_PLURAL
from simulations.controlplane.lws import SET_NAME_LABEL, create_lws, lws_manifest
from simulations.controlplane.prometheus import Prometheus
from simulations.exporter import SyntheticExporter
from tests.e2e.helpers import wait_for
from topology.spec import parse_cluster_spec

NVL = "nvidia.com/gpu.clique"
DGD_PLURAL, DGDSA_PLURAL = "dynamographdeployments", "dynamographdeploymentscalingadapters"
UNSERVED_SCHEDULER = "clique-scheduler"  # no scheduler of that name runs here: its pods stay created, not bound


# ---------------------------------------------------------------------------------------------- CRDs
def _int32(minimum: int | None = None, default: int | None = None) -> dict:
    out: dict[str, Any] = {"type": "integer", "format": "int32"}
    if minimum is not None:
        out["minimum"] = minimum
    if default is not None:
        out["default"] = default
    return out


OPEN = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
# MultinodeSpec (both versions): nodeCount, default 2, minimum 2
MULTINODE = {"type": "object", "properties": {"nodeCount": _int32(2, 2)}}
# v1alpha1 common.go ResourceItem / Resources
RESOURCE_ITEM = {"type": "object", "properties": {
    "cpu": {"type": "string"}, "memory": {"type": "string"}, "gpu": {"type": "string"},
    "gpuType": {"type": "string"}, "custom": {"type": "object", "additionalProperties": {"type": "string"}}}}
V1ALPHA1_SERVICE = {"type": "object", "properties": {  # DynamoComponentDeploymentSharedSpec, the fields used here
    "serviceName": {"type": "string"}, "componentType": {"type": "string"}, "subComponentType": {"type": "string"},
    "replicas": _int32(0), "multinode": MULTINODE,
    "resources": {"type": "object", "properties": {"requests": RESOURCE_ITEM, "limits": RESOURCE_ITEM,
                                                   "claims": {"type": "array", "items": OPEN}}},
    # ScalingAdapter{Enabled bool, +kubebuilder:default=false}
    "scalingAdapter": {"type": "object", "properties": {"enabled": {"type": "boolean", "default": False}}},
    # corev1.PodSpec + mainContainer in the published CRD; its schema is not repeated here
    "extraPodSpec": OPEN, "envs": {"type": "array", "items": OPEN}}}
V1BETA1_COMPONENT = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$"},
    "type": {"type": "string", "enum": ["frontend", "worker", "prefill", "decode", "planner", "epp"]},
    "replicas": _int32(0), "minAvailable": _int32(1), "multinode": MULTINODE,
    "podTemplate": OPEN,  # a corev1.PodTemplateSpec in the published CRD; its schema is not repeated here
    "scalingAdapter": {"type": "object"}}}  # ScalingAdapter struct{}: a marker, present (even {}) = enabled
BACKEND = {"type": "string", "enum": ["sglang", "vllm", "trtllm"]}


def dgd_version(name: str, storage: bool) -> dict:
    spec: dict[str, Any] = {"type": "object", "properties": {"backendFramework": BACKEND}}
    if name == "v1alpha1":
        spec["properties"]["services"] = {"type": "object", "maxProperties": 25,
                                          "additionalProperties": V1ALPHA1_SERVICE}
    else:
        spec["properties"]["components"] = {"type": "array", "maxItems": 25, "x-kubernetes-list-type": "map",
                                            "x-kubernetes-list-map-keys": ["name"], "items": V1BETA1_COMPONENT}
    return {"name": name, "served": True, "storage": storage, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec, "status": OPEN}}}}


def dgdsa_version(name: str, storage: bool) -> dict:
    ref = ({"type": "object", "required": ["name"],
            "x-kubernetes-validations": [{"rule": "has(self.serviceName) != has(self.componentGroupName)",
                                          "message": "exactly one of serviceName or componentGroupName must be set"}],
            "properties": {"name": {"type": "string", "minLength": 1}, "serviceName": {"type": "string", "minLength": 1},
                           "componentGroupName": {"type": "string", "minLength": 1}}}
           if name == "v1alpha1" else
           {"type": "object", "required": ["name", "componentName"],
            "properties": {"name": {"type": "string", "minLength": 1},
                           "componentName": {"type": "string", "minLength": 1}}})
    return {"name": name, "served": True, "storage": storage,
            "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                     "statusReplicasPath": ".status.replicas",
                                                     "labelSelectorPath": ".status.selector"}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "required": ["replicas", "dgdRef"],
                         "properties": {"replicas": _int32(0), "dgdRef": ref}},
                "status": {"type": "object", "properties": {"replicas": _int32(), "selector": {"type": "string"},
                                                            "lastScaleTime": {"type": "string",
                                                                              "format": "date-time"}}}}}}}


def crd(plural: str, kind: str, short: str, versions: list[dict]) -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.nvidia.com"},
            "spec": {"group": "nvidia.com", "scope": "Namespaced", "versions": versions,
                     "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "shortNames": [short]}}}


class DynamoCRDs:
    """The DGD CRD at one of two stages: "v1alpha1" (served and stored alone) or "both" (v1beta1 added as the
    storage version, v1alpha1 still served). Moving back deletes and recreates the CRD (its objects go with it)."""

    def __init__(self, api) -> None:
        self.api, self.ext = api, client.ApiextensionsV1Api(api)
        self.stage: str | None = None
        self._apply(crd(DGDSA_PLURAL, "DynamoGraphDeploymentScalingAdapter", "dgdsa",
                        [dgdsa_version("v1alpha1", True), dgdsa_version("v1beta1", False)]))

    def _apply(self, body: dict) -> None:
        name = body["metadata"]["name"]
        try:
            cur = self.ext.read_custom_resource_definition(name)
            body["metadata"]["resourceVersion"] = cur.metadata.resource_version
            self.ext.replace_custom_resource_definition(name, body)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            self.ext.create_custom_resource_definition(body)
        versions = [v["name"] for v in body["spec"]["versions"]]
        group = body["spec"]["group"]
        plural = body["spec"]["names"]["plural"]

        def served() -> bool:
            try:
                for v in versions:
                    client.CustomObjectsApi(self.api).list_cluster_custom_object(group, v, plural)
                return True
            except client.ApiException:
                return False
        wait_for(served, 30, f"{name} served at {versions}")

    def serve(self, stage: str) -> None:
        if stage == self.stage:
            return
        if stage == "v1alpha1" and self.stage is not None:
            try:
                self.ext.delete_custom_resource_definition(f"{DGD_PLURAL}.nvidia.com")
            except client.ApiException as exc:
                if exc.status != 404:
                    raise

            def gone() -> bool:
                try:
                    self.ext.read_custom_resource_definition(f"{DGD_PLURAL}.nvidia.com")
                    return False
                except client.ApiException as exc:
                    return exc.status == 404
            wait_for(gone, 60, "the DGD CRD deleted")
        versions = [dgd_version("v1alpha1", True)] if stage == "v1alpha1" else \
            [dgd_version("v1alpha1", False), dgd_version("v1beta1", True)]
        self._apply(crd(DGD_PLURAL, "DynamoGraphDeployment", "dgd", versions))
        self.stage = stage


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with ControlPlane(ControlPlaneOptions(lws=True)) as cp:
        api = cp.api_client()
        ns = f"at-{uuid.uuid4().hex[:5]}"
        cp.create_namespace(ns)
        exporter = SyntheticExporter()
        prom = Prometheus([exporter.target]).start()
        crds = DynamoCRDs(api)
        log = tmp_path_factory.mktemp("autoscaler") / "autoscaler.log"
        proc, port = start_autoscaler(cp.kubeconfig, log, prom.url, namespace=ns, preset="gb200-nvl72",
                                      lease_namespace=ns)
        try:
            yield {"cp": cp, "api": api, "ns": ns, "core": client.CoreV1Api(api),
                   "custom": client.CustomObjectsApi(api), "exporter": exporter, "prom": prom, "crds": crds,
                   "log": log, "kubeconfig": cp.kubeconfig}
        finally:
            stop_autoscaler(proc)
            prom.close()
            exporter.close()
            api.close()


def pool(env, domains: int, hosts: int = 2) -> str:
    """Fresh KWOK nodes of 8 GPUs in NVLink domains of `hosts`, labelled clique.dev/pool=<name>."""
    name = f"p{uuid.uuid4().hex[:5]}"
    create_nodes(env["api"], parse_cluster_spec({
        "name": name, "pools": [{"name": name, "hosts": domains * hosts, "gpus": 8}],
        "levels": [{"name": "nvlink", "label": NVL, "hostsPerDomain": hosts, "valueFormat": name + ".{index}"}]}).hosts())
    return name


def queue_metric(env, key: str, depth: float, per_replica: float = 10) -> dict:
    env["exporter"].set("vllm:num_requests_waiting", depth, target=key)
    return {"type": "QueueDepth", "queueDepth": {"source": "Scrape", "endpoints": [env["exporter"].url],
                                                 "metric": "vllm:num_requests_waiting", "selector": {"target": key}},
            "target": {"type": "AverageValue", "averageValue": per_replica}}


def add_policy(env, name: str, target: dict, metrics: list[dict], max_replicas: int = 4, **extra: Any) -> None:
    doc = {"scaleTargetRef": target, "minReplicas": 1, "maxReplicas": max_replicas, "evaluationIntervalSeconds": 1,
           "metrics": metrics, **extra}
    env["core"].create_namespaced_config_map(env["ns"], {
        "metadata": {"name": name, "labels": {"clique.dev/autoscaling-policy": "true"}},
        "data": {"policy.yaml": yaml.safe_dump(doc)}})


def status(env, cm: str) -> dict:
    ann = env["core"].read_namespaced_config_map(cm, env["ns"]).metadata.annotations or {}
    return json.loads(ann.get(STATUS_ANNOTATION, "{}"))


def events(env, name: str, reason: str) -> list[str]:
    evs = env["core"].list_namespaced_event(env["ns"], field_selector=f"involvedObject.name={name}").items
    return [e.message for e in evs if e.reason == reason]


def dgd(env, version: str, name: str, spec: dict) -> None:
    env["custom"].create_namespaced_custom_object("nvidia.com", version, env["ns"], DGD_PLURAL, {
        "apiVersion": f"nvidia.com/{version}", "kind": "DynamoGraphDeployment", "metadata": {"name": name},
        "spec": spec})


def read_dgd(env, version: str, name: str) -> dict:
    return env["custom"].get_namespaced_custom_object("nvidia.com", version, env["ns"], DGD_PLURAL, name)


def dynamo_pods(env, graph: str, service: str, count: int, pool_name: str, scheduler: str = "default-scheduler"
                ) -> list[str]:
    """The pods the Dynamo operator would create for one replica of a service: its labels, 8 GPUs each."""
    names = []
    for i in range(count):
        name = f"{graph}-{service.lower()}-0-{i}"
        env["core"].create_namespaced_pod(env["ns"], {
            "metadata": {"name": name, "labels": {DGD_NAME_LABEL: graph, DGD_COMPONENT_LABEL: service}},
            "spec": {"schedulerName": scheduler, "automountServiceAccountToken": False,
                     "nodeSelector": {"clique.dev/pool": pool_name},
                     "containers": [{"name": "main", "image": "registry.example/vllm:test",
                                     "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}})
        names.append(name)
    return names


def running(env, names: list[str]) -> bool:
    pods = [env["core"].read_namespaced_pod(n, env["ns"]) for n in names]
    return all(p.status.phase == "Running" and p.spec.node_name for p in pods)


def run_targets(env, fn) -> Any:
    """Run `fn(targets)` (a coroutine function) on a kubernetes_asyncio client of the test's control plane."""
    from clique.kubeclient import api_client

    async def main():
        api = await api_client(str(env["kubeconfig"]))
        try:
            return await fn(Targets(api))
        finally:
            await api.close()
    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------- v1alpha1
def test_v1alpha1_service_scales_on_per_pod_kv_usage_of_the_pods_dynamo_labels(env):
    """The gang shape comes from the service (multinode.nodeCount 2 x resources.limits.gpu 8, none written in the
    policy); the KV usage of its pods, found by Dynamo's labels, is read per pod from Prometheus."""
    env["crds"].serve("v1alpha1")
    p = pool(env, domains=3)
    dgd(env, "v1alpha1", "llm-a", {"backendFramework": "vllm", "services": {
        "Frontend": {"componentType": "frontend", "replicas": 1},
        "decode": {"componentType": "worker", "replicas": 1, "multinode": {"nodeCount": 2},
                   "resources": {"limits": {"gpu": "8"}}}}})
    pods = dynamo_pods(env, "llm-a", "decode", 2, p)
    wait_for(lambda: running(env, pods), 60, "the decode replica's 2 pods Running")
    for name in pods:
        env["exporter"].set("vllm:kv_cache_usage_perc", 0.9, namespace=env["ns"], pod=name)
    env["prom"].wait_for_series(f'vllm:kv_cache_usage_perc{{namespace="{env["ns"]}"}}')
    add_policy(env, "llm-a-decode", {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
                                     "name": "llm-a", "service": "decode"},
               [{"type": "KVCacheUsage", "kvCacheUsage": {"selector": {"namespace": env["ns"]}},
                 "target": {"type": "Utilization", "averageUtilization": 50}}],
               gang={"nodeSelector": {"clique.dev/pool": p}})
    wait_for(lambda: read_dgd(env, "v1alpha1", "llm-a")["spec"]["services"]["decode"]["replicas"] == 2, 30,
             "decode scaled 1 -> 2 on 90% KV usage against a 50% target")
    st = wait_for(lambda: (s := status(env, "llm-a-decode")).get("gang") and s, 20, "the decode policy's status")
    assert st["gang"] == {"podsPerReplica": 2, "gpusPerPod": 8}, st
    assert st["metrics"][0]["value"] == pytest.approx(90), st
    assert read_dgd(env, "v1alpha1", "llm-a")["spec"]["services"]["Frontend"]["replicas"] == 1


def test_v1alpha1_write_carries_the_resource_version_it_read(env):
    env["crds"].serve("v1alpha1")
    dgd(env, "v1alpha1", "llm-rv", {"services": {"decode": {"replicas": 1}, "Frontend": {"replicas": 1}}})
    ref = ScaleTargetRef("nvidia.com/v1alpha1", "DynamoGraphDeployment", "llm-rv", "decode")

    async def edit_between(targets: Targets):
        state = await targets.read(env["ns"], ref)
        env["custom"].patch_namespaced_custom_object("nvidia.com", "v1alpha1", env["ns"], DGD_PLURAL, "llm-rv",
                                                     {"spec": {"services": {"Frontend": {"replicas": 2}}}})
        await targets.write(env["ns"], ref, 3, state)  # 409 on the stale resourceVersion, then written again
        state = await targets.read(env["ns"], ref)
        env["custom"].patch_namespaced_custom_object("nvidia.com", "v1alpha1", env["ns"], DGD_PLURAL, "llm-rv",
                                                     {"spec": {"services": {"decode": {"replicas": 7}}}})
        with pytest.raises(TargetError, match="changed from 3 to 7"):
            await targets.write(env["ns"], ref, 4, state)
    run_targets(env, edit_between)
    services = read_dgd(env, "v1alpha1", "llm-rv")["spec"]["services"]
    assert services["Frontend"]["replicas"] == 2, "the other edit was kept"
    assert services["decode"]["replicas"] == 7, "a concurrent change of the same replicas is not written over"


def test_v1alpha1_service_with_scaling_adapter_is_scaled_through_the_adapter_and_an_adapter_directly(env):
    env["crds"].serve("v1alpha1")
    dgd(env, "v1alpha1", "llm-sa", {"services": {
        "VllmWorker": {"replicas": 1, "scalingAdapter": {"enabled": True}},
        "prefill": {"replicas": 1, "scalingAdapter": {"enabled": True}, "multinode": {"nodeCount": 2},
                    "resources": {"limits": {"gpu": "8"}}}}})
    for svc in ("VllmWorker", "prefill"):  # what the operator creates for each (name: <dgd>-<lowercased service>)
        env["custom"].create_namespaced_custom_object("nvidia.com", "v1alpha1", env["ns"], DGDSA_PLURAL, {
            "apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeploymentScalingAdapter",
            "metadata": {"name": f"llm-sa-{svc.lower()}"},
            "spec": {"replicas": 1, "dgdRef": {"name": "llm-sa", "serviceName": svc}}})
    add_policy(env, "llm-sa-worker", {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
                                      "name": "llm-sa", "service": "VllmWorker"}, [queue_metric(env, "sa-worker", 25)])
    add_policy(env, "llm-sa-prefill", {"apiVersion": "nvidia.com/v1alpha1",
                                       "kind": "DynamoGraphDeploymentScalingAdapter", "name": "llm-sa-prefill"},
               [queue_metric(env, "sa-prefill", 35)], capacityAware=False)

    def adapter(name: str) -> int:
        return env["custom"].get_namespaced_custom_object_scale("nvidia.com", "v1alpha1", env["ns"], DGDSA_PLURAL,
                                                                name)["spec"]["replicas"]
    wait_for(lambda: adapter("llm-sa-vllmworker") == 3, 30, "the service's adapter /scale set to 3")
    wait_for(lambda: adapter("llm-sa-prefill") == 4, 30, "the adapter target's /scale set to 4")
    services = read_dgd(env, "v1alpha1", "llm-sa")["spec"]["services"]
    assert services["VllmWorker"]["replicas"] == 1 and services["prefill"]["replicas"] == 1, \
        "the DGD itself is left to the adapter's controller"
    # the status is written after the /scale patch (reconciler.evaluate): wait for it, do not race it
    worker = wait_for(lambda: (s := status(env, "llm-sa-worker")).get("target") and s, 20, "the worker's status")
    assert "via DynamoGraphDeploymentScalingAdapter/llm-sa-vllmworker" in worker["target"]
    prefill = wait_for(lambda: (s := status(env, "llm-sa-prefill")).get("gang") and s, 20, "the prefill's status")
    assert prefill["gang"] == {"podsPerReplica": 2, "gpusPerPod": 8}, \
        "an adapter target's gang shape is read from the DGD service its dgdRef names"


# ---------------------------------------------------------------------------------------------- v1beta1
def test_v1beta1_component_is_patched_by_index_and_pending_gangs_of_its_pods_are_counted(env):
    env["crds"].serve("both")
    room = pool(env, domains=1)  # room for one gang of 2 x 8 GPUs
    main = {"spec": {"containers": [{"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}
    dgd(env, "v1beta1", "llm-b", {"backendFramework": "vllm", "components": [
        {"name": "Frontend", "type": "frontend", "replicas": 1},
        {"name": "decode", "type": "decode", "replicas": 1, "podTemplate": main},
        {"name": "prefill", "type": "prefill", "replicas": 1, "multinode": {"nodeCount": 2}, "podTemplate": main},
        {"name": "worker", "type": "worker", "replicas": 1, "scalingAdapter": {}}]})
    # prefill's one replica: created, not bound yet (its scheduler has not placed it)
    dynamo_pods(env, "llm-b", "prefill", 2, room, scheduler=UNSERVED_SCHEDULER)
    ref = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment", "name": "llm-b"}
    add_policy(env, "llm-b-decode", dict(ref, service="decode"), [queue_metric(env, "b-decode", 25)],
               capacityAware=False)
    add_policy(env, "llm-b-prefill", dict(ref, service="prefill"), [queue_metric(env, "b-prefill", 35)],
               gang={"nodeSelector": {"clique.dev/pool": room}})
    add_policy(env, "llm-b-worker", dict(ref, service="worker"), [queue_metric(env, "b-worker", 35)])

    def replicas() -> list:
        return [c.get("replicas") for c in read_dgd(env, "v1beta1", "llm-b")["spec"]["components"]]
    wait_for(lambda: replicas()[1] == 3, 30, "spec.components[1] (decode) scaled to 3")
    st = wait_for(lambda: (s := status(env, "llm-b-prefill")).get("blockedByCapacity") and s, 30,
                  "prefill blocked by capacity")
    assert st["desiredReplicas"] == 1 and st["blockedByCapacity"] == 3, st
    assert "1 still pending" in st["message"], "the unbound replica found by Dynamo's labels takes the room first"
    assert st["gang"] == {"podsPerReplica": 2, "gpusPerPod": 8}
    assert replicas() == [1, 3, 1, 1], "each component keeps its own replicas; worker is never patched directly"
    err = wait_for(lambda: status(env, "llm-b-worker").get("error"), 30, "the adapter-owned component refused")
    assert "scalingAdapter is enabled" in err and "point scaleTargetRef at the adapter" in err
    assert "kind: DynamoGraphDeploymentScalingAdapter, name: llm-b-worker" in err


def test_v1beta1_write_is_refused_on_a_concurrent_edit_and_retried_on_the_fresh_object(env):
    env["crds"].serve("both")
    dgd(env, "v1beta1", "llm-c", {"components": [{"name": "decode", "replicas": 1}, {"name": "prefill", "replicas": 1}]})
    ref = ScaleTargetRef("nvidia.com/v1beta1", "DynamoGraphDeployment", "llm-c", "prefill")
    custom, ns = env["custom"], env["ns"]

    async def edits(targets: Targets):
        state = await targets.read(ns, ref)
        assert state.index == 1
        # someone inserts a component at the front: "prefill" moves to index 2, the index read is stale
        obj = read_dgd(env, "v1beta1", "llm-c")
        obj["spec"]["components"].insert(0, {"name": "Frontend", "type": "frontend", "replicas": 1})
        custom.replace_namespaced_custom_object("nvidia.com", "v1beta1", ns, DGD_PLURAL, "llm-c", obj)
        await targets.write(ns, ref, 3, state)
        state = await targets.read(ns, ref)
        obj = read_dgd(env, "v1beta1", "llm-c")
        obj["spec"]["components"][2]["replicas"] = 6
        custom.replace_namespaced_custom_object("nvidia.com", "v1beta1", ns, DGD_PLURAL, "llm-c", obj)
        with pytest.raises(TargetError, match="changed from 3 to 6"):
            await targets.write(ns, ref, 4, state)
    run_targets(env, edits)
    comps = read_dgd(env, "v1beta1", "llm-c")["spec"]["components"]
    assert [(c["name"], c["replicas"]) for c in comps] == [("Frontend", 1), ("decode", 1), ("prefill", 6)]


# ---------------------------------------------------------------------------------------------- LeaderWorkerSet
def lws_scale(env, name: str) -> int:
    return env["custom"].get_namespaced_custom_object_scale(LWS_GROUP, "v1", env["ns"], LWS_PLURAL, name)[
        "spec"]["replicas"]


def lws_pods(env, name: str) -> list:
    return [p for p in env["core"].list_namespaced_pod(env["ns"], label_selector=f"{SET_NAME_LABEL}={name}").items
            if not p.metadata.deletion_timestamp]


def test_lws_is_scaled_in_groups_with_its_shape_read_from_the_lws_and_a_contradicting_policy_is_invalid(env):
    p = pool(env, domains=2)
    create_lws(env["api"], lws_manifest("lws-up", size=2, replicas=1, gpus=8, namespace=env["ns"],
                                        node_selector={"clique.dev/pool": p}))
    wait_for(lambda: len(lws_pods(env, "lws-up")) == 2 and all(x.status.phase == "Running"
                                                                for x in lws_pods(env, "lws-up")), 60,
             "the first group Running")
    target = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "lws-up"}
    add_policy(env, "lws-up", target, [queue_metric(env, "lws-up", 15)], gang={"nodeSelector": {"clique.dev/pool": p}})
    add_policy(env, "lws-up-wrong", target, [queue_metric(env, "lws-up", 15)], podsPerReplica=4,
               gang={"gpusPerPod": 8})
    wait_for(lambda: lws_scale(env, "lws-up") == 2, 30, "LWS scaled to 2 groups")
    wait_for(lambda: len(lws_pods(env, "lws-up")) == 4 and all(x.spec.node_name for x in lws_pods(env, "lws-up")),
             60, "the new group's leader and worker bound")
    st = wait_for(lambda: (s := status(env, "lws-up")).get("gang") and s, 20, "the LWS policy's status")
    assert st["gang"] == {"podsPerReplica": 2, "gpusPerPod": 8}, st
    st = wait_for(lambda: status(env, "lws-up-wrong"), 20, "the contradicting policy's status")
    assert st["valid"] is False, st
    assert "podsPerReplica: 4 but LeaderWorkerSet/lws-up spec.leaderWorkerTemplate.size says 2" in st["error"]
    msgs = wait_for(lambda: events(env, "lws-up-wrong", "InvalidPolicy"), 20, "an InvalidPolicy Event")
    assert "contradicts its target" in msgs[0]


def test_pending_lws_groups_are_counted_by_their_unbound_leaders(env):
    """Two groups of 2 pods created but not bound yet, on nodes with room for exactly two: room for none more.
    Counting unbound leaders / podsPerReplica would see one pending group and create a third that cannot fit."""
    p = pool(env, domains=2)
    create_lws(env["api"], lws_manifest("lws-pend", size=2, replicas=2, gpus=8, namespace=env["ns"],
                                        scheduler_name=UNSERVED_SCHEDULER, node_selector={"clique.dev/pool": p}))
    wait_for(lambda: len(lws_pods(env, "lws-pend")) == 4, 60, "both groups' pods created")
    add_policy(env, "lws-pend", {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
                                 "name": "lws-pend"},
               [queue_metric(env, "lws-pend", 40)], gang={"nodeSelector": {"clique.dev/pool": p}})
    st = wait_for(lambda: (s := status(env, "lws-pend")).get("blockedByCapacity") and s, 30, "blocked by capacity")
    assert st["desiredReplicas"] == 2 and st["blockedByCapacity"] == 2, st
    assert "2 still pending" in st["message"], st
    time.sleep(3)
    assert lws_scale(env, "lws-pend") == 2, "no group created that cannot be placed"
