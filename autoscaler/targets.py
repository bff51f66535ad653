"""Scale targets: read the current replicas, the target's gang shape and pods, and write the new replica count.
Side effects: API reads and one patch per change (kubernetes_asyncio, never blocking the loop). What the objects
mean is decided in autoscaler/target_shape.py (pure); this module only reads and writes them.

Kinds of target:
    anything with a /scale subresource (Deployment, StatefulSet, LeaderWorkerSet, Dynamo's
    DynamoGraphDeploymentScalingAdapter, ...): GET and merge-PATCH .../scale; the object itself is read too, for the
    gang shape it declares (LWS size and templates, pod template GPUs, a DGDSA's DGD service)
    a DynamoGraphDeployment service:
        nvidia.com/v1alpha1 spec.services.<service>.replicas: merge patch carrying metadata.resourceVersion (the API
            server answers 409 Conflict if the object changed since it was read)
        nvidia.com/v1beta1 spec.components[i].replicas, i found by name in the object read: a JSON patch whose `test`
            ops check resourceVersion and the name at i (422 if anything changed since)
        On a refused write the object is read again; if the service's replicas are still what the decision started
        from, the write is retried on the fresh object, else it is left for the next evaluation (nothing written over).
        A service with scalingAdapter enabled is scaled through its DynamoGraphDeploymentScalingAdapter's /scale
        (found by spec.dgdRef); with no adapter found it is refused, saying to point scaleTargetRef at the adapter.
        Its pods are the ones Dynamo labels nvidia.com/dynamo-graph-deployment-name=<dgd>,
        nvidia.com/dynamo-component=<service>.
Resource plurals come from API discovery (cached), so any CRD with a /scale subresource works.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from autoscaler import target_shape as S
from autoscaler.policy import ScaleTargetRef
from autoscaler.sources import TargetPod

log = logging.getLogger("clique.autoscaler.targets")
WRITE_ATTEMPTS = 3  # a DGD write refused for a concurrent edit is retried on the fresh object this many times in all


class TargetError(RuntimeError):
    """The scale target cannot be read or written; the message says which object and why."""


@dataclass(frozen=True)
class ScaleState:
    replicas: int  # spec replicas as the target counts them
    selector: str | None  # label selector of its pods (from /scale status, or Dynamo's labels), if known
    selects: str = "pods"  # "pods": every pod of the target; "leaders": one leader pod per replica (LWS)
    shape: S.TargetShape | None = None  # the gang shape the target declares
    via: str = ""  # the object whose replicas are read and written, when not the target itself (its DGDSA)
    resource_version: str | None = None  # DGD service targets: the object as read, for the write's precondition
    index: int | None = None  # v1beta1 DGD: the component's index in spec.components
    adapter: tuple[str, str, str, str] | None = None  # (group, version, plural, name) of the DGDSA scaled instead


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
        return await self._plural(ref.api_version, ref.kind)

    async def _plural(self, api_version: str, kind: str) -> tuple[str, str, str]:
        from kubernetes_asyncio.client.exceptions import ApiException

        group, _, version = api_version.rpartition("/")
        key = (api_version, kind)
        if key not in self._plurals:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            try:
                doc = await self._get(path)
            except ApiException as exc:
                raise TargetError(f"{api_version} is not served by the API server (HTTP {exc.status}); "
                                  f"check scaleTargetRef.apiVersion or install the CRD") from exc
            found = next((r["name"] for r in doc.get("resources") or []
                          if r.get("kind") == kind and "/" not in r.get("name", "")), None)
            if not found:
                raise TargetError(f"kind {kind} is not served under {api_version}; check scaleTargetRef.kind")
            self._plurals[key] = found
        return group, version, self._plurals[key]

    @staticmethod
    def _http(exc: Any, what: str) -> TargetError:
        return TargetError(f"{what}: HTTP {exc.status} {exc.reason}"
                           + (" (not found; check scaleTargetRef.name)" if exc.status == 404 else ""))

    # ------------------------------------------------------------------ reading
    async def read(self, namespace: str, ref: ScaleTargetRef) -> ScaleState:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        group, version, plural = await self.plural(ref)
        if ref.kind == S.DGD_KIND and group == S.DYNAMO_GROUP:
            return await self._read_dgd(namespace, ref, group, version, plural)
        api = client.CustomObjectsApi(self.api)
        try:
            scale = await api.get_namespaced_custom_object_scale(group, version, namespace, plural, ref.name)
        except ApiException as exc:
            raise self._http(exc, f"{ref.describe()} in {namespace}") from exc
        if not isinstance(scale, dict):  # custom-object calls answer plain dicts; be safe if a model comes back
            scale = self.api.sanitize_for_serialization(scale)
        replicas = int((scale.get("spec") or {}).get("replicas") or 0)
        selector = (scale.get("status") or {}).get("selector") or None
        shape, fallback = await self._declared_shape(namespace, ref, group, version, plural)
        selector = selector or fallback
        is_lws = ref.kind == S.LWS_KIND and group == S.LWS_GROUP
        if is_lws and not selector:  # status not written yet: the selector the LWS controller will write
            selector = S.lws_leader_selector(ref.name)
        leaders = is_lws or S.selects_leaders_only(selector)
        return ScaleState(replicas, selector, "leaders" if leaders else "pods", shape)

    async def _object(self, group: str, version: str, namespace: str, plural: str, name: str) -> dict:
        from kubernetes_asyncio import client

        obj = await client.CustomObjectsApi(self.api).get_namespaced_custom_object(group, version, namespace, plural,
                                                                                   name)
        return obj if isinstance(obj, dict) else self.api.sanitize_for_serialization(obj)

    async def _declared_shape(self, namespace: str, ref: ScaleTargetRef, group: str, version: str, plural: str
                              ) -> tuple[S.TargetShape | None, str | None]:
        """The gang shape the target's object declares (None when its kind declares none or it cannot be read),
        and, for a DGDSA, the selector of its DGD service's pods (used when the adapter's status has none yet)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        kind = (group, ref.kind)
        if kind not in {(S.LWS_GROUP, S.LWS_KIND), ("apps", "StatefulSet"), ("apps", "Deployment"),
                        (S.DYNAMO_GROUP, S.DGDSA_KIND)}:
            return None, None
        try:
            obj = await self._object(group, version, namespace, plural, ref.name)
            if kind == (S.LWS_GROUP, S.LWS_KIND):
                return S.lws_shape(obj), None
            if kind[0] == "apps":
                return S.pod_template_shape(obj, "Pods"), None
            dgd, service = S.adapter_ref(obj)  # a DGDSA: the shape of the DGD service it scales
            if not dgd or not service:
                return None, None
            selector = S.dgd_pod_selector(dgd, service)
            dgd_api = f"{group}/{version}"
            g, v, p = await self._plural(dgd_api, S.DGD_KIND)
            index, svc = S.dgd_service(await self._object(g, v, namespace, p, dgd), dgd_api, service)
            return S.dgd_shape(svc, dgd_api, f"{S.DGD_KIND}/{dgd} " + S.dgd_where(dgd_api, service, index)), selector
        except S.ShapeError as exc:
            raise TargetError(f"{ref.describe()} in {namespace}: {exc}") from exc
        except (ApiException, TargetError) as exc:  # no gang shape from it; the policy's own stands
            log.warning("%s in %s: gang shape not read (%s)", ref.describe(), namespace,
                        getattr(exc, "reason", None) or exc)
            return None, None

    async def _read_dgd(self, namespace: str, ref: ScaleTargetRef, group: str, version: str, plural: str
                        ) -> ScaleState:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        assert ref.service, "a DynamoGraphDeployment policy names its service (policy validation)"
        where = f"{ref.describe()} in {namespace}"
        try:
            obj = await self._object(group, version, namespace, plural, ref.name)
        except ApiException as exc:
            raise self._http(exc, where) from exc
        try:
            index, svc = S.dgd_service(obj, ref.api_version, ref.service)
            shape = S.dgd_shape(svc, ref.api_version, S.dgd_where(ref.api_version, ref.service, index))
        except S.ShapeError as exc:
            raise TargetError(f"{where}: {exc}; check scaleTargetRef.service") from exc
        selector = S.dgd_pod_selector(ref.name, ref.service)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if not S.dgd_adapter_enabled(svc, ref.api_version):
            return ScaleState(S.dgd_replicas(svc), selector, "pods", shape, resource_version=rv, index=index)
        adapter = await self._find_adapter(namespace, group, version, ref.name, ref.service)
        if adapter is None:
            name = S.adapter_name(ref.name, ref.service)
            raise TargetError(
                f"{where}: scalingAdapter is enabled on it, so its replicas belong to its "
                f"DynamoGraphDeploymentScalingAdapter (a direct patch would be undone), and no adapter with "
                f"spec.dgdRef naming it was found in {namespace}; point scaleTargetRef at the adapter: "
                f"{{apiVersion: {S.DYNAMO_GROUP}/{version}, kind: {S.DGDSA_KIND}, name: {name}}} (the name the "
                f"Dynamo operator gives it)")
        g, v, p, name = adapter
        try:
            scale = await client.CustomObjectsApi(self.api).get_namespaced_custom_object_scale(g, v, namespace, p,
                                                                                               name)
        except ApiException as exc:
            raise self._http(exc, f"{where}: its {S.DGDSA_KIND}/{name}") from exc
        if not isinstance(scale, dict):
            scale = self.api.sanitize_for_serialization(scale)
        return ScaleState(int((scale.get("spec") or {}).get("replicas") or 0),
                          (scale.get("status") or {}).get("selector") or selector, "pods", shape,
                          via=f"{S.DGDSA_KIND}/{name}", adapter=adapter)

    async def _find_adapter(self, namespace: str, group: str, version: str, dgd: str, service: str
                            ) -> tuple[str, str, str, str] | None:
        """The DGDSA whose spec.dgdRef names this service, at the DGD's version, else at the other one served."""
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        for v in dict.fromkeys((version, "v1beta1", "v1alpha1")):
            try:
                _, _, plural = await self._plural(f"{group}/{v}", S.DGDSA_KIND)
                resp = await client.CustomObjectsApi(self.api).list_namespaced_custom_object(
                    group, v, namespace, plural, _preload_content=False)
                items = json.loads(await resp.read()).get("items") or []
            except TargetError:
                continue  # that version (or the CRD) is not served
            except ApiException as exc:
                raise TargetError(f"listing {S.DGDSA_KIND}s in {namespace}: HTTP {exc.status} {exc.reason}") from exc
            found = sorted((md.get("name", "") for a in items
                            if S.adapter_matches(a, dgd, service) and (md := a.get("metadata") or {})))
            if found:
                return group, v, plural, found[0]
        return None

    # ------------------------------------------------------------------ writing
    async def write(self, namespace: str, ref: ScaleTargetRef, replicas: int, state: ScaleState | None = None
                    ) -> None:
        """Set the target's replicas. `state` is what read() returned for the decision (read now when None)."""
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        group, version, plural = await self.plural(ref)
        api = client.CustomObjectsApi(self.api)
        is_dgd = ref.kind == S.DGD_KIND and group == S.DYNAMO_GROUP
        if is_dgd and state is None:
            state = await self.read(namespace, ref)
        what = f"patching {ref.describe()} in {namespace} to {replicas}"
        try:
            if state is not None and state.adapter is not None:
                g, v, p, name = state.adapter
                await api.patch_namespaced_custom_object_scale(g, v, namespace, p, name,
                                                               {"spec": {"replicas": replicas}},
                                                               _content_type="application/merge-patch+json")
            elif is_dgd:
                assert state is not None and ref.service
                await self._write_dgd(namespace, ref, replicas, state, (group, version, plural))
            else:
                await api.patch_namespaced_custom_object_scale(group, version, namespace, plural, ref.name,
                                                               {"spec": {"replicas": replicas}},
                                                               _content_type="application/merge-patch+json")
        except ApiException as exc:
            raise TargetError(f"{what}: HTTP {exc.status} {exc.reason}") from exc

    async def _write_dgd(self, namespace: str, ref: ScaleTargetRef, replicas: int, state: ScaleState,
                         gvp: tuple[str, str, str]) -> None:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        assert ref.service
        api = client.CustomObjectsApi(self.api)
        decided_from = state.replicas
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                if state.index is None:  # v1alpha1: a merge patch into the services map, resourceVersion-checked
                    body: Any = {"metadata": {"resourceVersion": state.resource_version},
                                 "spec": {"services": {ref.service: {"replicas": replicas}}}}
                    await api.patch_namespaced_custom_object(*gvp[:2], namespace, gvp[2], ref.name, body,
                                                             _content_type="application/merge-patch+json")
                else:
                    body = S.dgd_replicas_patch(state.index, ref.service, state.resource_version or "", replicas)
                    await api.patch_namespaced_custom_object(*gvp[:2], namespace, gvp[2], ref.name, body,
                                                             _content_type="application/json-patch+json")
                return
            except ApiException as exc:
                if exc.status not in (409, 422):
                    raise
                fresh = await self.read(namespace, ref)  # someone else wrote the DGD between our read and write
                if fresh.adapter is not None:
                    raise TargetError(f"{ref.describe()} in {namespace}: scalingAdapter was enabled meanwhile; "
                                      f"the next evaluation scales it through {fresh.via}") from exc
                if fresh.replicas != decided_from:
                    raise TargetError(f"{ref.describe()} in {namespace}: its replicas changed from {decided_from} to "
                                      f"{fresh.replicas} while this decision was made; not written over, the next "
                                      "evaluation starts from the new value") from exc
                log.info("%s in %s: changed meanwhile (HTTP %s); writing again on the fresh object (attempt %d)",
                         ref.describe(), namespace, exc.status, attempt + 1)
                state = fresh
        raise TargetError(f"{ref.describe()} in {namespace}: the object kept changing; {WRITE_ATTEMPTS} writes "
                          "refused, the next evaluation tries again")

    # ------------------------------------------------------------------ pods
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
