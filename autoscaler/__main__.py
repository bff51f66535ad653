"""`python -m autoscaler`: the autoscaler component's commands (same as under `clique`)."""

from clique.cli import main
from autoscaler import cli

raise SystemExit(main(modules=[cli], prog="python -m autoscaler"))
