"""Does a pod's own spec allow a node? nodeSelector, required node affinity and taints, as kube-scheduler's
NodeAffinity and TaintToleration filters judge them. Pure.

Used where the extender places pods without a kube-scheduler cycle in front of it (completing a gang whose bind
was cut short); in the filter path kube-scheduler has already applied these filters to the nodes it sends.
Semantics read from Kubernetes v1.37: k8s.io/component-helpers/scheduling/corev1/nodeaffinity/nodeaffinity.go
(terms ORed, expressions ANDed; In, NotIn, Exists, DoesNotExist, Gt, Lt; matchFields on metadata.name) and
k8s.io/api/core/v1/toleration.go (ToleratesTaint: empty key with Exists tolerates every taint; an empty effect
matches every effect). Not covered: inter-pod affinity, topology spread, volumes and host ports.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

HARD_EFFECTS = ("NoSchedule", "NoExecute")


def _expression_holds(expr: Mapping[str, Any], value: str | None) -> bool:
    op, values = expr.get("operator"), [str(v) for v in expr.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, want = int(value), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False  # an unknown operator selects nothing, as the API server's validation would refuse it


def _term_holds(term: Mapping[str, Any], name: str, labels: Mapping[str, str]) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term selects no node
    return (all(isinstance(e, dict) and _expression_holds(e, labels.get(str(e.get("key")))) for e in exprs)
            and all(isinstance(f, dict) and _expression_holds(f, name if f.get("key") == "metadata.name" else None)
                    for f in fields))


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if not isinstance(t, dict):
            continue
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        if op == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if op == "Equal" and t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _required_terms(spec: Mapping[str, Any]) -> Any:
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    return required.get("nodeSelectorTerms") if isinstance(required, dict) else None


def judges_labels(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's nodeSelector or required node affinity can refuse a node. When not, `node_refusal`
    refuses only nodes with taints (callers skip the untainted ones of thousands without asking)."""
    spec = pod.get("spec") or {}
    return bool(spec.get("nodeSelector") or _required_terms(spec))


def node_refusal(pod: Mapping[str, Any], name: str, labels: Mapping[str, str],
                 taints: Iterable[Mapping[str, Any]]) -> str:
    """Why the pod's own spec excludes this node, or "" when it allows it."""
    spec = pod.get("spec") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return f"node {name} does not match the pod's nodeSelector {k}={v}"
    terms = _required_terms(spec)
    if terms and not any(isinstance(t, dict) and _term_holds(t, name, labels) for t in terms):
        return f"node {name} does not match the pod's required node affinity"
    tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
    for taint in taints:
        if taint.get("effect") in HARD_EFFECTS and not tolerates(tolerations, taint):
            return f"node {name} has taint {taint.get('key')}:{taint.get('effect')} that the pod does not tolerate"
    return ""
