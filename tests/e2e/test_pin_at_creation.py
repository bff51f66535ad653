"""Gangs pinned at creation (scheduler/extender/pinning.py, `created`): the extender's admission webhook plans a gang
at its first member's creation and every member is stored already pinned to the planned NVLink domain, with no
scheduling gate, so no release patch follows. On the real kube-apiserver and kube-scheduler (second scheduler,
profile clique-scheduler) with KWOK nodes; the webhook registered as shipped (manifests/scheduler/webhook.yaml,
`url` on 127.0.0.1). Side effects: an extender, a kube-scheduler, KWOK nodes, two namespaces, all removed or left
to the session's control plane at the end."""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from kubernetes import client

from scheduler.extender.pinning import GATE, NAME_FIELD, PINNED
from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender
from simulations.controlplane.processes import free_port
from simulations.controlplane.webhook import policy_registered
from tests.e2e.helpers import opted_in_namespaces, wait_for
from tests.e2e.test_extender import NVL, gang_pod, new_pool
from tests.unit.test_admission import mint_certs


@pytest.fixture(scope="module")
def pinned(control_plane, tmp_path_factory):
    work = tmp_path_factory.mktemp("pin-at-creation")
    ca = mint_certs(work / "tls")
    hook = free_port()
    handle: dict = {}

    def start(port: int | None = None) -> int:
        handle["proc"], handle["port"] = start_extender(
            control_plane.kubeconfig, work / "extender.log", preset="gb200-nvl72", bind_timeout_s=8, port=port,
            webhook_port=hook, webhook_cert_dir=work / "tls")
        return handle["port"]

    port = start()
    api = control_plane.api_client()
    try:
        control_plane.start_scheduler(clique_scheduler_config(port), name="clique-scheduler")
        prefix, names, domain = new_pool(api, domains=2, hosts=4)
        probe = gang_pod("probe", "probe", 4, pool=prefix)
        with opted_in_namespaces(control_plane, api, hook, ca.read_bytes(), "pin", probe) as (on, _):
            yield {"core": client.CoreV1Api(api), "apps": client.AppsV1Api(api), "ns": on, "pool": prefix,
                   "domain": domain, "port": port, "handle": handle, "start": start}
    finally:
        control_plane.stop_component("clique-scheduler")
        stop_extender(handle["proc"])
        api.close()


def _pins(pod) -> list[str]:
    """The node names a pod's required node affinity allows by matchFields metadata.name (one per term)."""
    na = pod.spec.affinity and pod.spec.affinity.node_affinity
    terms = (na.required_during_scheduling_ignored_during_execution.node_selector_terms
             if na and na.required_during_scheduling_ignored_during_execution else [])
    return sorted(f.values[0] for t in terms for f in (t.match_fields or []) if f.key == NAME_FIELD)


def _gates(pod) -> list[str]:
    return [g.name for g in pod.spec.scheduling_gates or []]


def _counter(port: int, outcome: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    line = next((ln for ln in text.splitlines() if ln.startswith(f'clique_gangs_total{{outcome="{outcome}"}}')), None)
    return float(line.split()[-1]) if line else 0.0


def test_a_gang_is_created_pinned_to_one_domain_without_a_gate_and_bound_whole_there(pinned):
    core, ns, domain = pinned["core"], pinned["ns"], pinned["domain"]
    before = _counter(pinned["port"], "pinned_at_creation")
    gang = f"g{uuid.uuid4().hex[:5]}"
    created = [core.create_namespaced_pod(ns, gang_pod(f"{gang}-{i}", gang, 3, pool=pinned["pool"]))
               for i in range(3)]
    # as stored: ours, no gate, and pinned to the hosts of one NVLink domain (every host of it: room to replan)
    assert {p.spec.scheduler_name for p in created} == {"clique-scheduler"}
    assert [_gates(p) for p in created] == [[], [], []]
    pins = [_pins(p) for p in created]
    assert pins[0] and pins[0] == pins[1] == pins[2]
    assert len({domain[h] for h in pins[0]}) == 1 and len(pins[0]) == 4
    assert _counter(pinned["port"], "pinned_at_creation") == before + 1
    planned = {p.metadata.name: p.metadata.annotations[PINNED] for p in created}  # each member's own host
    assert len(set(planned.values())) == 3 and set(planned.values()) <= set(pins[0])

    def nodes():
        pods = core.list_namespaced_pod(ns, label_selector=f"gang={gang}").items
        return {p.metadata.name: p.spec.node_name for p in pods} if all(p.spec.node_name for p in pods) else None

    assert wait_for(nodes, 30, "the pinned gang bound") == planned


def test_a_gang_with_no_room_at_creation_is_gated_and_never_partly_bound(pinned):
    core, ns = pinned["core"], pinned["ns"]
    gang = f"big{uuid.uuid4().hex[:5]}"
    created = [core.create_namespaced_pod(ns, gang_pod(f"{gang}-{i}", gang, 5, pool=pinned["pool"]))
               for i in range(5)]  # 5 hosts in domains of 4, NVLink required: no plan
    assert [_gates(p) for p in created] == [[GATE]] * 5
    assert all(not _pins(p) for p in created)
    events = wait_for(lambda: [e for e in core.list_namespaced_event(ns).items
                               if e.reason == "GangUnschedulable" and e.involved_object.name.startswith(gang)],
                      30, "a GangUnschedulable Event for the gang with no room")
    assert "nvlink" in events[0].message or "domain" in events[0].message
    assert not any(p.spec.node_name for p in core.list_namespaced_pod(ns, label_selector=f"gang={gang}").items)
    for i in range(5):
        core.delete_namespaced_pod(f"{gang}-{i}", ns, grace_period_seconds=0)


def test_a_statefulset_gang_is_pinned_per_block_of_ordinals(pinned):
    core, apps, ns, domain = pinned["core"], pinned["apps"], pinned["ns"], pinned["domain"]
    name = f"sts{uuid.uuid4().hex[:5]}"
    template = gang_pod("unused", name, 2, pool=pinned["pool"])
    annotations = {"clique.dev/gang-size": "2", "clique.dev/topology-required": "nvlink"}  # no clique.dev/gang
    apps.create_namespaced_stateful_set(ns, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {"replicas": 4, "serviceName": name, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"gang": name}},
                 "template": {"metadata": {"labels": {"gang": name}, "annotations": annotations},
                              "spec": {**template["spec"], "schedulerName": "default-scheduler"}}}})
    try:
        def pods():
            found = core.list_namespaced_pod(ns, label_selector=f"gang={name}").items
            return found if len(found) == 4 and all(p.spec.node_name for p in found) else None

        found = {p.metadata.name: p for p in wait_for(pods, 60, "4 StatefulSet pods bound")}
        assert all(not _gates(p) and _pins(p) for p in found.values())
        # pinned when created, not released later: the webhook's mark names each pod's own host
        assert all(p.metadata.annotations.get(PINNED) == p.spec.node_name for p in found.values())
        for block in ((0, 1), (2, 3)):  # ordinals 0-1 are one gang, 2-3 the other (scheduler.gangs.recognize)
            a, b = (found[f"{name}-{o}"] for o in block)
            assert _pins(a) == _pins(b) and domain[a.spec.node_name] == domain[b.spec.node_name]
            assert a.spec.node_name != b.spec.node_name
    finally:
        apps.delete_namespaced_stateful_set(name, ns)


