"""The least-privilege helpers (simulations/controlplane/audit.py): audit log parsing and RBAC's rule matching,
binding resolution and unused-grant reporting, as k8s.io/kubernetes v1.37.2 plugin/pkg/auth/authorizer/rbac and
pkg/registry/rbac/validation/rule.go define them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulations.controlplane import audit as A

SA = "system:serviceaccount:clique-system:clique-scheduler"
GROUPS = ("system:serviceaccounts", "system:serviceaccounts:clique-system", "system:authenticated")


def req(verb: str, resource: str = "", sub: str = "", group: str = "", ns: str = "", name: str = "",
        path: str = "", code: int = 200) -> A.Request:
    return A.Request(SA, GROUPS, verb, group, resource, sub, ns, name, path, code)


def rule(**kw) -> A.Rule:
    return A.Rule.from_dict(kw)


# ------------------------------------------------------------------------------------------ audit log
def event(audit_id: str, stage: str, verb: str, code: int | None = 200, **ref) -> str:
    ev = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": audit_id,
          "stage": stage, "requestURI": "/api/v1/namespaces/x/pods?watch=true", "verb": verb,
          "user": {"username": SA, "groups": list(GROUPS)}, "userAgent": "kube-scheduler/v1.37.2",
          "annotations": {A.DECISION: "allow"}}
    if ref:
        ev["objectRef"] = ref
    if code is not None:
        ev["responseStatus"] = {"code": code}
    return json.dumps(ev)


def test_a_watch_logged_at_two_stages_is_one_request_with_its_final_status():
    lines = [event("1", "ResponseStarted", "watch", resource="pods", namespace="x", apiVersion="v1"),
             event("1", "ResponseComplete", "watch", resource="pods", namespace="x", apiVersion="v1"), "",
             event("2", "ResponseComplete", "create", 403, resource="pods", subresource="binding", namespace="x",
                   name="p")]
    got = A.parse_audit(lines)
    assert len(got) == 2
    watch, bind = got
    assert (watch.verb, watch.resource, watch.namespace, watch.path) == ("watch", "pods", "x", "/api/v1/namespaces/x/pods")
    assert watch.user_agent.startswith("kube-scheduler/") and watch.groups == GROUPS
    assert bind.combined_resource == "pods/binding" and A.denied(got) == [bind]
    assert bind.key() == ("create", "core/pods/binding", "x", "p")


def test_a_line_that_is_not_an_audit_event_is_an_error_naming_the_line():
    with pytest.raises(A.AuditParseError, match="line 2: not JSON"):
        A.parse_audit([event("1", "ResponseComplete", "get"), "{oops"])
    with pytest.raises(A.AuditParseError, match="line 1: not an audit.k8s.io Event"):
        A.parse_audit([json.dumps({"kind": "Status"})])


def test_the_policy_records_only_the_named_groups_at_metadata_level():
    policy = A.audit_policy(["system:serviceaccounts:clique-system"])
    assert policy["rules"][0] == {"level": "Metadata", "userGroups": ["system:serviceaccounts:clique-system"]}
    assert policy["rules"][-1] == {"level": "None"} and policy["omitStages"] == ["RequestReceived"]
    with pytest.raises(ValueError, match="at least one user group"):
        A.audit_policy([])


# ------------------------------------------------------------------------------------------ rule matching
def test_a_subresource_needs_its_own_grant_or_a_star_slash_form():
    pods = rule(apiGroups=[""], resources=["pods"], verbs=["create"])
    binding = rule(apiGroups=[""], resources=["pods/binding"], verbs=["create"])
    any_binding = rule(apiGroups=[""], resources=["*/binding"], verbs=["create"])
    bind = req("create", "pods", "binding", ns="x", name="p")
    assert not A.rule_allows(pods, bind)  # "pods" does not cover pods/binding
    assert A.rule_allows(binding, bind) and A.rule_allows(any_binding, bind)
    assert not A.rule_allows(binding, req("create", "pods", ns="x"))  # nor the other way round
    assert not A.rule_allows(any_binding, req("create", "pods", "eviction", ns="x"))
    assert A.rule_allows(rule(apiGroups=["*"], resources=["*"], verbs=["*"]), bind)  # "*" covers subresources


def test_verbs_groups_and_resource_names_must_all_match():
    lease = rule(apiGroups=["coordination.k8s.io"], resources=["leases"], resourceNames=["clique-scheduler"],
                 verbs=["get", "update"])
    assert A.rule_allows(lease, req("get", "leases", group="coordination.k8s.io", ns="s", name="clique-scheduler"))
    assert not A.rule_allows(lease, req("get", "leases", group="coordination.k8s.io", ns="s", name="other"))
    assert not A.rule_allows(lease, req("create", "leases", group="coordination.k8s.io", ns="s"))
    assert not A.rule_allows(lease, req("get", "leases", group="", ns="s", name="clique-scheduler"))
    # a list has no name: a rule with resourceNames never allows it
    assert not A.rule_allows(lease, req("list", "leases", group="coordination.k8s.io", ns="s"))


def test_non_resource_urls_match_exactly_or_by_a_trailing_star():
    discovery = rule(nonResourceURLs=["/api", "/apis/*"], verbs=["get"])
    assert A.rule_allows(discovery, req("get", path="/apis/apps/v1"))
    assert A.rule_allows(discovery, req("get", path="/api"))
    assert not A.rule_allows(discovery, req("get", path="/api/v1"))
    assert not A.rule_allows(discovery, req("post", path="/apis/x"))
    # a resource rule never allows a non-resource request, nor the reverse
    assert not A.rule_allows(rule(apiGroups=["*"], resources=["*"], verbs=["*"]), req("get", path="/api"))
    assert not A.rule_allows(discovery, req("get", "pods"))


NAMES = st.sampled_from(["pods", "nodes", "leases", "events", "*"])


@given(verb=st.sampled_from(["get", "list", "patch"]), res=st.sampled_from(["pods", "nodes"]),
       sub=st.sampled_from(["", "status", "binding"]), group=st.sampled_from(["", "apps"]),
       verbs=st.lists(st.sampled_from(["get", "list", "patch", "*"]), min_size=1, max_size=3),
       groups=st.lists(st.sampled_from(["", "apps", "*"]), min_size=1, max_size=2),
       resources=st.lists(st.sampled_from(["pods", "nodes", "pods/status", "*/binding", "*"]), min_size=1, max_size=3))
def test_a_rule_allows_exactly_what_one_of_its_single_grants_allows(verb, res, sub, group, verbs, groups, resources):
    r = A.Rule(tuple(verbs), tuple(groups), tuple(resources))
    q = req(verb, res, sub, group, ns="x", name="n")
    assert A.rule_allows(r, q) == any(A.rule_allows(a, q) for a in A.atoms(r))
    assert len(A.atoms(r)) == len(verbs) * len(groups) * len(resources)


# ------------------------------------------------------------------------------------------ bindings
ROLES = [
    {"kind": "ClusterRole", "metadata": {"name": "ext"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]},
    {"kind": "Role", "metadata": {"name": "le", "namespace": "clique-system"}, "rules": [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}]},
    {"kind": "ClusterRoleBinding", "metadata": {"name": "ext"}, "roleRef": {"kind": "ClusterRole", "name": "ext"},
     "subjects": [{"kind": "ServiceAccount", "name": "clique-scheduler", "namespace": "clique-system"}]},
    {"kind": "RoleBinding", "metadata": {"name": "le", "namespace": "clique-system"},
     "roleRef": {"kind": "Role", "name": "le"}, "subjects": [{"kind": "ServiceAccount", "name": "clique-scheduler"}]},
    {"kind": "ClusterRoleBinding", "metadata": {"name": "other"}, "roleRef": {"kind": "ClusterRole", "name": "ext"},
     "subjects": [{"kind": "ServiceAccount", "name": "someone-else", "namespace": "clique-system"}]},
    {"kind": "ClusterRoleBinding", "metadata": {"name": "authd"}, "roleRef": {"kind": "ClusterRole", "name": "ext"},
     "subjects": [{"kind": "Group", "name": "system:authenticated"}]},
]


def test_bindings_reach_their_subjects_and_a_rolebinding_holds_only_in_its_namespace():
    grants = A.grants_for(SA, GROUPS, ROLES)
    assert {g.binding for g in grants} == {"ClusterRoleBinding/ext", "RoleBinding/clique-system/le",
                                          "ClusterRoleBinding/authd"}
    lease = req("create", "leases", group="coordination.k8s.io", ns="clique-system")
    assert A.explaining(grants, lease).binding == "RoleBinding/clique-system/le"
    assert A.explaining(grants, req("create", "leases", group="coordination.k8s.io", ns="default")) is None
    # a ServiceAccount subject without a namespace means the RoleBinding's own
    assert A.applies_to_user({"kind": "ServiceAccount", "name": "clique-scheduler"}, SA, (), "clique-system")
    assert not A.applies_to_user({"kind": "ServiceAccount", "name": "clique-scheduler"}, SA, (), "")


def test_unused_single_grants_are_reported_and_denied_requests_use_nothing():
    grants = [g for g in A.grants_for(SA, GROUPS, ROLES) if g.binding == "ClusterRoleBinding/ext"]
    used = [req("list", "pods"), req("create", "events", ns="x"), req("get", "pods", ns="x", name="p", code=403)]
    unused = sorted(u.describe() for u in A.unused_atoms(grants, used))
    assert unused == ["ClusterRole/ext (cluster-wide): create events.k8s.io/events",
                      "ClusterRole/ext (cluster-wide): get core/pods",
                      "ClusterRole/ext (cluster-wide): patch core/events",
                      "ClusterRole/ext (cluster-wide): patch events.k8s.io/events"]
    assert A.unexplained(grants, [req("watch", "pods")]) == [req("watch", "pods")]
    assert A.Usage(used).table() == [("create", "core/events", "x", 1), ("get", "core/pods", "x", 1),
                                     ("list", "core/pods", "*", 1)]
