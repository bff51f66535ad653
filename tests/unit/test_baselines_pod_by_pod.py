"""The pod-by-pod baselines (default-spread, most-allocated, random-fit) over arrays pick exactly what the
one-host-at-a-time rule picks: the same hosts for every pod, the same pods left over."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.placement.baselines import LEAST, MOST, _alloc_share, _pod_by_pod
from scheduler.placement.capacity import fits, sub
from scheduler.placement.types import Assignment, Gang, HostState, Role, Snapshot
from tests.unit.placement_builders import LEVELS
from topology.model import HostInfo, Topology


def reference(snapshot: Snapshot, gang: Gang, hosts, score) -> tuple[list[Assignment], int]:
    """The rule as first written: every host that fits, the best by `score(host, free)`, max() over a list."""
    free = {h: snapshot.hosts[h].free for h in (snapshot.hosts if hosts is None else hosts)}
    placed: list[Assignment] = []
    per_host_roles: dict[str, set[int]] = {}
    for ri, role in enumerate(gang.roles):
        for i in range(role.pods):
            cands = [h for h, f in free.items() if fits(f, role.request)
                     and not (role.one_per_host and ri in per_host_roles.get(h, set()))]
            if not cands:
                return placed, gang.pod_count - len(placed)
            h = max(cands, key=lambda x: score(x, free[x]))
            free[h] = sub(free[h], role.request)
            per_host_roles.setdefault(h, set()).add(ri)
            placed.append(Assignment(role.name, i, h))
    return placed, 0


@st.composite
def clusters(draw):
    n = draw(st.integers(1, 12))
    infos, states = [], {}
    for k in range(n):
        name = f"n{draw(st.integers(0, 99)):02d}-{k}"  # names out of index order: ties go by name, not position
        gpus = draw(st.sampled_from([0, 4, 8]))
        cpu = draw(st.sampled_from([0, 1000, 8000, 64000]))
        infos.append(HostInfo(name, gpus, {"topology.kubernetes.io/zone": "z", "clique.dev/spine": "s",
                                           "clique.dev/leaf": f"l{k % 3}"}))
        states[name] = HostState(name, gpus=gpus, cpu_millis=cpu, memory=64 << 30, pods=draw(st.integers(1, 8)),
                                 gpus_used=draw(st.integers(0, gpus)), cpu_used=draw(st.integers(0, cpu)),
                                 schedulable=draw(st.booleans()) or k == 0)
    roles = [Role("worker", draw(st.integers(1, 8)), draw(st.sampled_from([0, 1, 2, 4])),
                  cpu_millis=draw(st.sampled_from([0, 500, 4000])))]
    if draw(st.booleans()):
        roles.insert(0, Role("leader", 1, draw(st.sampled_from([0, 4, 8])), one_per_host=True))
    if draw(st.booleans()):
        roles[-1] = Role(roles[-1].name, roles[-1].pods, roles[-1].gpus, roles[-1].cpu_millis, one_per_host=True)
    return Snapshot(Topology(infos, LEVELS), states), Gang("g", tuple(roles))


@settings(max_examples=150, deadline=None)
@given(clusters(), st.integers(0, 2**16))
def test_each_pod_goes_where_the_one_host_at_a_time_rule_sends_it(case, seed):
    snap, gang = case
    assert _pod_by_pod(snap, gang, None, LEAST) == reference(
        snap, gang, None, lambda h, f: (-_alloc_share(snap, h, f), h))
    assert _pod_by_pod(snap, gang, None, MOST) == reference(
        snap, gang, None, lambda h, f: (_alloc_share(snap, h, f), h))
    rng = random.Random(seed)
    names = sorted(snap.hosts)
    subset = rng.sample(names, rng.randint(1, len(names)))
    keys = {h: rng.choice([0.25, 0.5, rng.random()]) for h in names}  # equal keys too: the first in order wins
    assert _pod_by_pod(snap, gang, subset, keys) == reference(snap, gang, subset, lambda h, f: (keys[h],))
