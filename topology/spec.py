"""Cluster spec YAML -> host list with capacities and topology labels. Pure (parsing and validation only).

One spec describes a fake (KWOK) or simulated GPU cluster: host pools with their capacity, and the topology
levels above the hosts, outermost first. Hosts fill domains in order: host i belongs to domain
i // hostsPerDomain of each level, so nested levels must divide each other.

    name: superpod
    levels:                               # outermost first
      - {name: zone,  label: topology.kubernetes.io/zone, hostsPerDomain: 64}
      - {name: spine, label: clique.dev/spine,            hostsPerDomain: 32}
      - {name: leaf,  label: clique.dev/leaf,             hostsPerDomain: 8}
    pools:
      - {name: h100, hosts: 128, gpus: 8, gpuProduct: NVIDIA-H100-80GB-HBM3, cpu: "192", memory: 2Ti}

A level may name the `pools` it applies to (e.g. NVLink domains only for GB200 hosts).
A level may set `valueFormat` (default "{level}-{index}"; `{cluster}` and `{index}` are available), e.g.
`"{cluster}-fabric.{index}"` for `nvidia.com/gpu.clique`, whose real values are "<clusterUUID>.<cliqueId>".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topology.quantity import QuantityError, as_int, cpu_millis
from topology.yamlfile import read_yaml

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"


class SpecError(ValueError):
    """The spec is invalid; the message names the field and the fix."""


@dataclass(frozen=True)
class LevelSpec:
    name: str  # short level name, e.g. "leaf"
    label: str  # node label key carrying the domain, e.g. "clique.dev/leaf"
    hosts_per_domain: int  # hosts in one domain of this level
    value_format: str = "{level}-{index}"  # label value template
    pools: tuple[str, ...] = ()  # only hosts of these pools carry the level (empty: all pools)


@dataclass(frozen=True)
class PoolSpec:
    name: str  # host name prefix
    hosts: int
    gpus: int  # nvidia.com/gpu capacity per host
    gpu_product: str
    cpu_millis: int
    memory_bytes: int
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostSpec:
    """One host as created: name, capacity and every label (topology ones included)."""

    name: str
    pool: str
    gpus: int
    gpu_product: str
    cpu_millis: int
    memory_bytes: int
    pods: int
    labels: dict[str, str]


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    levels: tuple[LevelSpec, ...]  # outermost first
    pools: tuple[PoolSpec, ...]

    @property
    def host_count(self) -> int:
        return sum(p.hosts for p in self.pools)

    @property
    def gpu_count(self) -> int:
        return sum(p.hosts * p.gpus for p in self.pools)

    def hosts(self) -> list[HostSpec]:
        """Every host with its labels, in order (pool by pool)."""
        out: list[HostSpec] = []
        seen = [0] * len(self.levels)  # hosts counted so far by each level (levels may skip pools)
        for pool in self.pools:
            for i in range(pool.hosts):
                name = f"{pool.name}-{i:04d}"
                labels = {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    GPU_PRODUCT_LABEL: pool.gpu_product,
                    GPU_COUNT_LABEL: str(pool.gpus),
                    "clique.dev/pool": pool.name,
                }
                for li, level in enumerate(self.levels):
                    if level.pools and pool.name not in level.pools:
                        continue
                    labels[level.label] = level.value_format.format(
                        level=level.name, index=seen[li] // level.hosts_per_domain, cluster=self.name)
                    seen[li] += 1
                labels.update(pool.labels)
                out.append(HostSpec(name, pool.name, pool.gpus, pool.gpu_product, pool.cpu_millis,
                                    pool.memory_bytes, pool.pods, labels))
        return out


MAX_HOSTS = 1_000_000  # hosts in one spec: far above any cluster; bounds what hosts() builds
MAX_QUANTITY = 10**18  # cpu (cores) and memory (bytes) per host


def _req(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise SpecError(f"{where}: missing required field '{key}'")
    return obj[key]


def _text(value: Any, where: str) -> str:
    """A name, label key or value: YAML may give a number or a boolean (written as YAML spells it), never a
    list or mapping (whose text could be anything, and of any size with YAML aliases)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        text = str(value)
        if len(text) > 253:
            raise SpecError(f"{where}: longer than 253 characters")
        return text
    raise SpecError(f"{where}: expected a string, got a {type(value).__name__}")


def _list(value: Any, where: str, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f"{where}: expected a list of {what}, got a {type(value).__name__}")
    return value


