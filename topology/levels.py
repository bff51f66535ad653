"""Topology levels: which node label names the domain of each level, and what spanning domains costs. Pure.

Levels are listed outermost first (zone, spine, leaf, NVLink domain). The idea is Kueue's and KAI-Scheduler's
Topology CRD levels. A level's `cost` is what a gang pays for each extra domain it uses at that level, so
costs fall from the outside in: spreading over two zones is far worse than over two leaves. Hosts are the
implicit innermost level, cost HOST_COST.
"""

from __future__ import annotations

from dataclasses import dataclass

HOST_COST = 1


@dataclass(frozen=True)
class Level:
    name: str  # short name used in reasons and reports, e.g. "leaf"
    label: str  # node label key whose value names the domain
    cost: int  # cost of each extra domain a gang uses at this level

    def __post_init__(self) -> None:
        if self.cost < 0:
            raise ValueError(f"level {self.name}: cost must be >= 0")


def _chain(*pairs: tuple[str, str]) -> tuple[Level, ...]:
    """Levels outermost first, with costs 10^k falling to 10 at the innermost listed level."""
    n = len(pairs)
    return tuple(Level(name, label, 10 ** (n - i)) for i, (name, label) in enumerate(pairs))


PRESETS: dict[str, tuple[Level, ...]] = {
    # GB200 NVL72 / GB300: GPU Feature Discovery labels each node with its NVLink domain ("clique").
    "gb200-nvl72": _chain(("zone", "topology.kubernetes.io/zone"), ("nvlink", "nvidia.com/gpu.clique")),
    # AWS EC2 instance topology: layer 1 is the farthest network node, layer 3 the closest.
    "aws": _chain(("layer1", "topology.k8s.aws/network-node-layer-1"), ("layer2", "topology.k8s.aws/network-node-layer-2"),
                  ("layer3", "topology.k8s.aws/network-node-layer-3")),
    # GKE compact placement / topology-aware labels.
    "gke": _chain(("block", "cloud.google.com/gce-topology-block"), ("subblock", "cloud.google.com/gce-topology-subblock"),
                  ("host", "cloud.google.com/gce-topology-host")),
    # On-prem leaf/spine fabric, the labels our fake clusters and fabric files use.
    "generic": _chain(("zone", "topology.kubernetes.io/zone"), ("spine", "clique.dev/spine"), ("leaf", "clique.dev/leaf")),
    # Generic tree plus NVLink domains (mixed H100 SuperPOD + NVL72 clusters).
    "generic-nvlink": _chain(("zone", "topology.kubernetes.io/zone"), ("spine", "clique.dev/spine"),
                             ("leaf", "clique.dev/leaf"), ("nvlink", "nvidia.com/gpu.clique")),
}


def preset(name: str) -> tuple[Level, ...]:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown topology preset {name!r}; choose one of {sorted(PRESETS)} "
                         "or list the level label keys yourself") from None


def levels_from_labels(labels: list[str], names: list[str] | None = None) -> tuple[Level, ...]:
    """Levels from an ordered list of label keys (outermost first); names default to the key's last part."""
    names = names or [lbl.rsplit("/", 1)[-1] for lbl in labels]
    return _chain(*zip(names, labels))