def test_with_the_routing_policy_also_installed_the_webhooks_pin_wins_and_no_gate_comes_back(pinned, control_plane):
    """Both shipped routes at once: the policy runs first and gates, the webhook then pins and removes the gate, and
    the policy run again after it (reinvocationPolicy: IfNeeded) leaves the pinned pod ungated."""
    core, ns = pinned["core"], pinned["ns"]
    api = control_plane.api_client()
    try:
        with policy_registered(api, name=f"pin-policy-{uuid.uuid4().hex[:5]}"):
            def dry_gated() -> bool:  # the policy in effect: a dry run (never pinned) comes out gated by it
                made = core.create_namespaced_pod(ns, gang_pod("probe", "probe", 2, pool=pinned["pool"]),
                                                  dry_run="All")
                return _gates(made) == [GATE]

            wait_for(dry_gated, 30, "the routing policy in effect", interval_s=0.5)
            gang = f"both{uuid.uuid4().hex[:5]}"
            pod = gang_pod(f"{gang}-0", gang, 2, pool=pinned["pool"])
            pod["spec"]["schedulerName"] = "default-scheduler"
            created = [core.create_namespaced_pod(ns, pod)]
            created.append(core.create_namespaced_pod(ns, gang_pod(f"{gang}-1", gang, 2, pool=pinned["pool"])))
            assert [_gates(p) for p in created] == [[], []] and all(_pins(p) for p in created)
            assert {p.spec.scheduler_name for p in created} == {"clique-scheduler"}
            wait_for(lambda: all(p.spec.node_name for p in core.list_namespaced_pod(
                ns, label_selector=f"gang={gang}").items), 30, "the gang bound")
    finally:
        api.close()


def test_a_pinned_gang_whose_reservation_was_lost_with_a_restart_is_bound_inside_its_pins(pinned, control_plane):
    """The extender plans at admission and restarts before kube-scheduler sees the pods: the reservation is gone,
    the pods are pinned, and the filter plans the gang again inside the pins (never outside: they cannot be
    loosened)."""
    core, ns, domain = pinned["core"], pinned["ns"], pinned["domain"]
    control_plane.stop_component("clique-scheduler")
    try:
        gang = f"rs{uuid.uuid4().hex[:5]}"
        created = [core.create_namespaced_pod(ns, gang_pod(f"{gang}-{i}", gang, 2, pool=pinned["pool"]))
                   for i in range(2)]
        pins = _pins(created[0])
        assert pins and all(_pins(p) == pins and not _gates(p) for p in created)
        stop_extender(pinned["handle"]["proc"])
        pinned["start"](pinned["port"])  # same port: the kube-scheduler configuration still points at it
    finally:
        control_plane.start_scheduler(clique_scheduler_config(pinned["port"]), name="clique-scheduler")

    def nodes():
        pods = core.list_namespaced_pod(ns, label_selector=f"gang={gang}").items
        return [p.spec.node_name for p in pods] if all(p.spec.node_name for p in pods) else None

    bound = wait_for(nodes, 60, "the gang bound after the extender's restart")
    assert len(set(bound)) == 2 and set(bound) <= set(pins) and len({domain[h] for h in bound}) == 1
