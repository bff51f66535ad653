"""Shared pytest fixtures. The real control plane is a session-scoped fixture: built once (cached), started
once per test session, stopped at the end. It never skips: if it cannot start, its tests fail and say why."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def control_plane():
    from simulations.controlplane import ControlPlane

    with ControlPlane() as cp:
        yield cp


@pytest.fixture
def k8s(control_plane):
    """A kubernetes ApiClient as cluster-admin on the session control plane."""
    api = control_plane.api_client()
    yield api
    api.close()
