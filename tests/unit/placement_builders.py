"""Builders for placement tests: a small tree drawn in ASCII, hosts with given usage."""

from __future__ import annotations

from scheduler.placement.types import Gang, HostState, Role, Snapshot
from topology.levels import levels_from_labels
from topology.model import HostInfo, Topology

# The test cluster, 16 hosts x 8 GPUs:
#
#                         zone=z0
#              spine=s0                      spine=s1
#        leaf=l0        leaf=l1        leaf=l2        leaf=l3
#    h00 h01 h02 h03  h04 h05 h06 h07  h08 h09 h10 h11  h12 h13 h14 h15
LEVELS = levels_from_labels(["topology.kubernetes.io/zone", "clique.dev/spine", "clique.dev/leaf"],
                            ["zone", "spine", "leaf"])


def tree_hosts(n: int = 16, per_leaf: int = 4, per_spine: int = 8, gpus: int = 8) -> list[HostInfo]:
    return [HostInfo(f"h{i:02d}", gpus, {"topology.kubernetes.io/zone": "z0", "clique.dev/spine": f"s{i // per_spine}",
                                          "clique.dev/leaf": f"l{i // per_leaf}"}) for i in range(n)]


def snapshot(used: dict[str, int] | None = None, n: int = 16, gpus: int = 8, unschedulable: set[str] = frozenset(),
             **shape) -> Snapshot:
    hosts = tree_hosts(n, gpus=gpus, **shape)
    topo = Topology(hosts, LEVELS)
    used = used or {}
    return Snapshot(topo, {h.name: HostState(h.name, gpus=h.gpus, gpus_used=used.get(h.name, 0),
                                             pods_used=1 if used.get(h.name) else 0,
                                             schedulable=h.name not in unschedulable) for h in hosts})


def gang(pods: int, gpus: int, required: str | None = None, leader: bool = False, name: str = "g", **kw) -> Gang:
    roles = (Role("leader", 1, gpus, one_per_host=True), Role("worker", pods - 1, gpus)) if leader else (
        Role("worker", pods, gpus),)
    return Gang(name, roles, required_level=required, **kw)
