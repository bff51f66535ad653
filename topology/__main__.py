"""`python -m topology`: the topology component's commands (same as under `clique`)."""

from clique.cli import main
from topology import cli

raise SystemExit(main(modules=[cli], prog="python -m topology"))
