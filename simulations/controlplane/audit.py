"""Least privilege, checked: kube-apiserver audit events and RBAC rules, compared. Pure (no I/O).

- `audit_policy(groups)`: an audit.k8s.io/v1 Policy that records requests of users in those groups at level
  Metadata (who, verb, resource, namespace, response code) and nothing else, so the log stays small.
- `parse_audit(lines)`: the requests in a JSON-lines audit log (`--audit-log-format=json`), one per audit ID.
- `Rule` / `rule_allows`: RBAC's matching of one request against one PolicyRule, as k8s.io/kubernetes v1.37.2
  plugin/pkg/auth/authorizer/rbac/rbac.go `RuleAllows` and pkg/apis/rbac/v1/evaluation_helpers.go
  (`VerbMatches`, `APIGroupMatches`, `ResourceMatches` with "resource/subresource" and "*/subresource",
  `ResourceNameMatches`, `NonResourceURLMatches` with a trailing "*").
- `grants_for`: the rules that apply to a user, as pkg/registry/rbac/validation/rule.go `VisitRulesFor` and
  `appliesToUser` resolve them: every ClusterRoleBinding, plus the RoleBindings of the request's namespace (a
  RoleBinding's rules hold in its namespace only); ServiceAccount subjects match
  "system:serviceaccount:<ns>:<name>", Group subjects the user's groups. ClusterRole aggregation is not resolved
  (none of Clique's roles aggregates; bootstrap roles arrive from the API server already aggregated).
- `atoms`, `unused_atoms`, `denied`, `unexplained`: what a least-privilege test reports.

Audit event fields: k8s.io/apiserver v0.37.2 pkg/apis/audit/v1/types.go (Event: auditID, stage, requestURI, verb,
user, userAgent, objectRef{resource, namespace, name, apiGroup, subresource}, responseStatus.code, annotations;
the authorizer's "authorization.k8s.io/decision" annotation, pkg/endpoints/filters/authorization.go).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

DECISION = "authorization.k8s.io/decision"  # k8s.io/apiserver v0.37.2 pkg/endpoints/filters/authorization.go
SA_PREFIX = "system:serviceaccount:"  # k8s.io/apiserver v0.37.2 pkg/authentication/serviceaccount/util.go


class AuditParseError(ValueError):
    """A line of the audit log that is not an audit event; says which line and why."""


def audit_policy(user_groups: Sequence[str]) -> dict[str, Any]:
    """Metadata-level events for users in `user_groups`, none for anyone else; no RequestReceived stage (the
    same request comes back at ResponseComplete with its status)."""
    if not user_groups:
        raise ValueError("audit_policy needs at least one user group (e.g. system:serviceaccounts:clique-system)")
    return {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata", "userGroups": list(user_groups)}, {"level": "None"}]}


@dataclass(frozen=True)
class Request:
    """One API request as the audit log tells it (what RBAC's authorizer.Attributes holds, plus the outcome)."""

    user: str
    groups: tuple[str, ...]
    verb: str
    api_group: str = ""
    resource: str = ""  # "" for a non-resource request (discovery, /version, ...)
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # the URL path without the query (non-resource requests are matched on it)
    code: int = 0  # HTTP status of the answer; 0 if the log has none
    decision: str = ""  # "allow" / "forbid" as the authorizer annotated it
    user_agent: str = ""

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def key(self) -> tuple[str, str, str, str]:
        """(verb, group/resource[/subresource] or the path, namespace or "*", name or "") for tables."""
        what = (f"{self.api_group or 'core'}/{self.combined_resource}" if self.is_resource else self.path)
        return self.verb, what, self.namespace or ("*" if self.is_resource else ""), self.name


def parse_audit(lines: Iterable[str]) -> list[Request]:
    """The requests of a JSON-lines audit log, one per audit ID (the last stage seen wins: a watch logs
    ResponseStarted, then ResponseComplete). Blank lines are skipped; anything else that is not an audit event
    raises AuditParseError naming the line."""
    by_id: dict[str, Request] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ev = json.loads(line)
        except ValueError as exc:
            raise AuditParseError(f"audit log line {number}: not JSON ({exc})") from exc
        if not isinstance(ev, dict) or ev.get("kind") != "Event" or "auditID" not in ev or "verb" not in ev:
            raise AuditParseError(f"audit log line {number}: not an audit.k8s.io Event (kind, auditID, verb)")
        user = ev.get("user") or {}
        ref = ev.get("objectRef") or {}
        status = ev.get("responseStatus") or {}
        uri = str(ev.get("requestURI") or "")
        by_id[str(ev["auditID"])] = Request(
            user=str(user.get("username") or ""), groups=tuple(user.get("groups") or ()), verb=str(ev["verb"]),
            api_group=str(ref.get("apiGroup") or ""), resource=str(ref.get("resource") or ""),
            subresource=str(ref.get("subresource") or ""), namespace=str(ref.get("namespace") or ""),
            name=str(ref.get("name") or ""), path=uri.split("?", 1)[0], code=int(status.get("code") or 0),
            decision=str((ev.get("annotations") or {}).get(DECISION) or ""), user_agent=str(ev.get("userAgent") or ""))
    return list(by_id.values())


# --------------------------------------------------------------------------------------------- RBAC matching
@dataclass(frozen=True)
class Rule:
    """An rbac.authorization.k8s.io/v1 PolicyRule."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Rule":
        def t(key: str) -> tuple[str, ...]:
            v = d.get(key) or ()
            if isinstance(v, str) or not all(isinstance(x, str) for x in v):
                raise ValueError(f"PolicyRule.{key} must be a list of strings, got {v!r}")
            return tuple(v)
        if not d.get("verbs"):
            raise ValueError(f"PolicyRule without verbs: {dict(d)!r}")
        return cls(t("verbs"), t("apiGroups"), t("resources"), t("resourceNames"), t("nonResourceURLs"))

    def describe(self) -> str:
        if self.non_resource_urls:
            return f"{','.join(self.verbs)} {','.join(self.non_resource_urls)}"
        groups = ",".join(g or "core" for g in self.api_groups)
        names = f" [{','.join(self.resource_names)}]" if self.resource_names else ""
        return f"{','.join(self.verbs)} {groups}/{','.join(self.resources)}{names}"


def verb_matches(rule: Rule, verb: str) -> bool:
    return any(v == "*" or v == verb for v in rule.verbs)


def api_group_matches(rule: Rule, group: str) -> bool:
    return any(g == "*" or g == group for g in rule.api_groups)


def resource_matches(rule: Rule, combined: str, subresource: str) -> bool:
    for r in rule.resources:
        if r == "*" or r == combined:
            return True
        if subresource and len(r) == len(subresource) + 2 and r.startswith("*/") and r.endswith(subresource):
            return True
    return False


def resource_name_matches(rule: Rule, name: str) -> bool:
    return not rule.resource_names or name in rule.resource_names


def non_resource_url_matches(rule: Rule, path: str) -> bool:
    for u in rule.non_resource_urls:
        if u == "*" or u == path or (u.endswith("*") and path.startswith(u.rstrip("*"))):
            return True
    return False


def rule_allows(rule: Rule, req: Request) -> bool:
    """RBAC's RuleAllows (k8s.io/kubernetes v1.37.2 plugin/pkg/auth/authorizer/rbac/rbac.go)."""
    if req.is_resource:
        return (verb_matches(rule, req.verb) and api_group_matches(rule, req.api_group)
                and resource_matches(rule, req.combined_resource, req.subresource)
                and resource_name_matches(rule, req.name))
    return verb_matches(rule, req.verb) and non_resource_url_matches(rule, req.path)


# --------------------------------------------------------------------------------------------- grants
@dataclass(frozen=True)
class Grant:
    """One rule reaching a user: through which binding, from which role, and where it holds."""

    binding: str  # "ClusterRoleBinding/x" or "RoleBinding/ns/x"
    role: str  # "ClusterRole/x" or "Role/ns/x"
    rule: Rule
    namespace: str | None  # None: cluster-wide (ClusterRoleBinding); else only requests in that namespace

    def allows(self, req: Request) -> bool:
        if self.namespace is not None and req.namespace != self.namespace:
            return False
        return rule_allows(self.rule, req)

    def describe(self) -> str:
        where = "cluster-wide" if self.namespace is None else f"in {self.namespace}"
        return f"{self.role} ({self.binding}, {where}): {self.rule.describe()}"


def applies_to_user(subject: Mapping[str, Any], user: str, groups: Sequence[str], namespace: str) -> bool:
    """appliesToUser (k8s.io/kubernetes v1.37.2 pkg/registry/rbac/validation/rule.go)."""
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return user == name
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or namespace
        return bool(ns) and user == f"{SA_PREFIX}{ns}:{name}"
    return False


def role_key(kind: str, name: str, namespace: str = "") -> str:
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def grants_for(user: str, groups: Sequence[str], objects: Iterable[Mapping[str, Any]]) -> list[Grant]:
    """Every rule that reaches `user` through the ClusterRoles, Roles, ClusterRoleBindings and RoleBindings in
    `objects` (as the API serves them or as manifests write them). A binding whose role is not among `objects`
    contributes nothing (the caller passes the live server's roles to resolve bootstrap ones)."""
    objs = list(objects)
    roles: dict[str, list[Rule]] = {}
    for o in objs:
        if o.get("kind") in ("ClusterRole", "Role"):
            md = o.get("metadata") or {}
            ns = md.get("namespace", "") if o["kind"] == "Role" else ""
            roles[role_key(o["kind"], md["name"], ns)] = [Rule.from_dict(r) for r in o.get("rules") or []]
    out: list[Grant] = []
    for o in objs:
        kind = o.get("kind")
        if kind not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        md = o.get("metadata") or {}
        ns = md.get("namespace", "") if kind == "RoleBinding" else ""
        if not any(applies_to_user(s, user, groups, ns) for s in o.get("subjects") or []):
            continue
        ref = o.get("roleRef") or {}
        role = role_key(ref.get("kind", ""), ref.get("name", ""), ns if ref.get("kind") == "Role" else "")
        binding = role_key(kind, md["name"], ns)
        for rule in roles.get(role, []):
            out.append(Grant(binding, role, rule, ns or None))
    return out


def atoms(rule: Rule) -> list[Rule]:
    """A rule split into single grants: one verb on one group/resource (resource names kept together), or one
    verb on one non-resource URL. A least-privilege report is about each of them."""
    if rule.non_resource_urls:
        return [Rule((v,), non_resource_urls=(u,)) for v in rule.verbs for u in rule.non_resource_urls]
    return [Rule((v,), (g,), (r,), rule.resource_names)
            for g in rule.api_groups for r in rule.resources for v in rule.verbs]


@dataclass(frozen=True)
class UnusedGrant:
    grant: Grant
    atom: Rule

    def describe(self) -> str:
        where = "cluster-wide" if self.grant.namespace is None else f"in {self.grant.namespace}"
        return f"{self.grant.role} ({where}): {self.atom.describe()}"


def unused_atoms(grants: Iterable[Grant], requests: Iterable[Request]) -> list[UnusedGrant]:
    """Single grants (see `atoms`) of `grants` that no successful request in `requests` needed."""
    ok = [r for r in requests if not is_denied(r)]
    out = []
    for g in grants:
        for a in atoms(g.rule):
            one = Grant(g.binding, g.role, a, g.namespace)
            if not any(one.allows(r) for r in ok):
                out.append(UnusedGrant(g, a))
    return out


def is_denied(req: Request) -> bool:
    return req.code == 403 or req.decision == "forbid"


def denied(requests: Iterable[Request]) -> list[Request]:
    """Requests the API server refused as forbidden (HTTP 403 or the authorizer's forbid)."""
    return [r for r in requests if is_denied(r)]


def explaining(grants: Sequence[Grant], req: Request) -> Grant | None:
    """The first grant that allows `req` (RBAC allows on the first match, too)."""
    return next((g for g in grants if g.allows(req)), None)


def unexplained(grants: Sequence[Grant], requests: Iterable[Request]) -> list[Request]:
    """Successful requests none of `grants` allows: either a grant the caller did not pass, or a difference
    between this matcher and the API server's (which a test should catch)."""
    return [r for r in requests if not is_denied(r) and explaining(grants, r) is None]


@dataclass
class Usage:
    """What one identity did: its requests, the table of (verb, resource, namespace) keys, each with a count."""

    requests: list[Request] = field(default_factory=list)

    def table(self) -> list[tuple[str, str, str, int]]:
        """(verb, group/resource[/sub], namespace or "*", count), sorted; names folded in."""
        counts: dict[tuple[str, str, str], int] = {}
        for r in self.requests:
            verb, what, ns, _ = r.key()
            counts[(verb, what, ns)] = counts.get((verb, what, ns), 0) + 1
        return sorted((v, w, n, c) for (v, w, n), c in counts.items())
