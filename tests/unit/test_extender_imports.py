"""The extender process imports only what its serving path uses (its RSS is a benchmark figure, `clique bench
extender --memory`): networkx is loaded by Topology.graph only, and `clique scheduler extender` parses with the
scheduler's commands, never importing the other components' CLI modules; CP-SAT models are built through
scheduler/placement/cpsat.py, so OR-Tools' cp_model and the pandas it imports are never loaded."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import contextlib, io, json, sys
from clique.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    main(["scheduler", "extender", "--help"])
import scheduler.extender.main
print(json.dumps({"help": "--kubeconfig" in out.getvalue(),
                  "loaded": sorted(m for m in ("networkx", "simulations.cli", "simulations.replay",
                                               "autoscaler.cli", "pandas", "ortools.sat.python.cp_model")
                                 if m in sys.modules),
                  "cp_sat": "scheduler.placement.exact" in sys.modules}))
"""


def test_the_extender_command_loads_neither_networkx_pandas_nor_the_other_components_clis():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"help": True, "loaded": [], "cp_sat": True}


def test_the_topology_graph_is_still_built_on_demand():
    from topology.model import HostInfo, Topology
    from topology.levels import preset

    topo = Topology([HostInfo("h0", 8, {"clique.dev/leaf": "l0"}), HostInfo("h1", 8, {"clique.dev/leaf": "l0"})],
                    preset("generic"))
    assert topo.graph.nodes["h0"]["kind"] == "host" and topo.graph.has_node(("h1", 7))
