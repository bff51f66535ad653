"""The extender's HTTP verbs in-process (its aiohttp app, ClusterState fed directly, no API server): every
malformed body is a 4xx with a message, never a 5xx or an exception in the log; bind requests that do not match
a plan are refused before any Binding is sent."""

from __future__ import annotations

import json
import os
import logging
import math

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LONG_EXAMPLES = int(os.environ.get("CLIQUE_FUZZ_EXAMPLES", "0"))  # the long fuzz run (readme-fuzz)

from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from simulations.controlplane.kwok_nodes import node_manifest
from topology.levels import preset
from topology.spec import parse_cluster_spec


def _pod(name: str = "p-0", **spec) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "w", "resources": {"limits": {"nvidia.com/gpu": "8"}}}], **spec}}


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _filter_body(pod) -> str:
    return json.dumps({"Pod": pod, "NodeNames": ["u-0000"]})


def _with(path: list[str], value) -> dict:
    pod = _pod()
    obj = pod
    for k in path[:-1]:
        obj = obj.setdefault(k, {})
    obj[path[-1]] = value
    return pod


# Every probe input of the binder issue that used to raise inside the extender, as (verb, raw body, field named).
PROBES = [
    ("filter", _deep(10_000), "nested too deeply"),
    ("filter", json.dumps({"Pod": _deep(10_000)})[:0] + '{"Pod": ' + _deep(5_000) + "}", "nested too deeply"),
    ("filter", _filter_body({"metadata": {"name": "a"}, "spec": "x"}), "Pod.spec"),
    ("filter", _filter_body(_with(["spec", "containers"], {"a": 1})), "spec.containers"),
    ("filter", _filter_body(_with(["spec", "containers"], "abc")), "spec.containers"),
    ("filter", _filter_body(_with(["spec", "containers"], [1, None])), "spec.containers[0]"),
    ("filter", _filter_body(_with(["spec", "containers"], [{"resources": {"limits": [1]}}])), "resources.limits"),
    ("filter", json.dumps({"Pod": _with(["spec", "containers"], [{"resources": {"limits": {"nvidia.com/gpu": math.nan}}}]),
                           "NodeNames": ["u-0000"]}), "quantity"),
    ("filter", _filter_body(_with(["spec", "containers"], [{"resources": {"limits": {"nvidia.com/gpu": "1e99999"}}}])),
     "quantity"),
    ("filter", _filter_body(_with(["metadata", "labels"], ["a"])), "metadata.labels"),
    ("filter", _filter_body(_with(["metadata", "labels"], "a=b")), "metadata.labels"),
    ("filter", _filter_body(_with(["metadata", "annotations"], ["a"])), "metadata.annotations"),
    ("filter", _filter_body(_with(["metadata", "annotations"], "x")), "metadata.annotations"),
    ("filter", _filter_body(_with(["metadata", "ownerReferences"], {"kind": "StatefulSet"})), "ownerReferences"),
    ("filter", _filter_body(_with(["metadata", "ownerReferences"], [1])), "ownerReferences"),
    ("filter", _filter_body(_with(["spec", "schedulingGroup"], "g")), "schedulingGroup"),
    ("filter", _filter_body(_with(["metadata", "name"], 5)), "metadata.name"),
    ("filter", _filter_body(_with(["metadata", "name"], ["a"])), "metadata.name"),
    ("filter", _filter_body(_with(["metadata", "namespace"], 7)), "metadata.namespace"),
    ("bind", '{"PodName": "a\\ud800", "PodNamespace": "default", "PodUID": "u", "Node": "n"}', "PodName"),
    ("bind", json.dumps({"PodName": "a", "PodNamespace": "default", "PodUID": 5, "Node": "n"}), "PodUID"),
    ("bind", json.dumps({"PodName": "a", "PodNamespace": "default", "PodUID": "u", "Node": ["n"]}), "Node"),
    ("prioritize", _filter_body(_with(["spec", "containers"], [{"resources": "all"}])), "resources"),
    ("preempt", json.dumps({"Pod": _pod(), "NodeNameToMetaVictims": {"n": {"Pods": [{"UID": 5}]}}}), "Pods[0]"),
    ("preempt", json.dumps({"Pod": _pod(), "NodeNameToMetaVictims": ["n"]}), "NodeNameToMetaVictims"),
]


