"""The admission webhook on the real kube-apiserver: the extender serves it over TLS on 127.0.0.1, the shipped
MutatingWebhookConfiguration (manifests/scheduler/webhook.yaml, with a `url` and caBundle in place of the
in-cluster Service) is registered, and gang pods created in a namespace that opted in come out with
clique-scheduler whatever schedulerName their controller wrote; elsewhere nothing changes.
Side effects: an extender process, a webhook configuration and two namespaces, all removed at the end."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scheduler.extender.process import start_extender, stop_extender
from simulations.controlplane.processes import free_port
from tests.e2e.helpers import gpu_pod, opted_in_namespaces, wait_for
from tests.unit.test_admission import mint_certs

GROVE = {"grove.io/podgang": "dgd-0", "app": "adm"}
OURS = "clique-scheduler"


@pytest.fixture(scope="module")
def webhook(control_plane, tmp_path_factory):
    """The extender with its webhook on 127.0.0.1, registered with the API server; a namespace labelled
    clique.dev/scheduler=enabled and one without the label."""
    work = tmp_path_factory.mktemp("admission")
    # The harness CA's key is not kept (simulations/controlplane/pki.py), so the webhook gets its own CA: the
    # API server trusts exactly the caBundle of the configuration.
    ca = mint_certs(work / "tls")
    port = free_port()
    log = work / "extender.log"
    proc, _ = start_extender(control_plane.kubeconfig, log, webhook_port=port, webhook_cert_dir=work / "tls")
    api = control_plane.api_client()
    try:
        probe = gpu_pod(f"probe-{uuid.uuid4().hex[:5]}", 8, labels=GROVE)
        with opted_in_namespaces(control_plane, api, port, ca.read_bytes(), "adm", probe) as (on, off):
            yield {"core": client.CoreV1Api(api), "on": on, "off": off, "log": log}
    finally:
        stop_extender(proc)
        api.close()


def _create(core, ns: str, scheduler: str, labels: dict) -> str:
    pod = gpu_pod(f"p-{uuid.uuid4().hex[:6]}", 8, scheduler=scheduler, labels=labels)
    return core.create_namespaced_pod(ns, pod).spec.scheduler_name


@pytest.mark.parametrize("written", ["default-scheduler", "volcano", "kai-scheduler"])
def test_a_grove_pod_in_an_opted_in_namespace_is_routed_to_clique_scheduler(webhook, written):
    assert _create(webhook["core"], webhook["on"], written, GROVE) == OURS
    assert "routing pod" in webhook["log"].read_text()


@pytest.mark.parametrize("written", ["default-scheduler", "volcano", "kai-scheduler"])
def test_the_same_pod_in_a_namespace_that_did_not_opt_in_is_untouched(webhook, written):
    assert _create(webhook["core"], webhook["off"], written, GROVE) == written


def test_pods_that_are_not_gangs_or_opted_out_are_untouched(webhook):
    core, on = webhook["core"], webhook["on"]
    assert _create(core, on, "default-scheduler", {"app": "web"}) == "default-scheduler"
    assert _create(core, on, "volcano", {**GROVE, "clique.dev/scheduler": "disabled"}) == "volcano"
    lws = {"leaderworkerset.sigs.k8s.io/name": "llama", "leaderworkerset.sigs.k8s.io/group-index": "0"}
    assert _create(core, on, "volcano", lws) == OURS
