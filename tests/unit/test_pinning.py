"""Gated gangs (scheduler/extender/pinning.py): the gate added at admission and the patch that releases a
member pinned to its gang's nodes, checked against the rules kube-apiserver v1.37.2 applies to gated pods."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, strategies as st

from scheduler.extender.admission import decide, gate_op
from scheduler.extender.nodefit import node_refusal
from scheduler.extender.pinning import GATE, has_gate, other_gates, pin_hosts, pin_patch, ungate_patch


def _pod(affinity=None, gates=(GATE,), uid="u-1") -> dict:
    spec = {"schedulerName": "clique-scheduler", "containers": [{"name": "c", "image": "x"}],
            "schedulingGates": [{"name": g} for g in gates]}
    if affinity is not None:
        spec["affinity"] = affinity
    return {"metadata": {"name": "p", "namespace": "ns", "uid": uid, "annotations": {"clique.dev/gang": "g",
                                                                                     "clique.dev/gang-size": "2"}},
            "spec": spec}


class PatchTestFailed(Exception):
    pass


def _apply(pod: dict, ops: list[dict]) -> dict:
    """RFC 6902 add / remove / test, as the API server applies a JSON patch (enough for these paths)."""
    doc = copy.deepcopy(pod)
    for op in ops:
        # RFC 6901 tokens: "~1" is "/", "~0" is "~"
        *parents, last = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].lstrip("/").split("/")]
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] == "test":
            have = target[int(last)] if isinstance(target, list) else target.get(last)
            if have != op["value"]:
                raise PatchTestFailed(op["path"])
        elif op["op"] == "remove":
            del target[int(last) if isinstance(target, list) else last]
        elif op["op"] == "add":
            if isinstance(target, list):
                target.append(copy.deepcopy(op["value"])) if last == "-" else target.insert(int(last), op["value"])
            else:
                target[last] = copy.deepcopy(op["value"])
    return doc


def _allowed_nodes(pod: dict, nodes: list[str], labels: dict[str, dict] | None = None) -> list[str]:
    return [n for n in nodes if not node_refusal(pod, n, (labels or {}).get(n, {}), ())]


def test_a_pod_without_affinity_is_released_pinned_to_every_node_of_its_gang_one_term_each():
    pod = _pod()
    out = _apply(pod, pin_patch(pod, ["h2", "h1", "h3"], "h1"))
    assert out["spec"]["schedulingGates"] == []
    terms = out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    # one value per matchFields requirement: the API refuses more (ValidateNodeFieldSelectorRequirement)
    assert all(len(t["matchFields"]) == 1 and len(t["matchFields"][0]["values"]) == 1 for t in terms)
    assert _allowed_nodes(out, ["h0", "h1", "h2", "h3", "h4"]) == ["h1", "h2", "h3"]


def test_a_pod_with_its_own_terms_keeps_them_and_each_is_narrowed_to_its_planned_host():
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["h9"]}]}]}}}
    pod = _pod(own)
    out = _apply(pod, pin_patch(pod, ["h1", "h2"], "h2"))
    terms = out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    before = own["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == len(before)  # no term added: the API allows only additions inside existing terms
    for new, old in zip(terms, before):
        assert new.get("matchExpressions", [])[:len(old.get("matchExpressions", []))] == old.get("matchExpressions", [])
        assert new["matchFields"][:len(old.get("matchFields", []))] == old.get("matchFields", [])
    labels = {"h1": {"pool": "a"}, "h2": {"pool": "a"}}
    assert _allowed_nodes(out, ["h1", "h2", "h3"], labels) == ["h2"]


def test_the_release_patch_tests_the_uid_so_a_successor_pod_is_never_patched():
    pod = _pod()
    ops = pin_patch(pod, ["h1"], "h1")
    successor = _pod(uid="u-2")
    with pytest.raises(PatchTestFailed):
        _apply(successor, ops)


def test_only_our_gate_is_removed_and_other_controllers_gates_are_reported():
    pod = _pod(gates=("grove.io/podgang-pending-creation", GATE, "kueue.x-k8s.io/admission"))
    assert other_gates(pod) == ["grove.io/podgang-pending-creation", "kueue.x-k8s.io/admission"]
    out = _apply(pod, ungate_patch(pod))
    assert [g["name"] for g in out["spec"]["schedulingGates"]] == ["grove.io/podgang-pending-creation",
                                                                  "kueue.x-k8s.io/admission"]
    assert "affinity" not in out["spec"] and not has_gate(out)


def test_pins_cover_the_planned_domain_when_it_is_small_and_only_the_planned_hosts_otherwise():
    domain_of = {f"h{i}": ("d0" if i < 4 else "d1") for i in range(8)}
    domains = {"d0": ["h0", "h1", "h2", "h3"], "d1": ["h4", "h5", "h6", "h7"]}
    assert pin_hosts(["h1", "h2"], domain_of, domains) == ["h0", "h1", "h2", "h3"]
    assert pin_hosts(["h1", "h5"], domain_of, domains) == ["h1", "h5"]  # two domains: no single domain to widen to
    big = {"d0": [f"n{i}" for i in range(500)]}
    assert pin_hosts(["n1"], {"n1": "d0"}, big) == ["n1"]


def _review(pod: dict) -> dict:
    return {"uid": "r", "operation": "CREATE", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "object": pod}


def test_the_webhook_gates_gangs_created_at_once_but_never_lws_leaders_whose_workers_come_later():
    gang = _pod(gates=())
    decision = decide(_review(gang), "clique-scheduler", gate=True)
    out = _apply(gang, decision.patch)
    assert has_gate(out)
    lws = _pod(gates=())
    lws["metadata"] = {"name": "l-0", "namespace": "ns", "labels": {
        "leaderworkerset.sigs.k8s.io/name": "l", "leaderworkerset.sigs.k8s.io/group-index": "0",
        "leaderworkerset.sigs.k8s.io/worker-index": "0"}, "annotations": {"leaderworkerset.sigs.k8s.io/size": "2"}}
    assert not has_gate(_apply(lws, decide(_review(lws), "default", gate=True).patch))
    assert not has_gate(_apply(gang, decide(_review(gang), "clique-scheduler", gate=False).patch))


def test_a_gate_already_in_the_template_is_not_added_twice():
    assert gate_op(_pod()) == []
    assert gate_op(_pod(gates=("other",))) == [{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": GATE}}]


hosts = st.lists(st.sampled_from([f"h{i}" for i in range(12)]), min_size=1, max_size=12, unique=True)


@given(planned=hosts, extra=hosts, pool=st.sampled_from(["a", "b"]))
def test_a_released_member_may_only_go_to_its_pins_and_never_where_its_own_affinity_refuses(planned, extra, pool):
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": [pool]}]}]}}}
    labels = {f"h{i}": {"pool": "a" if i % 2 else "b"} for i in range(12)}
    for pod in (_pod(), _pod(own)):
        own_host = planned[0]
        out = _apply(pod, pin_patch(pod, planned + extra, own_host))
        allowed = set(_allowed_nodes(out, list(labels), labels))
        assert allowed <= set(planned + extra) | {own_host}
        assert allowed <= set(_allowed_nodes(pod, list(labels), labels))  # narrowed, never widened
        assert own_host not in set(labels) - allowed or own_host not in _allowed_nodes(pod, list(labels), labels)
        assert not has_gate(out)
