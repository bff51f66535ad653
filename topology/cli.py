"""CLI of the topology component: `clique topology show`. Side effects: reads files, prints, writes a PNG."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from topology.fabric import FabricError, load_fabric
from topology.levels import PRESETS, levels_from_labels, preset
from topology.model import topology_from_spec
from topology.render import render_png, render_text
from topology.spec import SpecError, load_cluster_spec


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("topology", help="inspect cluster topologies")
    tsub = t.add_subparsers(dest="topology_command", metavar="ACTION", required=True)
    show = tsub.add_parser("show", help="print (and draw) the topology tree of a cluster spec YAML")
    show.add_argument("spec", type=Path, help="cluster spec YAML (hosts and their labels)")
    how = show.add_mutually_exclusive_group()
    how.add_argument("--preset", choices=sorted(PRESETS), help="read levels from these node labels")
    how.add_argument("--levels", help="comma-separated node label keys, outermost first")
    how.add_argument("--fabric", type=Path, help="fabric file (YAML switch tree) giving the levels instead")
    show.add_argument("--png", type=Path, help="also draw the tree into this PNG file")
    show.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    try:
        spec = load_cluster_spec(args.spec)
        levels = None
        if args.preset:
            levels = preset(args.preset)
        elif args.levels:
            levels = levels_from_labels([x.strip() for x in args.levels.split(",") if x.strip()])
        elif args.fabric:
            fabric = load_fabric(args.fabric)
            known = {h.name for h in spec.hosts()}
            missing = sorted(known - set(fabric.host_labels))
            if missing:
                print(f"clique: warning: {len(missing)} host(s) are not in the fabric file (e.g. {missing[0]}); "
                      "they stand alone at every level", file=sys.stderr)
            pools = tuple(replace(p, labels={**p.labels}) for p in spec.pools)
            spec = replace(spec, pools=pools, levels=())
            hosts = [replace(h, labels={**h.labels, **fabric.host_labels.get(h.name, {})}) for h in spec.hosts()]
            from topology.model import Topology

            topo = Topology(hosts, fabric.levels)
            return _show(topo, args)
    except (SpecError, FabricError, ValueError) as exc:
        print(f"clique: {exc}", file=sys.stderr)
        return 1
    return _show(topology_from_spec(spec, levels), args)


def _show(topo, args: argparse.Namespace) -> int:
    print(render_text(topo))
    for problem in topo.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.png:
        print(f"wrote {render_png(topo, args.png)}")
    return 0
