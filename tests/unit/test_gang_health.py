"""Gang health decisions (pure): which bound gangs are broken, when they are restarted whole, and which are only
reported (left to their controller)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.extender.gang_health import (AwaitGrace, BadAnnotation, Loss, NodeView, ObservedGang, ReportBroken,
                                            RestartGang, decide, decide_gang, parse_grace, replacements)
from scheduler.gangs import recognize

T0 = datetime(2026, 12, 1, 10, 0, 0, tzinfo=timezone.utc)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def sts_pod(i: int, node: str | None, created: datetime = T0, scheduled: datetime | None = None,
            annotations: dict | None = None, sts: str = "web", size: int = 4) -> dict:
    pod = {"metadata": {"name": f"{sts}-{i}", "namespace": "default", "uid": f"uid-{sts}-{i}-{created.second}",
                        "creationTimestamp": _iso(created),
                        "annotations": {"clique.dev/gang-size": str(size), **(annotations or {})},
                        "ownerReferences": [{"kind": "StatefulSet", "name": sts, "controller": True}]},
           "spec": {"containers": [{"name": "w", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}, "status": {}}
    if node:
        pod["spec"]["nodeName"] = node
        pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True",
                                        "lastTransitionTime": _iso(scheduled or created + timedelta(seconds=1))}]
    return pod


def gang_of(pods: list[dict], losses: tuple[Loss, ...] = ()) -> ObservedGang:
    return ObservedGang(recognize(pods[0]), tuple(pods), losses)


READY = {f"n{i}": NodeView(f"n{i}", True, None) for i in range(8)}


def test_a_healthy_bound_gang_needs_nothing():
    pods = [sts_pod(i, f"n{i}") for i in range(4)]
    assert decide([gang_of(pods)], READY, T0 + timedelta(minutes=5)) == []


def test_a_member_on_a_notready_node_waits_for_the_grace_then_the_gang_is_restarted_whole():
    pods = [sts_pod(i, f"n{i}", annotations={"clique.dev/gang-restart-grace": "10"}) for i in range(4)]
    nodes = {**READY, "n2": NodeView("n2", False, T0 + timedelta(seconds=100))}
    early = decide_gang(gang_of(pods), nodes, T0 + timedelta(seconds=104))
    assert len(early) == 1 and isinstance(early[0], AwaitGrace) and early[0].cause == "node-not-ready"
    assert round(early[0].restart_in_s) == 6
    late = decide_gang(gang_of(pods), nodes, T0 + timedelta(seconds=110))
    assert len(late) == 1 and isinstance(late[0], RestartGang)
    assert late[0].members == tuple(sorted((f"default/web-{i}", f"uid-web-{i}-0") for i in range(4)))
    assert "n2, NotReady" in late[0].reason and "StatefulSet default/web" in late[0].reason


def test_a_deleted_node_counts_like_a_notready_one():
    pods = [sts_pod(i, f"n{i}", annotations={"clique.dev/gang-restart-grace": "5s"}) for i in range(4)]
    nodes = {**READY, "n1": NodeView("n1", False, T0, exists=False)}
    (action,) = decide_gang(gang_of(pods), nodes, T0 + timedelta(seconds=6))
    assert isinstance(action, RestartGang) and action.cause == "node-deleted"


def test_a_grace_of_zero_means_the_gang_is_never_restarted():
    pods = [sts_pod(i, f"n{i}", annotations={"clique.dev/gang-restart-grace": "0"}) for i in range(4)]
    nodes = {**READY, "n2": NodeView("n2", False, T0)}
    loss = Loss("default/web-3", "u", "n3", T0, "failed")
    assert decide_gang(gang_of(pods[:3], (loss,)), nodes, T0 + timedelta(hours=1)) == []


def test_a_failed_member_breaks_the_gang_at_once_under_the_default_policy():
    pods = [sts_pod(i, f"n{i}") for i in range(3)]
    loss = Loss("default/web-3", "u3", "n3", T0 + timedelta(seconds=50), "failed", "OOMKilled")
    (action,) = decide_gang(gang_of(pods, (loss,)), READY, T0 + timedelta(seconds=50))
    assert isinstance(action, RestartGang) and action.cause == "member-failed" and "OOMKilled" in action.reason
    assert len(action.members) == 3


def test_a_replacement_member_breaks_the_gang_even_when_nothing_saw_the_deletion():
    # the StatefulSet recreated web-2 after the others were scheduled (e.g. while the extender was down)
    pods = [sts_pod(i, f"n{i}") for i in (0, 1, 3)] + [sts_pod(2, None, created=T0 + timedelta(seconds=30))]
    assert [p["metadata"]["name"] for p in replacements(pods)] == ["web-2"]
    (action,) = decide_gang(gang_of(pods), READY, T0 + timedelta(seconds=31))
    assert isinstance(action, RestartGang) and action.cause == "member-replaced"
    assert ("default/web-2", "uid-web-2-30") in action.members  # the pending replacement goes too


def test_under_the_member_policy_a_replacement_joins_and_a_lost_member_waits_for_the_grace():
    ann = {"clique.dev/gang-restart-policy": "Member", "clique.dev/gang-restart-grace": "20"}
    pods = [sts_pod(i, f"n{i}", annotations=ann) for i in (0, 1, 3)] + [
        sts_pod(2, None, created=T0 + timedelta(seconds=30), annotations=ann)]
    loss = Loss("default/web-2", "old", "n2", T0 + timedelta(seconds=29), "deleted")
    (wait,) = decide_gang(gang_of(pods, (loss,)), READY, T0 + timedelta(seconds=31))
    assert isinstance(wait, AwaitGrace) and wait.cause == "member-deleted"
    (action,) = decide_gang(gang_of(pods, (loss,)), READY, T0 + timedelta(seconds=50))
    assert isinstance(action, RestartGang)
    assert decide_gang(gang_of(pods), READY, T0 + timedelta(seconds=50)) == []  # no loss recorded: it joins


def test_a_terminating_member_evicted_by_the_eviction_api_breaks_the_gang():
    pods = [sts_pod(i, f"n{i}") for i in range(4)]
    pods[1]["metadata"]["deletionTimestamp"] = _iso(T0 + timedelta(seconds=60))
    pods[1]["status"]["conditions"].append({"type": "DisruptionTarget", "status": "True",
                                            "reason": "EvictionByEvictionAPI"})
    (action,) = decide_gang(gang_of(pods), READY, T0 + timedelta(seconds=40))
    assert isinstance(action, RestartGang) and action.cause == "member-evicted"
    assert "default/web-1" not in dict(action.members)  # already going


def test_lws_groups_and_bare_gang_pods_are_reported_not_deleted():
    lws = [{"metadata": {"name": f"l-0-{i}" if i else "l-0", "namespace": "default", "uid": f"u{i}",
                         "creationTimestamp": _iso(T0 + timedelta(seconds=5 * i)),
                         "labels": {"leaderworkerset.sigs.k8s.io/name": "l", "leaderworkerset.sigs.k8s.io/group-index": "0",
                                    "leaderworkerset.sigs.k8s.io/worker-index": str(i)},
                         "annotations": {"leaderworkerset.sigs.k8s.io/size": "2"}},
            "spec": {"nodeName": f"n{i}"}, "status": {}} for i in range(2)]
    nodes = {**READY, "n1": NodeView("n1", False, T0)}
    # workers created after the leader was placed are not replacements; the NotReady node is reported
    assert decide_gang(gang_of(lws), READY, T0 + timedelta(hours=1)) == []
    (action,) = decide_gang(gang_of(lws), nodes, T0 + timedelta(hours=1))
    assert isinstance(action, ReportBroken) and "left to LeaderWorkerSet" in action.reason
    bare = [{"metadata": {"name": f"b-{i}", "namespace": "default", "uid": f"b{i}", "creationTimestamp": _iso(T0),
                          "annotations": {"clique.dev/gang": "b", "clique.dev/gang-size": "2"}},
             "spec": {"nodeName": f"n{i}"}, "status": {}} for i in range(2)]
    (action,) = decide_gang(gang_of(bare), nodes, T0 + timedelta(hours=1))
    assert isinstance(action, ReportBroken) and "no controller" in action.reason


def test_bad_annotations_are_reported_and_the_defaults_used():
    pods = [sts_pod(i, f"n{i}", annotations={"clique.dev/gang-restart-grace": "soon",
                                             "clique.dev/gang-restart-policy": "Whole"}) for i in range(4)]
    actions = decide_gang(gang_of(pods), READY, T0)
    assert [type(a) for a in actions] == [BadAnnotation, BadAnnotation]
    assert "not a duration" in actions[0].message and "not one of Gang, Member" in actions[1].message
    with pytest.raises(ValueError, match="minutes"):
        parse_grace("1h")
    assert parse_grace("2m") == 120 and parse_grace(" 7.5s ") == 7.5


def test_a_gang_with_no_bound_member_is_not_judged():
    pods = [sts_pod(i, None) for i in range(3)]
    assert decide_gang(gang_of(pods, (Loss("default/web-3", "u", "n3", T0, "failed"),)), READY, T0) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 7), st.integers(0, 60)), min_size=1, max_size=6),
       st.sets(st.integers(0, 7)), st.integers(0, 40), st.integers(0, 200))
def test_a_restart_deletes_only_live_members_of_the_gang_and_only_after_its_cause_is_due(members, bad_nodes, grace,
                                                                                         later):
    pods = []
    for i, (is_bound, node, created) in enumerate(members):
        pods.append(sts_pod(i, f"n{node}" if is_bound else None, created=T0 + timedelta(seconds=created),
                            annotations={"clique.dev/gang-restart-grace": str(grace)}, size=len(members)))
    nodes = {**READY, **{f"n{i}": NodeView(f"n{i}", False, T0 + timedelta(seconds=100)) for i in bad_nodes}}
    now = T0 + timedelta(seconds=100 + later)
    actions = decide_gang(gang_of(pods), nodes, now)
    keys = {f"default/web-{i}" for i in range(len(members))}
    for a in actions:
        if isinstance(a, RestartGang):
            assert grace > 0
            assert {k for k, _ in a.members} <= keys
            if a.cause == "node-not-ready":
                assert later >= grace
    if grace == 0 or not any(b for b, _, _ in members):
        assert not [a for a in actions if isinstance(a, (RestartGang, AwaitGrace, ReportBroken))]


def test_a_gang_deleted_pod_by_pod_is_not_restarted_but_a_lone_deletion_is_after_a_moment():
    from scheduler.extender.gang_health import DELETION_SETTLE_S, Loss

    pods = [sts_pod(i, f"n{i}", created=T0) for i in range(3)]  # the fourth member was just deleted
    loss = Loss("default/web-3", "old", "n3", T0 + timedelta(seconds=100), "deleted")
    soon = decide_gang(gang_of(pods, losses=(loss,)), READY, T0 + timedelta(seconds=100.5))
    assert [type(a).__name__ for a in soon] == ["AwaitGrace"], "the rest of the gang may be going too"
    later = decide_gang(gang_of(pods, losses=(loss,)), READY, T0 + timedelta(seconds=100 + DELETION_SETTLE_S))
    assert [a.cause for a in later if isinstance(a, RestartGang)] == ["member-deleted"]
    going = [sts_pod(i, f"n{i}", created=T0) for i in range(3)]
    for p in going:  # the rest of the gang is being deleted too
        p["metadata"]["deletionTimestamp"] = _iso(T0 + timedelta(seconds=100))
    assert decide_gang(gang_of(going, losses=(loss,)), READY, T0 + timedelta(seconds=110)) == []
