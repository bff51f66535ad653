"""CLI of the node agent: `clique agent`. Side effects: none until it runs."""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("agent", help="node agent: NVML topology discovery, GPU memory metrics (DaemonSet)")
    a.add_argument("--node-name", default=os.environ.get("NODE_NAME"),
                   help="the Node to publish to (default: $NODE_NAME from the downward API; without "
                        "either, metrics only)")
    a.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
    a.add_argument("--listen", default="0.0.0.0:9400", help="host:port for /metrics and /healthz")
    a.add_argument("--interval", type=float, default=10.0, help="seconds between readings")
    a.add_argument("--allow-no-gpu", action="store_true", help="without NVML, serve empty metrics instead of exiting 1")
    a.add_argument("--once", action="store_true", help="read once, print the metrics and the NVLink matrix, exit")
    a.add_argument("--fake-nvml", metavar="PROFILE",
                   help="TESTING ONLY: a fake NVML (nvswitch-8, nvl72-4[:uuid:clique], pcie-4, none) instead of the GPU")
    a.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace) -> int:
    import asyncio

    from topology.agent.main import run_agent

    if args.fake_nvml:
        from topology.agent.fake_nvml import fake_profile

        nvml = fake_profile(args.fake_nvml)
    else:
        from topology.agent.nvml_backend import RealNvml

        nvml = RealNvml()
    host, _, port = args.listen.rpartition(":")
    return asyncio.run(run_agent(nvml, args.node_name, args.kubeconfig, host or "0.0.0.0", int(port), args.interval,
                                 args.allow_no_gpu, args.once))
