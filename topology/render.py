"""Rendering of a Topology: a text tree, and a PNG picture (matplotlib). Pure but for writing the PNG file."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from topology.model import ROOT, Topology


def _children(topo: Topology, node) -> list:
    kids = [n for n in topo.graph.successors(node) if topo.graph.nodes[n]["kind"] != "gpu"]
    return sorted(kids, key=lambda n: (topo.graph.nodes[n]["kind"], str(n)))


def _hosts_under(topo: Topology, node) -> list[str]:
    if topo.graph.nodes[node]["kind"] == "host":
        return [node]
    return [h for k in _children(topo, node) for h in _hosts_under(topo, k)]


def render_text(topo: Topology, free_gpus: Mapping[str, int] | None = None, max_hosts: int = 4) -> str:
    """Domains level by level with host and GPU counts (and free GPUs when given); a few host names per
    innermost domain. Levels a host has no label for are passed through."""
    lines: list[str] = []

    def counts(hosts: list[str]) -> str:
        gpus = sum(topo.host_gpus[h] for h in hosts)
        free = f", {sum(free_gpus.get(h, 0) for h in hosts)} free" if free_gpus is not None else ""
        return f"[{len(hosts)} hosts, {gpus} GPUs{free}]"

    def visible(node) -> tuple[list[str], list]:
        """Hosts and labelled domains right below `node`, looking through levels that do not apply."""
        hosts, domains = [], []
        for k in _children(topo, node):
            attrs = topo.graph.nodes[k]
            if attrs["kind"] == "host":
                hosts.append(k)
            elif attrs["value"][0] in "<~":  # unlabelled at this level: pass through
                h, d = visible(k)
                hosts += h
                domains += d
            else:
                domains.append(k)
        return hosts, domains

    def walk(node, indent: str) -> None:
        hosts, domains = visible(node)
        if hosts:
            hosts.sort()
            shown = ", ".join(hosts[:max_hosts]) + (f", ... (+{len(hosts) - max_hosts})" if len(hosts) > max_hosts else "")
            lines.append(f"{indent}hosts: {shown}")
        for k in domains:
            attrs = topo.graph.nodes[k]
            lines.append(f"{indent}{topo.levels[attrs['level']].label}={attrs['value']}  {counts(_hosts_under(topo, k))}")
            walk(k, indent + "  ")

    lines.append(f"cluster {counts(topo.hosts)}")
    walk(ROOT, "  ")
    return "\n".join(lines)


def render_png(topo: Topology, path: str | Path, free_gpus: Mapping[str, int] | None = None,
               title: str = "", max_hosts: int = 512) -> Path:
    """Draw the tree: domains as boxes per level, hosts as dots coloured by free GPUs (beyond `max_hosts`
    hosts only domains are drawn, sized by GPU count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    draw_hosts = len(topo.hosts) <= max_hosts
    leaves = [n for n in _order(topo, ROOT, draw_hosts)]
    x: dict = {}
    for i, n in enumerate(leaves):
        x[n] = float(i)
    depth_of = lambda n: topo.graph.nodes[n]["level"] + 1  # noqa: E731

    def place(node) -> float:
        if node in x:
            return x[node]
        kids = [k for k in _children(topo, node) if draw_hosts or topo.graph.nodes[k]["kind"] == "domain"]
        x[node] = sum(place(k) for k in kids) / len(kids) if kids else 0.0
        return x[node]

    place(ROOT)
    width = max(8.0, min(40.0, len(leaves) * 0.12))
    fig, ax = plt.subplots(figsize=(width, 2 + 1.2 * (len(topo.levels) + 1)))
    cmap = plt.get_cmap("RdYlGn")
    for parent, child in topo.graph.edges:
        if child not in x or parent not in x:
            continue
        ax.plot([x[parent], x[child]], [-depth_of(parent), -depth_of(child)], color="#bbbbbb", lw=0.6, zorder=1)
    for node, pos in x.items():
        attrs = topo.graph.nodes[node]
        y = -depth_of(node)
        if attrs["kind"] == "host":
            share = (free_gpus or {}).get(node, topo.host_gpus[node]) / max(1, topo.host_gpus[node])
            ax.scatter([pos], [y], s=18, color=cmap(share), edgecolors="#333333", linewidths=0.3, zorder=3)
        else:
            label = "cluster" if node == ROOT else attrs["value"]
            if label[0] in "<~":
                continue
            hosts = _hosts_under(topo, node)
            ax.text(pos, y, f"{label}\n{sum(topo.host_gpus[h] for h in hosts)} GPUs", ha="center", va="center",
                    fontsize=7, zorder=4, bbox=dict(boxstyle="round,pad=0.25", fc="#e8eefc", ec="#5577aa", lw=0.6))
    ax.set_yticks([-(i + 1) for i in range(-1, len(topo.levels) + (1 if draw_hosts else 0))])
    ax.set_yticklabels(["cluster"] + [lv.name for lv in topo.levels] + (["hosts"] if draw_hosts else []))
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or f"{len(topo.hosts)} hosts, {sum(topo.host_gpus.values())} GPUs"
                 + ("  (host colour: free GPUs, red = none)" if draw_hosts and free_gpus is not None else ""))
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _order(topo: Topology, node, draw_hosts: bool) -> list:
    """Left-to-right leaves of the drawing (hosts, or innermost domains when hosts are not drawn)."""
    kids = [k for k in _children(topo, node) if draw_hosts or topo.graph.nodes[k]["kind"] == "domain"]
    if not kids:
        return [node]
    return [leaf for k in kids for leaf in _order(topo, k, draw_hosts)]
