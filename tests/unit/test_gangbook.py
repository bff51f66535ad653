"""Gang bookkeeping decisions (pure): replacements join their bound siblings inside the required domain, half
gangs are completed, restarted or left waiting, and nodes are judged by a pod's own spec."""

from __future__ import annotations

import pytest

from scheduler.extender.gangbook import (HalfGangAction, Members, decide_half_gang, gang_spec, interrupted_bind,
                                         join_bound, members_of, not_terminating, pod_key)
from scheduler.extender.nodefit import node_refusal
from scheduler.gangs import recognize
from scheduler.placement.engine import CliqueEngine
from scheduler.placement.types import HostState, Snapshot
from topology.levels import levels_from_labels
from topology.model import HostInfo, Topology

#   nvlink A: a0 a1 a2 a3        nvlink B: b0 b1 b2 b3
#   a0, a1 hold the gang's two bound members; a2 is full; b0..b3 are empty.
HOSTS = {"a0": ("A", 8), "a1": ("A", 8), "a2": ("A", 0), "a3": ("A", 8),
         "b0": ("B", 8), "b1": ("B", 8), "b2": ("B", 8), "b3": ("B", 8)}


def _member(i: int, node: str | None = None, created: str = "2026-12-01T10:00:00Z",
            scheduled: str | None = None) -> dict:
    pod = {"metadata": {"name": f"g-{i}", "namespace": "default", "creationTimestamp": created,
                        "annotations": {"clique.dev/gang": "g", "clique.dev/gang-size": "4",
                                        "clique.dev/topology-required": "nvlink"}},
           "spec": {"containers": [{"name": "w", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}
    if node:
        pod["spec"]["nodeName"] = node
        pod["status"] = {"conditions": [{"type": "PodScheduled", "status": "True",
                                         "lastTransitionTime": scheduled or created}]}
    return pod


def _snapshot() -> Snapshot:
    """HOSTS with the bound members' GPUs in use on a0, a1 (as the extender's state counts them)."""
    used = {"a0": 8, "a1": 8}
    hosts = [HostInfo(h, 8, {"nvidia.com/gpu.clique": d}) for h, (d, _) in HOSTS.items()]
    topo = Topology(hosts, levels_from_labels(["nvidia.com/gpu.clique"], ["nvlink"]))
    return Snapshot(topo, {h: HostState(h, gpus=8, gpus_used=used.get(h, 8 - free), pods_used=int(free < 8))
                           for h, (_, free) in HOSTS.items()})


def test_a_replacement_member_joins_its_bound_siblings_inside_their_nvlink_domain():
    pods = [_member(0, "a0"), _member(1, "a1"), _member(2), _member(3)]
    members = members_of(pods)
    assert members.bound == {"default/g-0": "a0", "default/g-1": "a1"} and len(members.pending) == 2
    spec, _ = gang_spec(recognize(pods[0]), members.pending)
    snap, joined, problem = join_bound(_snapshot(), spec, members.bound.values())
    assert problem == ""
    # only a3 is free in domain A: two pending members of 8 GPUs cannot both join there
    plan = CliqueEngine().place(snap, joined)
    assert not plan.placed and "nvlink" in plan.reason
    # with one pending member, it goes to a3 (domain A), never to the empty domain B
    spec1, _ = gang_spec(recognize(pods[0]), members.pending[:1])
    snap1, joined1, _ = join_bound(_snapshot(), spec1, members.bound.values())
    plan1 = CliqueEngine().place(snap1, joined1)
    assert plan1.placed and plan1.hosts() == ["a3"]


def test_members_being_deleted_are_neither_bound_nor_pending_so_a_restarted_gang_does_not_join_them():
    # a gang restarted whole: its old members terminating on their nodes, the controller's first new pod pending
    old = [_member(i, f"a{i}") for i in (1, 2, 3)]
    for p in old:
        p["metadata"]["deletionTimestamp"] = "2026-12-01T10:05:00Z"
    pods = [_member(0), *old]
    members = members_of(pods)
    assert members.bound == {} and [pod_key(p) for p in members.pending] == ["default/g-0"]
    assert not_terminating(pods) == [pods[0]]  # 1 of 4 members: the gang counts as incomplete, nothing is planned


def test_bound_members_that_already_span_two_domains_cannot_be_joined():
    pods = [_member(0, "a0"), _member(1, "b0"), _member(2)]
    members = members_of(pods)
    spec, _ = gang_spec(recognize(pods[0]), members.pending)
    _, _, problem = join_bound(_snapshot(), spec, members.bound.values())
    assert "already span 2" in problem and "restarted whole" in problem


def test_a_member_the_watch_has_not_shown_bound_yet_counts_as_bound():
    pods = [_member(0), _member(1)]
    assert members_of(pods, {"default/g-0": "a0"}).bound == {"default/g-0": "a0"}


@pytest.mark.parametrize("scenario,created,scheduled,interrupted", [
    ("bind cut short: pending member existed before the last bind", "2026-12-01T10:00:00Z", "2026-12-01T10:00:01Z", True),
    ("same second counts as cut short", "2026-12-01T10:00:01Z", "2026-12-01T10:00:01Z", True),
    ("replacement created after the gang was bound", "2026-12-01T10:05:00Z", "2026-12-01T10:00:01Z", False),
])
def test_an_interrupted_bind_is_told_from_a_replacement_by_the_api_servers_times(scenario, created, scheduled, interrupted):
    bound = [_member(0, "a0", scheduled=scheduled)]
    pending = [_member(1, created=created)]
    assert interrupted_bind(bound, pending) is interrupted, scenario


def test_half_gang_decisions_complete_restart_or_wait():
    gang = recognize(_member(0))
    members = Members({"default/g-0": "a0"}, [_member(1)])
    done = decide_half_gang(gang, ["a3"], "", members, interrupted=True)
    assert done.action is HalfGangAction.COMPLETE and "join the 1 bound one(s) on a3" in done.reason
    restart = decide_half_gang(gang, None, "no room", members, interrupted=True)
    assert restart.action is HalfGangAction.RESTART and restart.delete == ("default/g-0",)
    assert "no room" in restart.reason
    wait = decide_half_gang(gang, None, "no room", members, interrupted=False)
    assert wait.action is HalfGangAction.WAIT and wait.delete == () and "replacement" in wait.reason


@pytest.mark.parametrize("scenario,spec,labels,taints,refused", [
    ("no constraints", {}, {}, [], ""),
    ("nodeSelector matches", {"nodeSelector": {"pool": "a"}}, {"pool": "a"}, [], ""),
    ("nodeSelector differs", {"nodeSelector": {"pool": "a"}}, {"pool": "b"}, [], "nodeSelector pool=a"),
    ("affinity In, one term of two holds",
     {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
         {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z9"]}]},
         {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}]}}}},
     {"zone": "z1"}, [], ""),
    ("affinity NotIn excludes",
     {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
         {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z1"]}]}]}}}},
     {"zone": "z1"}, [], "required node affinity"),
    ("matchFields on the node's name",
     {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
         {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["other"]}]}]}}}},
     {}, [], "required node affinity"),
    ("Gt on a number label",
     {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
         {"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["3"]}]}]}}}},
     {"gen": "4"}, [], ""),
    ("taint not tolerated", {}, {}, [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}], "taint nvidia.com/gpu"),
    ("taint tolerated by Exists", {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}, {},
     [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}], ""),
    ("empty key with Exists tolerates all", {"tolerations": [{"operator": "Exists"}]}, {},
     [{"key": "x", "value": "y", "effect": "NoExecute"}], ""),
    ("Equal needs the value", {"tolerations": [{"key": "x", "value": "z"}]}, {},
     [{"key": "x", "value": "y", "effect": "NoSchedule"}], "taint x"),
    ("PreferNoSchedule is no filter", {}, {}, [{"key": "x", "effect": "PreferNoSchedule"}], ""),
])
def test_a_pods_own_spec_decides_which_nodes_it_allows(scenario, spec, labels, taints, refused):
    got = node_refusal({"spec": spec}, "n1", labels, taints)
    assert (refused in got and got) if refused else got == "", (scenario, got)
