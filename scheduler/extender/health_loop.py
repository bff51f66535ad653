"""Gang health, the effects: watch bound gangs, restart broken ones whole. Side effects: pod deletions (UID
preconditions, binder.py's checked deletes), Events (GangBroken, GangRestarted, GangRestartPolicyInvalid) and
Prometheus counters. The decisions are scheduler/extender/gang_health.py (pure); this layer only gathers what it
reads (pods and nodes from the extender's watches, member losses seen on the pod watch) and carries them out.

Driven by the gang recovery loop (scheduler/extender/recovery.py), which hands it the gangs whose pods changed.
What only this process saw (a member's deletion, when a Node went missing) is lost on a restart; what the API
shows (replacement members by their timestamps, a Node's Ready transition time, members missing from the
gang's size) is found again, so a restarted extender still restarts a broken gang, at worst one grace later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import Counter

from scheduler.extender.gang_health import (DEFAULT_GRACE_S, AwaitGrace, BadAnnotation, Loss, ObservedGang,
                                            ReportBroken, RestartGang, decide_gang, how_gone, node_view, utcnow)
from scheduler.extender.gangbook import pod_key
from scheduler.extender.preemption import HOLD_SUFFIX
from scheduler.gangs import is_single_key, recognize

if TYPE_CHECKING:
    from scheduler.extender.service import Extender

log = logging.getLogger("clique.extender.health")
RETRY_RESTART_S = 5.0  # a restart whose deletions failed is tried again after this long
IGNORE_UID_S = 300.0  # members this process deleted are not losses (their deletion events come back to us)


class GangHealth:
    def __init__(self, extender: "Extender", default_grace_s: float = DEFAULT_GRACE_S) -> None:
        self.extender = extender
        self.state = extender.state
        self.default_grace_s = default_grace_s
        self.watched: set[str] = set()  # gangs with bound members (or losses) to look at every tick
        self.losses: dict[str, list[Loss]] = {}
        self.short_since: dict[str, datetime] = {}  # gang -> first seen with fewer pods than its size
        self.node_missing_since: dict[str, datetime] = {}
        self.deleted_uids: dict[str, float] = {}  # uid -> when this process deleted it
        self.last_restart: dict[str, float] = {}
        self.broken: set[str] = set()  # gangs counted as broken in the current episode
        self.nodes_of: dict[str, frozenset[str]] = {}  # gang -> nodes of its bound members, at its last look
        reg = extender.metrics.registry
        self.broken_total = Counter("clique_gangs_broken_total", "Bound gangs found broken, by first cause",
                                    ["cause"], registry=reg)
        self.restarted_total = Counter("clique_gangs_restarted_total", "Broken gangs restarted whole (remaining "
                                       "members deleted so their controller recreates them)", ["source"],
                                       registry=reg)
        self.restart_failures = Counter("clique_gang_restart_failures_total", "Member deletions of a gang restart "
                                        "that the API server refused", registry=reg)
        self.state.on_pod_gone = self.pod_gone

    # ------------------------------------------------------------------ observations
    def pod_gone(self, pod: dict) -> None:
        """A known pod was deleted or became terminal (the pod watch, or the extender's own forget)."""
        md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        uid = str(md.get("uid") or "")
        if not spec.get("nodeName") or uid in self.deleted_uids:
            return
        gang = recognize(pod)
        if gang.source == "single":
            return
        how, detail = how_gone(pod)
        self.losses.setdefault(gang.key, []).append(Loss(pod_key(pod), uid, spec["nodeName"], utcnow(), how, detail))
        self.watched.add(gang.key)

    def forget_all(self) -> None:
        """Drop everything seen so far (a standby extender: leadership.py). A standby never looks, so the losses it
        records are never settled, and the acting extender's own restarts would look like losses to it. It takes
        over as a restarted extender starts: from what the API shows (see the module docstring)."""
        self.watched.clear()
        self.losses.clear()
        self.short_since.clear()
        self.node_missing_since.clear()
        self.broken.clear()
        self.nodes_of.clear()
        self.last_restart.clear()

    def observe(self, touched: set[str]) -> None:
        # A pod that is a gang of its own is never watched (_look would forget it at once): `watched` stays the
        # size of the gangs, not of every pod (2 MiB at 50,000 pods, and a set never shrinks).
        self.watched |= {k for k in touched if not is_single_key(k)}

    # ------------------------------------------------------------------ decisions and effects
    async def tick(self, only: set[str] | None = None) -> None:
        """Look at every watched gang, or `only` these (gangs whose pods just changed)."""
        now, mono = utcnow(), time.monotonic()
        self.deleted_uids = {u: t for u, t in self.deleted_uids.items() if mono - t < IGNORE_UID_S}
        # Lookups in the nodes' dict, never a set of every node: this runs on the event loop several times a
        # second, and at 15,000 nodes a pass over all of them held the verbs up for a millisecond or more.
        nodes = self.state.nodes
        for name in [n for n in self.node_missing_since if n in nodes]:
            del self.node_missing_since[name]
        if only is None:  # the periodic look: only gangs with something pending or a member on a node in trouble
            only = {g for g in self.watched
                    if g in self.losses or g in self.short_since or g in self.broken or g not in self.nodes_of
                    or self._node_trouble(self.nodes_of[g])}
        for i, key in enumerate(sorted(self.watched & only)):
            if i and i % 100 == 0:
                await asyncio.sleep(0)  # a first look at thousands of gangs must not hold the verbs up
            try:
                await self._look(key, now, mono)
            except Exception:  # noqa: BLE001 - one odd gang must not stop the others
                log.exception("gang health of %s failed; looked at again next tick", key)

    def _node_trouble(self, names: frozenset[str]) -> bool:
        """One of these nodes is gone or not Ready (costs lookups of the gang's nodes only)."""
        nodes = self.state.nodes
        for name in names:
            info = nodes.get(name)
            if info is None or not info.ready:
                return True
        return False

    def _forget(self, key: str) -> None:
        self.watched.discard(key)
        self.losses.pop(key, None)
        self.short_since.pop(key, None)
        self.broken.discard(key)
        self.nodes_of.pop(key, None)

    async def _look(self, key: str, now: datetime, mono: float) -> None:
        ext = self.extender
        if key in ext.reservations or key + HOLD_SUFFIX in ext.reservations:
            return  # a plan is in flight: its bind settles it first
        pods = self.state.gang_members(key)
        if not pods:
            self._forget(key)
            return
        probe = recognize(pods[0])
        gang = recognize(pods[0], *ext.gang_sizes(probe))
        live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        if not any((p.get("spec") or {}).get("nodeName") for p in live) or gang.source == "single":
            self._forget(key)  # no bound member: not a bound gang (a restarted gang comes back pending)
            return
        losses = self.losses.get(key, [])
        whole = gang.size is not None and len(live) >= gang.size and all(
            (p.get("spec") or {}).get("nodeName") for p in live)
        if whole and losses and _policy_member(pods):
            losses = []  # every member is bound again: a Member-policy replacement joined, what was lost is back
            self.losses.pop(key, None)
        if gang.size is not None and len(live) < gang.size:
            since = self.short_since.setdefault(key, now)
            if not losses:
                losses = [Loss(key, "", "", since, "missing")]
        else:
            self.short_since.pop(key, None)
        self.nodes_of[key] = frozenset(n for p in live if (n := (p.get("spec") or {}).get("nodeName")))
        views = {}
        for p in live:
            node = (p.get("spec") or {}).get("nodeName")
            if node and node not in views:
                info = self.state.nodes.get(node)
                missing = None if info is not None else self.node_missing_since.setdefault(node, now)
                views[node] = node_view(node, info, missing, now)
        actions = decide_gang(ObservedGang(gang, tuple(pods), tuple(losses)), views, now, self.default_grace_s)
        broken = False
        for a in actions:
            if isinstance(a, BadAnnotation):
                pod = self.state.pods.get(a.pod)
                if pod is not None:
                    ext.event(pod, "GangRestartPolicyInvalid", a.message, warning=True)
                continue
            broken = True
            if key not in self.broken:
                self.broken.add(key)
                self.broken_total.labels(a.cause).inc()
                log.warning("%s", a.reason)
            if isinstance(a, (AwaitGrace, ReportBroken)):
                for k in a.pods[:1] if isinstance(a, AwaitGrace) else a.pods:
                    if (pod := self.state.pods.get(k)) is not None:
                        ext.event(pod, "GangBroken", a.reason, warning=True)
            elif isinstance(a, RestartGang):
                if mono - self.last_restart.get(key, -1e9) < RETRY_RESTART_S:
                    continue
                self.last_restart[key] = mono
                await self._restart(a)
        if not broken:
            self.broken.discard(key)

    async def _restart(self, a: RestartGang) -> None:
        ext = self.extender
        pods = {k: self.state.pods.get(k) for k, _ in a.members}
        for k, pod in pods.items():
            if pod is not None:
                ext.event(pod, "GangBroken", a.reason, warning=True)
        uids = dict(a.members)
        mono = time.monotonic()
        for uid in uids.values():
            self.deleted_uids[uid] = mono
        failed = await ext.binder.delete_pods([k for k, _ in a.members], a.reason, uids)
        for k, uid in a.members:
            if not any(f.startswith(f"deleting {k}:") for f in failed):
                self.state.forget(k, uid)
        self.restarted_total.labels(a.gang.source).inc()
        if failed:
            self.restart_failures.inc(len(failed))
        note = f"; failed: {'; '.join(failed)} (tried again in {RETRY_RESTART_S:.0f}s)" if failed else ""
        for k, pod in pods.items():
            if pod is not None:
                ext.event(pod, "GangRestarted", f"{a.reason}{note}", warning=bool(failed))
        log.info("restarted gang %s (%s): %d member(s) deleted%s", a.gang.key, a.cause, len(a.members) - len(failed),
                 note)
        self.losses.pop(a.gang.key, None)


def _policy_member(pods: list[dict]) -> bool:
    from scheduler.extender.gang_health import POLICY_ANNOTATION

    return any(((p.get("metadata") or {}).get("annotations") or {}).get(POLICY_ANNOTATION) == "Member" for p in pods)
