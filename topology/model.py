"""The cluster topology as a networkx tree: cluster -> domains level by level -> hosts -> GPUs. Pure.

Built once per node-set change and shared read-only (as Kueue builds its TAS tree); what changes every
scheduling cycle — free GPUs per host — is passed in separately, never stored here.

Domains are keyed by their *path* of label values from the top, so two leaves both labelled "leaf-0" under
different spines stay distinct. A host that lacks a level's label shares that level's domain with the hosts
of its nearest labelled inner domain ("~value": GB200 racks have NVLink domains but no leaf switch); with no
inner label either it is alone in a domain of its own ("<host>"): nothing is assumed about its place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Protocol, Sequence

import numpy as np

from topology.levels import HOST_COST, Level
from topology.nvlink import NVLINK_MATRIX_ANNOTATION, MatrixError, parse_nvlink_matrix

if TYPE_CHECKING:  # networkx is imported by the graph property only: the extender never renders (12 MiB of RSS)
    import networkx as nx

ROOT = "cluster"
DomainKey = tuple[str, ...]  # label values from the outermost level down to this one


class HostLike(Protocol):
    name: str
    gpus: int
    labels: Mapping[str, str]


@dataclass(frozen=True)
class HostInfo:
    """What the topology needs of a host (a node): name, GPU count, labels, annotations."""

    name: str
    gpus: int
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)


class Topology:
    """Immutable topology of a set of hosts under ordered levels."""

    def __init__(self, hosts: Iterable[HostLike], levels: Sequence[Level]) -> None:
        self.levels: tuple[Level, ...] = tuple(levels)
        self._graph: nx.DiGraph | None = None  # built on first use (the graph property)
        self.host_paths: dict[str, DomainKey] = {}  # host -> domain key at the innermost level
        self.host_keys: dict[str, tuple[DomainKey, ...]] = {}  # host -> its domain key at every level
        self.host_gpus: dict[str, int] = {}
        self.unlabelled: dict[str, list[str]] = {}  # level name -> hosts without its label
        self.gpu_islands: dict[str, list[list[int]]] = {}  # host -> NVLink-connected GPU groups (agent data)
        self.problems: list[str] = []  # bad per-host input that was ignored, for logs and Events
        self._members: list[dict[DomainKey, list[str]]] = [{} for _ in self.levels]
        self._hosts = sorted(hosts, key=lambda h: h.name)
        self._graph_keys: list[tuple[DomainKey, ...]] = []  # each host's domain keys, in _hosts order
        for host in self._hosts:
            self._add_host(host)
        self._index_rows()

    @property
    def graph(self) -> nx.DiGraph:
        """The networkx tree cluster -> domains -> hosts -> GPUs (with NVLink edges), built on first use: only
        rendering reads it, and at 5,000 8-GPU hosts it would be 90 MB of the extender's memory."""
        if self._graph is None:
            import networkx as nx

            g = nx.DiGraph()
            g.add_node(ROOT, kind="cluster", level=-1)
            for host, keys in zip(self._hosts, self._graph_keys):
                parent = ROOT
                for i, key in enumerate(keys):
                    node = ("domain", i, key)
                    if node not in g:
                        g.add_node(node, kind="domain", level=i, level_name=self.levels[i].name, value=key[-1])
                        g.add_edge(parent, node)
                    parent = node
                g.add_node(host.name, kind="host", level=len(self.levels), gpus=host.gpus)
                g.add_edge(parent, host.name)
                for gpu in range(host.gpus):
                    g.add_node((host.name, gpu), kind="gpu")
                    g.add_edge(host.name, (host.name, gpu))
                matrix = (getattr(host, "annotations", None) or {}).get(NVLINK_MATRIX_ANNOTATION)
                try:
                    links = parse_nvlink_matrix(matrix) if matrix else None
                except MatrixError:  # reported in problems by _add_host
                    links = None
                if links is not None and links.size == host.gpus:
                    for a, b, n in links.pairs():
                        g.add_edge((host.name, a), (host.name, b), nvlinks=n)
            self._graph = g
        return self._graph

    def _index_rows(self) -> None:
        """Row numbers for hosts and integer domain codes per level: the engine's vectorised phase 1 works on
        arrays in this row order."""
        self.host_names: list[str] = list(self.host_paths)  # sorted: hosts were added in name order
        self.host_row: dict[str, int] = {h: i for i, h in enumerate(self.host_names)}
        self.level_domains: list[list[DomainKey]] = []
        self.level_codes: list[np.ndarray] = []
        self.gpu_vector = np.fromiter((self.host_gpus[h] for h in self.host_names), dtype=np.int64,
                                      count=len(self.host_names))  # GPUs per host in row order
        for lv in range(len(self.levels)):
            keys = sorted(self._members[lv])  # codes in key order: domain lists come out sorted
            code = {k: i for i, k in enumerate(keys)}
            self.level_domains.append(keys)
            self.level_codes.append(np.fromiter((code[self.host_keys[h][lv]] for h in self.host_names),
                                                dtype=np.int64, count=len(self.host_names)))

    # ------------------------------------------------------------------ build
    def _add_host(self, host: HostLike) -> None:
        path: list[str] = []
        raw = [host.labels.get(level.label) for level in self.levels]
        for i, level in enumerate(self.levels):
            value = raw[i]
            if value is None:
                self.unlabelled.setdefault(level.name, []).append(host.name)
                # A level may not apply to every host (GB200 racks have an NVLink domain, no leaf switch):
                # hosts that share an inner domain share this one too. With no inner label either, nothing
                # is known: the host is a domain of its own.
                inner = next((v for v in raw[i + 1:] if v is not None), None)
                value = f"~{inner}" if inner is not None else f"<{host.name}>"
            path.append(value)
            key = tuple(path)
            self._members[i].setdefault(key, []).append(host.name)
        self.host_paths[host.name] = tuple(path)
        self.host_keys[host.name] = tuple(tuple(path[: i + 1]) for i in range(len(path)))
        self._graph_keys.append(self.host_keys[host.name])  # per host given, even if a later one shares its name
        self.host_gpus[host.name] = host.gpus
        matrix = (getattr(host, "annotations", None) or {}).get(NVLINK_MATRIX_ANNOTATION)
        if matrix:
            try:
                links = parse_nvlink_matrix(matrix)
            except MatrixError as exc:  # one bad annotation must not stop the model: note it, ignore it
                self.problems.append(f"host {host.name}: {exc}")
                return
            if links.size != host.gpus:
                self.problems.append(f"host {host.name}: {NVLINK_MATRIX_ANNOTATION} describes {links.size} GPUs but "
                                     f"the host has {host.gpus}; ignored")
                return
            self.gpu_islands[host.name] = links.islands()

    # ------------------------------------------------------------------ queries
    @property
    def hosts(self) -> list[str]:
        return list(self.host_paths)

    def domain(self, host: str, level: int) -> DomainKey:
        """The key of `host`'s domain at level index `level`."""
        return self.host_keys[host][level]

    def domains(self, level: int) -> dict[DomainKey, list[str]]:
        """Every domain at a level with its hosts (sorted by name)."""
        return self._members[level]

    def level_index(self, name_or_label: str) -> int:
        for i, lv in enumerate(self.levels):
            if name_or_label in (lv.name, lv.label):
                return i
        raise KeyError(f"unknown topology level {name_or_label!r}; levels are "
                       f"{[lv.name + ' (' + lv.label + ')' for lv in self.levels]}")

    def lowest_common_level(self, a: str, b: str) -> int:
        """Index of the innermost level whose domain holds both hosts; -1 if only the cluster does."""
        pa, pb = self.host_paths[a], self.host_paths[b]
        common = -1
        for i, (x, y) in enumerate(zip(pa, pb)):
            if x != y:
                break
            common = i
        return common

    def distance(self, a: str, b: str) -> int:
        """Cost between two hosts: the sum of the costs of every level at which they sit in different domains,
        plus HOST_COST for different hosts. 0 for the same host."""
        if a == b:
            return 0
        common = self.lowest_common_level(a, b)
        return HOST_COST + sum(lv.cost for lv in self.levels[common + 1:])

    def gang_cost(self, hosts: Iterable[str]) -> int:
        """Topology cost of a set of hosts: each level's cost times the extra domains used there."""
        used = set(hosts)
        if not used:
            return 0
        cost = HOST_COST * (len(used) - 1)
        for i, lv in enumerate(self.levels):
            cost += lv.cost * (len({self.domain(h, i) for h in used}) - 1)
        return cost

    def domains_used(self, hosts: Iterable[str]) -> list[int]:
        """Number of distinct domains per level (outermost first) used by a set of hosts."""
        used = set(hosts)
        return [len({self.domain(h, i) for h in used}) for i in range(len(self.levels))]

    def free_per_domain(self, free_gpus: Mapping[str, int]) -> list[dict[DomainKey, int]]:
        """Free GPUs summed per domain at each level, for the given free GPUs per host."""
        return [{key: sum(free_gpus.get(h, 0) for h in members) for key, members in self._members[i].items()}
                for i in range(len(self.levels))]


def topology_from_spec(spec, levels: Sequence[Level] | None = None) -> Topology:
    """The topology of a cluster spec's hosts, under the spec's own levels unless others are given."""
    from topology.levels import levels_from_labels

    lv = tuple(levels) if levels is not None else levels_from_labels([l.label for l in spec.levels],
                                                                      [l.name for l in spec.levels])
    return Topology(spec.hosts(), lv)
