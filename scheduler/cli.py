"""CLI of the scheduler component. Side effects: none until a subcommand runs.

Subcommands arrive with their features: the placement benchmark with the placement engine, `scheduler
extender` with the extender service.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """No scheduler subcommands yet: the placement engine and extender are still open issues."""
