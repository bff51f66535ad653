"""`python -m clique` is the `clique` console script."""

from clique.cli import main

raise SystemExit(main())