def _int(obj: dict[str, Any], key: str, where: str, default: int | None = None, minimum: int = 0) -> int:
    value = obj.get(key, default) if default is not None else _req(obj, key, where)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{where}.{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def parse_cluster_spec(data: dict[str, Any], source: str = "cluster spec") -> ClusterSpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping with 'name', 'levels' and 'pools'")
    name = _text(data.get("name", "cluster"), f"{source}: name")
    levels: list[LevelSpec] = []
    for i, lv in enumerate(_list(data.get("levels"), f"{source}: levels", "levels (mappings)")):
        where = f"{source}: levels[{i}]"
        if not isinstance(lv, dict):
            raise SpecError(f"{where}: expected a mapping with name, label, hostsPerDomain")
        level = LevelSpec(
            name=_text(_req(lv, "name", where), f"{where}.name"),
            label=_text(_req(lv, "label", where), f"{where}.label"),
            hosts_per_domain=_int(lv, "hostsPerDomain", where, minimum=1),
            value_format=_text(lv.get("valueFormat", "{level}-{index}"), f"{where}.valueFormat"),
            pools=tuple(_text(x, f"{where}.pools[{j}]") for j, x in enumerate(_list(lv.get("pools"), f"{where}.pools",
                                                                                     "pool names"))),
        )
        try:  # hosts() fills it in for every host: a bad template must fail here, not there
            level.value_format.format(level=level.name, index=0, cluster=name)
        except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
            raise SpecError(f"{where}.valueFormat: {level.value_format!r:.80} is not a template of {{level}}, "
                            f"{{index}} and {{cluster}} ({type(exc).__name__}: {exc})") from None
        levels.append(level)
    for outer, inner in zip(levels, levels[1:]):
        if outer.pools == inner.pools and outer.hosts_per_domain % inner.hosts_per_domain:
            raise SpecError(
                f"{source}: level '{inner.name}' ({inner.hosts_per_domain} hosts per domain) does not divide level "
                f"'{outer.name}' ({outer.hosts_per_domain}); list levels outermost first with nested sizes")
    if len({lv.label for lv in levels}) != len(levels):
        raise SpecError(f"{source}: two levels use the same label; each level needs its own label key")
    pools: list[PoolSpec] = []
    raw_pools = _list(data.get("pools"), f"{source}: pools", "pools (mappings)")
    if not raw_pools:
        raise SpecError(f"{source}: 'pools' is empty; add at least one pool with hosts and gpus")
    for i, p in enumerate(raw_pools):
        where = f"{source}: pools[{i}]"
        if not isinstance(p, dict):
            raise SpecError(f"{where}: expected a mapping")
        cpu = _quantity(p, "cpu", "128", where, cpu_millis, 1000)
        mem = _quantity(p, "memory", "1Ti", where, as_int, 1)
        labels = p.get("labels") or {}
        if not isinstance(labels, dict):
            raise SpecError(f"{where}.labels: expected a mapping of label key to value")
        pools.append(PoolSpec(
            name=_text(_req(p, "name", where), f"{where}.name"), hosts=_int(p, "hosts", where, minimum=1),
            gpus=_int(p, "gpus", where, default=8),
            gpu_product=_text(p.get("gpuProduct", "NVIDIA-H100-80GB-HBM3"), f"{where}.gpuProduct"),
            cpu_millis=cpu, memory_bytes=mem, pods=_int(p, "pods", where, default=110, minimum=1),
            labels={_text(k, f"{where}.labels"): _text(v, f"{where}.labels[{k!r:.60}]") for k, v in labels.items()},
        ))
    if sum(p.hosts for p in pools) > MAX_HOSTS:
        raise SpecError(f"{source}: {sum(p.hosts for p in pools)} hosts in all; at most {MAX_HOSTS} are supported")
    if len({p.name for p in pools}) != len(pools):
        raise SpecError(f"{source}: pool names must be unique (they prefix host names)")
    for lv in levels:
        unknown = sorted(set(lv.pools) - {p.name for p in pools})
        if unknown:
            raise SpecError(f"{source}: level '{lv.name}' names unknown pool(s) {unknown}; "
                            f"pools are {[p.name for p in pools]}")
    return ClusterSpec(name=name, levels=tuple(levels), pools=tuple(pools))


def _quantity(pool: dict[str, Any], key: str, default: str, where: str, convert: Any, per_unit: int) -> int:
    value = pool.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpecError(f"{where}.{key}: expected a quantity such as '128' or '2Ti', got {value!r:.60}")
    try:
        amount = convert(value)
    except QuantityError as exc:
        raise SpecError(f"{where}: {exc}") from None
    if not 0 <= amount <= MAX_QUANTITY * per_unit:
        raise SpecError(f"{where}.{key}: {value!r:.60} is out of range (0 to {MAX_QUANTITY:.0e})")
    return amount


def load_cluster_spec(path: str | Path) -> ClusterSpec:
    """The spec in a YAML file. Raises SpecError, and only that, whatever the file holds."""
    data = read_yaml(path, "cluster spec", SpecError)
    return parse_cluster_spec(data, source=str(Path(path)))
