"""Grove PodGangs, Volcano and coscheduling PodGroups read as their APIs publish them (pure parts, and the
extender's filter path in-process): each Grove clique is a role with its own request, pack constraints become
the gang's levels, Volcano tiers map onto node-label levels, a group's minimum is its gang and the pods beyond
it are placed near it, coscheduling's scheduleTimeoutSeconds bounds the reservation."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.extender.gangbook import gang_spec, gang_view, split_group
from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from scheduler.gangs import GangObject, recognize, size_from_object
from simulations.controlplane.kwok_nodes import node_manifest
from topology.levels import levels_from_labels
from topology.spec import parse_cluster_spec

SPINE, NVL = "clique.dev/spine", "nvidia.com/gpu.clique"
LEVELS = levels_from_labels([SPINE, NVL])  # outermost first: Volcano tier 1 = nvlink, tier 2 = spine


def pod(name: str, gpus: int = 8, labels: dict | None = None, annotations: dict | None = None,
        node: str | None = None) -> dict:
    spec: dict = {"schedulerName": "clique-scheduler", "containers": [
        {"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": str(gpus)} if gpus else {},
                                                  "requests": {"cpu": "1", "memory": "1Gi"}}}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec,
            "metadata": {"name": name, "namespace": "infer", "uid": f"uid-{name}", "labels": labels or {},
                         "annotations": annotations or {}}}


def grove_pod(name: str, clique: str, gpus: int, gang: str = "pcs-0", node: str | None = None) -> dict:
    # the labels Grove's operator writes on a PodClique's pods (operator/internal/controller/podclique/
    # components/pod/pod.go getLabels, ai-dynamo/grove v0.1.0-alpha.12-rc1)
    return pod(name, gpus, {"grove.io/podgang": gang, "grove.io/podclique": clique,
                            "grove.io/podcliqueset-replica-index": "0", "grove.io/podclique-pod-index": name[-1],
                            "app.kubernetes.io/managed-by": "grove-operator", "app.kubernetes.io/part-of": "pcs"},
               node=node)


def podgang(groups: list[tuple[str, int]], required: str | None = None, preferred: str | None = None,
            group_pack: dict[str, dict] | None = None) -> dict:
    spec: dict = {"podgroups": [{"name": n, "minReplicas": m, "podReferences": [
        {"namespace": "infer", "name": f"{n}-{i}"} for i in range(m)]} for n, m in groups]}
    for g in spec["podgroups"]:
        if group_pack and g["name"] in group_pack:
            g["topologyConstraint"] = {"packConstraint": group_pack[g["name"]]}
    pack = {k: v for k, v in (("required", required), ("preferred", preferred)) if v}
    if pack:
        spec["topologyConstraint"] = {"packConstraint": pack}
    return {"apiVersion": "scheduler.grove.io/v1alpha1", "kind": "PodGang", "metadata": {"name": "pcs-0"}, "spec": spec}


# ------------------------------------------------------------------ Grove

def test_a_grove_pods_role_is_its_podclique():
    g = recognize(grove_pod("pcs-0-frontend-0", "pcs-0-frontend", 0))
    assert (g.source, g.name, g.role, g.size_object) == ("grove", "pcs-0", "pcs-0-frontend", "PodGang infer/pcs-0")


def test_the_podgang_size_is_the_sum_of_its_podgroups_min_replicas_and_each_is_a_role_minimum():
    facts = size_from_object("grove", podgang([("fe", 1), ("prefill", 2), ("decode", 4)]), LEVELS)
    assert facts.size == 7 and dict(facts.role_minimums) == {"fe": 1, "prefill": 2, "decode": 4}


def test_the_gang_level_pack_constraint_becomes_the_required_and_preferred_levels():
    facts = size_from_object("grove", podgang([("w", 2)], required=SPINE, preferred=NVL), LEVELS)
    assert (facts.required, facts.preferred, facts.not_honoured) == (SPINE, NVL, ())


def test_a_podgroup_required_inside_the_gangs_applies_to_the_whole_gang():
    facts = size_from_object("grove", podgang([("fe", 1), ("w", 2)], required=SPINE,
                                              group_pack={"w": {"required": NVL}}), LEVELS)
    assert facts.required == NVL, "the innermost required key: every constraint holds"


def test_per_podgroup_preferred_keys_are_used_when_the_gang_has_none_and_hostname_is_passed_over():
    facts = size_from_object("grove", podgang([("w", 2)], required=SPINE, preferred="kubernetes.io/hostname",
                                              group_pack={"w": {"preferred": NVL}}), LEVELS)
    assert (facts.preferred, facts.not_honoured) == (NVL, ()), "preferred is best effort: no Event for it"


def test_a_required_key_that_is_not_a_level_here_is_said_to_be_not_honoured():
    facts = size_from_object("grove", podgang([("w", 2)], required="topology.kubernetes.io/rack"), LEVELS)
    assert facts.required is None
    assert "topology.kubernetes.io/rack (the PodGang) is not a level" in facts.not_honoured[0]


def test_every_grove_clique_keeps_its_own_request_so_a_zero_gpu_frontend_is_planned_as_zero_gpus():
    pods = [grove_pod("pcs-0-fe-0", "pcs-0-fe", 0)] + [grove_pod(f"pcs-0-w-{i}", "pcs-0-w", 8) for i in range(4)]
    g = recognize(pods[0], {"PodGang infer/pcs-0": 5})
    spec, roles = gang_spec(g, pods)
    shape = {r.name: (r.pods, r.gpus) for r in spec.roles}
    assert shape == {"pcs-0-fe": (1, 0), "pcs-0-w": (4, 8)} and spec.gpu_count == 32
    assert roles["pcs-0-fe"][0] == 0


def _extender(levels: list[dict], hosts: int) -> tuple[Extender, list[str]]:
    spec = parse_cluster_spec({"name": "u", "pools": [{"name": "u", "hosts": hosts, "gpus": 8}], "levels": levels})
    state = ClusterState(levels_from_labels([lv["label"] for lv in levels]))
    state._set_nodes([node_manifest(h, ready=True) for h in spec.hosts()])
    ext = Extender(state, None)
    ext.events: list[tuple[str, str]] = []  # type: ignore[misc]
    ext.event = lambda p, reason, message, warning=False: ext.events.append((reason, message))  # type: ignore
    return ext, [h.name for h in spec.hosts()]


def _filter(ext: Extender, p: dict, nodes: list[str], facts: GangObject):
    gang = recognize(p)
    sizes, views, problem = ext._view_of(p, gang, facts)
    assert not problem
    return ext._filter(p, nodes, sizes, views)


def test_a_grove_gang_with_a_zero_gpu_frontend_fits_in_one_spine_of_four_hosts_with_every_pod_planned():
    levels = [{"name": "spine", "label": SPINE, "hostsPerDomain": 4}, {"name": "nvlink", "label": NVL,
                                                                        "hostsPerDomain": 2}]
    ext, names = _extender(levels, 8)
    pods = [grove_pod("pcs-0-fe-0", "pcs-0-fe", 0)] + [grove_pod(f"pcs-0-w-{i}", "pcs-0-w", 8) for i in range(4)]
    ext.state._set_pods(pods)
    facts = size_from_object("grove", podgang([("pcs-0-fe", 1), ("pcs-0-w", 4)], required=SPINE), ext.state.levels)
    host = _filter(ext, pods[0], list(names), facts).node_names
    res = ext.reservations["infer/grove/pcs-0"]
    assert host and res.planned == 5
    places = [host[0]] + [h for _, h in res.unclaimed] + list(res.hosts.values())
    assert len({names.index(h) // 4 for h in places}) == 1, "the whole gang inside one spine"
    assert res.role_requests["pcs-0-fe"][0] == 0 and res.role_requests["pcs-0-w"][0] == 8


# ------------------------------------------------------------------ Volcano

def _vc(spec: dict) -> GangObject:
    return size_from_object("volcano", {"spec": {"minMember": 2, **spec}}, LEVELS)


def test_volcano_tiers_count_from_the_innermost_level():
    assert _vc({"networkTopology": {"mode": "hard", "highestTierAllowed": 1}}).required == NVL
    assert _vc({"networkTopology": {"highestTierAllowed": 2}}).required == SPINE, "mode defaults to hard"
    assert _vc({"networkTopology": {"mode": "hard", "highestTierName": SPINE}}).required == SPINE
    soft = _vc({"networkTopology": {"mode": "soft", "highestTierAllowed": 1}})
    assert (soft.required, soft.preferred) == (None, NVL)


def test_a_volcano_tier_that_matches_no_level_is_said_to_be_not_honoured():
    for topo in ({"highestTierAllowed": 3}, {"highestTierAllowed": 0}, {"highestTierName": "volcano.sh/hypernode"}):
        facts = _vc({"networkTopology": {"mode": "hard", **topo}})
        assert facts.required is None and "matches no level" in facts.not_honoured[0]
        assert f"tier 1 = {NVL}" in facts.not_honoured[0], "the message says which tiers there are"
    assert "minTaskMember" in _vc({"minTaskMember": {"w": 1}}).not_honoured[0]


def test_a_groups_min_member_pods_are_its_gang_and_the_rest_are_extras_until_the_gang_is_bound():
    pods = [pod(f"j-{i}", annotations={"scheduling.k8s.io/group-name": "j"}) for i in range(4)]
    split = split_group(pods, GangObject(2))
    assert split.members == ("infer/j-0", "infer/j-1") and split.extras == {"infer/j-2", "infer/j-3"}
    assert not split.started
    size, view = gang_view(GangObject(2), split, "infer/j-3")
    assert size == 2 and view.near is None and view.members == split.members, "waits: it claims no place"
    pods[2]["spec"]["nodeName"], pods[3]["spec"]["nodeName"] = "n1", "n2"  # any two bound: the gang started
    split = split_group(pods, GangObject(2))
    assert split.started and split.extras == {"infer/j-0", "infer/j-1"} and split.near == ("n1", "n2")
    _, view = gang_view(GangObject(2, required=NVL), split, "infer/j-0")
    g = recognize(pods[0], {"PodGroup infer/j": 2}, {"PodGroup infer/j": view})
    assert (g.source, g.near, g.preferred_level, g.required_level) == ("single", ("n1", "n2"), NVL, None)


def test_a_grove_podgroup_short_of_its_min_replicas_makes_the_gang_wait_even_with_extras_elsewhere():
    facts = GangObject(4, role_minimums=(("a", 2), ("b", 2)))
    pods = [grove_pod(f"a-{i}", "a", 8) for i in range(3)] + [grove_pod("b-0", "b", 8)]
    split = split_group(pods, facts)
    assert split.missing == 1 and split.extras == {"infer/a-2"}
    size, _ = gang_view(facts, split, "infer/a-0")
    assert size == 5, "4 pods exist, 5 are needed before the gang (2 a + 2 b) is whole"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=12),
       st.integers(1, 12), st.randoms(use_true_random=False))
def test_the_split_is_the_same_whichever_order_the_pods_come_in_and_never_exceeds_the_minimum(spec, size, rnd):
    pods = [pod(f"p-{i}", labels={"grove.io/podgang": "g", "grove.io/podclique": r}, node=f"n{i}" if b else None)
            for i, (r, b) in enumerate(spec)]
    facts = GangObject(size)
    split = split_group(pods, facts)
    shuffled = list(pods)
    rnd.shuffle(shuffled)
    assert split_group(shuffled, facts) == split
    bound = {f"infer/p-{i}" for i, (_, b) in enumerate(spec) if b}
    pending = {f"infer/p-{i}" for i, (_, b) in enumerate(spec) if not b}
    members = set(split.members) if split.extras else bound | pending
    assert bound <= members and not (members & split.extras) and (members | split.extras) == bound | pending
    assert len(members - bound) <= max(0, size - len(bound))
    assert split.started == (len(bound) >= size)


def test_an_extra_pod_gets_no_place_in_the_gangs_plan_and_is_placed_near_the_gang_once_it_is_bound():
    levels = [{"name": "nvlink", "label": NVL, "hostsPerDomain": 3}]
    ext, names = _extender(levels, 6)
    ann = {"scheduling.k8s.io/group-name": "j"}
    pods = [pod(f"j-{i}", annotations=ann) for i in range(3)]
    ext.state._set_pods(pods)
    facts = size_from_object("volcano", {"spec": {"minMember": 2, "networkTopology": {"highestTierAllowed": 1}}},
                             ext.state.levels)
    extra = _filter(ext, pods[2], list(names), facts)  # the extra asks first: the gang is planned, not it
    assert not extra.node_names and "without a place for this pod" in str(extra.to_json())
    res = ext.reservations["infer/volcano/j"]
    assert res.planned == 2 and set(res.hosts) == {"infer/j-0", "infer/j-1"}, "both members nominated"
    gang_hosts = dict(res.hosts)
    for key, host in gang_hosts.items():  # the gang is bound
        name = key.split("/")[1]
        ext.state._pod_event("MODIFIED", pod(name, annotations=ann, node=host))
    ext.reservations.clear()
    placed = _filter(ext, pods[2], list(names), facts).node_names
    assert placed and placed[0] not in gang_hosts.values()
    assert names.index(placed[0]) // 3 == names.index(next(iter(gang_hosts.values()))) // 3, "near the gang"
    assert "infer/single/j-2" in ext.reservations


def test_a_groups_membership_follows_the_pods_the_watch_shows_when_the_filter_reads_it():
    levels = [{"name": "nvlink", "label": NVL, "hostsPerDomain": 3}]
    ext, names = _extender(levels, 6)
    ann = {"scheduling.k8s.io/group-name": "b"}
    pods = [pod(f"b-{i}", annotations=ann) for i in range(4)]
    ext.state._set_pods(pods[:1])  # kube-scheduler is ahead of the watch: one pod of the burst seen so far
    sizes, views, _ = ext._view_of(pods[0], recognize(pods[0]), GangObject(2))
    assert ext._filter(pods[0], list(names), sizes, views).error, "waits for its pods"
    ext.state._set_pods(pods)  # the watch catches up with all four while the filter waits
    assert recognize(pods[0], sizes, views).members == ("infer/b-0", "infer/b-1")
    assert ext._filter(pods[0], list(names), sizes, views).node_names
    assert ext.reservations["infer/volcano/b"].planned == 2, "minMember pods, not all four"


# ------------------------------------------------------------------ coscheduling

def test_schedule_timeout_seconds_bounds_the_reservation_even_while_members_wait_in_bind():
    import asyncio

    levels = [{"name": "nvlink", "label": NVL, "hostsPerDomain": 3}]
    ext, names = _extender(levels, 3)
    pods = [pod(f"c-{i}", labels={"scheduling.x-k8s.io/pod-group": "c"}) for i in range(3)]
    ext.state._set_pods(pods)
    facts = size_from_object("coscheduling", {"spec": {"minMember": 3, "scheduleTimeoutSeconds": 5}})
    assert facts.timeout_s == 5
    assert _filter(ext, pods[0], list(names), facts).node_names
    res = ext.reservations["infer/coscheduling/c"]
    assert res.gang.timeout_s == 5

    async def one_member_waits_in_bind() -> str:
        res.done = asyncio.get_running_loop().create_future()  # as bind() does for the first member
        res.arrived["infer/c-0"] = "uid-c-0"
        ext.expire()
        assert "infer/coscheduling/c" in ext.reservations, "within its timeout the reservation is held"
        res.created = time.monotonic() - 6
        ext.expire()
        return await asyncio.wait_for(res.done, 1)

    err = asyncio.run(one_member_waits_in_bind())
    assert "infer/coscheduling/c" not in ext.reservations
    assert "scheduleTimeoutSeconds (5s) passed" in err, "the waiting member is answered at once"


def test_a_group_without_a_timeout_keeps_the_bind_timeout_rule():
    levels = [{"name": "nvlink", "label": NVL, "hostsPerDomain": 3}]
    ext, names = _extender(levels, 3)
    pods = [pod(f"d-{i}", labels={"scheduling.x-k8s.io/pod-group": "d"}) for i in range(2)]
    ext.state._set_pods(pods)
    facts = size_from_object("coscheduling", {"spec": {"minMember": 2}})
    assert _filter(ext, pods[0], list(names), facts).node_names
    res = ext.reservations["infer/coscheduling/d"]
    res.done, res.created = object(), time.monotonic() - 3600  # a member waits in bind: the bind timeout settles it
    ext.expire()
    assert "infer/coscheduling/d" in ext.reservations
