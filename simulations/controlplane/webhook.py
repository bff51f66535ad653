"""How pods reach Clique on the local control plane, as shipped: the routing MutatingAdmissionPolicy and its binding
(manifests/routing/routing-policy.yaml, `policy_registered`), or the MutatingWebhookConfiguration
(manifests/scheduler/webhook.yaml, for clusters before 1.36) pointed at an extender's webhook on 127.0.0.1 (a `url`
and caBundle in place of the in-cluster Service), for the benchmarks, the demo and the tests; and
`create_or_replace`, which installs the upstream webhook configurations of the controllers the harness runs
(LWS, Kueue). Side effects: `registered` and `policy_registered` create the objects and delete them on exit."""

from __future__ import annotations

import base64
import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

WEBHOOK_MANIFEST = Path(__file__).parents[2] / "manifests" / "scheduler" / "webhook.yaml"
POLICY_MANIFEST = Path(__file__).parents[2] / "manifests" / "routing" / "routing-policy.yaml"
OPT_IN = {"clique.dev/scheduler": "enabled"}  # the shipped namespaceSelector


def webhook_configuration(port: int, ca: bytes, name: str | None = None) -> dict[str, Any]:
    """The shipped configuration calling https://127.0.0.1:PORT/mutate, trusting exactly `ca` (PEM)."""
    config = next(d for d in yaml.safe_load_all(WEBHOOK_MANIFEST.read_text())
                  if d and d["kind"] == "MutatingWebhookConfiguration")
    if name:
        config["metadata"] = {"name": name}
    config["webhooks"][0]["clientConfig"] = {"url": f"https://127.0.0.1:{port}/mutate",
                                             "caBundle": base64.b64encode(ca).decode()}
    return config


@contextmanager
def registered(api: Any, port: int, ca: bytes, name: str | None = None) -> Iterator[dict[str, Any]]:
    """Register the configuration with the API server for the duration of the block (an already deleted one is
    fine at exit)."""
    from kubernetes import client

    admission = client.AdmissionregistrationV1Api(api)
    config = webhook_configuration(port, ca, name)
    admission.create_mutating_webhook_configuration(config)
    try:
        yield config
    finally:
        _delete(admission.delete_mutating_webhook_configuration, config)


def _delete(delete: Any, obj: dict[str, Any]) -> None:
    """Delete a cluster-scoped object by its name; one already gone is fine."""
    from kubernetes.client.exceptions import ApiException

    try:
        delete(obj["metadata"]["name"])
    except ApiException as exc:
        if exc.status != 404:
            raise


def routing_objects(name: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shipped policy and binding (the manifest's text), renamed to `name` if given."""
    docs = {d["kind"]: d for d in yaml.safe_load_all(POLICY_MANIFEST.read_text()) if d}
    policy, binding = docs["MutatingAdmissionPolicy"], docs["MutatingAdmissionPolicyBinding"]
    if name:
        policy["metadata"], binding["metadata"] = {"name": name}, {"name": name}
        binding["spec"]["policyName"] = name
    return policy, binding


@contextmanager
def policy_registered(api: Any, name: str | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Create the routing policy and its binding for the duration of the block (gone already at exit is fine)."""
    from kubernetes import client

    admission = client.AdmissionregistrationV1Api(api)
    policy, binding = routing_objects(name)
    admission.create_mutating_admission_policy(policy)
    try:
        admission.create_mutating_admission_policy_binding(binding)
        try:
            yield policy, binding
        finally:
            _delete(admission.delete_mutating_admission_policy_binding, binding)
    finally:
        _delete(admission.delete_mutating_admission_policy, policy)


def create_or_replace(api: Any, manifests: list[dict[str, Any]]) -> None:
    """Create each Mutating/ValidatingWebhookConfiguration; one left from an earlier run of the same work directory
    (409) is replaced, so it points at the manager started now."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    adm = client.AdmissionregistrationV1Api(api)
    verbs = {
        "MutatingWebhookConfiguration": (adm.create_mutating_webhook_configuration,
                                         adm.read_mutating_webhook_configuration,
                                         adm.replace_mutating_webhook_configuration),
        "ValidatingWebhookConfiguration": (adm.create_validating_webhook_configuration,
                                           adm.read_validating_webhook_configuration,
                                           adm.replace_validating_webhook_configuration),
    }
    for doc in manifests:
        create, read, replace = verbs[doc["kind"]]
        try:
            create(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
            doc = copy.deepcopy(doc)
            doc["metadata"]["resourceVersion"] = read(doc["metadata"]["name"]).metadata.resource_version
            replace(doc["metadata"]["name"], doc)
