"""Gangs pinned at creation (scheduler/extender/pinning.py, `created`): the admission webhook plans a gang at its
first member and every member is created pinned, without the gate. The pure patch and member rules, the decision
in admission.decide, and Pinner.admit on the in-process extender (nodes and pods fed to its state directly; no API
write is made by admit)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from scheduler.extender.admission import decide
from scheduler.extender.nodefit import node_refusal
from scheduler.extender.pinning import GATE, PINNED, Pinner, creation_members, creation_patch
from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from scheduler.gangs import recognize
from simulations.controlplane.kwok_nodes import node_manifest
from tests.unit.test_pinning import _apply
from topology.levels import preset
from topology.spec import parse_cluster_spec

LEAF = "clique.dev/leaf"


def _pod(name: str, gang: str = "g", size: int = 4, gates: tuple[str, ...] = (), owner: str | None = None,
         annotations: dict | None = None) -> dict:
    ann = annotations if annotations is not None else {"clique.dev/gang": gang, "clique.dev/gang-size": str(size),
                                                       "clique.dev/topology-required": LEAF}
    md = {"name": name, "namespace": "ns", "annotations": ann}
    if owner:
        md["ownerReferences"] = [{"kind": "StatefulSet", "name": owner, "apiVersion": "apps/v1", "uid": "s"}]
    spec = {"schedulerName": "clique-scheduler",
            "containers": [{"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}
    if gates:
        spec["schedulingGates"] = [{"name": g} for g in gates]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


def _request(pod: dict, dry_run: bool = False) -> dict:
    return {"uid": "r", "operation": "CREATE", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "ns", "object": pod,
            "dryRun": dry_run}


# ------------------------------------------------------------------------------------------------ pure rules
@pytest.mark.parametrize("gates", [(), (GATE,), ("other.io/hold", GATE), (GATE, "other.io/hold")])
def test_the_creation_patch_removes_only_our_gate_and_pins_to_the_domain(gates):
    pod = _pod("p-0", gates=gates)
    out = _apply(pod, creation_patch(pod, ["h1", "h2", "h3"], "h2"))
    assert [g["name"] for g in out["spec"].get("schedulingGates", [])] == [g for g in gates if g != GATE]
    allowed = [h for h in ("h0", "h1", "h2", "h3", "h4") if not node_refusal(out, h, {}, [])]
    assert allowed == ["h1", "h2", "h3"]
    assert out["metadata"]["annotations"][PINNED] == "h2" and len(out["metadata"]["annotations"]) == 4


def test_a_pod_without_annotations_gets_the_pinned_marker_as_a_new_map():
    pod = _pod("web-0", owner="web", annotations={})
    pod["metadata"]["labels"] = {"clique.dev/gang-size": "2"}
    assert _apply(pod, creation_patch(pod, ["h1"], "h1"))["metadata"]["annotations"] == {PINNED: "h1"}


def test_a_pod_already_pinned_at_creation_is_neither_pinned_again_nor_gated():
    pod = _pod("p-0", annotations={"clique.dev/gang": "g", "clique.dev/gang-size": "4", PINNED: "h1"})
    asked = []
    out = decide(_request(pod), "clique-scheduler", gate=True, pin=lambda p: asked.append(p) or [])
    assert out.outcome == "already-ours" and out.patch == [] and asked == []


def test_a_pod_with_terms_of_its_own_is_narrowed_to_its_own_host_in_each_term():
    pod = _pod("p-0")
    pod["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]}]}}}
    out = _apply(pod, creation_patch(pod, ["h1", "h2"], "h2"))
    assert not node_refusal(out, "h2", {"pool": "a"}, [])
    assert node_refusal(out, "h1", {"pool": "a"}, []) and node_refusal(out, "h2", {"pool": "b"}, [])


def test_one_pod_describes_a_clique_gang_and_a_statefulset_block_but_not_a_grove_gang():
    pod = _pod("p-0", size=3)
    assert creation_members(pod, recognize(pod)) == [pod] * 3
    sts = _pod("web-5", owner="web", annotations={"clique.dev/gang-size": "3"})
    members = creation_members(sts, recognize(sts))
    assert [m["metadata"]["name"] for m in members] == ["web-3", "web-4", "web-5"]
    assert [recognize(m).role for m in members] == ["leader", "worker", "worker"]
    assert {recognize(m).key for m in members} == {recognize(sts).key}
    grove = _pod("pc-0", annotations={})
    grove["metadata"]["labels"] = {"grove.io/podgang": "pg", "grove.io/podclique": "pc"}
    assert creation_members(grove, recognize(grove, {"PodGang ns/pg": 2})) is None
    single = _pod("s-0", size=1)
    assert creation_members(single, recognize(single)) is None


# --------------------------------------------------------------------------------------- admission.decide
def test_decide_uses_the_pin_for_a_real_creation_and_the_gate_otherwise():
    pod = _pod("p-0")
    pins = [{"op": "add", "path": "/spec/affinity", "value": {}}]
    seen = []

    def pin(p):
        seen.append(p["metadata"]["namespace"])
        return pins

    assert decide(_request(pod), "clique-scheduler", gate=True, pin=pin).patch == pins
    assert decide(_request(pod), "clique-scheduler", gate=True, pin=pin).outcome == "pinned"
    gated = decide(_request(pod, dry_run=True), "clique-scheduler", gate=True, pin=pin)
    assert gated.outcome == "routed" and {"op": "add", "path": "/spec/schedulingGates", "value": [{"name": GATE}]} \
        in gated.patch
    assert seen == ["ns", "ns"]  # never asked for a dry run
    assert decide(_request(pod), "clique-scheduler", gate=True, pin=lambda p: None).patch[-1]["path"] \
        == "/spec/schedulingGates"
    assert decide(_request(pod), "clique-scheduler", gate=False, pin=pin).patch == []  # already ours, no gating


def test_a_pin_that_fails_leaves_the_pod_gated_not_refused():
    def broken(p):
        raise RuntimeError("engine exploded")

    out = decide(_request(_pod("p-0")), "clique-scheduler", gate=True, pin=broken)
    assert out.outcome == "routed" and out.patch[-1]["path"] == "/spec/schedulingGates"


# ------------------------------------------------------------------------------------------- Pinner.admit
def _extender(hosts: int = 8) -> tuple[Extender, dict[str, str]]:
    spec = parse_cluster_spec({"name": "u", "pools": [{"name": "u", "hosts": hosts, "gpus": 8}],
                               "levels": [{"name": "leaf", "label": LEAF, "hostsPerDomain": 4}]})
    state = ClusterState(preset("generic"))
    state._set_nodes([node_manifest(h, ready=True) for h in spec.hosts()])
    state._set_pods([])
    for e in state.synced.values():  # as after the watches' first lists
        e.set()
    ext = Extender(state, None)
    ext.event = lambda *a, **k: None
    return ext, {h.name: h.labels[LEAF] for h in spec.hosts()}


def _pinned_to(ops: list[dict]) -> list[str]:
    out = _apply(_pod("x"), ops)
    return [h for h in out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"] for h in [h["matchFields"][0]["values"][0]]]


def test_the_first_member_plans_the_gang_and_the_others_claim_their_places_in_one_leaf():
    ext, leaf = _extender()
    pinner = Pinner(ext)
    outs = [pinner.admit(_pod(f"p-{i}")) for i in range(4)]
    assert all(o is not None for o in outs)
    pins = [_pinned_to(o) for o in outs]
    assert all(p == pins[0] for p in pins) and len({leaf[h] for h in pins[0]}) == 1
    res = ext.reservations["ns/clique/g"]
    assert res.admitted and sorted(res.hosts) == [f"ns/p-{i}" for i in range(4)] and not res.unclaimed
    assert len(set(res.hosts.values())) == 4
    assert pinner.admit(_pod("p-4")) is None  # a fifth pod: its gang's plan has no place for it, so it is gated
    assert pinner.admit(_pod("p-2")) is not None  # the same member again (a retried creation) keeps its place


def test_no_pin_when_the_gang_cannot_fit_when_members_exist_or_the_name_is_generated():
    ext, _ = _extender()
    pinner = Pinner(ext)
    assert pinner.admit(_pod("big-0", gang="big", size=5)) is None  # leaves of 4 hosts, leaf required
    assert "ns/clique/big" not in ext.reservations
    ext.state._set_pods([{**_pod("old-0", gang="old"), "status": {"phase": "Pending"}}])
    assert pinner.admit(_pod("old-1", gang="old")) is None  # a member exists already: the gated path's
    unnamed = _pod("")
    unnamed["metadata"]["generateName"] = "p-"
    assert pinner.admit(unnamed) is None
    assert pinner.admit(_pod("held-0", gang="held", gates=("other.io/hold",))) is None


def test_gangs_with_roles_larger_members_and_an_unsynced_extender_are_gated_not_pinned():
    ext, _ = _extender()
    pinner = Pinner(ext)
    front = _pod("fe-0", gang="r", annotations={"clique.dev/gang": "r", "clique.dev/gang-size": "4",
                                                 "clique.dev/role": "frontend"})
    assert pinner.admit(front) is None and "ns/clique/r" not in ext.reservations  # several shapes: one pod can't say
    small = _pod("m-0", gang="m")
    small["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "4"
    assert pinner.admit(small) is not None
    assert pinner.admit(_pod("m-1", gang="m")) is None  # 8 GPUs where the plan holds 4: gated, planned whole later
    assert "ns/m-1" not in ext.reservations["ns/clique/m"].hosts
    cold, _ = _extender()
    for e in cold.state.synced.values():
        e.clear()
    assert Pinner(cold).admit(_pod("c-0", gang="c")) is None  # bound pods not known yet


def test_an_admitted_reservation_is_kept_while_its_pods_are_not_in_the_watch_yet():
    ext, _ = _extender()
    Pinner(ext).admit(_pod("p-0"))
    ext.expire()
    assert "ns/clique/g" in ext.reservations
    ext.reservations["ns/clique/g"].created -= ext.reservation_timeout_s + 1  # none reached bind in time
    ext.expire()
    assert "ns/clique/g" not in ext.reservations


@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=6))
def test_gangs_pinned_at_creation_never_overcommit_a_host(sizes):
    ext, leaf = _extender(hosts=12)
    pinner = Pinner(ext)
    for g, size in enumerate(sizes):
        for i in range(size):
            pinner.admit(_pod(f"g{g}-{i}", gang=f"g{g}", size=size))
    per_host: dict[str, int] = {}
    for res in ext.reservations.values():
        assert len({leaf[h] for h in res.hosts.values()}) <= 1  # required leaf honoured
        for h in res.hosts.values():
            per_host[h] = per_host.get(h, 0) + 8
    assert all(v <= 8 for v in per_host.values())
