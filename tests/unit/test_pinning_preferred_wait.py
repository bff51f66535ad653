"""A gated gang may wait for a place inside one preferred domain (`clique.dev/topology-preferred-wait`, as Slurm's
`--switches=count@max-time`; scheduler/extender/pinning.py, `hold`): the in-process extender fed watch events
directly, a fake clock, and the API write that releases a member recorded instead of sent."""

from __future__ import annotations

import asyncio

from hypothesis import given, strategies as st

from scheduler.extender import pinning
from scheduler.extender.pinning import Pinner, fits_one_domain, holds
from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from scheduler.gangs import MAX_PREFERRED_WAIT_S, TOPOLOGY_PREFERRED_WAIT, preferred_wait_s
from simulations.controlplane.kwok_nodes import node_manifest
from topology.levels import preset
from topology.spec import parse_cluster_spec
from tests.unit.test_pinning_settle import Clock, _names, _pod as settle_pod

NEW = "default/clique/new"


def _pod(name: str, gang: str | None, size: int, node: str | None = None, wait: str | None = None) -> dict:
    pod = settle_pod(name, gang, size, node)
    if wait is not None:
        pod["metadata"]["annotations"][TOPOLOGY_PREFERRED_WAIT] = wait
    return pod


class Run:
    """8 hosts of 8 GPUs in two leaves of 4; leaf 0 has a running gang on hosts 0-1, leaf 1 single pods on
    hosts 4-5: a new gang of `size` x 8 GPUs fits now only split (2 + 2 hosts)."""

    def __init__(self, monkeypatch, wait: str | None, size: int = 4) -> None:
        spec = parse_cluster_spec({"name": "u", "pools": [{"name": "u", "hosts": 8, "gpus": 8}],
                                   "levels": [{"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 4}]})
        self.hosts = [h.name for h in spec.hosts()]
        state = ClusterState(preset("generic"))
        state._set_nodes([node_manifest(h, ready=True) for h in spec.hosts()])
        self.ext = Extender(state, None)
        self.events: list[tuple[str, str]] = []
        self.ext.event = lambda pod, reason, message, warning=False: self.events.append((reason, message))
        self.released: dict[str, list[dict]] = {}

        async def patch_pod(key: str, ops: list[dict]) -> str:
            self.released[key] = ops
            return ""

        self.ext.binder.patch_pod = patch_pod
        self.clock = Clock()
        monkeypatch.setattr(pinning.time, "monotonic", self.clock)
        self.old = [_pod(f"old-{i}", "old", 2, self.hosts[i]) for i in range(2)]
        singles = [_pod(f"single-{i}", None, 1, self.hosts[4 + i]) for i in range(2)]
        new = [_pod(f"new-{i}", "new", size, wait=wait) for i in range(size)]
        state._set_pods(self.old + singles + new)
        state.gated_gangs.add(NEW)
        self.pinner = Pinner(self.ext)

    def tick(self, dt: float) -> None:
        self.clock.now += dt
        asyncio.run(self.pinner.tick())

    def leaves(self) -> set[int]:
        """The leaves of the released members' pinned nodes."""
        names = {v for ops in self.released.values() for op in ops if "affinity" in str(op.get("path"))
                 for v in _names(op["value"])}
        return {self.hosts.index(n) // 4 for n in names}


def test_a_gang_without_the_annotation_takes_its_split_place_at_once(monkeypatch):
    run = Run(monkeypatch, wait=None)
    run.tick(0)
    assert len(run.released) == 4 and run.leaves() == {0, 1}


def test_a_gang_that_asks_to_wait_is_held_and_takes_one_leaf_when_it_frees(monkeypatch):
    run = Run(monkeypatch, wait="5m")
    run.tick(0)
    assert not run.released, "its only place splits its preferred leaf: held"
    assert NEW in run.pinner.held and NEW not in run.ext.reservations, "a held gang keeps no reservation"
    waiting = [m for r, m in run.events if r == "GangWaiting"]
    assert waiting and "300s" in waiting[0] and TOPOLOGY_PREFERRED_WAIT in waiting[0], run.events
    run.tick(30)  # nothing changed: still held, tried no more often than the cluster changes
    assert not run.released
    for p in run.old:  # the running gang in leaf 0 ends: leaf 0 is free
        run.ext.state._pod_event("DELETED", p)
    run.tick(2)
    run.tick(2)  # past the settle rule's quiet second
    assert len(run.released) == 4 and run.leaves() == {0}, run.leaves()
    assert NEW not in run.pinner.held and NEW not in run.pinner.split_since
    gangs = {o: run.ext.metrics.registry.get_sample_value("clique_gangs_total", {"outcome": o}) or 0
             for o in ("planned", "held", "settling")}
    # here (no other gang, no preemption) every plan is this gang's: all but the committed one were dropped
    assert gangs["held"] >= 1 and gangs["planned"] - gangs["held"] - gangs["settling"] == 1, gangs


def test_a_held_gang_takes_its_split_place_when_its_wait_ends_though_nothing_changed(monkeypatch):
    run = Run(monkeypatch, wait="90s")
    run.tick(0)
    run.tick(89)
    assert not run.released
    run.tick(2)
    assert len(run.released) == 4 and run.leaves() == {0, 1}
    assert not run.pinner.held and not run.pinner.split_since


def test_a_gang_larger_than_every_leaf_is_never_held(monkeypatch):
    run = Run(monkeypatch, wait="1h", size=5)  # 40 GPUs against leaves of 32
    for p in run.old:
        run.ext.state._pod_event("DELETED", p)
    run.tick(0)
    assert len(run.released) == 5 and run.leaves() == {0, 1}
    assert not run.pinner.held


def test_an_unreadable_wait_is_reported_and_the_gang_placed_without_waiting(monkeypatch):
    run = Run(monkeypatch, wait="soon")
    run.tick(0)
    assert len(run.released) == 4
    assert any(r == "BadAnnotation" and "'soon'" in m and "90s" in m for r, m in run.events), run.events


def test_durations_are_read_in_seconds_minutes_and_hours():
    ann = lambda v: {"metadata": {"name": "p", "annotations": {TOPOLOGY_PREFERRED_WAIT: v}}}  # noqa: E731
    assert preferred_wait_s(ann("90")) == (90.0, None)
    assert preferred_wait_s(ann("90s")) == (90.0, None)
    assert preferred_wait_s(ann("5m")) == (300.0, None)
    assert preferred_wait_s(ann("2h")) == (7200.0, None)
    assert preferred_wait_s(ann("0")) == (0.0, None)
    assert preferred_wait_s({"metadata": {"name": "p"}}) == (0.0, None)
    for bad in ("-5", "1.5m", "5 minutes", "25h", ""):
        seconds, problem = preferred_wait_s(ann(bad))
        assert seconds == 0.0 and problem and TOPOLOGY_PREFERRED_WAIT in problem, bad


@given(st.text(max_size=12))
def test_any_value_gives_a_wait_within_a_day_or_a_problem(value):
    seconds, problem = preferred_wait_s({"metadata": {"name": "p", "annotations": {TOPOLOGY_PREFERRED_WAIT: value}}})
    assert 0 <= seconds <= MAX_PREFERRED_WAIT_S
    assert problem is None or seconds == 0


@given(st.floats(0, 1e5), st.lists(st.floats(0, 1e5), min_size=2), st.floats(0, 1e5))
def test_a_hold_once_over_stays_over_and_none_outlasts_its_wait(since, offsets, wait):
    held = [holds(since + d, since, wait) for d in sorted(offsets)]
    assert held == sorted(held, reverse=True)  # True ... then False, never back
    assert not holds(since + wait + 1e-3 * (1 + wait), since, wait)
    assert holds(since, since, wait) == (wait > 0)


GPU8 = (8, 1000, 2**30, 1)  # an 8-GPU member: GPUs, CPU millis, memory, one pod
HOST8, HOST4 = (8, 64000, 2**40, 110), (4, 64000, 2**40, 110)


def test_a_gang_fits_one_domain_only_if_one_domains_hosts_hold_every_member():
    assert fits_one_domain([GPU8] * 4, [[HOST8] * 2, [HOST8] * 4])
    assert not fits_one_domain([GPU8] * 5, [[HOST8] * 2, [HOST8] * 4])
    assert not fits_one_domain([GPU8], [])
    # 32 GPUs in the domain, but on 4-GPU hosts: no 8-GPU member fits any of them
    assert not fits_one_domain([GPU8] * 4, [[HOST4] * 8])
    # GPUs enough, but one host's pod slots (or CPU) run out
    assert not fits_one_domain([(1, 100, 1, 1)] * 3, [[(8, 64000, 2**40, 2)]])
    assert not fits_one_domain([(1, 40000, 1, 1)] * 2, [[(8, 64000, 2**40, 110)]])
    # a frontend without GPUs beside the workers
    assert fits_one_domain([GPU8, GPU8, (0, 2000, 2**30, 1)], [[HOST8, HOST8]])


@given(st.integers(1, 8), st.integers(1, 4), st.integers(0, 12), st.integers(0, 16), st.integers(1, 16))
def test_identical_members_fit_exactly_when_the_hosts_slots_add_up(gpus, cpus, members, hosts, host_gpus):
    """For identical members on identical hosts first fit is exact: each host holds floor(capacity / request)."""
    per_host = min(host_gpus // gpus, 8 // cpus)
    fits = fits_one_domain([(gpus, cpus, 0, 1)] * members, [[(host_gpus, 8, 0, 110)] * hosts])
    assert fits == (members <= per_host * hosts)
