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

import yaml

from topology.levels import Level, levels_from_labels

LABEL_PREFIX = "clique.dev/fabric-"


class FabricError(ValueError):
    """The fabric file is invalid; the message says where."""


@dataclass(frozen=True)
class Fabric:
    levels: tuple[Level, ...]
    host_labels: dict[str, dict[str, str]]  # host -> {label: switch name}


def parse_fabric(data: Any, source: str = "fabric file") -> Fabric:
    if not isinstance(data, dict) or "levels" not in data or "switches" not in data:
        raise FabricError(f"{source}: expected a mapping with 'levels' (switch level names) and 'switches'")
    names = [str(n) for n in data["levels"]]
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
            trail = path + [str(sw["name"])]
            if depth == len(names) - 1:
                hosts = sw.get("hosts")
                if not isinstance(hosts, list) or "children" in sw:
                    raise FabricError(f"{here} ({sw['name']}): switches of the innermost level '{names[-1]}' list "
                                      "'hosts', not 'children'")
                for h in hosts:
                    if str(h) in host_labels:
                        raise FabricError(f"{here}: host {h} appears under two switches")
                    host_labels[str(h)] = dict(zip(labels, trail))
            else:
                if "children" not in sw:
                    raise FabricError(f"{here} ({sw['name']}): a '{names[depth]}' switch needs 'children' "
                                      f"(switches of level '{names[depth + 1]}')")
                walk(sw["children"], depth + 1, trail, f"{here}.children")

    walk(data["switches"], 0, [], f"{source}: switches")
    return Fabric(levels_from_labels(labels, names), host_labels)


def load_fabric(path: str | Path) -> Fabric:
    p = Path(path)
    try:
        return parse_fabric(yaml.safe_load(p.read_text()), str(p))
    except FileNotFoundError:
        raise FabricError(f"fabric file {p} does not exist") from None
    except yaml.YAMLError as exc:
        raise FabricError(f"fabric file {p} is not valid YAML: {exc}") from None
