"""The preemption simulator (`clique simulate --preemption`): openb qos as priority classes, kube-scheduler's
pod-by-pod preemption model, and invariants of both policies on small seeded clusters. Pure: no cluster."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.placement.types import Gang, Role
from simulations.kube_preemption import NodeVictim, pick_one_node, PodPreemption, preempt_for_pod, select_victims_on_node
from simulations.preemption_sim import fill, preemptor_stream, simulate_preemption
from simulations.priorities import QOS_CLASSES, Prioritized, PriorityClass, prioritized_pods
from simulations.workloads import Arrival, data_file
from tests.unit.placement_builders import snapshot

ROOT = Path(__file__).parents[2]
BE, MID, LS = PriorityClass("be", 1000), PriorityClass("mid", 2000), PriorityClass("ls", 3000)


def test_openb_qos_maps_to_the_documented_priority_classes():
    pods = prioritized_pods(data_file("openb-default"), limit=400)
    assert len(pods) == 400
    seen = {p.priority for p in pods}
    assert seen <= set(QOS_CLASSES.values()) and QOS_CLASSES["LS"] in seen and QOS_CLASSES["BE"] in seen
    assert QOS_CLASSES["BE"].value < QOS_CLASSES["Burstable"].value < QOS_CLASSES["LS"].value
    assert QOS_CLASSES["Guaranteed"] == QOS_CLASSES["LS"]


def test_a_pod_list_without_qos_is_refused_with_what_to_use_instead():
    with pytest.raises(ValueError, match="no 'qos' or 'priority' column"):
        prioritized_pods(data_file("openb-multigpu50"), limit=5)


def test_an_unknown_qos_value_names_the_file_line_and_the_known_classes(tmp_path):
    f = tmp_path / "pods.csv"
    f.write_text("name,cpu_milli,memory_mib,num_gpu,qos\np0,1000,1024,1,LS\np1,1000,1024,1,Platinum\n")
    with pytest.raises(ValueError, match=r"pods.csv:3: qos 'Platinum' has no priority class; known: BE"):
        prioritized_pods(f)


def test_an_integer_priority_column_is_taken_as_it_is(tmp_path):
    f = tmp_path / "pods.csv"
    f.write_text("name,cpu_milli,memory_mib,num_gpu,qos,priority\np0,1000,1024,1,LS,42\n")
    assert prioritized_pods(f)[0].priority == PriorityClass("priority-42", 42)


# ------------------------------------------------------------------ kube-scheduler's pod-by-pod model
def _v(pod: str, prio: int, gpus: int, start: float = 0.0) -> NodeVictim:
    return NodeVictim(pod, pod, prio, start, (gpus, 0, 0, 1))


def test_select_victims_reprieves_the_most_important_pods_first():
    # a full 8-GPU node: 4 GPUs of priority 5 (older), 2 of 1, 2 of 1; a 4-GPU preemptor of priority 10
    on = [_v("old5", 5, 4, start=0), _v("a1", 1, 2, start=1), _v("b1", 1, 2, start=2)]
    victims = select_victims_on_node((0, 0, 0, 100), (4, 0, 0, 1), on, 10)
    assert [v.pod for v in victims] == ["a1", "b1"]


def test_a_node_where_even_every_lower_priority_pod_would_not_make_room_is_no_candidate():
    on = [_v("low", 1, 4), _v("high", 20, 4)]
    assert select_victims_on_node((0, 0, 0, 100), (8, 0, 0, 1), on, 10) is None


def test_the_node_whose_highest_victim_priority_is_lowest_is_picked_then_fewest_victims():
    a = PodPreemption("a", (_v("x", 5, 8),))
    b = PodPreemption("b", (_v("y", 1, 4), _v("z", 1, 4)))
    c = PodPreemption("c", (_v("w", 1, 8),))
    assert pick_one_node([a, b, c]).node == "c"
    assert pick_one_node([a, b]).node == "b"


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6))
def test_pod_by_pod_never_evicts_when_the_pod_would_not_fit_and_always_frees_enough(seed):
    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(rng.randint(1, 6))]
    free, on = {}, {}
    for n in nodes:
        used, vs = 0, []
        while used < 8:
            g = rng.choice([1, 2, 4, 8])
            g = min(g, 8 - used)
            vs.append(_v(f"{n}-{len(vs)}", rng.choice([1, 5, 20]), g, rng.random()))
            used += g
        on[n] = vs
        free[n] = (0, 0, 0, 100)
    req = (rng.choice([2, 4, 8]), 0, 0, 1)
    got = preempt_for_pod(nodes, free, on, req, 10, random.Random(seed))
    possible = any(sum(v.request[0] for v in on[n] if v.priority < 10) >= req[0] for n in nodes)
    if not possible:
        assert got is None
        return
    assert got is not None and all(v.priority < 10 for v in got.victims)
    assert sum(v.request[0] for v in got.victims) >= req[0]
    # minimal on its node: putting back any one victim leaves no room
    for v in got.victims:
        assert sum(x.request[0] for x in got.victims if x is not v) < req[0]


# ------------------------------------------------------------------ the simulation, both policies
def _cluster(seed: int, background_gangs: bool):
    """Two spines x two leaves x 4 hosts of 8 GPUs (placement_builders), filled with single pods and (optionally) 2x8 gangs."""
    snap = snapshot(n=16)  # placement_builders' tree: leaves of 4 hosts, spines of 8
    rng = random.Random(seed)
    bg, i = [], 0
    while sum(a.arrival.gang.gpu_count for a in bg) < 16 * 8 + 16:
        cls = rng.choice([BE, MID, LS])
        if background_gangs and rng.random() < 0.2:
            g = Gang(f"bg{i}", (Role("w", 2, 8),), required_level="leaf")
        else:
            g = Gang(f"bg{i}", (Role("pod", 1, rng.choice([1, 2, 4, 8])),))
        bg.append(Prioritized(Arrival(0.0, g, None), cls))
        i += 1
    return snap, bg


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.booleans(), st.sampled_from(["clique", "pod-by-pod"]))
def test_no_overcommit_and_clique_takes_gangs_whole_and_never_preempts_in_vain(seed, gangs, policy):
    snap, bg = _cluster(seed, gangs)
    filled = fill(snap, bg)
    stream = preemptor_stream(4, 10.0, seed, cpu_millis=0, memory=0)
    r = simulate_preemption(policy, filled, stream, priority=2500, grace_s=30.0, seed=seed)
    assert r.overcommits == 0
    assert r.placed + r.waiting + r.partial == r.gangs
    assert sum(r.gpus_by_class.values()) == r.gpus_preempted
    assert "ls" not in r.gpus_by_class  # priority 2500 may take be and mid only
    if policy == "clique":
        assert r.gangs_broken == 0 and r.partial == 0
        assert r.preempted_without_placing == 0 and r.wasted_gpus == 0
        assert r.placed_one_domain == r.placed
        assert all(t == 0.0 or t >= 30.0 for t in r.times_s)


def test_clique_frees_one_leaf_where_pod_by_pod_spreads_the_gang_and_wastes_its_evictions():
    snap = snapshot(n=8)  # two leaves of 4 hosts
    # every host full of 8-GPU best-effort pods; one 4x8 gang that needs a leaf
    bg = [Prioritized(Arrival(0.0, Gang(f"bg{i}", (Role("pod", 1, 8),)), None), BE) for i in range(8)]
    filled = fill(snap, bg)
    g = Gang("hp", (Role("w", 4, 8),), required_level="leaf")
    clique = simulate_preemption("clique", filled, [Arrival(5.0, g, None)], seed=3)
    assert (clique.placed_one_domain, clique.gpus_preempted, clique.preemptions) == (1, 32, 1)
    assert clique.times_s == [30.0]
    pbp = simulate_preemption("pod-by-pod", filled, [Arrival(5.0, g, None)], seed=3)
    assert pbp.placed == 1 and pbp.gpus_preempted == 32 and pbp.preemptions == 4
    # with a random start node the four pods land wherever the walk starts: same GPUs, no leaf guarantee
    assert pbp.wasted_gpus in (0, 32) and pbp.wasted_gpus == 32 * (1 - pbp.placed_one_domain)


def test_a_gang_that_cannot_fit_even_after_preemption_evicts_nothing_under_clique():
    snap = snapshot(n=4, per_leaf=2)
    bg = [Prioritized(Arrival(0.0, Gang(f"bg{i}", (Role("pod", 1, 8),)), None), BE) for i in range(4)]
    filled = fill(snap, bg)
    g = Gang("hp", (Role("w", 3, 8),), required_level="leaf")  # a leaf has 2 hosts
    r = simulate_preemption("clique", filled, [Arrival(1.0, g, None)])
    assert (r.preemptions, r.gpus_preempted, r.waiting) == (0, 0, 1)
    pbp = simulate_preemption("pod-by-pod", filled, [Arrival(1.0, g, None)])
    assert pbp.gpus_preempted == 24 and pbp.placed_one_domain == 0  # evicts three hosts anyway


def test_simulate_preemption_cli_prints_a_table_and_json_last(tmp_path):
    out = subprocess.run([sys.executable, "-m", "clique", "simulate", "--preemption", "--limit", "1500",
                          "--preemptors", "3", "--output", str(tmp_path), "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["simulation"] == "preemption" and last["workload"] == "openb-default"
    assert [r["policy"] for r in last["results"]] == ["clique", "pod-by-pod"]
    assert "GPUs by victim class" in out.stdout
    assert (tmp_path / "preemption-openb-default.png").is_file()
