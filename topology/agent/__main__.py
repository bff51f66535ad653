"""`python -m topology.agent`: the node agent (same as `clique agent`)."""

import sys

from clique.cli import main
from topology.agent import cli

raise SystemExit(main(["agent", *sys.argv[1:]], modules=[cli], prog="python -m topology.agent"))
