"""The routing rule of the admission webhook (admission.decide) as a MutatingAdmissionPolicy: kube-apiserver applies
it in process, as CEL, so a pod's creation no longer waits for an HTTPS call to the extender, and no serving
certificate or caBundle has to be provided. Pure: builds the two API objects; manifests/scheduler/
routing-policy.yaml is their text (tests/unit/test_routing_policy.py checks that they agree).

Why: measured with `clique bench e2e --nodes 1000` on this project's 2-core machine, the webhook made each pod's
creation wait 64-73 ms and cost ~5.6 ms of CPU per pod across kube-apiserver and the extender (docs/design/scale.md).

Upstream (k8s.io/api v0.37.2 admissionregistration/v1/types.go): MutatingAdmissionPolicy and
MutatingAdmissionPolicyBinding in admissionregistration.k8s.io/v1; feature gate MutatingAdmissionPolicy GA and on
by default since 1.36 (k8s.io/apiserver v0.37.2 pkg/features/kube_features.go), its admission plugin on by default
(k8s.io/kubernetes v1.37.2 pkg/kubeapiserver/options/plugins.go) and run before MutatingAdmissionWebhook, so
reinvocationPolicy IfNeeded applies it again when a later webhook (LeaderWorkerSet's pod webhook) changed the pod.
Clusters before 1.36 use the webhook (manifests/scheduler/webhook.yaml), which answers from the same rule.

The rule, as admission.decide has it (tests/e2e/test_routing_policy.py checks the two give the same pod on the
real kube-apiserver): a pod created without a node, that scheduler.gangs.recognize takes for a gang member (or
that carries LeaderWorkerSet's name label, or both of Dynamo's labels: admission.gang_source), gets
spec.schedulerName set to ours; with `gate`, members of gangs created all at once (admission.GATED_SOURCES) also
get the scheduling gate pinning.GATE, unless the extender's webhook pinned them at creation (annotation
pinning.PINNED): where both are installed, this policy runs first and again after the webhook, and the second run
must not gate a pod the webhook already pinned.
"""

from __future__ import annotations

import json
from typing import Any

from scheduler import gangs
from scheduler.extender.admission import DYNAMO_COMPONENT, DYNAMO_GRAPH, GATED_SOURCES
from scheduler.extender.pinning import GATE, PINNED

API_VERSION = "admissionregistration.k8s.io/v1"
NAME = "clique-scheduler-routing"
OPT_IN_LABEL, OPT_IN_VALUE, OPT_OUT_VALUE = "clique.dev/scheduler", "enabled", "disabled"
# gangs._int: a size is 1 to 18 decimal digits, above zero
POSITIVE = "^[0-9]{1,18}$"
ONE = "^0{0,17}1$"


def _q(text: str) -> str:
    return json.dumps(text)  # a CEL string literal (JSON's escapes are CEL's)


def _label(key: str) -> str:
    return f"object.metadata.?labels[{_q(key)}]"  # optional: none where the pod has no labels or not this key


def _annotation(key: str) -> str:
    return f"object.metadata.?annotations[{_q(key)}]"


def _both(key: str) -> str:
    return f"{_annotation(key)}.or({_label(key)})"  # gangs.recognize: {**labels, **annotations}


def _one(optional: str) -> str:
    return f"{optional}.orValue('').matches({_q(ONE)})"


def source_expression() -> str:
    """CEL for the gang source gangs.recognize returns at admission (no size objects read yet: size 1 only from
    an annotation or label, which makes the pod a group of one), "single" for none."""
    sts_owner = "object.metadata.?ownerReferences.orValue([]).exists(o, o.kind == 'StatefulSet')"
    size = _annotation(gangs.GANG_SIZE)
    branches = [
        (f"{_both(gangs.GANG)}.hasValue()", f"{_one(_both(gangs.GANG_SIZE))} ? 'single' : 'clique'"),
        (f"{_label(gangs.LWS_NAME)}.hasValue() && {_label(gangs.LWS_GROUP)}.hasValue()",
         f"{_one(_annotation(gangs.LWS_SIZE))} ? 'single' : 'lws'"),
        (f"{_label(gangs.GROVE_PODGANG)}.hasValue()", f"{_one(_both(gangs.GANG_SIZE))} ? 'single' : 'grove'"),
        (f"{_annotation(gangs.VOLCANO_GROUP)}.hasValue()", "'volcano'"),
        (f"{_label(gangs.COSCHED_GROUP)}.hasValue()", "'coscheduling'"),
        ("object.spec.?schedulingGroup.?podGroupName.orValue('') != ''", "'podgroup'"),
        (f"{sts_owner} && {size}.orValue('').matches({_q(POSITIVE)}) && !{size}.orValue('').matches('^0+$')",
         f"{_one(size)} ? 'single' : 'statefulset'"),
    ]
    return "".join(f"({condition}) ? ({value}) :\n" for condition, value in branches) + "'single'"


def routed_expression() -> str:
    """CEL: admission.gang_source is not None (a recognised gang, or LWS's name label, or both Dynamo labels)."""
    return (f"variables.source != 'single' ||\n{_label(gangs.LWS_NAME)}.orValue('') != '' ||\n"
            f"({_label(DYNAMO_GRAPH)}.orValue('') != '' && {_label(DYNAMO_COMPONENT)}.orValue('') != '')")


