"""`python -m simulations`: the simulations component's commands (same as under `clique`)."""

from clique.cli import main
from simulations import cli

raise SystemExit(main(modules=[cli], prog="python -m simulations"))
