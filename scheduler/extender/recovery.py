"""Gang recovery: gangs found partly bound are completed or restarted at once, without waiting for
kube-scheduler's backoff. Side effects: Bindings, pod deletions and Events through the extender's Binder.

A gang is partly bound when a bind was cut short (the extender killed between two Bindings) or a member of a
running gang was replaced. At start-up every gang is looked at, then every gang whose pods changed. For each
such gang of our scheduler with no plan in flight: plan the pending members so they join the bound ones
(gangbook.join_bound, each node judged by the pods' own spec, nodefit), then gangbook.decide_half_gang says
whether to bind them now, delete the bound members of an interrupted bind so the gang goes again whole, or wait.
The same loop drives gang health (scheduler/extender/health_loop.py): bound gangs broken by a lost member or a
failed node are restarted whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from scheduler.extender.health_loop import GangHealth
from scheduler.extender.gangbook import (HalfGangAction, decide_half_gang, interrupted_bind, members_of,
                                         not_terminating, pod_key)
from scheduler.gangs import pod_request, recognize

if TYPE_CHECKING:
    from scheduler.extender.service import Extender

log = logging.getLogger("clique.extender.recovery")
HEALTH_INTERVAL_S = 1.0  # every watched gang is looked at this often, and whenever its pods change


async def run(extender: "Extender", interval_s: float = 0.2) -> None:
    """Look at touched gangs every `interval_s` once the watches have synced; one gang's failure is logged and
    never stops the others."""
    state = extender.state
    health = GangHealth(extender)  # bound gangs broken by a lost member or node: restarted whole (health_loop.py)
    await asyncio.gather(*(e.wait() for e in state.synced.values()))
    next_health = 0.0
    acting = False
    while True:
        extender.expire()  # reservations past their deadline, or whose pods went away, even with no filter calls
        if not extender.leadership.active():
            # a standby never deletes or binds (leadership.py), and keeps nothing of what it saw: it takes over as
            # a restarted extender starts, looking at every gang afresh
            acting = False
            state.take_touched_gangs()
            health.forget_all()
            await asyncio.sleep(interval_s)
            continue
        touched = state.take_touched_gangs()
        if not acting:  # just started, or just took over: every gang, as after the watches' first lists
            touched |= set(state.gang_index)
            acting = True
        health.observe(touched)
        # first: a broken gang is restarted, not completed; every watched gang each second (node trouble)
        if time.monotonic() >= next_health:
            await health.tick()
            next_health = time.monotonic() + HEALTH_INTERVAL_S
        elif touched:
            await health.tick(touched)
        for i, gang_key in enumerate(sorted(touched)):
            if i and i % 100 == 0:
                await asyncio.sleep(0)  # a look at thousands of gangs (start-up, a takeover) must not hold the verbs
            try:
                await recover_gang(extender, gang_key)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one odd gang must not stop the recovery of the others
                log.exception("recovery of gang %s failed; it is looked at again on its next change", gang_key)
        await asyncio.sleep(interval_s)


async def recover_gang(extender: "Extender", gang_key: str) -> HalfGangAction | None:
    """Complete, restart or leave one gang; returns what was done (None: not a partly bound gang of ours)."""
    if gang_key in extender.reservations:
        return None  # a plan is in flight: its own bind or timeout settles it
    pods = extender.state.gang_members(gang_key)
    if not pods:
        return None
    probe = recognize(pods[0])
    sizes, topology = extender.gang_sizes(probe)
    gang = recognize(pods[0], sizes, topology)
    if gang.source == "single" or gang.size is None or len(not_terminating(pods)) < gang.size:
        return None
    members = members_of(pods, extender.just_bound())
    if not members.half or any((p.get("spec") or {}).get("schedulerName") != extender.scheduler_name
                               for p in members.pending):
        return None
    res, reason = extender.plan(gang, members.pending, members.bound, nodes=None, pod=members.pending[0])
    bound_pods = [p for p in pods if pod_key(p) in members.bound]
    decision = decide_half_gang(gang, sorted(set(res.unclaimed_hosts())) if res is not None else None, reason,
                                members, interrupted_bind(bound_pods, members.pending))
    extender.metrics.recovered.labels(decision.action.value).inc()
    log.info("half gang %s: %s", gang.key, decision.reason)
    if decision.action is HalfGangAction.COMPLETE and res is not None:
        await _complete(extender, res, members.pending)
    elif decision.action is HalfGangAction.RESTART:
        uids = {pod_key(p): (p.get("metadata") or {}).get("uid") or "" for p in bound_pods}
        failed = await extender.binder.delete_pods(list(decision.delete), decision.reason, uids)
        for key in decision.delete:
            extender.state.forget(key, uids.get(key, ""))
        for p in members.pending:
            extender.event(p, "GangRestarted", decision.reason + (f"; failed: {'; '.join(failed)}" if failed else ""),
                           warning=True)
    else:
        extender.event(members.pending[0], "GangWaiting", decision.reason)
    return decision.action


async def _complete(extender: "Extender", res, pending: list[dict]) -> None:
    """Bind the pending members on their reserved hosts ourselves; kube-scheduler, should it try one of them
    meanwhile, is answered from the same reservation (service.Extender.bind waits for it)."""
    res.direct = True
    res.done = asyncio.get_running_loop().create_future()
    places = []
    for p in pending:
        q = pod_request(p)
        host = res.claim(pod_key(p), recognize(p).role, (q.gpus, q.cpu_millis, q.memory, 1))
        places.append((pod_key(p), (p.get("metadata") or {}).get("uid") or "", host))
    results = await extender.binder.bind_gang(places)
    for (key, uid, node), err in zip(places, results):
        if not err:
            extender.note_bound(key, node, uid)
    errors = [e for e in results if e]
    err = f"gang {res.gang.name}: completing it failed ({errors[0]})" if errors else ""
    extender.metrics.gangs.labels("completed" if not errors else "completion_failed").inc()
    log.info("completed gang %s: %s", res.gang.key, err or dict(sorted(res.hosts.items())))
    extender.reservations.pop(res.gang.key, None)
    if not res.done.done():
        res.done.set_result(err)
    # a failed completion leaves the gang partly bound: the next look (its pods change) decides again
