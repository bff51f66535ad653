"""The extender's writes to the API server: Bindings, pod deletions (rollback, restart) and Events. Side effects
only; every answer of the API server is checked and comes back as an error string ("" = success).

kubernetes_asyncio checks the HTTP status only when it reads the body for us (`_preload_content=True`); we
read it ourselves (no model deserialisation on the bind path), so the status is checked here
(kubernetes_asyncio 36.1.0, kubernetes_asyncio/client/rest.py, RESTClientObject.request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("clique.extender.binder")
# Test hook: seconds to pause after the first Binding of a gang, so a test can kill the extender mid-bind.
PAUSE_ENV = "CLIQUE_TEST_PAUSE_AFTER_FIRST_BINDING_S"


def _status_message(status: int, body: bytes) -> str:
    """The API's own words for a refused request (its Status object), else the raw start of the body."""
    try:
        obj = json.loads(body)
        if isinstance(obj, dict):
            return f"{status} {obj.get('reason') or ''}: {obj.get('message') or ''}".strip()
    except ValueError:
        pass
    return f"{status}: {body[:200].decode('utf-8', 'replace')}"


async def _checked(call: Any, what: str, refused: str = "") -> str:
    """Await a write made with `_preload_content=False` and check its HTTP status: "" on success, else an error
    naming `what` with the API's own words (or why the API server could not be reached)."""
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        resp = await call
        try:
            if 200 <= resp.status < 300:
                return ""
            return f"{what}{refused}: {_status_message(resp.status, await resp.read())}"
        finally:
            resp.release()
    except ApiException as exc:
        return f"{what}{refused}: {exc.status} {exc.reason}" + (f": {exc.body[:300]}" if exc.body else "")
    except (OSError, asyncio.TimeoutError) as exc:
        return f"{what}: API server unreachable ({exc!r})"


class Binder:
    def __init__(self, api_client: Any, component: str = "clique-scheduler") -> None:
        self.api = api_client
        self.component = component
        self.pause_after_first_s = float(os.environ.get(PAUSE_ENV, "0") or 0)

    async def bind(self, ns: str, name: str, uid: str, node: str) -> str:
        from kubernetes_asyncio import client

        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        return await _checked(client.CoreV1Api(self.api).create_namespaced_pod_binding(
            name, ns, body, _preload_content=False), f"binding {ns}/{name} to {node}", " refused")

    async def bind_gang(self, places: list[tuple[str, str, str]]) -> list[str]:
        """Bindings for (pod key, uid, node) in order; one error string per place. All at once, except under the
        test hook, which binds the first, pauses, then the rest."""
        async def one(key: str, uid: str, node: str) -> str:
            ns, name = key.split("/", 1)
            return await self.bind(ns, name, uid, node)

        if self.pause_after_first_s and len(places) > 1:
            first = await one(*places[0])
            log.warning("test hook: bound %s, pausing %.1fs before the other %d Bindings", places[0][0],
                        self.pause_after_first_s, len(places) - 1)
            await asyncio.sleep(self.pause_after_first_s)
            return [first, *await asyncio.gather(*(one(*p) for p in places[1:]))]
        return list(await asyncio.gather(*(one(*p) for p in places)))

    async def patch_pod(self, key: str, ops: list[dict]) -> str:
        """Apply a JSON patch to a pod (pinning.py: remove our scheduling gate, narrow its node affinity)."""
        from kubernetes_asyncio import client

        ns, name = key.split("/", 1)
        # a list body is sent as application/json-patch+json
        return await _checked(client.CoreV1Api(self.api).patch_namespaced_pod(name, ns, ops, _preload_content=False),
                              f"patching {key}")

    async def nominate(self, key: str, node: str) -> str:
        """Set a pending pod's status.nominatedNodeName to its planned node (a merge patch of pods/status)."""
        from kubernetes_asyncio import client

        ns, name = key.split("/", 1)
        try:
            resp = await client.CoreV1Api(self.api).patch_namespaced_pod_status(
                name, ns, {"status": {"nominatedNodeName": node}}, _preload_content=False)
            try:
                if 200 <= resp.status < 300:
                    return ""
                err = f"nominating {node} for {key}: {_status_message(resp.status, await resp.read())}"
            finally:
                resp.release()
        except Exception as exc:  # noqa: BLE001 - a shortcut for kube-scheduler, never needed for correctness
            err = f"nominating {node} for {key}: {exc!r:.200}"
        log.info("%s", err)
        return err

    async def delete_pods(self, keys: list[str], why: str, uids: dict[str, str] | None = None) -> list[str]:
        """Delete pods at once (their controllers recreate them); a pod already gone is success. With `uids`, only
        that pod (a precondition), never a successor created under the same name. Returns the failures, each
        naming the pod and the API's answer."""
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        async def one(key: str) -> str:
            ns, name = key.split("/", 1)
            try:
                pre = {"preconditions": {"uid": uids[key]}} if uids and uids.get(key) else None
                resp = await client.CoreV1Api(self.api).delete_namespaced_pod(
                    name, ns, grace_period_seconds=0, body=pre, _preload_content=False)
                try:
                    if 200 <= resp.status < 300 or resp.status == 404:
                        return ""
                    if resp.status == 409 and pre:  # the pod under that name is already a successor
                        return ""
                    return f"deleting {key}: {_status_message(resp.status, await resp.read())}"
                finally:
                    resp.release()
            except ApiException as exc:
                return "" if exc.status == 404 else f"deleting {key}: {exc.status} {exc.reason}"
            except (OSError, asyncio.TimeoutError) as exc:
                return f"deleting {key}: API server unreachable ({exc!r})"

        failures = [e for e in await asyncio.gather(*(one(k) for k in keys)) if e]
        for f in failures:
            log.error("%s (%s)", f, why)
        if keys and not failures:
            log.info("deleted %s: %s", ", ".join(keys), why)
        return failures

    async def event(self, pod: dict, reason: str, message: str, warning: bool = False) -> None:
        from kubernetes_asyncio import client

        md = pod.get("metadata") or {}
        ns = md.get("namespace") or "default"
        stamp = datetime.now(timezone.utc)
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{md.get('name')}.clique-", "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": md.get("name"), "namespace": ns, "uid": md.get("uid"),
                                   "apiVersion": "v1"},
                "reason": reason, "message": message[:1024], "type": "Warning" if warning else "Normal",
                "source": {"component": self.component}, "firstTimestamp": stamp, "lastTimestamp": stamp,
                "count": 1}
        try:
            await client.CoreV1Api(self.api).create_namespaced_event(ns, body)
        except Exception as exc:  # noqa: BLE001 - an Event is advice; never fail the verb for it
            log.warning("event %s on %s/%s not sent: %s", reason, ns, md.get("name"), exc)
