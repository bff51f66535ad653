"""`clique bench preemption`: decision time of gang preemption at 1,000 and 5,000 nodes with a full cluster, and
GPUs preempted against the proven minimum. Side effects: prints a progress line per size, a table, and as its
last line one JSON object.

Setup, per size: the placement bench's tree (leaf of 16 hosts, spine of 128, zones of whole spines), 8-GPU
hosts, every host full. Each case draws a new seeded load on the same topology: hosts hold one 1x8 pod, two 4-GPU
or four 2-GPU pods, or belong to a 2x8 / 4x8 gang inside a leaf; victim priorities 1, 5 or 9, and one host in ten
holds a pod of priority 2000 that the preemptor (priority 1000) may not take. The preemptor is a 2x8, 4x8 or 8x8
gang (required level leaf), a 16x8 gang (required spine) or a leader + 3 workers (leaf).

Per size: p50/p99 of `choose_victims` (the extender's call, default time budget); min_gpus_share: share of
cases whose cost (highest victim priority, GPUs) equals the reference minimum (CP-SAT in every candidate scope
with no time limit, pruned only by proven lower bounds); proofs by kind; the largest greedy-fallback gap reported;
and beside it kube-scheduler's pod-by-pod preemption on the same cases (GPUs evicted, share of gangs that end up
inside one domain of their required level, victim gangs broken by evicting part of them).

The victim list, as the extender builds it (scheduler/extender/state.py's victim index), per size on the first
case's load turned into pod objects in a ClusterState: `victims_index_cold_ms` the first build after a full list,
`victims_index_p50_ms`/`p99_ms` each case's build after 10 pod events since the last one (what a decision pays),
`victims_scan_ms` the scan of every pod the index replaces, `index_event_us` the mean cost of one pod event with the
index kept; `decision_with_victims_p99_ms` the p99 of (victim list + decision) per case. The decision itself runs
in a worker thread in the extender (the list is built on its event loop): `loop_max_gap_ms` is the longest an
event loop beside it went without running (a 1 ms ticker) over the first LOOP_CASES cases, against
`loop_gap_cases_decision_max_ms`, the longest of those decisions.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from collections import Counter

from scheduler.placement.bench import LEAF_HOSTS, SPINE_HOSTS
from scheduler.placement.preemption import VictimPod, VictimUnit, choose_victims, reference_minimum
from scheduler.placement.types import Gang, HostState, Role, Snapshot
from topology.model import topology_from_spec
from topology.spec import ClusterSpec, parse_cluster_spec

PREEMPTOR_PRIORITY = 1000
LOOP_CASES = 10  # cases per size whose decision also runs in a thread beside a ticking event loop


def bench_cluster(hosts: int) -> ClusterSpec:
    """The placement bench's tree for any host count: zones of whole spines (about half the cluster)."""
    zone = SPINE_HOSTS * max(1, -(-hosts // (2 * SPINE_HOSTS)))
    return parse_cluster_spec({
        "name": f"preempt{hosts}",
        "levels": [{"name": "zone", "label": "topology.kubernetes.io/zone", "hostsPerDomain": zone},
                   {"name": "spine", "label": "clique.dev/spine", "hostsPerDomain": SPINE_HOSTS},
                   {"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": LEAF_HOSTS}],
        "pools": [{"name": "gpu", "hosts": hosts, "gpus": 8, "cpu": "192", "memory": "2Ti"}]})


def full_load(topo, seed: int) -> tuple[dict[str, HostState], list[VictimUnit]]:
    """Every host full: single pods and gangs inside leaves, seeded."""
    rng = random.Random(seed)
    hosts = {h: HostState(h, 8, cpu_millis=192_000, memory=2 * 2**40, pods=110) for h in topo.host_names}
    units: list[VictimUnit] = []
    names = list(topo.host_names)
    i = 0
    while i < len(names):
        h = names[i]
        r = rng.random()
        if r < 0.1:  # a host of a higher-priority tenant
            units.append(VictimUnit(f"keep-{h}", 2000, (VictimPod(f"d/keep-{h}", h, (8, 0, 0, 1)),)))
            i += 1
        elif r < 0.2 and i % LEAF_HOSTS <= LEAF_HOSTS - 4 and i + 4 <= len(names):  # a gang inside the leaf
            size = rng.choice([2, 4])
            units.append(VictimUnit(f"gang-{h}", rng.choice([1, 5, 9]), tuple(
                VictimPod(f"d/gang-{h}-{j}", names[i + j], (8, 0, 0, 1)) for j in range(size)), gang=True))
            i += size
        else:
            split = rng.choice([1, 1, 1, 2, 4])
            for j in range(split):
                units.append(VictimUnit(f"pod-{h}-{j}", rng.choice([1, 5, 9]),
                                        (VictimPod(f"d/pod-{h}-{j}", h, (8 // split, 0, 0, 1)),)))
            i += 1
    used: dict[str, list[int]] = {}
    for u in units:
        for p in u.pods:
            acc = used.setdefault(p.host, [0, 0])
            acc[0] += p.request[0]
            acc[1] += 1
    for h, (g, n) in used.items():
        s = hosts[h]
        hosts[h] = HostState(h, s.gpus, s.cpu_millis, s.memory, s.pods, gpus_used=g, pods_used=n)
    return hosts, units


def pod_by_pod(snap: Snapshot, gang: Gang, priority: int, units: list[VictimUnit]) -> tuple[int, bool, int]:
    """kube-scheduler's default preemption, one preemptor pod at a time, as a baseline: per pod, the node where
    evicting lower-priority pods makes it fit, chosen by (highest victim priority, sum of victim priorities,
    number of victims) as pickOneNodeForPreemption orders them (k8s.io/kubernetes v1.37.2
    pkg/scheduler/framework/preemption/preemption.go), victims taken lowest priority first and only as many as
    needed; no topology. Returns (GPUs evicted, all pods inside one domain of the required level, gangs broken)."""
    free = {h: s.free_gpus for h, s in snap.hosts.items()}
    on_host: dict[str, list[tuple[int, int, str]]] = {}
    for u in units:
        if u.priority < priority:
            for p in u.pods:
                on_host.setdefault(p.host, []).append((u.priority, p.request[0], u.id))
    for v in on_host.values():
        v.sort()
    gpus, hosts, broken = 0, [], set()
    for r in gang.roles:
        for _ in range(r.pods):
            best = None
            for h, f in free.items():
                if f >= r.gpus:
                    best = ((-1, 0, 0, h), h, [])
                    break
                got, victims = f, []
                for v in on_host.get(h, ()):
                    if got >= r.gpus:
                        break
                    victims.append(v)
                    got += v[1]
                if got >= r.gpus:
                    key = (max(v[0] for v in victims), sum(v[0] for v in victims), len(victims), h)
                    if best is None or key < best[0]:
                        best = (key, h, victims)
            if best is None:
                return gpus, False, len(broken)
            _, h, victims = best
            for v in victims:
                on_host[h].remove(v)
                free[h] += v[1]
                gpus += v[1]
                if v[2].startswith("gang-"):
                    broken.add(v[2])
            free[h] -= r.gpus
            hosts.append(h)
    level = snap.topology.level_index(gang.required_level) if gang.required_level else None
    one = level is None or len({snap.topology.domain(h, level) for h in hosts}) == 1
    return gpus, one, len(broken)


def preemptors(seed: int, count: int) -> list[Gang]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = rng.choice(["2x8", "4x8", "8x8", "16x8", "leader"])
        if kind == "leader":
            out.append(Gang(f"p{i}-leader", (Role("leader", 1, 8, one_per_host=True), Role("worker", 3, 8)),
                            required_level="leaf"))
        else:
            n = int(kind.split("x")[0])
            out.append(Gang(f"p{i}-{kind}", (Role("worker", n, 8),), required_level="spine" if n > 8 else "leaf"))
    return out


def _pod_objects(units: list[VictimUnit]) -> list[dict]:
    """The load as the API would serve it: a gang unit's pods carry clique.dev/gang annotations."""
    out = []
    for u in units:
        for p in u.pods:
            ns, name = p.key.split("/", 1)
            ann = {"clique.dev/gang": u.id, "clique.dev/gang-size": str(len(u.pods))} if u.gang else {}
            out.append({"metadata": {"name": name, "namespace": ns, "uid": name, "annotations": ann},
                        "spec": {"nodeName": p.host, "priority": u.priority, "containers": [
                            {"name": "c", "resources": {"requests": {"nvidia.com/gpu": str(p.request[0])}}}]},
                        "status": {"phase": "Running"}})
    return out


def victim_list_times(units: list[VictimUnit], cases: int, seed: int) -> dict:
    """Victim list build times on the extender's state (see the module docstring)."""
    from scheduler.extender.preemption import units_by_scan
    from scheduler.extender.state import ClusterState
    from topology.levels import preset

    pods = _pod_objects(units)
    state = ClusterState(preset("generic"))
    started = time.perf_counter()
    state._set_pods(pods)
    event_us = (time.perf_counter() - started) * 1e6 / max(1, len(pods))
    started = time.perf_counter()
    cold = state.victim_units(PREEMPTOR_PRIORITY)
    cold_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    scanned = units_by_scan(state.pods, "", PREEMPTOR_PRIORITY)
    scan_ms = (time.perf_counter() - started) * 1000
    assert [u.id for u in scanned] == [u.id for u in cold], "victim index and scan disagree"
    rng = random.Random(seed)
    warm = []
    for _ in range(cases):
        for p in rng.sample(pods, 10):  # pods updated since the last decision (a status change, a rebind)
            state._pod_event("MODIFIED", p)
        started = time.perf_counter()
        state.victim_units(PREEMPTOR_PRIORITY)
        warm.append((time.perf_counter() - started) * 1000)
    return {"victims_index_cold_ms": round(cold_ms, 2), "victims_ms": warm, "victims_scan_ms": round(scan_ms, 2),
            "index_event_us": round(event_us, 1), "victim_units": len(cold)}


def loop_gap_ms(snap: Snapshot, gang: Gang, units: list[VictimUnit]) -> tuple[float, float]:
    """(the longest the event loop went without running, decision ms) while choose_victims runs in a worker thread
    as the extender runs it (asyncio.to_thread), measured by a 1 ms ticker on the loop."""
    import asyncio

    async def main() -> tuple[float, float]:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.005)
        d = await asyncio.to_thread(choose_victims, snap, gang, PREEMPTOR_PRIORITY, units)
        stop.set()
        await task
        return max(gaps) * 1000, d.solve_ms

    return asyncio.run(main())


def run_size(hosts: int, cases: int, seed: int) -> dict:
    spec = bench_cluster(hosts)
    topo = topology_from_spec(spec)
    gangs = preemptors(seed + hosts, cases)
    times: list[float] = []
    proofs: Counter[str] = Counter()
    minimal, compared, gaps, gpus, ref_ms = 0, 0, [], 0, []
    base_gpus, base_one, base_broken = 0, 0, 0
    victims: dict = {}
    loop_gaps: list[tuple[float, float]] = []
    for k, gang in enumerate(gangs):
        states, units = full_load(topo, seed * 1000 + hosts + k)
        if k == 0:
            victims = victim_list_times(units, cases, seed)
        snap = Snapshot(topo, states)
        if k == 0:  # warm-up, untimed: the first CP-SAT call in a process pays a one-time initialisation
            choose_victims(snap, gang, PREEMPTOR_PRIORITY, units)
        gc.collect()
        d = choose_victims(snap, gang, PREEMPTOR_PRIORITY, units)
        times.append(d.solve_ms)
        proofs[d.proof or "none"] += 1
        started = time.perf_counter()
        ref = reference_minimum(snap, gang, PREEMPTOR_PRIORITY, units, prune=True)
        ref_ms.append((time.perf_counter() - started) * 1000)
        compared += 1
        if d.cost[:2] == ref.cost[:2] and d.fits == ref.fits:
            minimal += 1
        if d.proof == "greedy-fallback":
            gaps.append(d.gap_gpus)
        gpus += d.cost[1] if d.cost else 0
        if k < LOOP_CASES:
            loop_gaps.append(loop_gap_ms(snap, gang, units))
        bg, bone, bb = pod_by_pod(snap, gang, PREEMPTOR_PRIORITY, units)
        base_gpus, base_one, base_broken = base_gpus + bg, base_one + int(bone), base_broken + bb
    t = sorted(times)
    vt = victims.pop("victims_ms")
    both = sorted(a + b for a, b in zip(times, vt))
    vs = sorted(vt)
    victims.update({"victims_index_p50_ms": round(statistics.median(vs), 3),
                    "victims_index_p99_ms": round(vs[min(len(vs) - 1, int(0.99 * len(vs)))], 3),
                    "decision_with_victims_p99_ms": round(both[min(len(both) - 1, int(0.99 * len(both)))], 2),
                    "loop_max_gap_ms": round(max(g for g, _ in loop_gaps), 1) if loop_gaps else None,
                    "loop_gap_cases_decision_max_ms": round(max(d for _, d in loop_gaps), 1) if loop_gaps else None})
    return {**victims, "nodes": hosts, "cases": cases, "p50_ms": round(statistics.median(t), 2),
            "p99_ms": round(t[min(len(t) - 1, int(0.99 * len(t)))], 2), "max_ms": round(t[-1], 2),
            "min_gpus_share": round(minimal / max(1, compared), 4), "gpus_preempted": gpus,
            "proofs": dict(sorted(proofs.items())), "max_gap_gpus": max(gaps, default=0),
            "reference_p50_ms": round(statistics.median(ref_ms), 1),
            "pod_by_pod": {"gpus_preempted": base_gpus, "one_domain_share": round(base_one / max(1, cases), 4),
                           "gangs_broken": base_broken}}


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("preemption", help="gang preemption: decision p50/p99 at 1,000 and 5,000 full nodes, "
                                                "GPUs preempted vs the proven minimum")
    p.add_argument("--quick", action="store_true", help="fewer cases (about a minute)")
    p.add_argument("--sizes", default="1000,5000")
    p.add_argument("--cases", type=int, default=None, help="preemptor gangs per size (default 100; --quick 20)")
    p.add_argument("--seed", type=int, default=11)
    p.set_defaults(func=cmd_bench_preemption)


def cmd_bench_preemption(args: argparse.Namespace) -> int:
    cases = args.cases or (20 if args.quick else 100)
    started = time.perf_counter()
    rows = []
    for n in (int(x) for x in args.sizes.split(",") if x):
        rows.append(run_size(n, cases, args.seed))
        print(f"[bench preemption] {n} nodes: {cases} cases in {time.perf_counter() - started:.1f}s", file=sys.stderr,
              flush=True)
    cols = ["nodes", "cases", "p50_ms", "p99_ms", "max_ms", "min_gpus_share", "gpus_preempted", "max_gap_gpus",
            "reference_p50_ms", "victims_index_p99_ms", "victims_scan_ms", "decision_with_victims_p99_ms"]
    print(" ".join(f"{c:>16}" for c in cols) + "  proofs")
    for r in rows:
        print(" ".join(f"{r[c]:>16}" for c in cols) + f"  {r['proofs']}  pod-by-pod baseline: {r['pod_by_pod']}")
    print(f"# {time.perf_counter() - started:.1f}s; min_gpus_share: (victim priority, GPUs) equal to CP-SAT's proven "
          "minimum over every candidate scope")
    print(json.dumps({"benchmark": "preemption", "results": rows}))
    return 0
