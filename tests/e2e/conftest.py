"""Fixtures shared by the e2e modules: Clique's scheduler (extender + second kube-scheduler) per module."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest

from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender


@contextlib.contextmanager
def clique_scheduler_on(control_plane, log, env: dict[str, str] | None = None) -> Iterator[dict]:
    """Our extender process (extra environment `env`) plus a second kube-scheduler whose profile
    `clique-scheduler` calls it. The handle has the log, the process, its port and `restart(env=...)`."""
    handle: dict = {"log": log}

    def start(env: dict[str, str] | None = env) -> None:
        handle["proc"], handle["port"] = start_extender(control_plane.kubeconfig, log, preset="gb200-nvl72",
                                                        bind_timeout_s=8, port=handle.get("port"), env=env)

    handle["restart"] = start
    start()
    try:
        control_plane.start_scheduler(clique_scheduler_config(handle["port"]), name="clique-scheduler")
        yield handle
    finally:
        control_plane.stop_component("clique-scheduler")
        stop_extender(handle["proc"])


@pytest.fixture(scope="module")
def clique_scheduler(control_plane, tmp_path_factory):
    with clique_scheduler_on(control_plane, tmp_path_factory.mktemp("extender") / "extender.log") as handle:
        yield handle