def _extender(hosts: int = 8) -> tuple[Extender, list[str]]:
    spec = parse_cluster_spec({"name": "u", "pools": [{"name": "u", "hosts": hosts, "gpus": 8}],
                               "levels": [{"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 4}]})
    state = ClusterState(preset("generic"))
    state._set_nodes([node_manifest(h, ready=True) for h in spec.hosts()])
    state._set_pods([])
    for e in state.synced.values():
        e.set()
    return Extender(state, None), [h.name for h in spec.hosts()]


class _Client:
    """The extender's app on a local test server, in this test's event loop."""

    def __init__(self, ext: Extender) -> None:
        self.client = TestClient(TestServer(ext.app()))

    async def __aenter__(self) -> TestClient:
        await self.client.start_server()
        return self.client

    async def __aexit__(self, *exc) -> None:
        await self.client.close()


@pytest.mark.parametrize("verb,body,field", PROBES, ids=[f"{v}-{f}-{i}" for i, (v, _, f) in enumerate(PROBES)])
async def test_each_probed_malformed_body_is_a_400_that_names_what_is_wrong(verb, body, field, caplog):
    ext, _ = _extender()
    caplog.set_level(logging.WARNING)
    async with _Client(ext) as client:
        resp = await client.post(f"/{verb}", data=body.encode("utf-8", "surrogatepass"),
                                 headers={"Content-Type": "application/json"})
        answer = await resp.json()
    assert resp.status == 400, answer
    assert field in answer["Error"], answer
    assert not [r for r in caplog.records if r.exc_info], "an exception reached the log"


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=20)
_POD_FIELDS = [["metadata"], ["metadata", "name"], ["metadata", "namespace"], ["metadata", "labels"],
               ["metadata", "annotations"], ["metadata", "ownerReferences"], ["spec"], ["spec", "containers"],
               ["spec", "initContainers"], ["spec", "schedulingGroup"], ["spec", "nodeName"],
               ["spec", "nodeSelector"], ["metadata", "annotations", "clique.dev/gang-size"]]


@st.composite
def _bodies(draw):
    kind = draw(st.sampled_from(["garbage", "pod-field", "binding"]))
    if kind == "garbage":
        return draw(st.sampled_from(["filter", "prioritize", "bind", "preempt"])), json.dumps(draw(_json))
    if kind == "pod-field":
        pod = _pod()
        path = draw(st.sampled_from(_POD_FIELDS))
        obj = pod
        for k in path[:-1]:
            obj = obj.setdefault(k, {}) if isinstance(obj.get(k, {}), dict) else {}
        obj[path[-1]] = draw(_json)
        verb = draw(st.sampled_from(["filter", "prioritize", "preempt"]))
        if verb == "preempt":
            return verb, json.dumps({"Pod": pod, "NodeNameToMetaVictims": draw(st.one_of(
                st.just({"u-0000": {"Pods": [{"UID": "x"}], "NumPDBViolations": 0}}), _json))})
        return verb, json.dumps({"Pod": pod, "NodeNames": draw(st.one_of(st.just(["u-0000"]), _json))})
    fields = {f: draw(st.one_of(st.text(max_size=12), _json)) for f in ("PodName", "PodNamespace", "PodUID", "Node")}
    return "bind", json.dumps(fields)


@settings(max_examples=max(300, LONG_EXAMPLES), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(_bodies(), min_size=1, max_size=5))
async def test_random_and_malformed_bodies_never_get_a_5xx(cases, caplog):
    ext, _ = _extender()
    caplog.set_level(logging.WARNING)
    async with _Client(ext) as client:
        for verb, body in cases:
            resp = await client.post(f"/{verb}", data=body, headers={"Content-Type": "application/json"})
            assert resp.status < 500, (verb, body, await resp.text())
            answer = await resp.json()
            if resp.status >= 400:
                assert answer["Error"], answer
    assert not [r for r in caplog.records if r.exc_info], "an exception reached the log"


async def test_bind_of_a_pod_that_was_never_planned_or_to_another_node_is_refused_without_a_binding():
    ext, names = _extender()
    gang = [{"metadata": {"name": f"g-{i}", "namespace": "default", "uid": f"u{i}",
                          "annotations": {"clique.dev/gang": "g", "clique.dev/gang-size": "2"}},
             "spec": {"schedulerName": "clique-scheduler",
                      "containers": [{"name": "w", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}
            for i in range(2)]
    single = {"metadata": {"name": "solo", "namespace": "default", "uid": "s"}, "spec": {"containers": []}}
    ext.state._set_pods([*gang, single])

    async def bind(pod: str, node: str) -> str:
        return (await ext.bind({"PodName": pod, "PodNamespace": "default", "PodUID": "u", "Node": node}))["Error"]

    assert "not a pending pod this extender knows" in await bind("nope", names[0])
    assert "which has no plan here" in await bind("g-0", names[0])
    assert "node ghost-node is unknown" in await bind("solo", "ghost-node")
    planned = ext._filter(gang[0], names).node_names[0]
    other = next(n for n in names if n != planned)
    assert f"was planned on {planned}, not {other}" in await bind("g-0", other)
    assert ext.metrics.refused_binds._value.get() == 4


async def test_gang_members_preempt_nothing_and_single_pods_never_take_a_gang_member_as_victim():
    ext, names = _extender()
    member = {"metadata": {"name": "g-0", "namespace": "default", "uid": "gang-uid",
                           "annotations": {"clique.dev/gang": "g", "clique.dev/gang-size": "2"}},
              "spec": {"nodeName": names[0], "containers": []}}
    loner = {"metadata": {"name": "low", "namespace": "default", "uid": "low-uid"},
             "spec": {"nodeName": names[1], "containers": []}}
    ext.state._set_pods([member, loner])
    victims = {names[0]: {"Pods": [{"UID": "gang-uid"}], "NumPDBViolations": 0},
               names[1]: {"Pods": [{"UID": "low-uid"}], "NumPDBViolations": 0}}
    gang_pod = {"metadata": {"name": "hi-0", "namespace": "default",
                             "annotations": {"clique.dev/gang": "hi", "clique.dev/gang-size": "3"}}, "spec": {}}
    assert (await ext.preempt({"Pod": gang_pod, "NodeNameToMetaVictims": victims})) == {"NodeNameToMetaVictims": {}}
    single = await ext.preempt({"Pod": _pod("solo"), "NodeNameToMetaVictims": victims})
    assert single == {"NodeNameToMetaVictims": {names[1]: {"Pods": [{"UID": "low-uid"}], "NumPDBViolations": 0}}}


async def test_a_single_pods_place_stays_held_while_its_binding_is_on_its_way():
    """A plan made while a single pod's Binding is in flight must not use that pod's place (it did: the
    reservation was dropped before the Binding, and the pinner planned a gang on the same host 7 ms later)."""
    import asyncio

    ext, names = _extender(hosts=2)
    solo, other = _pod("solo"), _pod("other")
    other["metadata"]["uid"] = "u2"
    ext.state._set_pods([solo, other])
    host = ext._filter(solo, names).node_names[0]
    sent, release = asyncio.Event(), asyncio.Event()

    async def slow_bind(ns: str, name: str, uid: str, node: str) -> str:
        sent.set()
        await release.wait()
        return ""

    ext.binder.bind = slow_bind
    binding = asyncio.create_task(ext.bind({"PodName": "solo", "PodNamespace": "default", "PodUID": "u1",
                                            "Node": host}))
    await sent.wait()
    assert ext._filter(other, names).node_names == [n for n in names if n != host], "planned on a host being bound"
    release.set()
    assert (await binding)["Error"] == ""
    assert "default/solo" in ext.just_bound() and ext.reservations.get("default/single/solo") is None
