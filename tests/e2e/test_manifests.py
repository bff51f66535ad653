"""The manifests apply cleanly to the real API server (server-side dry run), and the scheduler configuration
they ship is accepted by the real kube-scheduler binary."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from simulations.controlplane.build import ensure_binaries
from tests.e2e.kustomize import build

MANIFESTS = Path(__file__).parents[2] / "manifests"


def dry_run_all(k8s, objects) -> list[str]:
    dyn = DynamicClient(k8s)
    applied = []
    for obj in objects:
        res = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        if obj["kind"] == "Namespace":  # namespaced objects need it for real
            try:
                res.create(body=obj)
            except Exception as exc:  # noqa: BLE001 - already there
                assert "AlreadyExists" in str(exc), exc
            applied.append("Namespace/" + obj["metadata"]["name"])
            continue
        # `kubectl apply --server-side --dry-run=server`: works whether or not the object exists already
        dyn.server_side_apply(res, body=obj, name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"),
                              field_manager="clique-manifest-test", force_conflicts=True, dry_run="All")
        applied.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return applied


def test_base_manifests_apply_cleanly_with_server_side_dry_run(k8s):
    applied = dry_run_all(k8s, build(MANIFESTS))
    for expected in ("Deployment/clique-scheduler", "ConfigMap/clique-scheduler-config", "ClusterRole/clique:extender",
                     "Service/clique-scheduler-metrics", "ServiceAccount/clique-scheduler",
                     "Deployment/clique-autoscaler", "ClusterRole/clique:autoscaler", "Service/clique-autoscaler-metrics",
                     "MutatingAdmissionPolicy/clique-scheduler-routing",
                     "MutatingAdmissionPolicyBinding/clique-scheduler-routing"):
        assert expected in applied
    assert not any(a.startswith("MutatingWebhookConfiguration/") for a in applied), "the webhook is for clusters < 1.36"


def test_the_webhook_for_clusters_before_1_36_applies_cleanly_on_its_own(k8s):
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "scheduler" / "webhook.yaml").read_text()) if d]
    assert dry_run_all(k8s, docs) == ["Service/clique-scheduler-webhook", "MutatingWebhookConfiguration/clique-scheduler"]


def test_shipped_scheduler_configuration_is_accepted_by_kube_scheduler(control_plane, tmp_path):
    config_map = next(o for o in build(MANIFESTS) if o["kind"] == "ConfigMap")
    shipped = yaml.safe_load(config_map["data"]["scheduler-config.yaml"])
    # in-cluster it uses its service account; here, the local control plane's scheduler identity
    shipped["clientConnection"] = {"kubeconfig": str(control_plane.workdir / "scheduler.kubeconfig")}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(shipped))
    out = tmp_path / "effective.yaml"
    result = subprocess.run([str(ensure_binaries().kube_scheduler), f"--config={cfg}", f"--write-config-to={out}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    effective = yaml.safe_load(out.read_text())
    extender = effective["extenders"][0]
    assert extender["bindVerb"] == "bind" and extender["nodeCacheCapable"] is True
    assert effective["profiles"][0]["schedulerName"] == "clique-scheduler"
    assert effective["percentageOfNodesToScore"] == 100


def test_example_workloads_apply_cleanly_given_their_crds(k8s):
    # Stand-in CRDs (accept any spec): the examples' CRD schemas belong to LWS and the Prometheus Operator;
    # this checks that the API server takes the objects, their namespaces and our own fields.
    ext = client.ApiextensionsV1Api(k8s)
    for group, kind, plural in (("leaderworkerset.x-k8s.io", "LeaderWorkerSet", "leaderworkersets"),
                                ("monitoring.coreos.com", "PodMonitor", "podmonitors")):
        try:
            ext.create_custom_resource_definition({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.{group}"},
                "spec": {"group": group, "scope": "Namespaced",
                         "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                         "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                             "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
        except client.exceptions.ApiException as exc:
            assert exc.status == 409, exc
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = {c.metadata.name for c in ext.list_custom_resource_definition().items
                 if any(cond.type == "Established" and cond.status == "True" for cond in (c.status.conditions or []))}
        if {"leaderworkersets.leaderworkerset.x-k8s.io", "podmonitors.monitoring.coreos.com"} <= names:
            break
        time.sleep(0.2)
    dry_run_all(k8s, build(MANIFESTS))  # the clique-system namespace
    for _ in range(50):  # discovery may lag the CRDs by a moment
        try:
            applied = dry_run_all(k8s, build(MANIFESTS / "examples"))
            break
        except Exception as exc:  # noqa: BLE001
            last = exc
            time.sleep(0.2)
    else:
        raise last
    assert {"LeaderWorkerSet/llama-70b-decode", "StatefulSet/trtllm-tp16", "PodMonitor/clique-scheduler"} <= set(applied)
