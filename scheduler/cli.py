"""CLI of the scheduler component: `clique bench placement`. Side effects: none until a subcommand runs.

`scheduler extender` arrives with the extender service.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """No scheduler service subcommands yet: the extender is still an open issue."""


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    from scheduler.placement.bench import register_bench as placement

    placement(bench_sub)
