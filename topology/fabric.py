"""Fabric file: a YAML switch tree for on-prem clusters whose nodes carry no topology labels. Pure.

    levels: [spine, leaf]                 # switch levels, outermost first
    switches:
      - name: spine-a
        children:
          - {name: leaf-1, hosts: [node-01, node-02]}
          - {name: leaf-2, hosts: [node-03, node-04]}

Each host gets one label per level, `clique.dev/fabric-<level>=<switch name>`, and the levels come back
as topology Levels over those labels, so the rest of Clique treats fabric files and node labels alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topology.levels import Level, levels_from_labels
from topology.yamlfile import read_yaml

LABEL_PREFIX = "clique.dev/fabric-"


class FabricError(ValueError):
    """The fabric file is invalid; the message says where."""


@dataclass(frozen=True)
class Fabric:
    levels: tuple[Level, ...]
    host_labels: dict[str, dict[str, str]]  # host -> {label: switch name}


MAX_LEVELS = 16  # switch levels (a real fabric has 2 or 3)


def _name(value: Any, where: str) -> str:
    """A level, switch or host name: YAML may give a number, never a list or mapping (whose text could be of any
    size with YAML aliases)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FabricError(f"{where}: expected a name (a string), got {type(value).__name__} {value!r:.60}")
    text = str(value)
    if not text or len(text) > 253:
        raise FabricError(f"{where}: expected a name of 1 to 253 characters, got {len(text)}")
    return text


def parse_fabric(data: Any, source: str = "fabric file") -> Fabric:
    """The switch tree of a fabric file's YAML document. Raises FabricError, and only that, naming where."""
    if not isinstance(data, dict) or "levels" not in data or "switches" not in data:
        raise FabricError(f"{source}: expected a mapping with 'levels' (switch level names) and 'switches'")
    if not isinstance(data["levels"], list) or not 0 < len(data["levels"]) <= MAX_LEVELS:
        raise FabricError(f"{source}: 'levels' must be a list of 1 to {MAX_LEVELS} switch level names, outermost first")
    names = [_name(n, f"{source}: levels[{i}]") for i, n in enumerate(data["levels"])]
    if not names or len(set(names)) != len(names):
        raise FabricError(f"{source}: 'levels' must list distinct level names, outermost first")
    labels = [LABEL_PREFIX + n for n in names]
    host_labels: dict[str, dict[str, str]] = {}

    def walk(switches: Any, depth: int, path: list[str], where: str) -> None:
        if not isinstance(switches, list):
            raise FabricError(f"{where}: expected a list of switches")
        for i, sw in enumerate(switches):
            here = f"{where}[{i}]"
            if not isinstance(sw, dict) or "name" not in sw:
                raise FabricError(f"{here}: a switch needs a 'name'")
            switch = _name(sw["name"], f"{here}.name")
            trail = path + [switch]
            if depth == len(names) - 1:
                hosts = sw.get("hosts")
                if not isinstance(hosts, list) or "children" in sw:
                    raise FabricError(f"{here} ({switch}): switches of the innermost level '{names[-1]}' list "
                                      "'hosts', not 'children'")
                for j, h in enumerate(hosts):
                    host = _name(h, f"{here}.hosts[{j}]")
                    if host in host_labels:
                        raise FabricError(f"{here}: host {host} appears under two switches")
                    host_labels[host] = dict(zip(labels, trail))
            else:
                if "children" not in sw:
                    raise FabricError(f"{here} ({switch}): a '{names[depth]}' switch needs 'children' "
                                      f"(switches of level '{names[depth + 1]}')")
                walk(sw["children"], depth + 1, trail, f"{here}.children")

    walk(data["switches"], 0, [], f"{source}: switches")
    return Fabric(levels_from_labels(labels, names), host_labels)


def load_fabric(path: str | Path) -> Fabric:
    """The fabric in a YAML file. Raises FabricError, and only that, whatever the file holds."""
    return parse_fabric(read_yaml(path, "fabric file", FabricError), str(Path(path)))
