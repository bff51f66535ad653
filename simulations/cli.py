"""CLI of the simulations component: `clique build`, `clique cluster up|status|down`. Side effects: as named.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

DEFAULT_SPEC = Path(__file__).parent / "controlplane" / "default-cluster.yaml"
OPTIONAL = ("lws", "kueue")  # keys of simulations.controlplane.versions.OPTIONAL_COMPONENTS (not imported: keep --help fast)


def register(sub: argparse._SubParsersAction) -> None:
    from simulations import demo, simulate_cli

    demo.register(sub)
    simulate_cli.register(sub)
    b = sub.add_parser("build", help="build (once, cached) the control-plane binaries from their Go modules")
    b.add_argument("--with", dest="with_", action="append", default=[], choices=OPTIONAL,
                   help="also build an optional component: lws = the LeaderWorkerSet controller, kueue = the Kueue manager (repeatable)")
    b.set_defaults(func=cmd_build)

    c = sub.add_parser("cluster", help="a local control plane with KWOK GPU nodes (up | status | down)")
    csub = c.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    up = csub.add_parser("up", help="start etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok")
    up.add_argument("--name", default="default", help="cluster name (several can run at once)")
    up.add_argument("--spec", type=Path, default=DEFAULT_SPEC,
                    help="cluster spec YAML of the fake GPU nodes (default: the embedded demo cluster)")
    up.add_argument("--no-nodes", action="store_true", help="create no KWOK nodes")
    up.add_argument("--feature-gates", default="", help="e.g. GangScheduling=true,TopologyPlacement=true")
    up.add_argument("--with", dest="with_", action="append", default=[], choices=OPTIONAL,
                    help="also run an optional component: lws = the real LeaderWorkerSet controller, its CRD and "
                         "webhooks (built once on first use)")
    up.set_defaults(func=cmd_up)
    st = csub.add_parser("status", help="processes, endpoint and nodes of a running cluster")
    st.add_argument("--name", default="default")
    st.add_argument("--json", action="store_true", help="print machine-readable status")
    st.set_defaults(func=cmd_status)
    down = csub.add_parser("down", help="stop every process of the cluster and remove its work directory")
    down.add_argument("--name", default="default")
    down.add_argument("--keep", action="store_true", help="keep the work directory (logs) after stopping")
    down.set_defaults(func=cmd_down)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    from simulations.bench_chaos import register_bench as chaos
    from simulations.bench_e2e import register_bench as e2e

    from simulations.bench_admission import register_bench as admission

    e2e(bench_sub)
    admission(bench_sub)
    chaos(bench_sub)
    from simulations.kueue_check import register_bench as kueue_models

    kueue_models(bench_sub)
    from simulations.kube_topology_check import register_bench as kube_topology_models

    kube_topology_models(bench_sub)


def _err(msg: str) -> int:
    print(f"clique: {msg}", file=sys.stderr)
    return 1


def cmd_build(args: argparse.Namespace) -> int:
    from simulations.controlplane.build import BuildError, ensure_binaries, ensure_optional

    try:
        paths = ensure_binaries().as_dict()
        for extra in dict.fromkeys(getattr(args, "with_", [])):
            paths = {**paths, **{name: str(path) for name, path in ensure_optional(extra).items()}}
    except BuildError as exc:
        return _err(str(exc))
    for name, path in paths.items():
        print(f"{name:24} {path}")
    return 0


def _parse_gates(text: str) -> dict[str, bool]:
    gates: dict[str, bool] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        if value.lower() not in ("true", "false"):
            raise ValueError(f"feature gate {item!r}: write Name=true or Name=false")
        gates[key] = value.lower() == "true"
    return gates


def cmd_up(args: argparse.Namespace) -> int:
    from simulations.controlplane import ControlPlane, ControlPlaneError, ControlPlaneOptions
    from simulations.controlplane.build import BuildError
    from simulations.controlplane.cluster import default_cluster_dir, load_state
    from simulations.controlplane.kwok_nodes import create_nodes
    from topology.spec import SpecError, load_cluster_spec

    workdir = default_cluster_dir(args.name)
    state = load_state(workdir)
    if state and any(_alive(p) for p in state["processes"].values()):
        return _err(f"cluster '{args.name}' is already up (kubeconfig {state['kubeconfig']}); "
                    f"run `clique cluster down --name {args.name}` first")
    try:
        spec = None if args.no_nodes else load_cluster_spec(args.spec)
        gates = _parse_gates(args.feature_gates)
    except (SpecError, ValueError) as exc:
        return _err(str(exc))
    opts = ControlPlaneOptions(workdir=workdir, detached=True, feature_gates=gates, lws="lws" in args.with_,
                               kueue="kueue" in args.with_)
    cp = ControlPlane(opts)
    started = time.monotonic()
    try:
        cp.start()
        if spec:
            api = cp.api_client()
            try:
                create_nodes(api, spec.hosts())
            finally:
                api.close()
    except (BuildError, ControlPlaneError, TimeoutError, RuntimeError) as exc:
        cp.stop()
        return _err(str(exc))
    print(f"cluster '{args.name}' is up in {time.monotonic() - started:.1f}s: {cp.server}")
    if spec:
        print(f"  {spec.host_count} KWOK nodes, {spec.gpu_count} GPUs ({args.spec})")
    if opts.lws:
        print(f"  LeaderWorkerSet controller: {cp.procs['lws-controller-manager'].argv[0]}")
    print(f"  logs:       {workdir / 'logs'}")
    print(f"  kubeconfig: {cp.kubeconfig}")
    print(f"\n  export KUBECONFIG={cp.kubeconfig}\n  clique cluster status --name {args.name}\n"
          f"  clique cluster down --name {args.name}")
    return 0


def _alive(info: dict) -> bool:
    from simulations.controlplane.processes import pid_matches

    return pid_matches(info["pid"], info["argv"][0])


def cmd_status(args: argparse.Namespace) -> int:
    from simulations.controlplane.cluster import default_cluster_dir, load_state

    workdir = default_cluster_dir(args.name)
    state = load_state(workdir)
    if state is None:
        if args.json:
            print(json.dumps({"name": args.name, "up": False}))
        else:
            print(f"cluster '{args.name}' is not up (no state in {workdir})")
        return 1
    procs = {n: {"pid": p["pid"], "alive": _alive(p)} for n, p in state["processes"].items()}
    nodes = _node_summary(state["kubeconfig"]) if all(p["alive"] for p in procs.values()) else None
    if args.json:
        print(json.dumps({"name": args.name, "up": all(p["alive"] for p in procs.values()), "server": state["server"],
                          "kubeconfig": state["kubeconfig"], "processes": procs, "nodes": nodes}))
        return 0 if nodes is not None else 1
    print(f"cluster '{args.name}': {state['server']}  (Kubernetes {state['version']})")
    print(f"kubeconfig: {state['kubeconfig']}")
    for name, p in procs.items():
        print(f"  {name:26} pid {p['pid']:<8} {'running' if p['alive'] else 'NOT RUNNING'}")
    if nodes is None:
        print("some components are not running; see logs in", Path(state["workdir"]) / "logs")
        return 1
    print(f"nodes: {nodes['nodes']} ({nodes['ready']} Ready), GPUs: {nodes['gpus']}, pods: {nodes['pods']} "
          f"({nodes['running']} Running)")
    for label, counts in nodes["domains"].items():
        print(f"  {label}: " + ", ".join(f"{v}={n}" for v, n in sorted(counts.items())))
    return 0


TOPOLOGY_LABELS = ("topology.kubernetes.io/zone", "clique.dev/spine", "clique.dev/leaf", "nvidia.com/gpu.clique")


def _node_summary(kubeconfig: str) -> dict:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        core = client.CoreV1Api(api)
        nodes = core.list_node().items
        pods = core.list_pod_for_all_namespaces().items
    finally:
        api.close()
    domains: dict[str, Counter] = {k: Counter() for k in TOPOLOGY_LABELS}
    for n in nodes:
        for k in TOPOLOGY_LABELS:
            if k in (n.metadata.labels or {}):
                domains[k][n.metadata.labels[k]] += 1
    return {
        "nodes": len(nodes),
        "ready": sum(any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or [])) for n in nodes),
        "gpus": sum(int((n.status.allocatable or {}).get("nvidia.com/gpu", 0)) for n in nodes),
        "pods": len(pods), "running": sum(p.status.phase == "Running" for p in pods),
        "domains": {k: dict(v) for k, v in domains.items() if v},
    }


def cmd_down(args: argparse.Namespace) -> int:
    import shutil

    from simulations.controlplane.cluster import default_cluster_dir, stop_detached

    workdir = default_cluster_dir(args.name)
    if not (workdir / "state.json").exists():
        print(f"cluster '{args.name}' is not up")
        return 0
    stopped = stop_detached(workdir)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"cluster '{args.name}' is down (stopped: {', '.join(stopped) or 'nothing was running'})")
    return 0
