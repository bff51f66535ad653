"""The chaos run's checker, pure: what the API server showed (pods, nodes, when) in, invariant breaches out.

`Checker.observe_pod` / `observe_node` / `relist` take the objects a watch delivers (plain dicts) with the time
they were seen; `tick(now)` closes the books up to `now`. What it asserts, continuously:
- over-commit: the GPUs requested by the non-terminal pods bound to a node never exceed its allocatable GPUs
  (every breach is recorded with node, GPUs and time);
- partial gangs: a gang with some but not all of its members bound (and not being deleted) is partial; the
  seconds it stays so are summed, and the seconds beyond `allowance_s` (the bind timeout + 5 s) are the breach;
- constraints: a pod bound by our scheduler to a node its own nodeSelector, required node affinity or taints
  exclude (scheduler/extender/nodefit.py), and a gang whose bound members span more than one domain of its
  required level;
- placement: when each gang was first whole (for "every gang that fits is eventually bound", with `fits`).
Side effects: none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from scheduler.extender.nodefit import node_refusal
from scheduler.gangs import pod_request

TERMINAL = ("Succeeded", "Failed")
GANG_LABEL = "chaos.clique.dev/gang"  # every pod of a submission carries its gang id


@dataclass
class GangSpec:
    """One submission: `roles` (pods, GPUs per pod), the node label key of its required level."""

    gang_id: str
    kind: str
    roles: tuple[tuple[int, int], ...]
    required_key: str
    submitted_at: float = 0.0
    deleted_at: float | None = None
    whole_at: float | None = None  # first time every member was bound
    partial_since: float | None = None
    partial_s: float = 0.0  # total seconds partial
    partial_beyond_s: float = 0.0  # seconds partial beyond the allowance, summed over partial spells
    max_partial_s: float = 0.0

    @property
    def size(self) -> int:
        return sum(n for n, _ in self.roles)


@dataclass
class PodView:
    node: str | None
    gpus: int
    gang: str | None
    scheduler: str
    live: bool  # not terminal, no deletionTimestamp
    raw: dict

    @property
    def holds_gpus(self) -> bool:
        """Until it is gone or terminal: a terminating pod still counts (kube-scheduler's cache and the
        extender count it too)."""
        return (self.raw.get("status") or {}).get("phase") not in TERMINAL


@dataclass
class Checker:
    allowance_s: float
    scheduler_name: str = "clique-scheduler"
    # the run's namespace: only its pods are judged against their constraints (GPUs are counted for every pod);
    # pods other work left on the same control plane may sit on nodes it has since deleted. None: every namespace
    namespace: str | None = None
    gangs: dict[str, GangSpec] = field(default_factory=dict)
    pods: dict[str, PodView] = field(default_factory=dict)  # "ns/name" (uid-qualified) -> view
    nodes: dict[str, dict] = field(default_factory=dict)  # name -> {"gpus", "labels", "taints"}
    over_commits: list[dict] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    split_gangs: set[str] = field(default_factory=set)
    binds: list[float] = field(default_factory=list)  # when each first binding of a pod was seen
    _bound_seen: set[str] = field(default_factory=set)
    _over: set[str] = field(default_factory=set)  # nodes over-committed now (one breach per spell)
    _relisting: bool = False

    # ------------------------------------------------------------------ input
    def submit(self, spec: GangSpec) -> None:
        self.gangs[spec.gang_id] = spec

    def deleted(self, gang_id: str, now: float) -> None:
        g = self.gangs[gang_id]
        if g.deleted_at is None:
            g.deleted_at = now
            self._close_partial(g, now)

    def observe_node(self, typ: str, node: Mapping[str, Any], now: float) -> None:
        md, status = node.get("metadata") or {}, node.get("status") or {}
        name = md.get("name", "")
        if typ == "DELETED":
            self.nodes.pop(name, None)
            return
        try:
            gpus = int((status.get("allocatable") or {}).get("nvidia.com/gpu", 0))
        except (TypeError, ValueError):
            gpus = 0
        self.nodes[name] = {"gpus": gpus, "labels": dict(md.get("labels") or {}),
                            "taints": list((node.get("spec") or {}).get("taints") or []),
                            "schedulable": not (node.get("spec") or {}).get("unschedulable")}
        self._check_node(name, now)

    def observe_pod(self, typ: str, pod: Mapping[str, Any], now: float) -> None:
        md, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        key = f"{md.get('namespace')}/{md.get('name')}/{md.get('uid')}"
        old = self.pods.get(key)
        gang = (md.get("labels") or {}).get(GANG_LABEL)
        if typ == "DELETED":
            self.pods.pop(key, None)
        else:
            live = status.get("phase") not in TERMINAL and not md.get("deletionTimestamp")
            view = PodView(spec.get("nodeName"), pod_request(pod).gpus, gang, spec.get("schedulerName", ""),
                           live, dict(pod))
            self.pods[key] = view
            if view.node and key not in self._bound_seen:
                self._bound_seen.add(key)
                self.binds.append(now)
                if self.namespace is None or md.get("namespace") == self.namespace:
                    self._check_constraints(key, view)
        for node in {v.node for v in (old, self.pods.get(key)) if v is not None and v.node}:
            self._check_node(node, now)
        if gang in self.gangs:
            self._check_gang(self.gangs[gang], now)

    def relist(self, pods: Iterable[Mapping[str, Any]], now: float) -> None:
        """A fresh list after a watch could not resume: replace every pod, then judge again."""
        self.pods = {}
        self._relisting = True  # judge nodes once every pod is in, not while usage is rebuilt from zero
        try:
            for p in pods:
                self.observe_pod("ADDED", p, now)
        finally:
            self._relisting = False
        for node in list(self.nodes):
            self._check_node(node, now)
        for g in self.gangs.values():
            self._check_gang(g, now)

    def tick(self, now: float) -> None:
        for g in self.gangs.values():
            if g.partial_since is not None:
                g.max_partial_s = max(g.max_partial_s, now - g.partial_since)

    def finish(self, now: float) -> None:
        for g in self.gangs.values():
            self._close_partial(g, now)

    # ------------------------------------------------------------------ judgements
    def used_gpus(self, node: str) -> int:
        return sum(v.gpus for v in self.pods.values() if v.node == node and v.holds_gpus)

    def _check_node(self, node: str, now: float) -> None:
        info = self.nodes.get(node)
        if info is None or self._relisting:
            return
        used = self.used_gpus(node)
        if used > info["gpus"]:
            if node not in self._over:
                self._over.add(node)
                holders = sorted(k for k, v in self.pods.items() if v.node == node and v.holds_gpus)
                self.over_commits.append({"node": node, "gpus_used": used, "gpus": info["gpus"], "at": round(now, 3),
                                          "pods": holders})
        else:
            self._over.discard(node)

    def _check_constraints(self, key: str, view: PodView) -> None:
        if view.scheduler != self.scheduler_name or view.node is None:
            return
        info = self.nodes.get(view.node)
        if info is None:
            self.violations.append(f"{key} bound to node {view.node}, which the API server does not show")
            return
        why = node_refusal(view.raw, view.node, info["labels"], info["taints"])
        if why:
            self.violations.append(f"{key}: {why}")

    def members(self, g: GangSpec) -> list[PodView]:
        return [v for v in self.pods.values() if v.gang == g.gang_id]

    def _check_gang(self, g: GangSpec, now: float) -> None:
        live = [v for v in self.members(g) if v.live]
        bound = [v for v in live if v.node]
        if len(bound) >= g.size and g.whole_at is None:
            g.whole_at = now
        domains = {self.nodes.get(v.node, {}).get("labels", {}).get(g.required_key, f"?{v.node}") for v in bound}
        if len(domains) > 1:
            self.split_gangs.add(g.gang_id)
        partial = g.deleted_at is None and 0 < len(bound) < g.size
        if partial and g.partial_since is None:
            g.partial_since = now
        elif not partial:
            self._close_partial(g, now)

    def _close_partial(self, g: GangSpec, now: float) -> None:
        if g.partial_since is None:
            return
        spell = now - g.partial_since
        g.partial_s += spell
        g.partial_beyond_s += max(0.0, spell - self.allowance_s)
        g.max_partial_s = max(g.max_partial_s, spell)
        g.partial_since = None


def fits(free: Mapping[str, int], domain_of: Mapping[str, str | None], roles: Iterable[tuple[int, int]],
         allowed: Iterable[str]) -> bool:
    """Whether pods of `roles` (count, GPUs each) fit inside one domain (`domain_of` a host's value of the
    required level's label) on `allowed` hosts with `free` GPUs: first fit decreasing per domain, exact for
    pods of 4 and 8 GPUs on 8-GPU hosts."""
    requests = sorted((gpus for n, gpus in roles for _ in range(n)), reverse=True)
    by_domain: dict[str, list[int]] = {}
    for host in allowed:
        d = domain_of.get(host)
        if d is not None:
            by_domain.setdefault(d, []).append(free.get(host, 0))
    for hosts in by_domain.values():
        room = sorted(hosts, reverse=True)
        ok = True
        for r in requests:
            slot = next((i for i, f in enumerate(room) if f >= r), None)
            if slot is None:
                ok = False
                break
            room[slot] -= r
        if ok:
            return True
    return False
