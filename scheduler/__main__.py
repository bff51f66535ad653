"""`python -m scheduler`: the scheduler component's commands (same as under `clique`)."""

from clique.cli import main
from scheduler import cli

raise SystemExit(main(modules=[cli], prog="python -m scheduler"))
