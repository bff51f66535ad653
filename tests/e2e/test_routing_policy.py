"""The routing MutatingAdmissionPolicy (manifests/routing/routing-policy.yaml) on the real kube-apiserver 1.37: a
pod created in an opted-in namespace comes out exactly as the webhook's rule (admission.decide, the same rule for
clusters before 1.36) says, for every gang source and the edge cases between them, and for random mixes of the
labels and annotations both read. Pods are created with dryRun=All: admission runs, nothing is stored.
Side effects: the policy, its binding and two namespaces, all removed at the end."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from scheduler import gangs
from scheduler.extender import admission
from scheduler.extender.pinning import GATE, PINNED
from tests.e2e.helpers import gpu_pod, opted_in_namespaces

OURS = "clique-scheduler"


@pytest.fixture(scope="module")
def routing(control_plane):
    api = control_plane.api_client()
    probe = gpu_pod("probe", 8, labels={gangs.GROVE_PODGANG: "probe"})
    try:  # port None: the shipped policy, not the webhook
        with opted_in_namespaces(control_plane, api, None, None, "route", probe) as (on, off):
            yield {"core": client.CoreV1Api(api), "on": on, "off": off}
    finally:
        api.close()


def _pod(labels: dict | None = None, annotations: dict | None = None, scheduler: str = "default-scheduler",
         gates: list[str] | None = None, owner: str | None = None, group: str | None = None,
         node: str | None = None) -> dict[str, Any]:
    pod = gpu_pod(f"p-{uuid.uuid4().hex[:8]}", 8, scheduler=scheduler, labels=labels or {"app": "route"})
    md, spec = pod["metadata"], pod["spec"]
    if annotations:
        md["annotations"] = annotations
    if gates:
        spec["schedulingGates"] = [{"name": g} for g in gates]
    if owner:
        md["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": "sts", "uid": str(uuid.uuid4())}]
    if group:
        spec["schedulingGroup"] = {"podGroupName": group}
    if node:
        spec["nodeName"] = node
    return pod


def _as_webhook_says(pod: dict[str, Any]) -> tuple[str, list[str]]:
    """schedulerName and gates after admission.decide's patch (the webhook's answer, gate on as shipped)."""
    obj = copy.deepcopy(pod)
    obj["spec"].setdefault("schedulerName", "default-scheduler")  # defaulted before admission
    request = {"uid": "u", "operation": "CREATE", "kind": {"group": "", "version": "v1", "kind": "Pod"},
               "resource": {"group": "", "version": "v1", "resource": "pods"}, "object": obj}
    decision = admission.decide(request, OURS, gate=True)
    assert decision.outcome not in ("malformed", "not-a-pod-create"), decision
    spec = obj["spec"]
    for op in decision.patch:
        assert op["op"] == "add", op
        if op["path"] == "/spec/schedulerName":
            spec["schedulerName"] = op["value"]
        elif op["path"] == "/spec/schedulingGates":
            spec["schedulingGates"] = list(op["value"])
        elif op["path"] == "/spec/schedulingGates/-":
            spec["schedulingGates"].append(op["value"])
        else:
            raise AssertionError(f"unexpected patch {op}")
    return spec["schedulerName"], [g["name"] for g in spec.get("schedulingGates") or []]


def _created(routing, pod: dict[str, Any], ns: str | None = None) -> tuple[str, list[str]]:
    made = routing["core"].create_namespaced_pod(ns or routing["on"], pod, dry_run="All")
    return made.spec.scheduler_name, [g.name for g in made.spec.scheduling_gates or []]


LWS = {gangs.LWS_NAME: "lws", gangs.LWS_GROUP: "0"}
CASES = {
    "a Grove pod written for kai-scheduler is routed and gated": _pod({gangs.GROVE_PODGANG: "g"}, scheduler="kai-scheduler"),
    "a clique.dev gang of 4 is routed and gated": _pod(annotations={gangs.GANG: "g", gangs.GANG_SIZE: "4"}),
    "a clique.dev gang sized by a label is routed and gated": _pod({gangs.GANG: "g", gangs.GANG_SIZE: "4"}),
    "a clique.dev gang of 1 is a single pod, left alone": _pod(annotations={gangs.GANG: "g", gangs.GANG_SIZE: "1"}),
    "a clique.dev gang of 01 is a single pod too": _pod(annotations={gangs.GANG: "g", gangs.GANG_SIZE: "01"}),
    "a clique.dev gang with an unreadable size is still a gang": _pod(annotations={gangs.GANG: "g", gangs.GANG_SIZE: "4x"}),
    "an annotation's size wins over a label's": _pod({gangs.GANG: "g", gangs.GANG_SIZE: "4"},
                                                     annotations={gangs.GANG_SIZE: "1"}),
    "an LWS pod is routed, not gated": _pod(LWS),
    "an LWS pod before its group label is routed": _pod({gangs.LWS_NAME: "lws"}),
    "an LWS group of one still goes to Clique by its name": _pod(LWS, annotations={gangs.LWS_SIZE: "1"}),
    "a Volcano member is routed and gated": _pod(annotations={gangs.VOLCANO_GROUP: "pg"}, scheduler="volcano"),
    "a coscheduling member is routed and gated": _pod({gangs.COSCHED_GROUP: "pg"}),
    "a Workload API member is routed and gated": _pod(group="pg"),
    "a StatefulSet pod with a gang size is routed and gated": _pod(annotations={gangs.GANG_SIZE: "4"}, owner="StatefulSet"),
    "a StatefulSet pod with an unreadable size is left alone": _pod(annotations={gangs.GANG_SIZE: "x"}, owner="StatefulSet"),
    "a ReplicaSet pod with a gang size is left alone": _pod(annotations={gangs.GANG_SIZE: "4"}, owner="ReplicaSet"),
    "a Dynamo worker is routed, not gated": _pod({admission.DYNAMO_GRAPH: "dgd", admission.DYNAMO_COMPONENT: "decode"}),
    "a pod with only Dynamo's graph label is left alone": _pod({admission.DYNAMO_GRAPH: "dgd"}),
    "a pod created on a node is left alone": _pod({gangs.GROVE_PODGANG: "g"}, node="kwok-none"),
    "another controller's gate is kept and ours appended": _pod({gangs.GROVE_PODGANG: "g"}, gates=["kueue.x-k8s.io/admission"]),
    "our gate is not added twice": _pod({gangs.GROVE_PODGANG: "g"}, gates=[GATE]),
    "a pod already ours only gets the gate": _pod({gangs.GROVE_PODGANG: "g"}, scheduler=OURS),
    "a plain pod is left alone": _pod(),
    "a gang pod the webhook pinned at creation is routed, not gated": _pod({gangs.GROVE_PODGANG: "g"},
                                                                          annotations={PINNED: "kwok-0"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_policy_gives_a_pod_what_the_webhook_would(routing, case):
    pod = CASES[case]
    assert _created(routing, pod) == _as_webhook_says(pod)


def test_a_pod_that_opted_out_and_a_namespace_that_did_not_opt_in_are_left_alone(routing):
    opted_out = _pod({gangs.GROVE_PODGANG: "g", "clique.dev/scheduler": "disabled"}, scheduler="kai-scheduler")
    assert _created(routing, opted_out) == ("kai-scheduler", [])
    assert _created(routing, _pod({gangs.GROVE_PODGANG: "g"}, scheduler="kai-scheduler"), routing["off"]) == (
        "kai-scheduler", [])


KEYS = [gangs.GANG, gangs.GANG_SIZE, gangs.LWS_NAME, gangs.LWS_GROUP, gangs.LWS_SIZE, gangs.GROVE_PODGANG,
        gangs.VOLCANO_GROUP, gangs.COSCHED_GROUP, admission.DYNAMO_GRAPH, admission.DYNAMO_COMPONENT, PINNED]
VALUES = st.sampled_from(["", "0", "1", "01", "4", "007", "x", "12345678901234567890"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4),
       annotations=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3),
       owner=st.sampled_from([None, "StatefulSet", "ReplicaSet"]), group=st.sampled_from([None, "", "pg"]),
       scheduler=st.sampled_from(["default-scheduler", OURS, "volcano"]),
       gates=st.sampled_from([None, [GATE], ["other.dev/gate"], ["other.dev/gate", GATE]]))
def test_random_mixes_of_gang_labels_come_out_as_the_webhook_says(routing, labels, annotations, owner, group,
                                                                  scheduler, gates):
    pod = _pod(labels or None, annotations or None, scheduler, gates, owner, group or None)
    assert _created(routing, pod) == _as_webhook_says(pod)
