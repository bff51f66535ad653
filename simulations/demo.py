"""`clique demo`: the embedded default, offline and on the real control plane. Side effects: starts and stops a
local control plane, writes ./demo-output/ (report.md, PNG plots, JSON).

1. Offline: every placement policy (Clique's engine and the baselines) places the same seeded stream of
   multi-node inference gangs on the embedded cluster (an H100 SuperPOD-style leaf/spine tree and two GB200
   NVL72 NVLink domains, with existing load) until the first gang does not fit.
2. Real control plane (simulations/demo_controlplane.py; its binaries are built here, after the offline
   results, if they are not cached yet): the same cluster as KWOK nodes; one TP32 replica placed by the stock
   kube-scheduler (pod by pod) and by clique-scheduler + the extender (whole, inside one leaf); a gang that
   cannot fit waiting whole; the autoscaler daemon scaling a StatefulSet of gangs up to capacity.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from simulations.cli import DEFAULT_SPEC
from topology.spec import load_cluster_spec


OFFLINE_SPEC = Path(__file__).with_name("demo-offline-cluster.yaml")


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="run the demo on the embedded default cluster (needs no cluster of yours)")
    d.add_argument("--output", type=Path, default=Path("demo-output"), help="where the report goes")
    d.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="cluster spec YAML")
    d.set_defaults(func=cmd_demo)


def demo_stream(seed: int, count: int = 400):
    """Dynamo-style gangs: TP16/TP32 replicas (leader + workers) on 8-GPU hosts, TP8 across two GB200 hosts
    inside one NVLink domain, single-node decode workers."""
    import random

    from scheduler.placement import Gang, Role

    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = rng.choices(["tp32", "tp16", "nvl-tp8", "decode"], weights=[2, 3, 2, 3])[0]
        if kind == "tp32":
            roles = (Role("leader", 1, 8, one_per_host=True), Role("worker", 3, 8))
            out.append(Gang(f"{kind}-{i}", roles, preferred_level="leaf"))
        elif kind == "tp16":
            out.append(Gang(f"{kind}-{i}", (Role("leader", 1, 8, one_per_host=True), Role("worker", 1, 8))))
        elif kind == "nvl-tp8":
            out.append(Gang(f"{kind}-{i}", (Role("worker", 2, 4),), required_level="nvlink"))
        else:
            out.append(Gang(f"{kind}-{i}", (Role("worker", 1, rng.choice([1, 2, 4])),)))
    return out


def innermost_domains(snapshot, hosts: list[str]) -> int:
    """Distinct domains at each host's innermost labelled level (leaf for H100 hosts, NVLink domain for GB200)."""
    topo = snapshot.topology
    out = set()
    for h in hosts:
        path = topo.host_paths[h]
        depth = max((i for i, v in enumerate(path) if v[0] not in "<~"), default=-1)
        out.add(path[: depth + 1] if depth >= 0 else (h,))
    return len(out)


