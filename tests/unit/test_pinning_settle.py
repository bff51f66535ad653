"""A gated gang that waited for room is not committed to a plan that splits its preferred domain while room is
still coming back (scheduler/extender/pinning.py, `settle`): the in-process extender, fed watch events directly;
time is a fake clock; the only stub is the API write that releases a member (its patch is recorded)."""

from __future__ import annotations

import asyncio

from hypothesis import given, strategies as st

from scheduler.extender import pinning
from scheduler.extender.pinning import GATE, SETTLE_MAX_S, SETTLE_S, Pinner, settled, splits
from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from simulations.controlplane.kwok_nodes import node_manifest
from topology.levels import preset
from topology.spec import parse_cluster_spec


def _pod(name: str, gang: str | None, size: int, node: str | None = None) -> dict:
    ann = {"clique.dev/gang": gang, "clique.dev/gang-size": str(size),
           "clique.dev/topology-preferred": "clique.dev/leaf"} if gang else {}
    spec = {"schedulerName": "clique-scheduler",
            "containers": [{"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}
    if node:
        spec["nodeName"] = node
    else:
        spec["schedulingGates"] = [{"name": GATE}]
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec,
            "metadata": {"name": name, "namespace": "default", "uid": name, "annotations": ann},
            "status": {"phase": "Running" if node else "Pending"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _setup(monkeypatch):
    spec = parse_cluster_spec({"name": "u", "pools": [{"name": "u", "hosts": 8, "gpus": 8}],
                               "levels": [{"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 4}]})
    hosts = [h.name for h in spec.hosts()]
    state = ClusterState(preset("generic"))
    state._set_nodes([node_manifest(h, ready=True) for h in spec.hosts()])
    ext = Extender(state, None)
    ext.event = lambda *a, **k: None
    released: dict[str, list[dict]] = {}

    async def patch_pod(key: str, ops: list[dict]) -> str:  # the API write, recorded
        released[key] = ops
        return ""

    ext.binder.patch_pod = patch_pod
    clock = Clock()
    monkeypatch.setattr(pinning.time, "monotonic", clock)
    # leaf 0 (hosts 0-3) held by a departing gang, leaf 1 half taken by two single pods
    old = [_pod(f"old-{i}", "old", 4, hosts[i]) for i in range(4)]
    singles = [_pod(f"single-{i}", None, 1, hosts[4 + i]) for i in range(2)]
    new = [_pod(f"new-{i}", "new", 4) for i in range(4)]
    state._set_pods(old + singles + new)
    return ext, hosts, released, clock, old, Pinner(ext)


def _pinned_hosts(released: dict[str, list[dict]]) -> set[str]:
    out = set()
    for ops in released.values():
        for op in ops:
            if "nodeAffinity" in str(op.get("path")) or "affinity" in str(op.get("path")):
                out |= {v for t in [op["value"]] for v in _names(t)}
    return out


def _names(value) -> list[str]:
    if isinstance(value, dict):
        if value.get("key") == "metadata.name":
            return list(value.get("values") or [])
        return [n for v in value.values() for n in _names(v)]
    if isinstance(value, list):
        return [n for v in value for n in _names(v)]
    return []


def _tick(pinner: Pinner, clock: Clock, dt: float) -> None:
    clock.now += dt
    asyncio.run(pinner.tick())


def test_a_waiting_gang_is_not_split_while_a_departing_gang_is_still_going_and_takes_the_whole_leaf_after(monkeypatch):
    ext, hosts, released, clock, old, pinner = _setup(monkeypatch)
    ext.state.gated_gangs.add("default/clique/new")
    _tick(pinner, clock, 0.0)
    assert not released and "default/clique/new" in pinner.waiting  # no room: it waits
    # the departing gang's pods go one by one; after two, a split plan (2 + 2 hosts) would fit
    for i in (0, 1):
        ext.state._pod_event("DELETED", old[i])
        _tick(pinner, clock, 1.5)
    assert not released, "a split plan is not committed while the cluster is still changing"
    assert "default/clique/new" in pinner.settling
    for i in (2, 3):
        ext.state._pod_event("DELETED", old[i])
        _tick(pinner, clock, 0.3)
    assert not released
    _tick(pinner, clock, SETTLE_S)  # quiet now: planned again, inside leaf 0
    assert set(released) == {f"default/new-{i}" for i in range(4)}
    assert _pinned_hosts(released) <= set(hosts[:4]), _pinned_hosts(released)


def test_a_split_plan_is_committed_once_the_cluster_is_quiet_when_no_single_domain_frees_up(monkeypatch):
    ext, hosts, released, clock, old, pinner = _setup(monkeypatch)
    ext.state.gated_gangs.add("default/clique/new")
    _tick(pinner, clock, 0.0)
    for i in (0, 1):  # only two hosts of leaf 0 come back: the gang can only go split
        ext.state._pod_event("DELETED", old[i])
        _tick(pinner, clock, 1.5)
    assert not released
    _tick(pinner, clock, SETTLE_S)
    assert set(released) == {f"default/new-{i}" for i in range(4)}
    assert {hosts.index(h) // 4 for h in _pinned_hosts(released)} == {0, 1}


@given(st.lists(st.floats(0, 3), min_size=1, max_size=40))
def test_a_burst_of_changes_never_holds_a_split_plan_past_the_maximum(gaps):
    changed = started = 0.0
    t = 0.0
    for g in gaps:  # changes at these gaps; the rule of Pinner.tick for the burst's start
        t += g
        if t - changed >= SETTLE_S:
            started = t
        changed = t
    assert settled(t + SETTLE_S + 1e-9, changed, started)
    assert settled(started + SETTLE_MAX_S + 1e-9, changed, started)
    assert not settled(t, changed, started) or t - started >= SETTLE_MAX_S


def test_splits_counts_domains_and_a_host_without_the_label_as_its_own():
    dom = {"a": "x", "b": "x", "c": "y"}
    assert not splits(["a", "b"], dom)
    assert splits(["a", "c"], dom)
    assert splits(["a", "z"], dom)
    assert not splits(["z"], dom)
