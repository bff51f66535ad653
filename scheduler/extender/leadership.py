"""Which extender acts: the one beside the kube-scheduler that holds the scheduler's leader-election Lease.

The shipped Deployment runs two kube-schedulers with leader election, each with its own extender sidecar. Only
the leader calls its sidecar's verbs, but the extender also acts on its own: it releases gated gangs (pinning.run),
completes and restarts gangs (recovery.run, health_loop) and, with --pin-at-creation, reserves gangs in the
admission webhook. Two sidecars doing that at once would plan one gang twice and pin its members to different
domains, and the standby's reservations are never used by a bind. So with `--follow-lease NAMESPACE/NAME` an
extender does those things only while its own kube-scheduler holds that Lease; its webhook still routes and
gates (the gate is always safe: the acting extender releases the gang). A standby keeps nothing of what it saw
(gang health's losses, touched gangs) and takes over as a restarted extender starts.

How far apart: each extender learns of a change of holder at its next read (every POLL_S), so around a handover
the old and the new acting extender may overlap by up to one poll. A release twice is refused by its patch's
test of the gate, a Binding twice by the API; a gang pinned at creation in that window could be reserved by
both. A holder that stops renewing stops its extender a poll before the lease could pass to another.

Whose Lease it is: kube-scheduler's leader-election identity is `<hostname>_<uuid>` (k8s.io/kubernetes v1.37.2
cmd/kube-scheduler/app/options/options.go, makeLeaderElectionConfig), and the sidecar shares its pod's hostname.
When the holder has stopped renewing: as client-go's leaderelection judges it (k8s.io/client-go v0.37.2
tools/leaderelection/leaderelection.go, observedTime): a record held for leaseDurationSeconds of our own clock
after we last saw it change, so clocks of other machines never matter. A Lease that cannot be read keeps the last
view until that view expires; then the extender stops acting (it cannot know it still leads).
Side effects: `run` reads one Lease every `poll_s`; the rest is pure.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("clique.extender.leadership")
POLL_S = 2.0  # kube-scheduler renews every retryPeriod, 2 s by default (k8s.io/component-base v0.37.2
# config/v1alpha1/defaults.go); leaseDuration defaults to 15 s there


def holds(holder: str | None, identity: str) -> bool:
    """Whether the Lease's holderIdentity is the kube-scheduler of this pod (`identity`: its hostname)."""
    return bool(holder) and (holder == identity or holder.startswith(identity + "_"))


@dataclass(frozen=True)
class Record:
    """What matters of a Lease's spec (coordination.k8s.io/v1 LeaseSpec, k8s.io/api v0.37.2
    coordination/v1/types.go): holderIdentity, leaseDurationSeconds, renewTime."""
    holder: str | None
    duration_s: float
    renewed: str | None  # as the API wrote it; only compared for change


@dataclass
class Follower:
    """The pure state of following a Lease: the last record seen and when (our monotonic clock) it last changed."""
    identity: str
    record: Record | None = None
    changed_at: float = float("-inf")

    def observe(self, record: Record | None, now: float) -> None:
        """A read of the Lease (None: it does not exist)."""
        if record != self.record:
            self.record, self.changed_at = record, now

    def active(self, now: float, margin_s: float = 0.0) -> bool:
        """Ours, and seen changing within the lease duration less `margin_s`: the next holder's own clock may have
        seen the last renewal up to one poll earlier, so this extender stops acting a poll before it could take
        over (leadership.Leadership passes POLL_S)."""
        r = self.record
        return (r is not None and holds(r.holder, self.identity)
                and now - self.changed_at < max(r.duration_s - margin_s, r.duration_s / 2))


class Leadership:
    """`active()` for the extender's own actions; always True without a Lease to follow (one replica, tests)."""

    def __init__(self, api: Any = None, lease: tuple[str, str] | None = None, identity: str | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.api, self.lease = api, lease
        self.follower = Follower(identity or socket.gethostname())
        self.clock = clock or time.monotonic
        self._was: tuple[bool, str | None] | None = None  # (acting, holder) last logged

    def active(self) -> bool:
        if self.lease is None:
            return True
        now = self.clock()
        is_active = self.follower.active(now, POLL_S)
        r = self.follower.record
        seen = (is_active, r.holder if r else None)
        if seen != self._was:  # a change of role, or of holder
            log.info("extender %s: its kube-scheduler %s the Lease %s/%s (holder %s)", self.follower.identity,
                     "holds" if is_active else "does not hold", *self.lease, seen[1] or "none")
            self._was = seen
        return is_active

    async def read(self) -> bool:
        """Read the Lease once; False when it does not exist."""
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        assert self.lease is not None
        namespace, name = self.lease
        try:
            obj = await client.CoordinationV1Api(self.api).read_namespaced_lease(name, namespace)
        except ApiException as exc:
            if exc.status == 403:
                raise PermissionError(f"forbidden: grant get on coordination.k8s.io leases/{name} in {namespace} "
                                      "(manifests/scheduler/rbac.yaml, Role clique-scheduler:leader-election)") from None
            if exc.status != 404:
                raise
            self.follower.observe(None, self.clock())
            return False
        spec = obj.spec
        renewed = spec.renew_time or spec.acquire_time
        self.follower.observe(Record(spec.holder_identity, float(spec.lease_duration_seconds or 15),
                                     renewed.isoformat() if renewed is not None else None), self.clock())
        return True

    async def run(self, poll_s: float = POLL_S) -> None:
        if self.lease is None:
            return
        failures = missing = 0
        while True:
            try:
                missing = 0 if await self.read() else missing + 1
                failures = 0
                if missing in (10, 100) or (missing and missing % 1000 == 0):  # 20 s, then rarely
                    log.warning("Lease %s/%s does not exist after %.0fs: is kube-scheduler's leaderElection on, with "
                                "this resourceNamespace/resourceName? Until its kube-scheduler holds it, this extender "
                                "releases, recovers and pins no gangs", *self.lease, missing * poll_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the last view; it expires by itself
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("Lease %s/%s not readable (%s; %d in a row): acting on the last view until it "
                                "expires, then releasing, recovering and pinning no gangs", *self.lease, exc, failures)
            self.active()  # logs a change of role as soon as it is seen
            await asyncio.sleep(poll_s)
