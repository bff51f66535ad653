"""`clique simulate` (offline placement) and `clique replay` (autoscaler trace replay). Side effects: reads the
trace files, writes PNG plots and JSON into --output, prints progress on stderr and a table on stdout."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("simulate", help="offline placement simulator: every policy on the same workload")
    s.add_argument("--cluster", default="openb", help="'openb' (the openb node list with a generated topology) or "
                                                      "a cluster spec YAML")
    s.add_argument("--nodes", metavar="CSV", help="with --cluster openb: another openb-format node list (columns "
                                                  "sn,cpu_milli,memory_mib,gpu,model) instead of the bundled one; "
                                                  "the same generated topology (--hosts-per-*) applies")
    s.add_argument("--workload", default=None,
                   help="openb-multigpu50 (fill until failure; the default), openb-default (arrivals and "
                        "departures; the default with --preemption), dynamo (synthetic Dynamo mix), or a path to an "
                        "openb-format pod CSV")
    s.add_argument("--limit", type=int, help="use only the first N pods / gangs")
    s.add_argument("--arrival-rate", type=float, default=0.05, metavar="PER_S",
                   help="--workload dynamo: Poisson arrivals per second (default 0.05)")
    s.add_argument("--mean-duration", type=float, default=3600.0, metavar="S",
                   help="--workload dynamo: mean lifetime in seconds, exponential (default 3600)")
    s.add_argument("--node-stride", type=int, default=1, metavar="K",
                   help="with --cluster openb: keep every K-th node of the node list (ordered by GPU model, GPU count, "
                        "name, as the overlay orders them), a cluster 1/K the size with the same mix of nodes; the "
                        "list that ran is written to --output")
    s.add_argument("--hosts-per-nvlink", type=int, default=1, help="openb overlay: hosts per NVLink domain")
    s.add_argument("--hosts-per-leaf", type=int, default=8, help="openb overlay: hosts per leaf switch")
    s.add_argument("--leaves-per-spine", type=int, default=4, help="openb overlay: leaves per spine block")
    s.add_argument("--policies", help="comma-separated subset (default: all)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--output", type=Path, default=Path("simulation-output"))
    s.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    pr = s.add_argument_group("priorities and preemption (--preemption)")
    pr.add_argument("--preemption", action="store_true",
                    help="fill the cluster with the workload's pods, prioritised from its qos (or priority) column, "
                         "then let high-priority gangs arrive; Clique's gang preemption against kube-scheduler's "
                         "pod-by-pod default on the same stream")
    pr.add_argument("--preemptors", type=int, default=24, help="high-priority gangs that arrive")
    pr.add_argument("--preemptor-interval", type=float, default=120.0, help="seconds between their arrivals")
    pr.add_argument("--preemptor-duration", type=float, help="their lifetime in seconds (default: they stay)")
    pr.add_argument("--preemptor-priority", type=int, default=None,
                    help="their priority (default 10000, above every class of the qos mapping)")
    pr.add_argument("--grace", type=float, default=30.0, help="seconds an evicted pod takes to go (termination "
                                                               "grace; Kubernetes' default is 30)")
    k = s.add_argument_group("KWOK scenario (--kwok): the same workload on a real local control plane")
    k.add_argument("--kwok", action="store_true", help="run the workload, time-compressed, against a local control "
                                                       "plane with KWOK nodes and the real kube-scheduler")
    k.add_argument("--schedulers", default="clique,stock",
                   help="comma-separated: clique (clique-scheduler + extender), stock (default-scheduler), kueue-tas "
                        "(the real Kueue v0.17.0 with topology-aware scheduling, then default-scheduler; it builds "
                        "Kueue once and starts it; a fill stops at the first Workload Kueue rejects)")
    k.add_argument("--speedup", type=float, help="timed workloads: trace seconds per real second; whenever the "
                                                 "cluster is quiet the clock jumps to the next event anyway "
                                                 "(default: jumps only, event by event)")
    k.add_argument("--gated", action="store_true",
                   help="clique: its namespace opted in to the shipped admission webhook, so gangs are gated, "
                        "planned once complete and pinned (timed workloads; default: the per-pod filter path)")
    k.add_argument("--preferred-wait", type=float, metavar="TRACE_S",
                   help="with --gated: gangs with a preferred level wait up to this long (trace seconds) for a place "
                        "inside one domain of it (clique.dev/topology-preferred-wait)")
    k.add_argument("--window", type=int, default=64, help="fill workloads: pods created but not yet bound or "
                                                           "rejected, at most")
    k.add_argument("--after-failure", type=int, default=0, help="fill workloads: pods still created after the "
                                                                "first one the scheduler rejects")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("replay", help="replay a request trace through the autoscaler's decision code and baselines")
    r.add_argument("--trace", default="azure-code",
                   help="azure-code, azure-conv, or a path (Azure CSV or Mooncake JSONL)")
    r.add_argument("--limit", type=int, help="use only the first N requests")
    r.add_argument("--speedup", type=float, default=1.0, help="compress trace time by this factor (load x factor)")
    r.add_argument("--output", type=Path, default=Path("replay-output"))
    r.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--kwok", action="store_true", help="also run our policy for real: the autoscaler daemon, "
                                                       "clique-scheduler and KWOK nodes on a local control plane")
    r.add_argument("--kwok-speedup", type=float, default=10.0, help="--kwok: trace seconds per real second")
    r.add_argument("--kwok-hosts", type=int, default=48, help="--kwok: 8-GPU KWOK hosts (leaves of 8)")
    r.add_argument("--kwok-policy", choices=("planner", "reactive"), default="planner",
                   help="--kwok: what the daemon runs: the look-ahead planner (fed by a real Prometheus; offline "
                        "twin `clique`) or the reactive rules (offline twin `clique-reactive`)")
    from simulations.replay import ModelConfig

    for f, default in ModelConfig().__dict__.items():
        if isinstance(default, bool):
            r.add_argument("--" + f.replace("_", "-"), action="store_true", default=default, dest=f)
        else:
            r.add_argument("--" + f.replace("_", "-"), type=type(default), default=default, dest=f)
    r.add_argument("--no-frontier", action="store_true", help="skip the knob sweeps (the frontier plot then "
                                                               "shows each policy at its defaults only)")
    r.set_defaults(func=cmd_replay)


class Progress:
    """A one-line progress bar on stderr per task (no dependency; quiet when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: dict[str, float] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last.get(name, 0) < (0.1 if self.tty else 5):
            return
        self.last[name] = now
        width = 30
        fill = int(width * done / max(1, total))
        line = f"  {name:20} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}"
        if self.tty:
            print("\r" + line, end="\n" if done >= total else "", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)


def labels(args: argparse.Namespace) -> tuple[str, str]:
    """(workload, cluster) as names for output files and titles: short names, or the stems of the files given."""
    from simulations.workloads import source_label

    if args.cluster == "openb":
        cluster = "openb" if args.nodes is None else source_label(args.nodes)
        if getattr(args, "node_stride", 1) > 1:
            cluster += f" (every {args.node_stride}th node)"
    else:
        cluster = source_label(args.cluster)
    return source_label(args.workload), cluster


def data_source(args: argparse.Namespace) -> str | None:
    """'openb' when the run uses the openb trace (the bundled node list, or pod / node files named like it)."""
    return "openb" if any(x.lower().startswith("openb") for x in labels(args)) else None


def simulation_inputs(args: argparse.Namespace):
    from simulations.workloads import Overlay, data_file, dynamo_mix, openb_cluster, openb_pods

    if args.workload is None:
        args.workload = "openb-default" if getattr(args, "preemption", False) else "openb-multigpu50"

    if args.nodes is not None and args.cluster != "openb":
        raise ValueError(f"--nodes is an openb-format node list for --cluster openb; --cluster {args.cluster} "
                         f"already says which nodes there are")
    stride = getattr(args, "node_stride", 1)
    if stride < 1:
        raise ValueError(f"--node-stride must be >= 1 (got {stride})")
    if stride > 1 and args.cluster != "openb":
        raise ValueError("--node-stride thins the openb node list (--cluster openb); a cluster spec says its own size")
    if args.cluster == "openb":
        nodes = data_file(args.nodes or "openb-nodes")
        if stride > 1:
            nodes = thinned_node_list(nodes, stride, args.output / f"{nodes.stem}-every-{stride}.csv")
        base = openb_cluster(nodes, overlay=Overlay(args.hosts_per_nvlink, args.hosts_per_leaf, args.leaves_per_spine))
    else:
        from scheduler.placement.snapshots import snapshot_from_spec
        from topology.spec import load_cluster_spec

        base = snapshot_from_spec(load_cluster_spec(Path(args.cluster)))
    if args.workload == "dynamo":
        rate, life = getattr(args, "arrival_rate", 0.05), getattr(args, "mean_duration", 3600.0)
        if rate <= 0 or life <= 0:
            raise ValueError(f"--arrival-rate and --mean-duration must be > 0 (got {rate:g} and {life:g})")
        arrivals, timed = dynamo_mix(args.limit or 600, args.seed, rate, life), True
    else:
        arrivals, timed = openb_pods(data_file(args.workload), args.limit)
    return base, arrivals, timed


def thinned_node_list(src: Path, stride: int, dest: Path) -> Path:
    """Every `stride`-th row of an openb-format node list, in the order openb_cluster places nodes (GPU model, GPU
    count descending, name), written to `dest` (same columns)."""
    import csv

    with open(src, newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames or []), list(reader)
    for col in ("sn", "gpu", "model"):
        if col not in fields:
            raise ValueError(f"{src}: not an openb-format node list (missing column {col})")
    rows.sort(key=lambda r: (r["model"], -int(r["gpu"]), r["sn"]))
    kept = rows[::stride]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=fields)
        out.writeheader()
        out.writerows(kept)
    return dest


