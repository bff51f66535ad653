"""Scale targets: read the current replicas, the target's pods, and write the new replica count.
Side effects: API reads and one patch per change (kubernetes_asyncio, never blocking the loop).

Two kinds of target:
    anything with a /scale subresource (Deployment, StatefulSet, LeaderWorkerSet, Dynamo's
    DynamoGraphDeploymentScalingAdapter, ...): GET and merge-PATCH .../scale
    a DynamoGraphDeployment service: spec.services.<service>.replicas by merge patch of the object itself
Resource plurals come from API discovery (cached), so any CRD with a /scale subresource works.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from autoscaler.policy import ScaleTargetRef
from autoscaler.sources import TargetPod


class TargetError(RuntimeError):
    """The scale target cannot be read or written; the message says which object and why."""


@dataclass(frozen=True)
class ScaleState:
    replicas: int  # spec.replicas as the target counts them
    selector: str | None  # label selector of its pods (from /scale status), if known


class Targets:
    def __init__(self, api: Any) -> None:
        self.api = api
        self._plurals: dict[tuple[str, str], str] = {}

    async def _get(self, path: str) -> dict:
        resp = await self.api.call_api(path, "GET", auth_settings=["BearerToken"], _preload_content=False,
                                       _return_http_data_only=True, header_params={"Accept": "application/json"})
        return json.loads(await resp.read())

    async def plural(self, ref: ScaleTargetRef) -> tuple[str, str, str]:
        """(group, version, plural) of the target's resource, from discovery."""
        from kubernetes_asyncio.client.exceptions import ApiException

        group, _, version = ref.api_version.rpartition("/")
        key = (ref.api_version, ref.kind)
        if key not in self._plurals:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            try:
                doc = await self._get(path)
            except ApiException as exc:
                raise TargetError(f"{ref.api_version} is not served by the API server (HTTP {exc.status}); "
                                  f"check scaleTargetRef.apiVersion or install the CRD") from exc
            found = next((r["name"] for r in doc.get("resources") or []
                          if r.get("kind") == ref.kind and "/" not in r.get("name", "")), None)
            if not found:
                raise TargetError(f"kind {ref.kind} is not served under {ref.api_version}; check scaleTargetRef.kind")
            self._plurals[key] = found
        return group, version, self._plurals[key]

    async def read(self, namespace: str, ref: ScaleTargetRef) -> ScaleState:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        group, version, plural = await self.plural(ref)
        api = client.CustomObjectsApi(self.api)
        try:
            if ref.service:
                obj = await api.get_namespaced_custom_object(group, version, namespace, plural, ref.name)
                svc = ((obj.get("spec") or {}).get("services") or {}).get(ref.service)
                if svc is None:
                    raise TargetError(f"{ref.describe()} in {namespace}: no service {ref.service!r} in spec.services")
                return ScaleState(int(svc.get("replicas") or 0), None)
            scale = await api.get_namespaced_custom_object_scale(group, version, namespace, plural, ref.name)
        except ApiException as exc:
            raise TargetError(f"{ref.describe()} in {namespace}: HTTP {exc.status} {exc.reason}"
                              + (" (not found; check scaleTargetRef.name)" if exc.status == 404 else "")) from exc
        if not isinstance(scale, dict):  # custom-object calls answer plain dicts; be safe if a model comes back
            scale = self.api.sanitize_for_serialization(scale)
        return ScaleState(int((scale.get("spec") or {}).get("replicas") or 0), (scale.get("status") or {}).get("selector"))

    async def write(self, namespace: str, ref: ScaleTargetRef, replicas: int) -> None:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        group, version, plural = await self.plural(ref)
        api = client.CustomObjectsApi(self.api)
        try:
            if ref.service:
                body = {"spec": {"services": {ref.service: {"replicas": replicas}}}}
                await api.patch_namespaced_custom_object(group, version, namespace, plural, ref.name, body,
                                                         _content_type="application/merge-patch+json")
            else:
                await api.patch_namespaced_custom_object_scale(group, version, namespace, plural, ref.name,
                                                               {"spec": {"replicas": replicas}},
                                                               _content_type="application/merge-patch+json")
        except ApiException as exc:
            raise TargetError(f"patching {ref.describe()} in {namespace} to {replicas}: HTTP {exc.status} "
                              f"{exc.reason}") from exc

    async def pods(self, namespace: str, selector: str | None) -> tuple[list[TargetPod], int]:
        """The target's pods (name, ready) and how many are not yet bound to a node."""
        from kubernetes_asyncio import client

        if not selector:
            return [], 0
        resp = await client.CoreV1Api(self.api).list_namespaced_pod(namespace, label_selector=selector,
                                                                    _preload_content=False)
        items = json.loads(await resp.read()).get("items") or []
        out, unbound = [], 0
        for p in items:
            md, st = p.get("metadata") or {}, p.get("status") or {}
            if md.get("deletionTimestamp") or st.get("phase") in ("Succeeded", "Failed"):
                continue
            if not (p.get("spec") or {}).get("nodeName"):
                unbound += 1
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
            out.append(TargetPod(md.get("name", ""), ready))
        return out, unbound
