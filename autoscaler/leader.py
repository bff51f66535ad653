"""Leader election through a coordination.k8s.io/v1 Lease, so that only one autoscaler replica patches targets.
Side effects: Lease reads and writes.

The rules are client-go's leaderelection: acquire when the lease is free or its holder has not renewed within
leaseDurationSeconds; renew every `retry_s`; give up leadership when a renewal has not succeeded for
`renew_deadline_s`. Updates carry the resourceVersion read, so two candidates cannot both win a race.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("clique.autoscaler.leader")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _ts(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, api: Any, namespace: str, name: str, identity: str, lease_s: int = 15,
                 renew_deadline_s: float = 10, retry_s: float = 2) -> None:
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.lease_s, self.renew_deadline_s, self.retry_s = lease_s, renew_deadline_s, retry_s
        self.is_leader = asyncio.Event()
        self._last_renew: datetime | None = None

    async def try_acquire_or_renew(self) -> bool:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        coord = client.CoordinationV1Api(self.api)
        now = _now()
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_s,
                "renewTime": _ts(now)}
        try:
            lease = await coord.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {**spec, "acquireTime": _ts(now), "leaseTransitions": 0}}
            try:
                await coord.create_namespaced_lease(self.namespace, body)
            except ApiException as exc2:
                if exc2.status == 409:  # someone else created it first
                    return False
                raise
            return True
        cur = lease.spec
        holder = cur.holder_identity
        renewed = cur.renew_time or cur.acquire_time
        duration = int(cur.lease_duration_seconds or self.lease_s)
        expired = renewed is None or (now - renewed).total_seconds() > duration
        if holder and holder != self.identity and not expired:
            return False
        new_spec = dict(spec)
        if holder != self.identity:
            new_spec["acquireTime"] = _ts(now)
            new_spec["leaseTransitions"] = int(cur.lease_transitions or 0) + 1
        else:
            new_spec["acquireTime"] = _ts(cur.acquire_time or now)
            new_spec["leaseTransitions"] = int(cur.lease_transitions or 0)
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace,
                             "resourceVersion": lease.metadata.resource_version},
                "spec": new_spec}
        try:
            await coord.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # lost a race: read again next round
                return False
            raise
        return True

    async def run(self) -> None:
        """Keep trying; sets/clears `is_leader`. Runs until cancelled, then releases the lease if held."""
        try:
            while True:
                try:
                    ok = await self.try_acquire_or_renew()
                except Exception as exc:  # API unreachable: keep leading only until the renew deadline
                    log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                    ok = False
                now = _now()
                if ok:
                    if not self.is_leader.is_set():
                        log.info("became leader (lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
                    self._last_renew = now
                    self.is_leader.set()
                elif self.is_leader.is_set() and (self._last_renew is None or
                                                  (now - self._last_renew).total_seconds() > self.renew_deadline_s):
                    log.warning("lost leadership (no renewal for %.0f s)", self.renew_deadline_s)
                    self.is_leader.clear()
                await asyncio.sleep(self.retry_s)
        finally:
            if self.is_leader.is_set():
                self.is_leader.clear()
                await self._release()

    async def _release(self) -> None:
        from kubernetes_asyncio import client

        try:
            coord = client.CoordinationV1Api(self.api)
            await coord.patch_namespaced_lease(self.name, self.namespace,
                                               {"spec": {"holderIdentity": None, "renewTime": None}})
            log.info("released lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # noqa: BLE001 - the lease simply expires
            log.warning("could not release lease: %s", exc)