def cmd_simulate(args: argparse.Namespace) -> int:
    from scheduler.placement import all_policies
    from simulations.placement_sim import plots, run_all, table, with_common_share
    from simulations.workloads import ATTRIBUTION

    try:
        base, arrivals, timed = simulation_inputs(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"clique simulate: {exc}", file=sys.stderr)
        return 2
    if args.kwok:
        return cmd_simulate_kwok(args, base, arrivals, timed)
    if args.preemption:
        return cmd_simulate_preemption(args, base)
    policies = all_policies(seed=args.seed)
    if args.policies:
        want = {p.strip() for p in args.policies.split(",")}
        unknown = want - {p.name for p in policies}
        if unknown:
            print(f"clique simulate: unknown policies {sorted(unknown)}; known: {[p.name for p in policies]}",
                  file=sys.stderr)
            return 2
        policies = [p for p in policies if p.name in want]
    total = sum(h.gpus for h in base.hosts.values())
    workload, cluster = labels(args)
    print(f"[simulate] {len(base.hosts)} hosts, {total} GPUs; {len(arrivals)} gangs from {args.workload} "
          f"({'arrivals and departures' if timed else 'fill until failure, file order'}); "
          f"{len(policies)} policies", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    results = run_all(policies, base, arrivals, timed, Progress())
    text = table(results, timed)
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    title = f"{workload} on {cluster} ({len(base.hosts)} hosts, {total} GPUs)"
    pngs = plots(results, timed, str(args.output / f"placement-{workload}"), title)
    src = data_source(args)
    out = {"simulation": "placement", "workload": args.workload, "cluster": args.cluster, "nodes": args.nodes,
           "hosts": len(base.hosts), "gpus": total, "mode": "timed" if timed else "fill", "seed": args.seed,
           "notes": ("openb fractional GPUs count as one whole GPU; gpu_spec is ignored" if src else ""),
           "attribution": ATTRIBUTION.get(src, "") if src else "",
           "results": with_common_share([r.summary() for r in results])}
    return _write_report(args, out, f"placement-{workload}", t0, f"plots: {', '.join(str(p) for p in pngs)}")


def cmd_simulate_preemption(args: argparse.Namespace, base) -> int:
    from simulations.preemption_sim import fill, plot, preemptor_stream, simulate_preemption, table
    from simulations.priorities import PREEMPTOR_PRIORITY, QOS_CLASSES, prioritized_pods
    from simulations.workloads import ATTRIBUTION, data_file

    if args.workload == "dynamo":
        print("clique simulate --preemption: the dynamo mix has no priorities; use openb-default or an openb-format "
              "pod list with a qos or priority column", file=sys.stderr)
        return 2
    try:
        background = prioritized_pods(data_file(args.workload), args.limit)
    except (FileNotFoundError, ValueError) as exc:
        print(f"clique simulate --preemption: {exc}", file=sys.stderr)
        return 2
    prio = args.preemptor_priority if args.preemptor_priority is not None else PREEMPTOR_PRIORITY
    if args.preemptors < 1 or args.preemptor_interval <= 0 or args.grace < 0:
        print("clique simulate --preemption: --preemptors must be >= 1, --preemptor-interval > 0, --grace >= 0",
              file=sys.stderr)
        return 2
    total = sum(h.gpus for h in base.hosts.values())
    workload, cluster = labels(args)
    t0 = time.monotonic()
    filled = fill(base, background)
    used = sum(h.gpus_used for h in filled.snapshot.hosts.values())
    print(f"[simulate] {len(base.hosts)} hosts, {total} GPUs; {filled.placed} of {len(background)} pods from "
          f"{args.workload} placed ({used / max(1, total):.1%} of the GPUs), {filled.dropped} did not fit; then "
          f"{args.preemptors} gangs of priority {prio}, one every {args.preemptor_interval:g}s", file=sys.stderr,
          flush=True)
    stream = preemptor_stream(args.preemptors, args.preemptor_interval, args.seed, args.preemptor_duration)
    progress = Progress()
    results = [simulate_preemption(p, filled, stream, prio, args.grace, args.seed,
                                   lambda d, n, p=p: progress(p, d, n)) for p in ("clique", "pod-by-pod")]
    print(table(results))
    args.output.mkdir(parents=True, exist_ok=True)
    png = plot(results, args.output / f"preemption-{workload}.png",
               f"{args.preemptors} high-priority gangs into {workload} on {cluster} ({len(base.hosts)} hosts)")
    src = data_source(args)
    out = {"simulation": "preemption", "workload": args.workload, "cluster": args.cluster, "nodes": args.nodes,
           "hosts": len(base.hosts), "gpus": total, "mode": "timed", "seed": args.seed,
           "fill": {"pods": len(background), "placed": filled.placed, "dropped": filled.dropped,
                    "allocated_share": round(used / max(1, total), 4)},
           "priority_classes": {q: {"class": c.name, "value": c.value} for q, c in QOS_CLASSES.items()},
           "preemptors": {"count": args.preemptors, "interval_s": args.preemptor_interval,
                          "duration_s": args.preemptor_duration, "priority": prio, "grace_s": args.grace},
           "notes": ("openb fractional GPUs count as one whole GPU; gpu_spec is ignored; evicted pods are not "
                     "recreated" if src else "evicted pods are not recreated"),
           "attribution": ATTRIBUTION.get(src, "") if src else "",
           "results": [r.summary() for r in results]}
    return _write_report(args, out, f"preemption-{workload}", t0, f"plot: {png}")


def cmd_simulate_kwok(args: argparse.Namespace, base, arrivals, timed: bool) -> int:
    from scheduler.placement import all_policies
    from simulations.kwok_scenario import OFFLINE_TWIN, ScenarioOptions, kwok_plot, kwok_table, run_scenario
    from simulations.placement_sim import simulate
    from simulations.workloads import ATTRIBUTION

    schedulers = tuple(s.strip() for s in args.schedulers.split(",") if s.strip())
    bad = [s for s in schedulers if s not in OFFLINE_TWIN]
    if bad or not schedulers:
        print(f"clique simulate --kwok: unknown schedulers {bad}; choose from {sorted(OFFLINE_TWIN)}", file=sys.stderr)
        return 2
    wait = getattr(args, "preferred_wait", None)
    problem = ("--gated needs a timed workload (a gated gang that waits never becomes Unschedulable, so a fill "
               "would not stop)" if args.gated and not timed else
               "--preferred-wait needs --gated and --speedup (it is written in trace seconds and the extender "
               "waits in real ones)" if wait and not (args.gated and args.speedup) else
               f"--preferred-wait must be >= 0 (got {wait:g})" if wait is not None and wait < 0 else "")
    if problem:
        print(f"clique simulate --kwok: {problem}", file=sys.stderr)
        return 2
    opts = ScenarioOptions(schedulers=schedulers, speedup=args.speedup,
                           window=args.window, after_failure=args.after_failure, gated=args.gated,
                           preferred_wait_s=(wait or 0.0) / (args.speedup or 1.0))
    total = sum(h.gpus for h in base.hosts.values())
    workload, cluster = labels(args)
    print(f"[kwok] {len(base.hosts)} hosts, {total} GPUs; {len(arrivals)} gangs from {args.workload} "
          f"({'timed, compressed' if timed else 'fill until the first rejection, file order'}); "
          f"schedulers {', '.join(schedulers)}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    progress = Progress()
    twins = {p.name: p for p in all_policies(seed=args.seed) if p.name in {OFFLINE_TWIN[s] for s in schedulers}}
    # timed: the KWOK run ends at the last arrival, so the offline twin stops there too
    until = max((a.time for a in arrivals), default=0.0) if timed else None
    offline = {name: simulate(p, base, arrivals, timed, lambda d, n, name=name: progress(f"offline {name}", d, n),
                              until=until) for name, p in twins.items()}
    results = run_scenario(base, arrivals, timed, opts, say=lambda m: print(m, file=sys.stderr, flush=True),
                           progress=progress)
    from simulations.placement_sim import with_common_share

    offline_summary = {k: v.summary() for k, v in offline.items()}
    print(kwok_table(results, offline_summary, timed))
    # one-domain share over the gangs every real scheduler placed (and every offline model): the same gangs each
    real_summary = with_common_share([r.summary() for r in results])
    offline_summary = dict(zip(offline_summary, with_common_share(list(offline_summary.values()))))
    args.output.mkdir(parents=True, exist_ok=True)
    png = kwok_plot(results, offline, timed, args.output / f"kwok-{workload}.png",
                    f"{workload} on {cluster}: API server vs offline")
    src = data_source(args)
    out = {"simulation": "kwok-placement", "workload": args.workload, "cluster": args.cluster, "nodes": args.nodes,
           "node_stride": args.node_stride, "hosts": len(base.hosts), "gpus": total,
           "mode": "timed" if timed else "fill", "window": args.window, "gated": args.gated,
           "preferred_wait_trace_s": wait or 0.0,
           "real": "API server rows are the real systems (kube-scheduler, Clique, Kueue v0.17.0 on the local "
                   "control plane); offline rows are models",
           "attribution": ATTRIBUTION.get(src, "") if src else "",
           "results": real_summary, "offline": list(offline_summary.values())}
    (args.output / f"kwok-{workload}.json").write_text(json.dumps(out, indent=1))
    print(f"[kwok] {time.monotonic() - t0:.0f}s; plot: {png}", file=sys.stderr)
    if args.json:
        print(json.dumps(out))
    return 0


def trace_is_azure(trace: str) -> bool:
    """Whether the replayed trace is the Azure one (the bundled `azure-code`, or a file named like it)."""
    from simulations.workloads import source_label

    return "azure" in source_label(trace).lower()


def cmd_replay(args: argparse.Namespace) -> int:
    from simulations.replay import (DYNAMO_VERSION, ModelConfig, compare, frontier, frontier_plot, frontier_verdict,
                                    replay_plots, replay_table)
    from simulations.workloads import ATTRIBUTION, data_file, load_requests

    try:
        requests = load_requests(data_file(args.trace), args.limit)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"clique replay: cannot read the trace: {exc}", file=sys.stderr)
        return 2
    if args.speedup != 1.0:
        from simulations.workloads import Request

        requests = [Request(r.time / args.speedup, r.prompt, r.output) for r in requests]
    cfg = ModelConfig(**{f: getattr(args, f) for f in ModelConfig().__dict__})
    print(f"[replay] {len(requests)} requests over {requests[-1].time / 60:.1f} min from {args.trace}",
          file=sys.stderr, flush=True)
    t0 = time.monotonic()
    results = compare(requests, cfg, Progress())
    if args.kwok:
        return cmd_replay_kwok(args, requests, cfg, results)
    print(replay_table(results))
    for r in results:
        if r.policy == "clique" and r.reasons:
            print(f"clique's last decision: {r.reasons[-1]}")
    t1 = time.monotonic()
    points = frontier(requests, cfg, results, sweep=not args.no_frontier)
    oracle_h = next(r.summary()["gpu_hours"] for r in results if r.policy == "oracle")
    verdict = frontier_verdict(points, oracle_h)
    print(f"frontier ({len(points)} points, {time.monotonic() - t1:.1f}s): {verdict}")
    args.output.mkdir(parents=True, exist_ok=True)
    png = replay_plots(results, requests, cfg, args.output / "replay.png")
    png2 = frontier_plot(points, results, args.output / "replay-frontier.png")
    out = {"simulation": "autoscaling", "trace": args.trace, "requests": len(requests), "config": cfg.__dict__,
           "attribution": ATTRIBUTION["azure"] if trace_is_azure(args.trace) else "",
           "results": [r.summary() for r in results], "frontier": [p.__dict__ for p in points], "verdict": verdict,
           "dynamo_planner_modelled": DYNAMO_VERSION, "wall_s": round(time.monotonic() - t0, 1)}
    (args.output / "replay.json").write_text(json.dumps(out, indent=1))
    print(f"[replay] {time.monotonic() - t0:.1f}s; plots: {png}, {png2}", file=sys.stderr)
    if args.json:
        print(json.dumps(out))
    return 0


def cmd_replay_kwok(args: argparse.Namespace, requests, cfg, offline) -> int:
    from simulations.kwok_replay import run_kwok_replay
    from simulations.replay import replay_table
    from simulations.workloads import ATTRIBUTION

    t0, bar = time.monotonic(), Progress()
    planner = getattr(args, "kwok_policy", "planner") == "planner"
    real = run_kwok_replay(requests, cfg, args.kwok_speedup, args.kwok_hosts, planner=planner, logs_to=args.output,
                           say=lambda m: print(m, file=sys.stderr, flush=True),
                           progress=lambda d, n: bar("kwok clique", d, n))
    twin = "clique" if planner else "clique-reactive"  # the offline run of what the daemon runs
    ours = next(r for r in offline if r.policy == twin)
    oracle = next(r for r in offline if r.policy == "oracle")
    rows = [ours] + ([real.twin] if real.twin is not None else []) + [real.replay, oracle]
    print(replay_table(rows))
    s = real.summary()
    print(f"API server: {s['scale_events']} scale patches, at most {s['max_pending_gangs']} gang(s) asked for and "
          f"not bound ({s['pending_gang_s']} gang-seconds, longest {s['longest_pending_s']} s of trace time), "
          f"{s['wall_s']:.0f}s at {s['speedup']:g}x")
    if "kept_time" in s:
        print(f"control loop: {s['evaluations']} evaluations every {s['evaluation_period_trace_s']} s of trace time "
              f"(asked: {cfg.interval_s:g}), {s['held_no_metrics']} held for a missing signal, "
              f"{s.get('failed_scrapes', 0)} of {s.get('scrapes', 0)} scrapes failed"
              + ("" if s["kept_time"] else f"; it did NOT keep time at {s['speedup']:g}x on this machine, so its "
                 "figures do not compare with the offline run's: use a lower --kwok-speedup"))
    args.output.mkdir(parents=True, exist_ok=True)
    out = {"simulation": "autoscaling-kwok", "trace": args.trace, "requests": len(requests), "config": cfg.__dict__,
           "attribution": ATTRIBUTION["azure"] if trace_is_azure(args.trace) else "",
           "results": [s, ours.summary(), oracle.summary()],
           "daemon_path_offline": real.twin.summary() if real.twin is not None else None,
           "cluster_timeline": real.cluster_timeline, "api_server_timeline": real.replay.timeline}
    (args.output / "replay-kwok.json").write_text(json.dumps(out, indent=1))
    print(f"[replay] {time.monotonic() - t0:.0f}s on the control plane", file=sys.stderr)
    if args.json:
        print(json.dumps(out))
    return 0


def _write_report(args: argparse.Namespace, out: dict, stem: str, t0: float, outputs: str) -> int:
    """Write a simulate run's JSON as `<output>/<stem>.json`, say where it went (and the data's attribution) on
    stderr, and print the JSON as the last line with --json."""
    (args.output / f"{stem}.json").write_text(json.dumps(out, indent=1))
    print(f"[simulate] {time.monotonic() - t0:.1f}s; {outputs}", file=sys.stderr)
    if out["attribution"]:
        print(f"[simulate] data: {out['attribution']}; {out['notes']}", file=sys.stderr)
    if args.json:
        print(json.dumps(out))
    return 0
