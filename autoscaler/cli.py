"""CLI of the autoscaler component: `clique autoscaler run | status | validate`. Side effects: none until a
subcommand runs."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("autoscaler", help="queue- and GPU-memory-driven autoscaling of whole gangs")
    asub = a.add_subparsers(dest="autoscaler_command", metavar="ACTION", required=True)

    r = asub.add_parser("run", help="run the autoscaler daemon")
    r.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
    r.add_argument("--prometheus-url", help="Prometheus base URL, e.g. http://prometheus.monitoring:9090")
    r.add_argument("--namespace", help="only policies in this namespace (default: all namespaces)")
    how = r.add_mutually_exclusive_group()
    how.add_argument("--preset", default="generic-nvlink", help="topology level preset for the capacity what-if")
    how.add_argument("--levels", help="comma-separated node label keys, outermost first (overrides --preset)")
    r.add_argument("--no-capacity-check", action="store_true", help="scale without asking the placement engine")
    r.add_argument("--dry-run", action="store_true", help="decide and report, never patch")
    r.add_argument("--listen", default="0.0.0.0:9091", help="host:port for /metrics, /healthz, /readyz")
    r.add_argument("--no-leader-elect", action="store_true", help="run without the Lease (single replica only)")
    r.add_argument("--lease-namespace", default="clique-system")
    r.add_argument("--tick", type=float, default=0.5, help="seconds between checks for due policies")
    r.set_defaults(func=cmd_run)

    s = asub.add_parser("status", help="policies with metric values, current and desired replicas, and why")
    s.add_argument("--kubeconfig", help="kubeconfig path (default: ~/.kube/config or in-cluster)")
    s.add_argument("--namespace", help="only this namespace")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=cmd_status)

    v = asub.add_parser("validate", help="check policy files (YAML, or ConfigMap manifests) without a cluster")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=cmd_validate)


def _levels(args: argparse.Namespace):
    from topology.levels import levels_from_labels, preset

    if args.levels:
        return levels_from_labels([x.strip() for x in args.levels.split(",") if x.strip()])
    return preset(args.preset)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from autoscaler.main import DaemonOptions, run

    try:
        levels = _levels(args)
        host, _, port = args.listen.rpartition(":")
        listen = (host or "0.0.0.0", int(port))
    except ValueError as exc:
        print(f"clique autoscaler: {exc}", file=sys.stderr)
        return 2
    if not args.prometheus_url:
        print("clique autoscaler: no --prometheus-url; only Scrape metric sources will have values", file=sys.stderr)
    from clique.kubeclient import KubeConfigError

    try:
        asyncio.run(run(DaemonOptions(args.kubeconfig, args.prometheus_url, args.namespace, levels,
                                      not args.no_capacity_check, args.dry_run, args.tick, listen,
                                      not args.no_leader_elect, args.lease_namespace)))
    except KubeConfigError as exc:
        print(f"clique autoscaler run: {exc}", file=sys.stderr)
        return 2
    return 0


def status_rows(configmaps: list[dict]) -> list[dict]:
    """One row per policy ConfigMap from its status annotation (pure; tested without a cluster)."""
    from autoscaler.reconciler import STATUS_ANNOTATION

    rows = []
    for cm in configmaps:
        md = cm.get("metadata") or {}
        raw = (md.get("annotations") or {}).get(STATUS_ANNOTATION)
        try:
            st = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            st = {"error": "unreadable status annotation"}
        metrics = ", ".join(f"{m['name']}={'?' if m.get('value') is None else format(m['value'], '.3g')}"
                            f"/{m.get('target'):g}" for m in st.get("metrics") or [])
        rows.append({"policy": f"{md.get('namespace')}/{md.get('name')}", "target": st.get("target", "?"),
                     "current": st.get("currentReplicas"), "desired": st.get("desiredReplicas"),
                     "metrics": metrics or "-", "why": st.get("error") or st.get("reason") or "not evaluated yet",
                     "message": st.get("message", ""), "valid": st.get("valid", True),
                     "lastEvaluation": st.get("lastEvaluation")})
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    from kubernetes import client, config

    from autoscaler.policy import POLICY_LABEL

    try:
        if args.kubeconfig:
            config.load_kube_config(args.kubeconfig)
        else:
            try:
                config.load_kube_config()
            except config.ConfigException:
                config.load_incluster_config()
    except config.ConfigException as exc:
        print(f"clique autoscaler status: no cluster configuration ({exc}); pass --kubeconfig", file=sys.stderr)
        return 2
    core = client.CoreV1Api()
    sel = f"{POLICY_LABEL}=true"
    items = (core.list_namespaced_config_map(args.namespace, label_selector=sel) if args.namespace
             else core.list_config_map_for_all_namespaces(label_selector=sel)).items
    rows = status_rows([client.ApiClient().sanitize_for_serialization(cm) for cm in items])
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no policies (ConfigMaps labelled {sel})")
        return 0
    cols = ["policy", "target", "current", "desired", "metrics", "why"]
    table = [[str(r[c]) if r[c] is not None else "-" for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)))
    for t in table:
        print("  ".join(x.ljust(w) for x, w in zip(t, widths)))
    for r in rows:
        if r["message"]:
            print(f"  {r['policy']}: {r['message']}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from autoscaler.policy import PolicyError, policies_in_file

    bad = 0
    for path in args.files:
        for p in policies_in_file(path):
            if isinstance(p, PolicyError):
                bad += 1
                print(f"{p.where}: invalid: {'; '.join(p.problems)}")
            else:
                print(f"{path}: {p.namespace}/{p.name}: ok ({p.target.describe()}, {p.min_replicas}..{p.max_replicas} "
                      f"replicas of {p.gang.pods} pod(s), {len(p.metrics)} metric(s))")
    return 1 if bad else 0


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    from autoscaler.bench import register_bench as autoscaler_bench

    autoscaler_bench(bench_sub)
