"""Gang-aware, topology-aware preemption on the real control plane (kube-apiserver with its Priority admission,
the disruption controller keeping PodDisruptionBudgets' status, kwok, clique-scheduler + extender).

One pool of 3 NVLink domains x 4 hosts, full: domain 0 holds a low-priority 2x8 gang and two 1x8 pods, domains 1
and 2 four 1x8 pods each. High-priority 4x8 gangs arrive one after another:
  1. the fewest GPUs freeing one domain are 32 anywhere; with no gang among them, domain 1's four pods go (the
     first such domain), and nothing else moves;
  2. a PodDisruptionBudget protects one pod of domain 2: the 2x8 gang and the two pods of domain 0 go instead,
     the gang whole;
  3. nothing is left to take (domain 2 is protected): nothing is evicted, and the gang waits with a reason;
  4. a 5x8 gang, which no domain can hold even emptied, evicts nothing."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from tests.e2e.helpers import gpu_pod, wait_for
from tests.e2e.test_extender import gang_pod, new_pool

LOW, HIGH = "clique-test-low", "clique-test-high"


def _priority_classes(k8s) -> None:
    sched = client.SchedulingV1Api(k8s)
    for name, value in ((LOW, 10), (HIGH, 1000)):
        try:
            sched.create_priority_class({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                         "metadata": {"name": name}, "value": value})
        except client.exceptions.ApiException as exc:
            assert exc.status == 409


def _low_pod(name: str, node: str, labels: dict[str, str]) -> dict:
    pod = gpu_pod(name, 8, labels=labels)
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    pod["spec"]["priorityClassName"] = LOW
    pod["spec"]["terminationGracePeriodSeconds"] = 0
    return pod


def _high_gang(core, name: str, size: int, pool: str, gated: bool = False) -> None:
    for i in range(size):
        pod = gang_pod(f"{name}-{i}", name, size, pool=pool)
        pod["spec"]["priorityClassName"] = HIGH
        if gated:  # the gated path (scheduler/extender/pinning.py): the gate in the pod's own template
            pod["spec"]["schedulingGates"] = [{"name": "clique.dev/placement"}]
        core.create_namespaced_pod("default", pod)


def _running(core, selector: str) -> dict[str, str]:
    return {p.metadata.name: p.spec.node_name for p in core.list_namespaced_pod("default", label_selector=selector).items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp}


def _reasons(core, name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items:
        out.setdefault(e.reason, []).append(e.message)
    return out


def _fill(k8s) -> dict:
    core = client.CoreV1Api(k8s)
    _priority_classes(k8s)
    pool, names, domain = new_pool(k8s, domains=3, hosts=4)
    sel = f"victim={pool}"
    for i, node in enumerate(names):
        if i >= 2:  # domain 0's first two hosts are left for the low-priority gang
            core.create_namespaced_pod("default", _low_pod(f"{pool}-low-{i}", node, {"victim": pool}))
    wait_for(lambda: len(_running(core, sel)) == 10, 90, "ten low-priority pods Running")
    g = f"{pool}-lowgang"
    for i in range(2):
        pod = gang_pod(f"{g}-{i}", g, 2, pool=pool)
        pod["metadata"]["labels"]["victim"] = pool
        pod["spec"]["priorityClassName"] = LOW
        pod["spec"]["terminationGracePeriodSeconds"] = 0
        core.create_namespaced_pod("default", pod)
    wait_for(lambda: len(_running(core, f"gang={g}")) == 2, 90, "the low-priority gang Running")
    assert {domain[n] for n in _running(core, f"gang={g}").values()} == {f"{pool}.0"}
    return {"pool": pool, "names": names, "domain": domain, "sel": sel, "lowgang": g}


def _empty(k8s, pool: str) -> None:
    core = client.CoreV1Api(k8s)
    for p in core.list_namespaced_pod("default").items:
        if p.metadata.name.startswith(pool):
            core.delete_namespaced_pod(p.metadata.name, "default", grace_period_seconds=0)


@pytest.fixture(scope="module")
def full_pool(control_plane, clique_scheduler):
    k8s = control_plane.api_client()
    filled = _fill(k8s)
    yield filled
    _empty(k8s, filled["pool"])
    try:
        client.PolicyV1Api(k8s).delete_namespaced_pod_disruption_budget(f"{filled['pool']}-keep", "default")
    except client.exceptions.ApiException:
        pass
    k8s.close()


def test_a_gated_high_priority_gang_preempts_too_and_is_released_pinned_to_the_freed_domain(control_plane,
                                                                                          clique_scheduler):
    k8s = control_plane.api_client()
    core = client.CoreV1Api(k8s)
    filled = _fill(k8s)
    try:
        pool, domain, sel = filled["pool"], filled["domain"], filled["sel"]
        before = _running(core, sel)
        g = f"{pool}-gated"
        _high_gang(core, g, 4, pool, gated=True)
        placed = wait_for(lambda: (r := _running(core, f"gang={g}")) and len(r) == 4 and r, 90, "gated high gang Running")
        assert {domain[n] for n in placed.values()} == {f"{pool}.1"} and len(set(placed.values())) == 4
        gone = sorted(set(before) - set(_running(core, sel)))
        assert gone == sorted(n for n, node in before.items() if domain[node] == f"{pool}.1"), gone
        pod = core.read_namespaced_pod(f"{g}-0", "default")
        assert not pod.spec.scheduling_gates and pod.spec.affinity.node_affinity, "released by the pinning loop"
    finally:
        _empty(k8s, filled["pool"])
        k8s.close()


def test_a_high_priority_gang_evicts_exactly_the_fewest_gpus_that_free_one_domain(k8s, full_pool):
    core = client.CoreV1Api(k8s)
    pool, domain, sel = full_pool["pool"], full_pool["domain"], full_pool["sel"]
    before = _running(core, sel)
    g = f"{pool}-high1"
    t0 = time.monotonic()
    _high_gang(core, g, 4, pool)
    placed = wait_for(lambda: (r := _running(core, f"gang={g}")) and len(r) == 4 and r, 90, "high gang Running")
    print(f"high-priority gang Running {time.monotonic() - t0:.1f}s after it was created")
    assert {domain[n] for n in placed.values()} == {f"{pool}.1"} and len(set(placed.values())) == 4
    after = _running(core, sel)
    gone = sorted(set(before) - set(after))
    assert gone == sorted(n for n, node in before.items() if domain[node] == f"{pool}.1"), gone
    assert len(gone) == 4 and full_pool["lowgang"] + "-0" in after and full_pool["lowgang"] + "-1" in after
    assert all(after[n] == before[n] for n in after), "a pod that was not a victim moved"
    victim = _reasons(core, gone[0])
    assert any(f"preempted by gang default/{g}" in m for m in victim.get("Preempted", [])), victim
    preemptor = _reasons(core, f"{g}-0")
    assert any(all(f"default/{v}" in m for v in gone) for m in preemptor.get("Preempting", [])), preemptor


def test_a_budget_that_forbids_a_victim_moves_the_choice_to_another_domain_and_a_gang_goes_whole(k8s, full_pool):
    core, policy = client.CoreV1Api(k8s), client.PolicyV1Api(k8s)
    pool, domain, sel, names = full_pool["pool"], full_pool["domain"], full_pool["sel"], full_pool["names"]
    keep = f"{pool}-low-{8}"  # a pod of domain 2
    core.patch_namespaced_pod(keep, "default", {"metadata": {"labels": {"keep": "yes"}}})
    policy.create_namespaced_pod_disruption_budget("default", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": f"{pool}-keep"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"keep": "yes"}}}})
    wait_for(lambda: (s := policy.read_namespaced_pod_disruption_budget(f"{pool}-keep", "default").status)
             and s.expected_pods == 1 and s.current_healthy == 1, 60, "the disruption controller counted the budget's pod")
    before = _running(core, sel)
    g = f"{pool}-high2"
    _high_gang(core, g, 4, pool)
    placed = wait_for(lambda: (r := _running(core, f"gang={g}")) and len(r) == 4 and r, 90, "high gang Running")
    assert {domain[n] for n in placed.values()} == {f"{pool}.0"}
    after = _running(core, sel)
    assert keep in after
    gone = set(before) - set(after)
    assert gone == {n for n, node in before.items() if domain[node] == f"{pool}.0"}, gone
    assert {f"{full_pool['lowgang']}-0", f"{full_pool['lowgang']}-1"} <= gone  # the gang went whole
    assert len([n for n in names if domain[n] == f"{pool}.2"]) == 4


def test_nothing_is_evicted_when_what_is_left_is_protected_or_could_not_make_room(k8s, full_pool):
    core = client.CoreV1Api(k8s)
    pool, sel = full_pool["pool"], full_pool["sel"]
    before = _running(core, sel)
    assert len(before) == 4  # domain 2, one of them protected
    for g, size in ((f"{pool}-high3", 4), (f"{pool}-high5", 5)):
        _high_gang(core, g, size, pool)
        wait_for(lambda: "PreemptionSkipped" in _reasons(core, f"{g}-0"), 60, f"{g}: told why nothing is preempted")
        why = " ".join(_reasons(core, f"{g}-0")["PreemptionSkipped"])
        assert ("PodDisruptionBudget" in why) if size == 4 else ("even if every pod of lower priority" in why), why
        for _ in range(6):
            assert _running(core, sel) == before
            assert not [p for p in core.list_namespaced_pod("default", label_selector=f"gang={g}").items
                        if p.spec.node_name]
            time.sleep(0.5)
