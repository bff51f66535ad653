"""Local Kubernetes control plane for tests and demos: build (cached), start, KWOK nodes, stop."""

from simulations.controlplane.build import BuildError, Binaries, ensure_binaries
from simulations.controlplane.cluster import ControlPlane, ControlPlaneOptions
from simulations.controlplane.processes import ControlPlaneError

__all__ = ["BuildError", "Binaries", "ensure_binaries", "ControlPlane", "ControlPlaneOptions", "ControlPlaneError"]