def placement_comparison(spec, output: Path, seed: int = 11, stream_len: int = 400) -> tuple[list[dict], str]:
    """Each policy places the same stream on its own copy of the cluster. A gang that does not fit is skipped
    (it would wait); a pod-by-pod scheduler's partial gang keeps its GPUs, as its bound pods would."""
    from scheduler.placement import Plan, PlanStatus, all_policies
    from scheduler.placement.snapshots import random_load, snapshot_from_spec

    base = snapshot_from_spec(spec, random_load(spec, seed, busy_share=0.3))
    total = sum(h.gpus for h in base.hosts.values())
    stream = demo_stream(seed, stream_len)
    rows = []
    for policy in all_policies(seed=seed):
        snap, placed, one_domain, partial, held, times = base, 0, 0, 0, 0, []
        for gang in stream:
            plan = policy.place(snap, gang)
            times.append(plan.solve_ms)
            if plan.placed:
                placed += 1
                one_domain += innermost_domains(snap, plan.hosts()) == 1
                snap = snap.apply(gang, plan)
            elif getattr(plan, "partial", ()):
                partial += 1
                held += sum(next(r.gpus for r in gang.roles if r.name == a.role) for a in plan.partial)
                snap = snap.apply(gang, Plan(gang.name, PlanStatus.PLACED, plan.partial))
        used = sum(h.gpus_used for h in snap.hosts.values()) - sum(h.gpus_used for h in base.hosts.values())
        rows.append({"policy": policy.name, "gangs_placed": placed, "gangs_waiting": len(stream) - placed,
                     "partial_gangs": partial, "gpus_held_by_partial_gangs": held,
                     "useful_gpu_allocation": round((used - held) / total, 3),
                     "one_domain_share": round(one_domain / max(1, placed), 3),
                     "p99_ms": round(sorted(times)[int(0.99 * (len(times) - 1))], 2)})
    _bar_chart(rows, output / "placement.png")
    header = (f"{'policy':20} {'placed':>7} {'partial':>8} {'GPUs idle in partial':>21} {'useful GPU alloc.':>18} "
              f"{'one-domain':>11} {'p99 ms':>7}")
    table = "\n".join([header] + [
        f"{r['policy']:20} {r['gangs_placed']:>7} {r['partial_gangs']:>8} {r['gpus_held_by_partial_gangs']:>21} "
        f"{r['useful_gpu_allocation']:>18.1%} {r['one_domain_share']:>11.1%} {r['p99_ms']:>7}" for r in rows])
    return rows, table


def openb_comparison(output: Path) -> tuple[list[dict], str]:
    """Clique and the three strongest or most common baselines on openb multigpu50 (about a minute)."""
    from scheduler.placement import all_policies
    from simulations.placement_sim import plots, run_all, table
    from simulations.simulate_cli import Progress
    from simulations.workloads import data_file, openb_cluster, openb_pods

    base = openb_cluster()
    arrivals, timed = openb_pods(data_file("openb-multigpu50"))
    keep = {"clique", "kueue-bestfit", "most-allocated", "default-spread"}
    results = run_all([p for p in all_policies(seed=1) if p.name in keep], base, arrivals, timed, Progress())
    plots(results, timed, str(output / "placement-openb-multigpu50"), "openb multigpu50 on 1,213 nodes")
    return [r.summary() for r in results], table(results, timed)


def replay_comparison(output: Path) -> tuple[list[dict], str]:
    from simulations.replay import (ModelConfig, compare, frontier, frontier_plot, frontier_verdict, replay_plots,
                                    replay_table)
    from simulations.workloads import data_file, load_requests

    requests, cfg = load_requests(data_file("azure-code")), ModelConfig()
    results = compare(requests, cfg)
    replay_plots(results, requests, cfg, output / "replay.png")
    points = frontier(requests, cfg)
    frontier_plot(points, results, output / "replay-frontier.png")
    oracle_h = next(r.summary()["gpu_hours"] for r in results if r.policy == "oracle")
    return ([r.summary() for r in results],
            replay_table(results) + f"\nour policy over its settings: {frontier_verdict(points, oracle_h)}")


