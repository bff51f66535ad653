"""CLI of the topology component: `clique topology show SPEC`. Side effects: reads files, prints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from topology.render import render_tree
from topology.spec import SpecError, load_cluster_spec


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("topology", help="inspect cluster topologies")
    tsub = t.add_subparsers(dest="topology_command", metavar="ACTION", required=True)
    show = tsub.add_parser("show", help="print the host tree of a cluster spec YAML")
    show.add_argument("spec", type=Path)
    show.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    try:
        spec = load_cluster_spec(args.spec)
    except SpecError as exc:
        print(f"clique: {exc}", file=sys.stderr)
        return 1
    print(render_tree(spec.hosts(), [lv.label for lv in spec.levels]))
    return 0