def patch_expression(scheduler_name: str, gate: bool) -> str:
    """CEL for admission.patch_for + gate_op: the JSONPatch operations, [] for a pod left as it is."""
    name = f"[JSONPatch{{op: 'add', path: '/spec/schedulerName', value: {_q(scheduler_name)}}}]"
    expr = f"(object.spec.?schedulerName.orValue('') == {_q(scheduler_name)} ? [] : {name})"
    if gate:
        gated = ", ".join(_q(s) for s in GATED_SOURCES)
        gates = "object.spec.?schedulingGates.orValue([])"
        entry = f"Object.spec.schedulingGates{{name: {_q(GATE)}}}"
        expr += (f" +\n(variables.source in [{gated}] && !{gates}.exists(g, g.name == {_q(GATE)})"
                 f" && !{_annotation(PINNED)}.hasValue() ?\n"
                 f"  (size({gates}) == 0 ?\n"
                 f"    [JSONPatch{{op: 'add', path: '/spec/schedulingGates', value: [{entry}]}}] :\n"
                 f"    [JSONPatch{{op: 'add', path: '/spec/schedulingGates/-', value: {entry}}}]) :\n"
                 "  [])")
    return f"!variables.routed ? [] :\n{expr}"


def policy(scheduler_name: str = "clique-scheduler", gate: bool = True, name: str = NAME) -> dict[str, Any]:
    """The MutatingAdmissionPolicy. failurePolicy Ignore: pod creation is never blocked by it."""
    return {
        "apiVersion": API_VERSION, "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "clique-scheduler",
                                              "app.kubernetes.io/part-of": "clique"}},
        "spec": {
            "failurePolicy": "Ignore",
            "reinvocationPolicy": "IfNeeded",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                    "operations": ["CREATE"], "resources": ["pods"]}]},
            "matchConditions": [{"name": "created-without-a-node",  # admission.decide: "bound"
                                 "expression": "object.spec.?nodeName.orValue('') == ''"}],
            "variables": [{"name": "source", "expression": source_expression()},
                          {"name": "routed", "expression": routed_expression()}],
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": patch_expression(scheduler_name,
                                                                                                   gate)}}],
        },
    }


def binding(name: str = NAME, policy_name: str = NAME) -> dict[str, Any]:
    """The binding: namespaces labelled clique.dev/scheduler=enabled, pods not labelled clique.dev/scheduler=disabled
    (the webhook configuration's selectors, manifests/scheduler/webhook.yaml)."""
    return {
        "apiVersion": API_VERSION, "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "clique-scheduler",
                                              "app.kubernetes.io/part-of": "clique"}},
        "spec": {"policyName": policy_name, "matchResources": {
            "namespaceSelector": {"matchLabels": {OPT_IN_LABEL: OPT_IN_VALUE}},
            "objectSelector": {"matchExpressions": [{"key": OPT_IN_LABEL, "operator": "NotIn",
                                                     "values": [OPT_OUT_VALUE]}]}}},
    }


def manifests(scheduler_name: str = "clique-scheduler", gate: bool = True) -> list[dict[str, Any]]:
    return [policy(scheduler_name, gate), binding()]


HEADER = """\
# Routing as a MutatingAdmissionPolicy (Kubernetes >= 1.36, where the API is GA and on by default): a pod created
# in a namespace labelled clique.dev/scheduler=enabled that Clique recognises as a gang member (Grove podgang,
# LeaderWorkerSet, Volcano or coscheduling PodGroup, the Workload API's schedulingGroup, clique.dev/gang, a
# StatefulSet with clique.dev/gang-size, Dynamo's graph labels) gets spec.schedulerName: clique-scheduler, whatever
# its controller wrote there; members of gangs created all at once also get the scheduling gate
# clique.dev/placement (the extender plans the gang once complete, pins its members and removes the gate).
# kube-apiserver applies it in process: no webhook call, no certificate to provide. Pods labelled
# clique.dev/scheduler=disabled are left alone; failurePolicy Ignore: pod creation is never blocked by it.
# Generated: `python -m scheduler.extender.routing_policy > manifests/routing/routing-policy.yaml`
# (tests/unit/test_routing_policy.py checks that this file is its output). The same rule as the webhook
# (webhook.yaml, for clusters before 1.36): tests/e2e/test_routing_policy.py checks both on the real kube-apiserver.
"""


def manifest_text(scheduler_name: str = "clique-scheduler", gate: bool = True) -> str:
    """The YAML of `manifests`, CEL in literal blocks (one branch a line) so a person can read it."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return HEADER + yaml.dump_all(manifests(scheduler_name, gate), Dumper=Dumper, sort_keys=False, width=1000)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m scheduler.extender.routing_policy",
                                description="Print the routing MutatingAdmissionPolicy and its binding (YAML).")
    p.add_argument("--scheduler-name", default="clique-scheduler", help="the profile name gang pods are routed to")
    p.add_argument("--no-gate", action="store_true",
                   help="route only, no scheduling gate (the extender run with --gate-gangs off: the per-pod path)")
    args = p.parse_args(argv)
    print(manifest_text(args.scheduler_name, gate=not args.no_gate), end="")


if __name__ == "__main__":
    main()