def _bar_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    names = [r["policy"] for r in rows]
    colors = ["#2a7ab9" if n == "clique" else "#9aa7b4" for n in names]
    for ax, key, title in ((axes[0], "useful_gpu_allocation", "share of cluster GPUs newly given to complete gangs"),
                           (axes[1], "one_domain_share", "gangs inside one leaf / NVLink domain")):
        vals = [r[key] for r in rows]
        ax.barh(names, vals, color=colors)
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(vals):
            ax.text(min(v + 0.01, 0.9), i, f"{v:.0%}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _offline_report(args: argparse.Namespace, offline_spec, comparison: str, openb_table: str,
                    replay_text: str) -> str:
    return (
        "# Clique demo\n\n"
        f"## Placement policies, offline ({offline_spec.host_count} hosts, {offline_spec.gpu_count} GPUs; the same "
        "seeded stream of 400 gangs for every policy; a gang that does not fit waits; a pod-by-pod scheduler's "
        "partial gang keeps its GPUs)\n\n"
        f"![placement](placement.png)\n\n```\n{comparison}\n```\n\n"
        "## openb multigpu50, fill until the first pod does not fit\n\n"
        "Alibaba cluster-trace-gpu-v2023 (openb), CC BY 4.0; Weng et al., USENIX ATC 2023. 1,213 nodes with a "
        "generated leaf/spine overlay; 9,061 pods in file order; a fractional GPU counts as one whole GPU.\n\n"
        f"![allocation](placement-openb-multigpu50-allocation.png)\n\n```\n{openb_table}\n```\n\n"
        "## Autoscaling, Azure LLM code trace replay\n\n"
        "Azure LLM inference trace 2023 (code), CC BY 4.0; Patel et al., Splitwise, ISCA 2024. Disaggregated "
        "prefill (1 x 8 GPUs) and decode (2 x 8 GPUs) pools; 60 s model load; TTFT SLO 2 s, ITL SLO 50 ms. "
        "The oracle knows the future load: per 5 s window the fewest prefill replicas that keep every prompt "
        "within the SLO, loaded a model-load ahead (a clairvoyant reference).\n\n"
        f"![replay](replay.png)\n\n![frontier](replay-frontier.png)\n\n```\n{replay_text}\n```\n\n"
        "# On the real control plane\n\n"
        "Local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built from "
        f"their Go modules, on 127.0.0.1; the cluster spec `{args.spec.name}`.\n\n")


def cmd_demo(args: argparse.Namespace) -> int:
    from simulations.controlplane.build import BuildError
    from simulations.demo_controlplane import ensure_controlplane_binaries, run_controlplane_demo

    spec = load_cluster_spec(args.spec)
    args.output.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print("[demo] 1/4 offline: every placement policy on the embedded cluster, same seeded gang stream ...", flush=True)
    offline_spec = load_cluster_spec(OFFLINE_SPEC)
    rows, comparison = placement_comparison(offline_spec, args.output)
    print(comparison + "\n", flush=True)
    print("[demo] 2/4 openb multigpu50 (Alibaba trace, 1,213 nodes), fill until the first pod does not fit ...",
          flush=True)
    openb_rows, openb_table = openb_comparison(args.output)
    print(openb_table + "\n", flush=True)
    print("[demo] 3/4 autoscaler replay of the Azure LLM code trace (57 min of requests) ...", flush=True)
    replay_rows, replay_text = replay_comparison(args.output)
    print(replay_text + "\n", flush=True)
    offline_s = time.monotonic() - t0
    report, results = args.output / "report.md", args.output / "results.json"
    text = _offline_report(args, offline_spec, comparison, openb_table, replay_text)
    out: dict = {"offline_placement": rows, "openb_multigpu50": openb_rows, "autoscaling_replay": replay_rows,
                 "offline_seconds": round(offline_s, 1)}
    # the offline results are kept even if the control plane cannot be built or started
    report.write_text(text + "(not run yet)\n")
    results.write_text(json.dumps(out, indent=1))
    print(f"[demo] offline parts done in {offline_s:.0f}s; report so far: {report}", flush=True)

    def say(msg: str) -> None:
        print(msg, flush=True)

    try:
        ensure_controlplane_binaries(say)
    except BuildError as exc:
        print(f"clique: {exc}", flush=True)
        report.write_text(text + f"Not run: the control plane could not be built.\n\n```\n{exc}\n```\n")
        return 1
    cp_results, cp_report = run_controlplane_demo(spec, args.output, say)
    report.write_text(text + cp_report)
    out["controlplane"] = cp_results
    results.write_text(json.dumps(out, indent=1))
    print(f"[demo] done in {time.monotonic() - t0:.0f}s (offline {offline_s:.0f}s, real control plane "
          f"{cp_results['seconds']:.0f}s); report: {report}")
    return 0
