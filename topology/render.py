"""Text rendering of a host tree grouped by topology level labels. Pure."""

from __future__ import annotations

from typing import Iterable, Sequence

from topology.spec import HostSpec


def render_tree(hosts: Iterable[HostSpec], level_labels: Sequence[str], max_hosts: int = 4) -> str:
    """Hosts grouped level by level (outermost first), with host and GPU counts per domain.

    Hosts without a level's label skip that level. At most `max_hosts` host names
    are listed per innermost domain.
    """
    lines: list[str] = []

    def walk(group: list[HostSpec], depth: int, indent: str) -> None:
        if depth == len(level_labels):
            names = [h.name for h in group]
            shown = ", ".join(names[:max_hosts]) + (f", ... (+{len(names) - max_hosts})" if len(names) > max_hosts else "")
            lines.append(f"{indent}hosts: {shown}")
            return
        key = level_labels[depth]
        buckets: dict[str, list[HostSpec]] = {}
        unlabelled = [h for h in group if key not in h.labels]
        for h in group:
            if key in h.labels:
                buckets.setdefault(h.labels[key], []).append(h)
        if unlabelled:  # this level does not apply to these hosts (e.g. leaves of NVL72 racks): skip it
            walk(unlabelled, depth + 1, indent)
        for value in sorted(buckets):
            members = buckets[value]
            lines.append(f"{indent}{key}={value}  [{len(members)} hosts, {sum(h.gpus for h in members)} GPUs]")
            walk(members, depth + 1, indent + "  ")

    all_hosts = list(hosts)
    lines.append(f"cluster [{len(all_hosts)} hosts, {sum(h.gpus for h in all_hosts)} GPUs]")
    walk(all_hosts, 0, "  ")
    return "\n".join(lines)
