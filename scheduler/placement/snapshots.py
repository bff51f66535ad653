"""Snapshots from cluster specs and generated loads (for tests, benchmarks and the simulator). Pure."""

from __future__ import annotations

import random
from typing import Mapping, Sequence

from scheduler.placement.types import HostState, Snapshot
from topology.levels import Level
from topology.model import topology_from_spec
from topology.spec import ClusterSpec


def snapshot_from_spec(spec: ClusterSpec, used_gpus: Mapping[str, int] | None = None,
                       levels: Sequence[Level] | None = None) -> Snapshot:
    """All hosts of the spec, with `used_gpus` already taken; levels default to the spec's own."""
    hosts = spec.hosts()
    topo = topology_from_spec(spec, levels)
    used = used_gpus or {}
    states = {}
    for h in hosts:
        u = used.get(h.name, 0)
        states[h.name] = HostState(h.name, gpus=h.gpus, cpu_millis=h.cpu_millis, memory=h.memory_bytes, pods=h.pods,
                                   gpus_used=u, pods_used=1 if u else 0)
    return Snapshot(topo, states)


def random_load(spec: ClusterSpec, seed: int, busy_share: float = 0.5) -> dict[str, int]:
    """Seeded random existing load: `busy_share` of hosts get 1..gpus GPUs used, the rest are untouched."""
    rng = random.Random(seed)
    used = {}
    for h in spec.hosts():
        if rng.random() < busy_share:
            used[h.name] = rng.randint(1, h.gpus)
    return used
