"""The extender's filter path in-process (ClusterState fed directly, no API server): the candidate nodes
kube-scheduler passes are honoured for every gang, also when the same list comes again (it is cached)."""

from __future__ import annotations

from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from simulations.controlplane.kwok_nodes import node_manifest
from topology.levels import preset
from topology.spec import parse_cluster_spec


def _pod(gang: str, i: int, size: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{gang}-{i}", "namespace": "default", "uid": f"{gang}-{i}",
                         "annotations": {"clique.dev/gang": gang, "clique.dev/gang-size": str(size)}},
            "spec": {"schedulerName": "clique-scheduler",
                     "containers": [{"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}


def _extender(hosts: int) -> tuple[Extender, list[str]]:
    spec = parse_cluster_spec({"name": "u", "pools": [{"name": "u", "hosts": hosts, "gpus": 8}],
                               "levels": [{"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 4}]})
    state = ClusterState(preset("generic"))
    state._set_nodes([node_manifest(h, ready=True) for h in spec.hosts()])
    ext = Extender(state, None)
    ext.event = lambda *a, **k: None  # Events need the API; not what this test is about
    return ext, [h.name for h in spec.hosts()]


def test_filter_plans_only_on_the_nodes_kube_scheduler_passed_even_when_a_list_repeats():
    ext, names = _extender(8)
    pods = {g: [_pod(g, i, 2) for i in range(2)] for g in ("a", "b", "c")}
    ext.state._set_pods([p for ps in pods.values() for p in ps])

    first = ext._filter(pods["a"][0], list(names)).to_json()["NodeNames"]
    assert len(first) == 1 and first[0] in names
    narrowed = [n for n in names if n not in (names[0], names[1], names[2], names[3])]
    for p in pods["b"]:  # a narrower list right after a full one: must not reuse the full list's answer
        host = ext._filter(p, narrowed).to_json()["NodeNames"]
        assert host and host[0] in narrowed, (host, narrowed)
    again = ext._filter(pods["c"][0], list(names)).to_json()["NodeNames"]
    assert again and again[0] in names


def test_a_gang_that_cannot_fit_is_unresolvable_on_every_node_so_no_preemption_is_invited():
    ext, names = _extender(4)
    pods = [_pod("big", i, 3) for i in range(3)]
    ext.state._set_pods(pods)
    res = ext._filter(pods[0], names[:2]).to_json()
    assert not res.get("NodeNames") and not res["FailedNodes"]
    assert set(res["FailedAndUnresolvableNodes"]) == set(names[:2])
    assert all("big" in reason for reason in res["FailedAndUnresolvableNodes"].values())


def _lws_pod(name: str, group: int, worker: int, size: int, exclusive: str | None = None) -> dict:
    ann = {"leaderworkerset.sigs.k8s.io/size": str(size)}
    if exclusive:
        ann["leaderworkerset.sigs.k8s.io/exclusive-topology"] = exclusive
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{group}" + (f"-{worker}" if worker else ""), "namespace": "default",
                         "uid": f"{name}-{group}-{worker}", "annotations": ann,
                         "labels": {"leaderworkerset.sigs.k8s.io/name": name,
                                    "leaderworkerset.sigs.k8s.io/group-index": str(group),
                                    "leaderworkerset.sigs.k8s.io/worker-index": str(worker)}},
            "spec": {"containers": [{"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}


def test_an_lws_leader_whose_workers_come_later_is_planned_with_places_held_for_them_in_its_exclusive_domain():
    from scheduler.extender.gangbook import leader_first

    ext, names = _extender(8)  # two leaves of 4 hosts
    leader = _lws_pod("lws", 0, 0, 3, exclusive="clique.dev/leaf")
    ext.state._set_pods([leader])
    assert ext._filter(leader, list(names)).error, "without knowing how the group starts, it waits for its pods"
    lead = leader_first({"spec": {"startupPolicy": "LeaderCreated", "leaderWorkerTemplate": {"workerTemplate": {
        "spec": {"containers": [{"name": "w", "resources": {"limits": {"nvidia.com/gpu": "4"}}}]}}}}}, exclusive=True)
    assert lead is not None and lead.worker_request[0] == 4
    host = ext._filter(leader, list(names), lead=lead).node_names
    res = ext.reservations["default/lws/lws-0"]
    assert res.leader_first and len(host) == 1
    held = [h for _, h in res.unclaimed]
    assert len(held) == 2 and res.role_requests["worker"][0] == 4
    leaf = {names.index(h) // 4 for h in host + held}
    assert len(leaf) == 1, "leader and workers inside one leaf (the exclusive topology key)"
    # a worker created later claims a held place
    worker = _lws_pod("lws", 0, 1, 3, exclusive="clique.dev/leaf")
    ext.state._pod_event("ADDED", worker)
    assert ext._filter(worker, list(names)).node_names[0] in held


def test_lws_startup_policy_decides_whether_the_leader_goes_first():
    from scheduler.extender.gangbook import leader_first

    assert leader_first({"spec": {"startupPolicy": "LeaderCreated"}}, exclusive=False) is None
    assert leader_first({}, exclusive=False) is None
    assert leader_first({"spec": {"startupPolicy": "LeaderReady"}}, exclusive=False).why == "LeaderReady"
    bad = leader_first({"spec": {"startupPolicy": "LeaderReady", "leaderWorkerTemplate": {"workerTemplate": {
        "spec": {"containers": "nope"}}}}}, exclusive=False)
    assert bad.worker_request is None


def test_held_worker_places_are_released_when_the_groups_pods_go_away():
    from scheduler.extender.gangbook import LeaderFirst

    ext, names = _extender(8)
    leader = _lws_pod("gone", 0, 0, 3)
    ext.state._set_pods([leader])
    assert ext._filter(leader, list(names), lead=LeaderFirst("LeaderReady", None)).node_names
    assert "default/lws/gone-0" in ext.reservations
    ext.state._pod_event("DELETED", leader)
    ext.expire()
    assert "default/lws/gone-0" not in ext.reservations
    assert ext.metrics.gangs.labels("expired")._value.get() == 1


def test_the_other_members_of_a_planned_gang_are_nominated_to_their_hosts_and_a_nominated_look_is_cheap():
    ext, names = _extender(8)
    pods = [_pod("n", i, 3) for i in range(3)]
    ext.state._set_pods(pods)
    first = ext._filter(pods[0], list(names)).node_names[0]
    res = ext.reservations["default/clique/n"]
    nominated = dict(ext.nominations)
    assert set(nominated) == {"default/n-1", "default/n-2"} and nominated == {k: res.hosts[k] for k in nominated}
    assert first not in nominated.values()
    # kube-scheduler then tries each nominated node alone: the planned host passes with a one-name list
    pods[1]["status"] = {"nominatedNodeName": nominated["default/n-1"]}
    assert ext._filter(pods[1], [nominated["default/n-1"]]).node_names == [nominated["default/n-1"]]
    # a stale nomination (another node) fails quickly and plans nothing; kube-scheduler goes on to all nodes
    other = next(n for n in names if n not in res.hosts.values())
    pods[2]["status"] = {"nominatedNodeName": other}
    stale = ext._filter(pods[2], [other]).to_json()
    assert not stale["NodeNames"] and other in stale["FailedNodes"] and not stale["Error"]
    assert ext.reservations["default/clique/n"] is res
