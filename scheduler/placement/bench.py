"""`clique bench placement`: latency, optimality and fragmentation of every placement policy. Side effects:
prints a progress line per batch, a table, and as its last line one JSON object.

Setup, per cluster size (512 and 4,096 8-GPU hosts; --quick: fewer requests): a 3-level tree — NVLink
domain / leaf of 16 hosts -> spine block of 128 hosts -> zone of half the cluster — with seeded random
existing load (40% of hosts partly used). Each policy then places the same seeded stream of gangs (2x8, 4x8,
8x8, 16x8, leader + workers, and a mixed shape), applying each placement, on its own copy of the
cluster, until the first request fails or the stream ends.

Per policy and size it reports: p50/p99 solve time; optimal_share — share of requests whose topology cost
equals the proven CP-SAT optimum (no time limit) for the same snapshot; one_domain_share — share of placed
gangs inside one leaf; stranded_gpus — free GPUs on partly used hosts when the stream stops (GPUs that no
8-GPU pod can use).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass

from scheduler.placement.baselines import all_policies
from scheduler.placement.engine import reference_optimum
from scheduler.placement.snapshots import random_load, snapshot_from_spec
from scheduler.placement.types import Gang, Role, Snapshot
from topology.spec import ClusterSpec, parse_cluster_spec

LEAF_HOSTS = 16
SPINE_HOSTS = 128


def bench_cluster(hosts: int) -> ClusterSpec:
    return parse_cluster_spec({
        "name": f"bench{hosts}",
        "levels": [
            {"name": "zone", "label": "topology.kubernetes.io/zone", "hostsPerDomain": max(SPINE_HOSTS, hosts // 2)},
            {"name": "spine", "label": "clique.dev/spine", "hostsPerDomain": SPINE_HOSTS},
            {"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": LEAF_HOSTS},
        ],
        "pools": [{"name": "gpu", "hosts": hosts, "gpus": 8, "cpu": "192", "memory": "2Ti"}],
    })


def request_stream(seed: int, count: int) -> list[Gang]:
    """Seeded gang requests: shapes of multi-node inference replicas, some with a leader role or a required level."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = rng.choice(["2x8", "4x8", "8x8", "16x8", "leader", "mixed"])
        if kind == "leader":
            n = rng.choice([2, 4, 8])
            roles = (Role("leader", 1, 8, one_per_host=True), Role("worker", n - 1, 8))
        elif kind == "mixed":
            roles = (Role("leader", 1, 4, one_per_host=True), Role("worker", rng.choice([2, 4]), 8),
                     Role("sidecar", 2, 2))
        else:
            n = int(kind.split("x")[0])
            roles = (Role("worker", n, 8),)
        pods = sum(r.pods for r in roles)
        required = None
        if rng.random() < 0.3:
            required = "leaf" if pods <= LEAF_HOSTS // 2 else "spine"
        out.append(Gang(f"g{i:04d}-{kind}", roles, required_level=required))
    return out


@dataclass
class PolicyRun:
    policy: str
    hosts: int
    requests: int = 0
    placed: int = 0
    optimal: int = 0
    one_leaf: int = 0
    gang_pods: int = 0
    times_ms: list[float] | None = None
    stranded_gpus: int = 0

    def row(self) -> dict:
        t = sorted(self.times_ms or [0.0])
        return {
            "policy": self.policy, "hosts": self.hosts, "requests": self.requests,
            "gang_pods": round(self.gang_pods / max(1, self.requests), 1),
            "p50_ms": round(statistics.median(t), 3), "p99_ms": round(t[min(len(t) - 1, int(0.99 * len(t)))], 3),
            "optimal_share": round(self.optimal / max(1, self.requests), 4),
            "stranded_gpus": self.stranded_gpus,
            "one_domain_share": round(self.one_leaf / max(1, self.placed), 4),
        }


def stranded(snapshot: Snapshot) -> int:
    return sum(h.free_gpus for h in snapshot.hosts.values() if 0 < h.free_gpus < h.gpus)


def run(sizes: list[int], requests: int, seed: int, progress=print) -> list[dict]:
    rows = []
    for hosts in sizes:
        spec = bench_cluster(hosts)
        base = snapshot_from_spec(spec, random_load(spec, seed, busy_share=0.4))
        stream = request_stream(seed + hosts, requests)
        leaf = len(base.topology.levels) - 1
        for policy in all_policies(seed=seed):
            # Warm-up, untimed: the first CP-SAT call in a process pays a one-time initialisation.
            for gang in stream[:6]:
                policy.place(base, gang)
            run_ = PolicyRun(policy.name, hosts, times_ms=[])
            snap = base
            started = time.perf_counter()
            for gang in stream:
                plan = policy.place(snap, gang)
                run_.requests += 1
                run_.gang_pods += gang.pod_count
                run_.times_ms.append(plan.solve_ms)
                optimum = reference_optimum(snap, gang)
                gc.collect()  # the reference solves leave garbage; collect it outside the timed calls
                if plan.placed and optimum is not None and plan.cost == optimum:
                    run_.optimal += 1
                elif not plan.placed and optimum is None:
                    run_.optimal += 1  # correctly found nothing: the optimum is "does not fit"
                if not plan.placed:
                    break
                run_.placed += 1
                run_.one_leaf += len({snap.topology.domain(h, leaf) for h in plan.hosts()}) == 1
                snap = snap.apply(gang, plan)
            run_.stranded_gpus = stranded(snap)
            rows.append(run_.row())
            progress(f"[bench placement] {hosts} hosts, {policy.name}: {run_.requests} requests, "
                     f"{run_.placed} placed in {time.perf_counter() - started:.1f}s")
    return rows


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("placement", help="placement engine and baselines: latency, optimality, fragmentation")
    p.add_argument("--quick", action="store_true", help="fewer requests (finishes within 60 s)")
    p.add_argument("--sizes", default="512,4096", help="cluster sizes in hosts, comma-separated")
    p.add_argument("--requests", type=int, default=None, help="requests per size (default 60; --quick 20)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=cmd_bench_placement)


def cmd_bench_placement(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    requests = args.requests or (20 if args.quick else 60)
    started = time.perf_counter()
    rows = run(sizes, requests, args.seed, progress=lambda m: print(m, file=sys.stderr, flush=True))
    cols = ["policy", "hosts", "requests", "gang_pods", "p50_ms", "p99_ms", "optimal_share", "stranded_gpus",
            "one_domain_share"]
    print(" ".join(f"{c:>18}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]:>18}" for c in cols))
    print(f"# {time.perf_counter() - started:.1f}s; optimal_share against CP-SAT with no time limit on the same snapshot")
    print(json.dumps({"benchmark": "placement", "results": rows}))
    return 0
