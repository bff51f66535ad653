"""Gang-aware, topology-aware preemption (pure): the fewest GPUs of the lowest priority that free one domain,
whole gangs or nothing, and nothing at all when even every eligible victim would not make the gang fit."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.placement.preemption import VictimPod, VictimUnit, choose_victims, reference_minimum
from scheduler.placement.types import HostState, Snapshot
from tests.unit.placement_builders import gang, snapshot


def full(units: list[VictimUnit], n: int = 16, unschedulable: set[str] = frozenset()) -> Snapshot:
    """The builders' 16-host tree (leaves of 4) with every victim's GPUs in use."""
    used: dict[str, int] = {}
    for u in units:
        for p in u.pods:
            used[p.host] = used.get(p.host, 0) + p.request[0]
    return snapshot(used, n=n, unschedulable=unschedulable)


def single(i: int, host: str, gpus: int = 8, prio: int = 10) -> VictimUnit:
    return VictimUnit(f"pod-{i}", prio, (VictimPod(f"default/pod-{i}", host, (gpus, 0, 0, 1)),))


def gang_unit(name: str, hosts: list[str], gpus: int = 8, prio: int = 10) -> VictimUnit:
    return VictimUnit(name, prio, tuple(VictimPod(f"default/{name}-{j}", h, (gpus, 0, 0, 1))
                                        for j, h in enumerate(hosts)), gang=True)


def test_the_domain_that_costs_the_fewest_gpus_is_freed_even_when_it_takes_a_gang():
    # leaf l0: a 2x8 gang on h00 h01, a 1x8 pod on h02, h03 free -> 24 GPUs; every other leaf: four 1x8 pods -> 32
    units = [gang_unit("g2", ["h00", "h01"]), single(2, "h02")] + [
        single(i, f"h{i:02d}") for i in range(4, 16)]
    d = choose_victims(full(units), gang(4, 8, required="leaf"), 1000, units)
    assert d.victims == ("g2", "pod-2") and d.scope == ("z0", "s0", "l0")
    assert d.cost == (10, 24, 1, 3) and d.proof in ("lower-bound", "cp-sat-optimal")
    assert sorted(h for _, h in d.places) == ["h00", "h01", "h02", "h03"]


def test_single_pods_are_preferred_to_a_gang_at_equal_gpus():
    units = [gang_unit("g4", ["h00", "h01", "h02", "h03"])] + [single(i, f"h{i:02d}") for i in range(4, 16)]
    d = choose_victims(full(units), gang(4, 8, required="leaf"), 1000, units)
    assert d.cost[1:] == (32, 0, 4) and "g4" not in d.victims


def test_the_lowest_priority_comes_before_the_fewest_gpus():
    # l0 needs only 8 GPUs evicted but they have priority 500; l1 needs 32 GPUs of priority 10
    units = [single(0, "h00", prio=500)] + [single(i, f"h{i:02d}", prio=10) for i in range(4, 8)] + [
        single(i, f"h{i:02d}", prio=900) for i in range(8, 16)]
    snap = full(units)
    d = choose_victims(snap, gang(4, 8, required="leaf"), 1000, units)
    assert d.scope == ("z0", "s0", "l1") and d.cost == (10, 32, 0, 4)


def test_nothing_is_preempted_when_even_every_eligible_victim_would_not_make_it_fit():
    units = [single(i, f"h{i:02d}") for i in range(16)]
    d = choose_victims(full(units), gang(5, 8, required="leaf"), 1000, units)  # a leaf has 4 hosts
    assert not d.preempts and not d.fits and "even if every pod of lower priority" in d.reason
    higher = [single(i, f"h{i:02d}", prio=2000) for i in range(16)]
    d = choose_victims(full(higher), gang(2, 8, required="leaf"), 1000, higher)
    assert not d.preempts and "0 unit(s)" in d.reason


def test_preemption_policy_never_preempts_nothing():
    units = [single(i, f"h{i:02d}") for i in range(16)]
    d = choose_victims(full(units), gang(2, 8, required="leaf"), 1000, units, preemption_policy="Never")
    assert not d.preempts and "preemptionPolicy Never" in d.reason


def test_a_gang_that_fits_already_preempts_nothing():
    units = [single(i, f"h{i:02d}") for i in range(8)]
    d = choose_victims(full(units), gang(4, 8, required="leaf"), 1000, units)
    assert not d.preempts and d.fits and d.scope == ("z0", "s1", "l2")


def test_a_gang_spanning_two_domains_counts_all_its_gpus():
    # g spans l0 and l1; freeing l0 through it costs its 32 GPUs, singles in l2 cost 16 (two hosts free there)
    units = [gang_unit("g", ["h00", "h01", "h04", "h05"]), single(2, "h02"), single(3, "h03"),
             single(6, "h06"), single(7, "h07"), single(8, "h08"), single(9, "h09")] + [
        single(i, f"h{i:02d}") for i in range(12, 16)]
    d = choose_victims(full(units), gang(4, 8, required="leaf"), 1000, units)
    assert d.scope == ("z0", "s1", "l2") and d.victims == ("pod-8", "pod-9") and d.cost[1] == 16


def test_small_pods_on_a_host_are_evicted_together_only_as_far_as_needed():
    # h00 holds four 2-GPU pods: a 1x4 pod needs two of them gone
    units = [VictimUnit(f"s{i}", 10, (VictimPod(f"default/s{i}", "h00", (2, 0, 0, 1)),)) for i in range(4)]
    snap = full(units, n=4)
    snap = Snapshot(snap.topology, {**snap.hosts, **{h: HostState(h, 8, gpus_used=8, pods_used=1)
                                                     for h in ("h01", "h02", "h03")}})
    d = choose_victims(snap, gang(1, 4), 1000, units)
    assert d.cost == (10, 4, 0, 2) and len(d.victims) == 2


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([(2, 8), (4, 8), (3, 4), (1, 8)]), st.sampled_from(["leaf", "spine", None]))
def test_the_choice_frees_enough_costs_what_the_exact_optimum_costs_and_never_takes_part_of_a_gang(seed, shape, level):
    rng = random.Random(seed)
    units, used = [], {f"h{i:02d}": 0 for i in range(16)}
    for i in range(40):
        h = f"h{rng.randrange(16):02d}"
        g = rng.choice([1, 2, 4, 8])
        if used[h] + g > 8:
            continue
        if rng.random() < 0.2 and i < 38:
            h2 = f"h{rng.randrange(16):02d}"
            if h2 != h and used[h2] + g <= 8:
                units.append(VictimUnit(f"g{i}", rng.choice([1, 5, 9]), (VictimPod(f"d/g{i}-0", h, (g, 0, 0, 1)),
                                                                      VictimPod(f"d/g{i}-1", h2, (g, 0, 0, 1))), True))
                used[h] += g
                used[h2] += g
                continue
        units.append(VictimUnit(f"p{i}", rng.choice([1, 5, 9, 2000]), (VictimPod(f"d/p{i}", h, (g, 0, 0, 1)),)))
        used[h] += g
    snap = snapshot(used)
    want = gang(shape[0], shape[1], required=level)
    d = choose_victims(snap, want, 1000, units)
    ref = reference_minimum(snap, want, 1000, units)
    assert d.fits == ref.fits
    if not d.fits:
        assert not d.victims
        return
    assert d.cost[:2] == ref.cost[:2] or d.proof == "greedy-fallback"
    chosen = {u.id: u for u in units if u.id in d.victims}
    assert all(u.priority < 1000 for u in chosen.values())
    freed = {h: 0 for h in used}
    for u in chosen.values():  # whole units only
        for p in u.pods:
            freed[p.host] += p.request[0]
    per_host: dict[str, int] = {}
    for _, h in d.places:
        per_host[h] = per_host.get(h, 0) + shape[1]
    for h, need in per_host.items():
        assert 8 - used[h] + freed[h] >= need, f"{h}: over-committed"
    if level:
        lv = snap.topology.level_index(level)
        assert len({snap.topology.domain(h, lv) for h in per_host}) == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6))
def test_pruning_by_the_lower_bounds_never_changes_the_optimum(seed):
    rng = random.Random(seed)
    units, used = [], {f"h{i:02d}": 0 for i in range(16)}
    for i in range(30):
        h, g = f"h{rng.randrange(16):02d}", rng.choice([2, 4, 8])
        if used[h] + g <= 8:
            units.append(VictimUnit(f"p{i}", rng.choice([1, 5]), (VictimPod(f"d/p{i}", h, (g, 0, 0, 1)),)))
            used[h] += g
    snap, want = snapshot(used), gang(rng.choice([2, 3, 4]), 8, required=rng.choice(["leaf", "spine"]))
    assert reference_minimum(snap, want, 1000, units, prune=True).cost == reference_minimum(snap, want, 1000, units).cost
