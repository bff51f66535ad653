"""CLI of the scheduler component: `clique scheduler extender`, `clique bench placement`. Side effects: none
until a subcommand runs."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("scheduler", help="the scheduler extender service")
    ssub = s.add_subparsers(dest="scheduler_command", metavar="ACTION", required=True)
    e = ssub.add_parser("extender", help="serve the kube-scheduler extender (filter / prioritize / bind)")
    e.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
    e.add_argument("--listen", default="127.0.0.1:8888", help="host:port to serve on")
    how = e.add_mutually_exclusive_group()
    how.add_argument("--preset", default="generic-nvlink", help="topology level preset (see `clique topology show`)")
    how.add_argument("--levels", help="comma-separated node label keys, outermost first (overrides --preset)")
    e.add_argument("--bind-timeout", type=float, default=10.0,
                   help="seconds a gang member waits in bind for the others (keep well below httpTimeout)")
    e.add_argument("--reservation-timeout", type=float, default=60.0,
                   help="seconds a planned gang's places are held for members not created or not at bind yet "
                        "(e.g. LeaderWorkerSet workers created only once the leader is placed); longer than "
                        "--bind-timeout")
    e.add_argument("--scheduler-name", default="clique-scheduler")
    e.add_argument("--metrics-listen", help="host:port serving only /metrics and health (e.g. 0.0.0.0:9090)")
    e.add_argument("--webhook-listen", help="host:port serving the mutating admission webhook (POST /mutate) over "
                                            "TLS, which routes gang pods to --scheduler-name; needs --webhook-cert-dir")
    e.add_argument("--webhook-cert-dir", help="directory with tls.crt and tls.key for --webhook-listen (a mounted "
                                              "kubernetes.io/tls Secret; renewed files are picked up)")
    e.add_argument("--gate-gangs", choices=("on", "off"), default="on",
                   help="the webhook also adds the scheduling gate clique.dev/placement to gang pods (not LWS); the "
                        "extender plans each gang once complete and releases its members pinned to the planned "
                        "domain (scheduler/extender/pinning.py). Pods that carry the gate from their template are "
                        "released the same way whatever this says")
    e.add_argument("--pin-at-creation", choices=("on", "off"), default="off",
                   help="with --gate-gangs on, the webhook plans a gang at its first member's creation and creates "
                        "every member already pinned to the planned domain, without the gate (one write per pod "
                        "fewer); gangs that one pod cannot describe (Grove, Volcano, PodGroups, roles, generated "
                        "names) are gated as before (scheduler/extender/pinning.py, `created`). Replicas do not share "
                        "reservations: behind one webhook Service, run them with --follow-lease, so only the "
                        "acting one pins and the others gate")
    e.add_argument("--follow-lease", metavar="NAMESPACE/NAME",
                   help="the Lease of this pod's kube-scheduler (its leaderElection resourceNamespace/resourceName): "
                        "the extender releases gated gangs, recovers and restarts gangs and pins at creation only "
                        "while that kube-scheduler holds it, so replicas do not act side by side (at most one poll, "
                        "2 s, around a handover; shipped: clique-system/clique-scheduler). Unset: it always acts "
                        "(one replica)")
    e.add_argument("--identity", help="with --follow-lease: the holder to match, as kube-scheduler writes it, "
                                      "<IDENTITY>_<uuid> (default: this host's name, which a sidecar shares)")
    e.set_defaults(func=cmd_extender)


def cmd_extender(args: argparse.Namespace) -> int:
    import asyncio

    from scheduler.extender.main import serve
    from topology.levels import levels_from_labels, preset

    try:
        levels = (levels_from_labels([x.strip() for x in args.levels.split(",") if x.strip()]) if args.levels
                  else preset(args.preset))
        host, _, port = args.listen.rpartition(":")
        port_n = int(port)
        metrics = None
        if args.metrics_listen:
            mh, _, mp = args.metrics_listen.rpartition(":")
            metrics = (mh or "0.0.0.0", int(mp))
        follow = None
        if args.follow_lease:
            ns, _, name = args.follow_lease.partition("/")
            if not ns or not name or "/" in name:
                raise ValueError(f"--follow-lease {args.follow_lease!r}: expected NAMESPACE/NAME, e.g. "
                                 "clique-system/clique-scheduler")
            follow = (ns, name)
        elif args.identity:
            raise ValueError("--identity is used only with --follow-lease")
        webhook = None
        if bool(args.webhook_listen) != bool(args.webhook_cert_dir):
            raise ValueError("--webhook-listen and --webhook-cert-dir go together")
        if args.webhook_listen:
            wh, _, wp = args.webhook_listen.rpartition(":")
            webhook = (wh or "0.0.0.0", int(wp), args.webhook_cert_dir)
    except ValueError as exc:
        print(f"clique: {exc}", file=sys.stderr)
        return 2
    from clique.kubeclient import KubeConfigError

    try:
        asyncio.run(serve(args.kubeconfig, host or "127.0.0.1", port_n, levels, args.bind_timeout,
                          args.scheduler_name, metrics, max(args.reservation_timeout, args.bind_timeout), webhook,
                          gate=args.gate_gangs == "on", pin_at_creation=args.pin_at_creation == "on",
                          follow_lease=follow, identity=args.identity))
    except KubeConfigError as exc:
        print(f"clique scheduler extender: {exc}", file=sys.stderr)
        return 2
    return 0


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    from scheduler.extender.bench import register_bench as extender
    from scheduler.placement.bench import register_bench as placement
    from scheduler.placement.preemption_bench import register_bench as preemption

    placement(bench_sub)
    extender(bench_sub)
    preemption(bench_sub)
