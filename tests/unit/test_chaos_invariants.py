"""The chaos run's checker (pure): over-commits, partial-gang seconds, constraint breaches, and `fits`."""

from __future__ import annotations

from hypothesis import given, strategies as st

from simulations.chaos_invariants import GANG_LABEL, Checker, GangSpec, fits

NVL = "nvidia.com/gpu.clique"


def node(name: str, gpus: int = 8, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}, "spec": {}, "status": {"allocatable": {"nvidia.com/gpu": str(gpus)}}}


def pod(name: str, gang: str | None, node_name: str | None, gpus: int = 8, uid: str | None = None,
        selector: dict | None = None) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid or name, "labels": {GANG_LABEL: gang} if gang else {}},
            "spec": {"schedulerName": "clique-scheduler", "nodeName": node_name, "nodeSelector": selector or {},
                     "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": "Running" if node_name else "Pending"}}


def checker_with_nodes(*names: str) -> Checker:
    c = Checker(allowance_s=13.0)
    for i, n in enumerate(names):
        c.observe_node("ADDED", node(n, **{NVL: f"d{i // 2}"}), 0.0)
    return c


def test_two_pods_on_one_node_beyond_its_gpus_are_one_over_commit_until_one_leaves():
    c = checker_with_nodes("n0", "n1")
    c.observe_pod("ADDED", pod("a", None, "n0"), 1.0)
    assert c.over_commits == []
    c.observe_pod("ADDED", pod("b", None, "n0", gpus=4), 2.0)
    assert [(o["node"], o["gpus_used"], o["gpus"]) for o in c.over_commits] == [("n0", 12, 8)]
    c.observe_pod("MODIFIED", pod("c", None, "n0", gpus=1), 2.5)  # still over: the same spell, not a new breach
    assert len(c.over_commits) == 1
    c.observe_pod("DELETED", pod("b", None, "n0", gpus=4), 3.0)
    c.observe_pod("DELETED", pod("c", None, "n0", gpus=1), 3.0)
    c.observe_pod("ADDED", pod("d", None, "n0", gpus=4), 4.0)
    assert len(c.over_commits) == 2


def test_a_gang_partly_bound_longer_than_the_allowance_counts_the_excess_and_a_deleted_one_stops_counting():
    c = checker_with_nodes("n0", "n1", "n2", "n3")
    c.submit(GangSpec("g", "gang2", ((2, 8),), NVL))
    c.observe_pod("ADDED", pod("g-0", "g", "n0"), 10.0)
    c.observe_pod("ADDED", pod("g-1", "g", None), 10.0)
    c.observe_pod("MODIFIED", pod("g-1", "g", "n1"), 30.0)  # 20 s partial, 7 s beyond 13 s
    g = c.gangs["g"]
    assert (g.partial_s, g.partial_beyond_s, g.whole_at) == (20.0, 7.0, 30.0)
    c.submit(GangSpec("h", "gang2", ((2, 8),), NVL))
    c.observe_pod("ADDED", pod("h-0", "h", "n2"), 40.0)
    c.deleted("h", 45.0)
    c.finish(100.0)
    assert c.gangs["h"].partial_s == 5.0 and c.gangs["h"].partial_beyond_s == 0.0


def test_a_pod_bound_where_its_selector_excludes_and_a_gang_across_two_domains_are_reported():
    c = checker_with_nodes("n0", "n1", "n2")
    c.submit(GangSpec("g", "gang2", ((2, 8),), NVL))
    c.observe_pod("ADDED", pod("g-0", "g", "n1"), 1.0)
    c.observe_pod("ADDED", pod("g-1", "g", "n2"), 1.0)  # n1 in d0, n2 in d1
    assert c.split_gangs == {"g"}
    c.observe_pod("ADDED", pod("x", None, "n0", selector={"pool": "other"}), 2.0)
    assert len(c.violations) == 1 and "nodeSelector pool=other" in c.violations[0]


def test_a_relist_replaces_what_the_watch_held():
    c = checker_with_nodes("n0")
    c.observe_pod("ADDED", pod("a", None, "n0"), 1.0)
    c.relist([pod("b", None, "n0", gpus=2)], 2.0)
    assert c.used_gpus("n0") == 2 and c.over_commits == []


def test_fits_finds_a_domain_with_room_and_refuses_when_none_has_it():
    free = {"a": 8, "b": 8, "c": 8, "d": 4}
    dom = {"a": "x", "b": "x", "c": "y", "d": "y"}
    assert fits(free, dom, ((2, 8),), free)
    assert fits(free, dom, ((1, 8), (1, 4)), free)
    assert not fits(free, dom, ((3, 8),), free)
    assert not fits(free, dom, ((2, 8),), ["a", "c", "d"])


@given(st.lists(st.sampled_from((0, 4, 8)), min_size=1, max_size=12), st.integers(1, 4), st.sampled_from((4, 8)))
def test_fits_within_one_domain_is_exactly_whether_the_pods_can_be_packed(frees, pods, gpus):
    hosts = {f"h{i}": f for i, f in enumerate(frees)}
    slots = sum(f // gpus for f in frees)  # 4- and 8-GPU pods on 8-GPU hosts: slots per host are independent
    assert fits(hosts, {h: "one" for h in hosts}, ((pods, gpus),), hosts) == (slots >= pods)


def test_the_chaos_workload_and_faults_are_the_same_for_one_seed_and_stay_in_their_window():
    import random

    from simulations.bench_chaos import ChaosConfig, manifests, plan_faults, plan_workload

    cfg = ChaosConfig(gangs=60, extender_kills=10, scheduler_kills=5, apiserver_restarts=1, arrival_s=100, lws=False)
    subs = plan_workload(cfg, ["l0", "l1"])
    assert subs == plan_workload(cfg, ["l0", "l1"]) and len(subs) == 60
    assert {s["kind"] for s in subs} == {"single", "gang2", "gang4", "leader-workers", "statefulset"}
    faults = plan_faults(cfg, random.Random(2))
    assert [f for _, f in faults].count("extender") == 10 and len(faults) == 16
    assert all(5 <= t <= 80 for t, _ in faults) and faults == sorted(faults)
    lw = next(s for s in subs if s["kind"] == "leader-workers")
    pods = [obj for _, obj in manifests(lw, "pool", "ns")]
    assert [p["metadata"]["annotations"]["clique.dev/role"] for p in pods] == ["leader", "worker", "worker", "worker"]
    assert {p["metadata"]["labels"][GANG_LABEL] for p in pods} == {lw["id"]}


def test_only_pods_of_the_runs_namespace_are_judged_against_their_constraints_but_every_pod_counts_for_gpus():
    c = Checker(allowance_s=13.0, namespace="ns")
    c.observe_node("ADDED", node("n0"), 0.0)
    other = pod("left-over", None, "gone-node")
    other["metadata"]["namespace"] = "another-test"
    c.observe_pod("ADDED", other, 1.0)  # other work's pod on a node since deleted: not this run's concern
    assert c.violations == []
    c.observe_pod("ADDED", pod("ours", None, "gone-node"), 2.0)
    assert c.violations == ["ns/ours/ours bound to node gone-node, which the API server does not show"]
    neighbour = pod("neighbour", None, "n0", gpus=4)
    neighbour["metadata"]["namespace"] = "another-test"
    c.observe_pod("ADDED", neighbour, 3.0)
    c.observe_pod("ADDED", pod("mine", None, "n0", gpus=8), 4.0)
    assert [(o["node"], o["gpus_used"]) for o in c.over_commits] == [("n0", 12)]
