"""CLI of the autoscaler component. Side effects: none until a subcommand runs.

`autoscaler run` and `autoscaler status` arrive with the autoscaler daemon.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """No autoscaler subcommands yet: the daemon is still an open issue."""
