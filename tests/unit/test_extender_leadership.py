"""Which extender acts (scheduler/extender/leadership.py): the one whose kube-scheduler holds the Lease, judged as
client-go judges a holder (a record unchanged for leaseDurationSeconds of our own clock has lapsed); the loops of
a standby leave its gangs for the acting extender."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.cli import register
from scheduler.extender import pinning
from scheduler.extender.leadership import Follower, Leadership, Record, holds
from tests.unit.test_pin_at_creation import _extender, _pod


def test_the_holder_is_this_pods_kube_scheduler_by_hostname_then_underscore():
    assert holds("sched-7f9c_0b6e2a4c-1d2e-4f00-9a7b-3c1d2e4f5a6b", "sched-7f9c")
    assert holds("sched-7f9c", "sched-7f9c")
    assert not holds("sched-7f9c2_0b6e", "sched-7f9c")  # another pod whose name starts the same
    assert not holds("other_0b6e", "sched-7f9c")
    assert not holds(None, "sched-7f9c") and not holds("", "sched-7f9c")


def _rec(holder: str | None, renewed: str, duration: float = 15) -> Record:
    return Record(holder, duration, renewed)


def test_an_extender_acts_only_after_reading_a_lease_its_kube_scheduler_holds():
    f = Follower("me")
    assert not f.active(0.0)  # nothing read yet: it cannot know it leads
    f.observe(_rec("other_1", "t0"), 0.0)
    assert not f.active(1.0)
    f.observe(_rec("me_2", "t1"), 2.0)
    assert f.active(2.0)


def test_a_holder_that_stops_renewing_lapses_after_the_lease_duration_of_our_own_clock():
    f = Follower("me")
    f.observe(_rec("me_2", "t1"), 10.0)
    for t in (12.0, 14.0, 16.0):  # the same record read again: no renewal seen
        f.observe(_rec("me_2", "t1"), t)
    assert f.active(24.9) and not f.active(25.0)
    f.observe(_rec("me_2", "t2"), 30.0)  # renewed again
    assert f.active(30.0)


def test_a_deleted_lease_or_a_new_holder_stops_it_at_once():
    f = Follower("me")
    f.observe(_rec("me_2", "t1"), 0.0)
    f.observe(None, 1.0)
    assert not f.active(1.0)
    f.observe(_rec("me_2", "t2"), 2.0)
    f.observe(_rec("other_9", "t3"), 3.0)
    assert not f.active(3.0)


def test_without_a_lease_to_follow_it_always_acts():
    assert Leadership().active()
    lead = Leadership(lease=("clique-system", "clique-scheduler"), identity="me", clock=lambda: 5.0)
    assert not lead.active()  # following, nothing read


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["me_1", "me_2", "other_1", None, "absent"]),
                          st.sampled_from(["a", "b", "c"]), st.floats(0, 20)), max_size=30))
def test_acting_always_means_our_holder_seen_changing_within_its_duration(reads):
    f, now, last_change, last = Follower("me"), 0.0, None, None
    for holder, renewed, dt in reads:
        now += dt
        rec = None if holder == "absent" else _rec(holder, renewed, 10)
        f.observe(rec, now)
        if rec != last:
            last, last_change = rec, now
        expect = last is not None and holds(last.holder, "me") and now - last_change < 10
        assert f.active(now) == expect


def test_a_standbys_pinning_loop_releases_nothing_and_keeps_its_gangs_for_later():
    ext, _ = _extender()
    ext.state._set_pods([_pod("g-0", gang="g", gates=(pinning.GATE,))])
    ext.state.gated_gangs.add("ns/clique/gone")  # a gang whose pods went away while it waited
    ticks, taken = [], []

    class Counting(pinning.Pinner):
        async def tick(self) -> None:
            ticks.append(ext.leadership.active())
            taken.append(ext.state.take_gated())

    ext.leadership = Leadership(lease=("ns", "l"), identity="me", clock=lambda: 1.0)

    async def go():
        task = asyncio.create_task(pinning.run(ext, interval_s=0.001, pinner=Counting(ext)))
        await asyncio.sleep(0.05)
        assert ticks == [] and ext.metrics.acting._value.get() == 0
        assert ext.state.gated_gangs == {"ns/clique/g"}  # kept for the takeover; the gone gang dropped
        ext.leadership.follower.observe(_rec("me_1", "t"), 1.0)
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(go())
    assert ticks and all(ticks) and ext.metrics.acting._value.get() == 1
    assert taken[0] == {"ns/clique/g"}  # the first tick as the acting extender releases what waited


def test_follow_lease_needs_a_namespace_and_a_name_and_identity_needs_follow_lease(capsys):
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="cmd"))
    for argv, says in ((["--follow-lease", "clique-scheduler"], "expected NAMESPACE/NAME"),
                       (["--follow-lease", "a/b/c"], "expected NAMESPACE/NAME"),
                       (["--identity", "me"], "only with --follow-lease")):
        args = parser.parse_args(["scheduler", "extender", *argv])
        assert args.func(args) == 2
        assert says in capsys.readouterr().err


def test_acting_stops_a_poll_before_the_lease_could_pass_to_another_holder():
    f = Follower("me")
    f.observe(_rec("me_2", "t1"), 0.0)
    assert f.active(12.9, margin_s=2.0) and not f.active(13.0, margin_s=2.0)
    assert f.active(14.9) and not f.active(15.0)  # no margin: the lease duration itself
    f.observe(_rec("me_2", "t2", duration=2), 20.0)
    assert f.active(20.9, margin_s=2.0) and not f.active(21.0, margin_s=2.0)  # never below half the duration


def test_a_standby_keeps_no_gang_losses_and_at_takeover_looks_at_every_gang(monkeypatch):
    """A standby's gang health never looks, so losses it recorded (the acting extender's own restarts among them)
    would be settled by nobody and restart healthy gangs at its takeover: it keeps none, and on taking over looks at
    every gang, as a restarted extender does."""
    from scheduler.extender import recovery
    from scheduler.extender.gang_health import Loss, utcnow

    ext, _ = _extender()
    bound = {**_pod("b-0", gang="b", size=1), "spec": {**_pod("b-0")["spec"], "nodeName": "u-0"}}
    ext.state._set_pods([_pod("g-0", gang="g"), _pod("g-1", gang="g"), bound])
    ext.leadership = Leadership(lease=("ns", "l"), identity="me", clock=lambda: 1.0)
    healths, looked, losses_at_takeover = [], [], []

    class Seen(recovery.GangHealth):
        def __init__(self, extender):
            super().__init__(extender)
            healths.append(self)

        async def tick(self, only=None):
            if ext.leadership.active() and not losses_at_takeover:
                losses_at_takeover.append(dict(self.losses))

    async def record(extender, key):
        looked.append(key)

    monkeypatch.setattr(recovery, "GangHealth", Seen)
    monkeypatch.setattr(recovery, "recover_gang", record)

    async def go():
        task = asyncio.create_task(recovery.run(ext, interval_s=0.001))
        await asyncio.sleep(0.02)
        # a loss seen while standby (e.g. the acting extender restarting a gang): never settled by a look
        healths[0].losses["ns/g"] = [Loss("ns/g-0", "u0", "u-0", utcnow(), "deleted")]
        await asyncio.sleep(0.02)
        assert looked == [] and healths[0].losses == {}
        ext.leadership.follower.observe(_rec("me_1", "t"), 1.0)
        await asyncio.sleep(0.02)
        task.cancel()

    asyncio.run(go())
    assert losses_at_takeover == [{}]
    assert set(ext.state.gang_index) <= set(looked)  # every gang, not only those touched since
