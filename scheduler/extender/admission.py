"""Mutating admission webhook (opt-in): gang pods created in namespaces that opted in get Clique's scheduler.

Why: Grove's operator writes its configured backend into pod.spec.schedulerName, and Dynamo's LWS path pairs
LeaderWorkerSet with Volcano's scheduler, so a `schedulerName: clique-scheduler` set by the user does not reach
the pods. The API server calls this webhook on pod CREATE after those controllers made the pod; the answer is a
JSONPatch that sets /spec/schedulerName. Which namespaces are asked is the webhook configuration's business
(manifests/scheduler/webhook.yaml: namespaceSelector clique.dev/scheduler=enabled); here every pod asked about
that Clique recognises as a gang member is routed. Pod creation is never blocked: every AdmissionReview is
answered `allowed: true`, odd objects with `warnings`; bodies that are not an AdmissionReview get HTTP 400
(the API server then applies failurePolicy: Ignore).

`review` and `patch_for` are pure; `webhook_app` is the aiohttp route, `WebhookServer` serves it over TLS and
picks up renewed certificates (a cert-manager Secret is rewritten in place) without a restart.
Side effects (WebhookServer only): a listening socket, reads of the certificate files in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from aiohttp import web

from scheduler.extender.pinning import GATE, PINNED
from scheduler.gangs import LWS_NAME, recognize

log = logging.getLogger("clique.admission")

REVIEW_API_VERSION = "admission.k8s.io/v1"
PATH = "/mutate"
# An AdmissionReview of a pod CREATE carries the pod once (oldObject is null); etcd stores objects of at most
# 1.5 MiB by default, so 4 MiB is far above a real review and bounds what one request can make us parse.
MAX_BODY = 4 * 2**20
MAX_UID = 256  # the API server sends a UID (36 characters); the answer echoes it
CERT_FILE, KEY_FILE = "tls.crt", "tls.key"  # the keys of a kubernetes.io/tls Secret
# Labels the Dynamo operator puts on the pods of a DynamoGraphDeployment (frontend and workers alike):
# ai-dynamo/dynamo deploy/operator/internal/consts/consts.go, KubeLabelDynamoGraphDeploymentName and
# KubeLabelDynamoComponent, read at commit 0367e404b084 (a main-branch commit; which release tag contains it was
# not confirmed; the platform chart on main says 1.3.0); set on pod templates in
# deploy/operator/internal/dynamo/graph.go. The older deploy/cloud/operator/internal/consts/consts.go defines
# nvidia.com/dynamo-component but not the graph label: both keys are required here. The released Dynamo 1.6.1 reads
# the same two keys ("Stable labels the operator stamps on every worker Pod": PyPI ai-dynamo 1.6.1,
# dynamo/planner/connectors/clients/kubernetes_api.py, DYNAMO_DGD_NAME_LABEL and DYNAMO_COMPONENT_LABEL).
DYNAMO_GRAPH = "nvidia.com/dynamo-graph-deployment-name"
DYNAMO_COMPONENT = "nvidia.com/dynamo-component"
WARN = "clique-scheduler webhook"
# Gangs whose members are all created at once (so a gang can be complete while gated).
GATED_SOURCES = ("clique", "grove", "volcano", "coscheduling", "podgroup", "statefulset")


class NotAReview(ValueError):
    """The body is not an admission.k8s.io/v1 AdmissionReview request; the message says what is missing."""


@dataclass(frozen=True)
class Decision:
    outcome: str  # routed, pinned, already-ours, not-a-gang, bound, not-a-pod-create, malformed
    patch: list[dict[str, Any]] = field(default_factory=list)  # JSONPatch operations; empty: admitted as is
    warnings: list[str] = field(default_factory=list)


def _string_map(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()))


def pod_problem(pod: Any) -> str | None:
    """Why `pod` lacks the shape of a Pod as the API server sends it (the fields read here), or None."""
    if not isinstance(pod, dict):
        return f"request.object is {type(pod).__name__}, not a Pod object"
    md = pod.get("metadata")
    if not isinstance(md, dict):
        return "request.object.metadata is not an object"
    for key in ("name", "namespace", "generateName"):
        if md.get(key) is not None and not (isinstance(md[key], str) and len(md[key]) <= 253):
            return f"request.object.metadata.{key} is not a name (a string of at most 253 characters)"
    for key in ("labels", "annotations"):
        if not _string_map(md.get(key)):
            return f"request.object.metadata.{key} is not a map of strings"
    owners = md.get("ownerReferences")
    if owners is not None and (not isinstance(owners, list) or not all(
            isinstance(o, dict) and isinstance(o.get("kind"), str) and isinstance(o.get("name"), str) for o in owners)):
        return "request.object.metadata.ownerReferences is not a list of owner references"
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return "request.object.spec is not an object"
    for key in ("schedulerName", "nodeName"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            return f"request.object.spec.{key} is not a string"
    group = spec.get("schedulingGroup")
    if group is not None and (not isinstance(group, dict) or not isinstance(group.get("podGroupName", ""), str)):
        return "request.object.spec.schedulingGroup is not an object with a string podGroupName"
    return None


def gang_source(pod: Mapping[str, Any]) -> str | None:
    """The gang source Clique recognises the pod by (scheduler.gangs, then Dynamo's labels), or None."""
    source = recognize(pod).source
    if source != "single":
        return source
    labels = pod["metadata"].get("labels") or {}
    # An LWS pod before LWS's own pod webhook added its group-index label (reinvocationPolicy: IfNeeded calls
    # this webhook again after that one, but the name alone already says the pod is part of a group).
    if labels.get(LWS_NAME):
        return "lws"
    if labels.get(DYNAMO_GRAPH) and labels.get(DYNAMO_COMPONENT):
        return "dynamo"
    return None


def patch_for(pod: Mapping[str, Any], scheduler_name: str) -> list[dict[str, Any]]:
    """JSONPatch operations that hand a (well-formed) pod to Clique's scheduler; [] when it already is ours.
    `add` on an existing member replaces it (RFC 6902), so this holds whether or not schedulerName is set."""
    if pod["spec"].get("schedulerName") == scheduler_name:
        return []
    return [{"op": "add", "path": "/spec/schedulerName", "value": scheduler_name}]


def gate_op(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Add Clique's scheduling gate (pinning.py plans the gang once complete and removes it); [] if present."""
    gates = pod["spec"].get("schedulingGates")
    if not isinstance(gates, list) or not gates:
        return [{"op": "add", "path": "/spec/schedulingGates", "value": [{"name": GATE}]}]
    if any(isinstance(g, dict) and g.get("name") == GATE for g in gates):
        return []
    return [{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": GATE}}]


def decide(request: Mapping[str, Any], scheduler_name: str, gate: bool = False,
           pin: Callable[[dict[str, Any]], list[dict[str, Any]] | None] | None = None) -> Decision:
    """What to answer for one AdmissionRequest (already known to be a dict with a uid). `gate`: also add the
    scheduling gate to members of gangs whose pods all exist at once (not LWS: its workers are created only
    after the leader is placed, so a gated leader would wait for ever). `pin`: the extender's pin at creation
    (pinning.Pinner.admit, an effect: it plans and reserves), asked before the gate for a real creation (not a
    dry run); its operations replace the gate, None keeps it. A pod already pinned at creation (annotation
    pinning.PINNED: this webhook asked again, or the routing policy re-run after it) gets neither. Without `pin`
    this function is pure."""
    if request.get("operation") != "CREATE":
        return Decision("not-a-pod-create")
    kind, resource = request.get("kind"), request.get("resource")
    if (not isinstance(kind, dict) or kind.get("kind") != "Pod" or kind.get("group") not in ("", None)
            or (isinstance(resource, dict) and resource.get("resource") not in ("pods", None))
            or request.get("subResource")):
        return Decision("not-a-pod-create", warnings=[f"{WARN}: expected a pod CREATE, left this request as is"])
    pod = request.get("object")
    problem = pod_problem(pod)
    if problem:
        return Decision("malformed", warnings=[f"{WARN}: {problem}; pod admitted unchanged"])
    if pod["spec"].get("nodeName"):  # created bound: no scheduler is involved
        return Decision("bound")
    try:
        source = gang_source(pod)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a shape pod_problem does not know yet
        log.warning("admission: could not read the pod's gang labels: %s: %.200s", type(exc).__name__, exc)
        return Decision("malformed", warnings=[f"{WARN}: could not read the pod's gang labels; pod admitted unchanged"])
    if source is None:
        return Decision("not-a-gang")
    ops = patch_for(pod, scheduler_name)
    if gate and source in GATED_SOURCES and PINNED not in (pod["metadata"].get("annotations") or {}):
        pinned = _pinned(pin, request, pod) if pin is not None else None
        if pinned is not None:
            return Decision("pinned", ops + pinned)
        ops += gate_op(pod)
    return Decision("routed", ops) if ops else Decision("already-ours")


def _pinned(pin: Callable[[dict[str, Any]], list[dict[str, Any]] | None], request: Mapping[str, Any],
            pod: dict[str, Any]) -> list[dict[str, Any]] | None:
    if request.get("dryRun") is True:  # nothing is stored: nothing may be reserved for it
        return None
    md = pod["metadata"]
    namespace = md.get("namespace") or request.get("namespace")
    try:
        return pin({**pod, "metadata": {**md, "namespace": namespace}})
    except Exception:  # noqa: BLE001 - the gate is always a correct answer; never fail a creation for the pin
        log.exception("admission: pinning %s/%s at creation failed; gated instead", namespace, md.get("name"))
        return None


def parse_review(body: Any) -> dict[str, Any]:
    """The `request` of an AdmissionReview body; raises NotAReview naming what is wrong."""
    if not isinstance(body, dict):
        raise NotAReview(f"expected an AdmissionReview object, got {type(body).__name__}")
    if body.get("kind") != "AdmissionReview" or body.get("apiVersion") != REVIEW_API_VERSION:
        raise NotAReview(f"expected kind AdmissionReview, apiVersion {REVIEW_API_VERSION} "
                         "(admissionReviewVersions: [v1])")
    request = body.get("request")
    if not isinstance(request, dict):
        raise NotAReview("AdmissionReview.request: expected an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not 0 < len(uid) <= MAX_UID:
        raise NotAReview(f"AdmissionReview.request.uid: expected a string of 1 to {MAX_UID} characters")
    return request


def review(body: Any, scheduler_name: str, gate: bool = False,
           pin: Callable[[dict[str, Any]], list[dict[str, Any]] | None] | None = None) -> tuple[dict[str, Any], Decision]:
    """The AdmissionReview to answer `body` with, and the decision behind it. Raises NotAReview."""
    request = parse_review(body)
    decision = decide(request, scheduler_name, gate, pin)
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    if decision.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(decision.patch).encode()).decode()
    if decision.warnings:
        response["warnings"] = decision.warnings
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": response}, decision


# ------------------------------------------------------------------------------------------------------- HTTP
def webhook_app(scheduler_name: str, registry: Any = None, gate: bool = False,
                pin: Callable[[dict[str, Any]], list[dict[str, Any]] | None] | None = None) -> web.Application:
    """The webhook's aiohttp app: POST /mutate. `registry`: a prometheus CollectorRegistry for
    clique_admission_reviews_total{outcome} (the extender's, so /metrics shows it). `gate`: add the scheduling
    gate of gated gangs (only where the same process runs the pinning loop that removes it). `pin`: pin gangs at
    creation instead where one pod settles it (decide)."""
    from prometheus_client import Counter

    reviews = Counter("clique_admission_reviews_total", "Admission reviews answered, by outcome", ["outcome"],
                      registry=registry)

    async def mutate(request: web.Request) -> web.Response:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            reviews.labels("bad-request").inc()
            return web.json_response({"Error": f"admission: body larger than {MAX_BODY} bytes"}, status=413)
        try:
            body = json.loads(raw)
            answer, decision = review(body, scheduler_name, gate, pin)
        except (ValueError, UnicodeDecodeError) as exc:  # NotAReview, JSONDecodeError, too many digits
            reviews.labels("bad-request").inc()
            reason = str(exc) if isinstance(exc, NotAReview) else f"request body is not JSON ({exc})"
            log.warning("bad admission request: %.300s", reason)
            return web.json_response({"Error": f"admission: {reason}"}, status=400)
        except RecursionError:
            reviews.labels("bad-request").inc()
            return web.json_response({"Error": "admission: request body is nested too deeply"}, status=400)
        reviews.labels(decision.outcome).inc()
        if decision.outcome in ("routed", "pinned"):
            req = body["request"]
            log.info("routing pod %.80s/%.80s to %s%s%s", req.get("namespace"), req.get("name") or "(generated name)",
                     scheduler_name, " (dry run)" if req.get("dryRun") is True else "",
                     ", pinned at creation" if decision.outcome == "pinned" else "")
        return web.json_response(answer)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(PATH, mutate)
    return app


def tls_context(cert_dir: Path) -> ssl.SSLContext:
    """A server TLS context from cert_dir/tls.crt and tls.key (blocking file reads: call it in a thread)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2 at least, no client certificates asked
    ctx.load_cert_chain(cert_dir / CERT_FILE, cert_dir / KEY_FILE)
    return ctx


def _stamp(cert_dir: Path) -> tuple[tuple[int, int], ...] | None:
    try:  # a Secret volume swaps a symlink: stat follows it to the new files
        return tuple((s.st_mtime_ns, s.st_size) for s in (os.stat(cert_dir / f) for f in (CERT_FILE, KEY_FILE)))
    except OSError:
        return None


class WebhookServer:
    """Serves `app` over TLS on host:port once cert_dir holds a certificate, and switches new connections to a
    renewed one (checked every `reload_s`). Missing or unreadable files are logged and retried, never fatal:
    the extender's scheduling verbs do not depend on the webhook (failurePolicy: Ignore)."""

    def __init__(self, app: web.Application, host: str, port: int, cert_dir: Path, reload_s: float = 30.0) -> None:
        self.app, self.host, self.port, self.cert_dir, self.reload_s = app, host, port, Path(cert_dir), reload_s
        self.runner: web.AppRunner | None = None
        self.context: ssl.SSLContext | None = None  # the certificate new connections get
        self.serving = asyncio.Event()
        self._stamp: Any = None
        self._complained: str | None = None

    def _select(self, sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        """SNI callback (every handshake, with or without SNI): use the latest certificate."""
        if self.context is not None and ctx is not self.context:
            sslobj.context = self.context

    async def reload(self) -> bool:
        """Load the certificate if its files changed; start listening on the first one. True if it changed."""
        stamp = await asyncio.to_thread(_stamp, self.cert_dir)
        if stamp is None or stamp == self._stamp:
            if stamp is None:
                self._complain(f"waiting for {self.cert_dir / CERT_FILE} and {KEY_FILE} (the webhook's TLS Secret)")
            return False
        try:
            ctx = await asyncio.to_thread(tls_context, self.cert_dir)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._complain(f"cannot load the certificate in {self.cert_dir}: {exc}")
            return False
        ctx.sni_callback = self._select
        self._stamp, self.context, self._complained = stamp, ctx, None
        if self.runner is not None:
            log.info("admission webhook: loaded a renewed certificate from %s", self.cert_dir)
            return True
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, ssl_context=ctx).start()
        except OSError as exc:  # e.g. the port is taken: retried at the next poll
            await runner.cleanup()
            self._stamp = None
            self._complain(f"cannot listen on {self.host}:{self.port}: {exc}")
            return False
        self.runner = runner
        self.serving.set()
        log.info("admission webhook listening on https://%s:%d%s", self.host, self.port, PATH)
        return True

    def _complain(self, what: str) -> None:
        if what != self._complained:  # once per distinct problem, not every poll
            log.warning("admission webhook: %s", what)
            self._complained = what

    async def run(self) -> None:
        while True:
            await self.reload()
            await asyncio.sleep(self.reload_s)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
