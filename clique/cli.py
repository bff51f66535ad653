"""The `clique` console script: one parser, each component contributes its subcommands. Side effects: none
until a subcommand runs.

Each component package has a `cli.register(subparsers)`; `python -m <package>` builds a parser with only
that package's commands, `clique` builds one with all of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType
from typing import Sequence

from clique import __version__


def _component_clis() -> list[ModuleType]:
    from autoscaler import cli as autoscaler_cli
    from scheduler import cli as scheduler_cli
    from simulations import cli as simulations_cli
    from topology import cli as topology_cli
    from topology.agent import cli as agent_cli

    return [topology_cli, scheduler_cli, autoscaler_cli, simulations_cli, agent_cli]


def build_parser(modules: Sequence[ModuleType] | None = None, prog: str = "clique") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Topology-aware gang scheduling and autoscaling for multi-node GPU inference.")
    parser.add_argument("--version", action="version", version=f"clique {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = list(modules if modules is not None else _component_clis())
    for module in mods:
        module.register(sub)
    # `bench` gathers every component's benchmarks (JSON on the last line of each).
    benches = [m for m in mods if hasattr(m, "register_bench")]
    if benches:
        bench = sub.add_parser("bench", help="benchmarks (JSON result on the last line)")
        bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
        for module in benches:
            module.register_bench(bench_sub)
    return parser


def main(argv: Sequence[str] | None = None, modules: Sequence[ModuleType] | None = None, prog: str = "clique") -> int:
    if modules is None and list(sys.argv[1:] if argv is None else argv)[:2] == ["scheduler", "extender"]:
        # the serving path parses with the scheduler's commands only: the others' modules (simulations' among
        # them) would stay imported for the process's life, 12 MiB of the extender's RSS
        from scheduler import cli as scheduler_cli

        modules = [scheduler_cli]
    parser = build_parser(modules, prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":%(message)r}',
                        stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
