"""The extender HTTP service (aiohttp): filter, prioritize, bind, health, metrics. Side effects: API writes
(Bindings, Events) through kubernetes_asyncio; never a blocking call on the event loop.

Gang semantics on top of a protocol that sees one pod at a time and has no Permit stage:
  filter      first member of a gang: plan the whole gang with the placement engine and reserve it; every
              member is answered with its planned host (other nodes fail with the reason)
  prioritize  the planned host scores 10, others 0 (kube-scheduler skips this when one node passes)
  bind        each member waits (bounded, well below the scheduler's httpTimeout) until every member has
              reached bind; then all Bindings are created together. On timeout or a failed Binding the
              whole reservation is released, bound members are rolled back, and every waiting member gets
              an Error, so kube-scheduler retries them with backoff.
Pods without a gang are placed alone by the same engine (topology-aware bin-packing) and bound at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from scheduler.extender.state import ClusterState
from scheduler.extender.wire import (FilterResult, WireError, binding_result_json, parse_binding_args,
                                     parse_extender_args, priorities_json)
from scheduler.gangs import SIZE_OBJECTS, GangRef, declared_tp_size, pod_request, recognize, size_from_object
from scheduler.placement.engine import CliqueEngine
from scheduler.placement.types import Gang, Role, Snapshot

log = logging.getLogger("clique.extender")
MAX_BODY = 16 * 2**20
# In the reason of a gang whose pods do not all exist yet: a wait, not a lack of capacity (tools tell them apart).
GANG_INCOMPLETE = "waits for its pods"
GANG_CATCH_UP_S = 0.2  # how long filter waits for the watch to deliver a gang's other pods


@dataclass
class Reservation:
    gang: GangRef
    hosts: dict[str, str]  # pod key -> planned host (claimed members)
    unclaimed: list[tuple[str, str]]  # (role, host) not yet claimed by a pod
    requests: dict[str, tuple[int, int, int, int]]  # pod key -> its request (claimed members)
    role_requests: dict[str, tuple[int, int, int, int]]  # role -> per-pod request (unclaimed places)
    created: float
    arrived: dict[str, str] = field(default_factory=dict)  # pod key -> uid, members that reached bind
    done: asyncio.Future | None = None

    @property
    def planned(self) -> int:
        return len(self.hosts) + len(self.unclaimed)

    def reserved_usage(self) -> dict[str, tuple[int, int, int, int]]:
        """Resources held on each host for members not bound yet (all of them: binding is all at once)."""
        out: dict[str, list[int]] = {}
        planned = list(self.hosts.items())
        for pod, host in planned:
            acc = out.setdefault(host, [0, 0, 0, 0])
            for i, v in enumerate(self.requests[pod]):
                acc[i] += v
        for role, host in self.unclaimed:
            acc = out.setdefault(host, [0, 0, 0, 0])
            for i, v in enumerate(self.role_requests[role]):
                acc[i] += v
        return {h: tuple(v) for h, v in out.items()}  # type: ignore[misc]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("clique_extender_request_seconds", "Extender request latency", ["verb"],
                                 registry=self.registry, buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1, 5, 30))
        self.gangs = Counter("clique_gangs_total", "Gangs by outcome", ["outcome"], registry=self.registry)
        self.reasons = Counter("clique_unschedulable_total", "Unschedulable answers by kind", ["kind"],
                               registry=self.registry)
        self.bad_requests = Counter("clique_extender_bad_requests_total", "Malformed requests", ["verb"],
                                    registry=self.registry)


class Extender:
    def __init__(self, state: ClusterState, api_client: Any, engine: CliqueEngine | None = None,
                 bind_timeout_s: float = 10.0, scheduler_name: str = "clique-scheduler") -> None:
        self.state = state
        self.api = api_client
        self.engine = engine or CliqueEngine()
        self.bind_timeout_s = bind_timeout_s
        self.scheduler_name = scheduler_name
        self.reservations: dict[str, Reservation] = {}
        self.metrics = Metrics()
        self._event_sent: dict[tuple[str, str], float] = {}
        self._objects: dict[str, tuple[int, str | None, float]] = {}  # size object -> (size, topology key, read at)
        self._lock = asyncio.Lock()
        self._last_excluded: tuple[Any, list[str], list[str]] | None = None  # (topology, node names, excluded)

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/filter", self._wrap("filter", self.filter))
        app.router.add_post("/prioritize", self._wrap("prioritize", self.prioritize))
        app.router.add_post("/bind", self._wrap("bind", self.bind))
        return self._add_health_routes(app)

    def metrics_app(self) -> web.Application:
        """Only /metrics and health: safe to expose beyond loopback."""
        return self._add_health_routes(web.Application())

    def _add_health_routes(self, app: web.Application) -> web.Application:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_endpoint)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), content_type="text/plain")

    def _wrap(self, verb: str, handler):
        async def run(request: web.Request) -> web.Response:
            started = time.perf_counter()
            try:
                try:
                    body = await request.json(loads=json.loads)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise WireError(f"{verb}: request body is not JSON ({exc})") from None
                result = await handler(body)
                return web.json_response(result)
            except WireError as exc:
                self.metrics.bad_requests.labels(verb).inc()
                log.warning("bad %s request: %s", verb, exc)
                return web.json_response({"Error": str(exc)}, status=400)
            except web.HTTPRequestEntityTooLarge:
                self.metrics.bad_requests.labels(verb).inc()
                return web.json_response({"Error": f"{verb}: body larger than {MAX_BODY} bytes"}, status=413)
            finally:
                self.metrics.latency.labels(verb).observe(time.perf_counter() - started)
        return run

    async def readyz(self, request: web.Request) -> web.Response:
        ready = all(e.is_set() for e in self.state.synced.values())
        return web.Response(text="ok" if ready else "cluster state not synced yet", status=200 if ready else 503)

    # ------------------------------------------------------------------ verbs
    async def filter(self, body: Any) -> dict:
        args = parse_extender_args(body)
        sizes, topology, problem = await self._gang_object(args.pod)
        if problem:
            self._event(args.pod, "GangSizeUnknown", problem)
            return FilterResult([], {n: problem for n in args.node_names}).to_json()
        result = self._filter(args.pod, args.node_names, sizes, topology)
        # A gang that looks incomplete may only be ahead of our watch (kube-scheduler saw its pods first): give
        # the watch a moment. Still incomplete, it is an Error, not FailedNodes: kube-scheduler then retries
        # the pod after its backoff (1-10 s); rejected nodes would park it among the unschedulable pods until
        # some unrelated cluster event (a gated last member never sends one).
        deadline = time.monotonic() + GANG_CATCH_UP_S
        while result.error and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            result = self._filter(args.pod, args.node_names, sizes, topology)
        if result.error:  # told only once the watch had its chance: no Event for a gang planned 20 ms later
            self._event(args.pod, "GangWaiting", result.error)
        return result.to_json()

    async def _gang_object(self, pod: dict) -> tuple[dict[str, int], dict[str, str], str]:
        """Read the PodGroup / PodGang that holds a gang's size (cached 10 s). Returns sizes, topology, problem."""
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        gang = recognize(pod)
        if gang.size is not None or not gang.size_object:
            return {}, {}, ""
        now = time.monotonic()
        cached = self._objects.get(gang.size_object)
        if cached and now - cached[2] < 10:
            return {gang.size_object: cached[0]}, ({gang.size_object: cached[1]} if cached[1] else {}), ""
        group, version, plural = SIZE_OBJECTS[gang.source]
        kind = gang.size_object.split(" ", 1)[0]
        try:
            obj = await client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                group, version, gang.namespace, plural, gang.name)
        except ApiException as exc:
            what = {404: "not found (or its CRD is not installed)", 403: "not readable: RBAC forbids it"}.get(
                exc.status, f"unreadable ({exc.status} {exc.reason})")
            return {}, {}, (f"gang {gang.name}: {kind} {gang.namespace}/{gang.name} ({group}/{version}) is {what}; "
                            "create it, or annotate the pods with clique.dev/gang-size")
        size, topo_key = size_from_object(gang.source, obj)
        if size is None:
            return {}, {}, f"gang {gang.name}: {gang.size_object} has no member count; set it, or annotate clique.dev/gang-size"
        self._objects[gang.size_object] = (size, topo_key, now)
        return {gang.size_object: size}, ({gang.size_object: topo_key} if topo_key else {}), ""

    def _filter(self, pod: dict, nodes: list[str], sizes: dict[str, int] | None = None,
                topology: dict[str, str] | None = None) -> FilterResult:
        self._expire()
        key = _pod_key(pod)
        gang = recognize(pod, sizes, topology)
        host, reason = self._host_for(pod, key, gang, nodes)
        if host is None and GANG_INCOMPLETE in reason:
            self.metrics.reasons.labels("gang_incomplete").inc()
            return FilterResult([], error=reason)
        if host is None:
            self.metrics.reasons.labels("unschedulable").inc()
            return FilterResult([], {n: reason for n in nodes})
        if host not in nodes:  # a list scan: cheaper than building a set of thousands of names per call
            # kube-scheduler's own filters rejected the planned host (taint, selector, ...): replan the gang.
            self._release(gang.key, "planned host rejected by kube-scheduler's filters")
            msg = f"planned host {host} for gang {gang.name} did not pass kube-scheduler's filters; replanning"
            return FilterResult([], {n: msg for n in nodes})
        # Only the planned host: nodes missing from NodeNames are simply not feasible, and a reason for each of
        # thousands of other nodes would cost more to send than the whole decision.
        return FilterResult([host])

    def _host_for(self, pod: dict, key: str, gang: GangRef, nodes: list[str]) -> tuple[str | None, str]:
        req = pod_request(pod)
        request = (req.gpus, req.cpu_millis, req.memory, 1)
        res = self.reservations.get(gang.key)
        if res is not None:
            if key in res.hosts:
                return res.hosts[key], ""
            for i, (role, host) in enumerate(res.unclaimed):
                if role == gang.role:
                    res.unclaimed.pop(i)
                    res.hosts[key] = host
                    res.requests[key] = request
                    return host, ""
            return None, f"gang {gang.name} is already planned without a place for this pod (role {gang.role})"
        if gang.size is None:
            reason = f"gang {gang.name} has no size: add the clique.dev/gang-size annotation to its pods"
            self._event(pod, "GangSizeUnknown", reason)
            return None, reason
        members = self.state.gang_members(gang.key) if gang.source != "single" else [pod]
        pending = [m for m in members if not (m.get("spec") or {}).get("nodeName")]
        if gang.source != "single" and len(members) < gang.size:
            return None, f"gang {gang.name} {GANG_INCOMPLETE}: {len(members)} of {gang.size} exist"
        roles: dict[str, tuple[int, int, int, int]] = {}
        counts: dict[str, int] = {}
        for m in pending if gang.source != "single" else [pod]:
            r = recognize(m).role
            q = pod_request(m)
            prev = roles.get(r, (0, 0, 0, 1))
            roles[r] = (max(prev[0], q.gpus), max(prev[1], q.cpu_millis), max(prev[2], q.memory), 1)
            counts[r] = counts.get(r, 0) + 1
        self._check_tp(pod, gang, roles, counts)
        spec = Gang(gang.key, tuple(Role(r, counts[r], *roles[r][:3], one_per_host=(r == "leader"))
                                    for r in sorted(roles)), required_level=gang.required_level,
                    preferred_level=gang.preferred_level)
        reserved: dict[str, list[int]] = {}
        for other in self.reservations.values():
            for h, use in other.reserved_usage().items():
                acc = reserved.setdefault(h, [0, 0, 0, 0])
                for i, v in enumerate(use):
                    acc[i] += v
        snapshot = self.state.snapshot({h: tuple(v) for h, v in reserved.items()})  # type: ignore[misc]
        # Only the nodes kube-scheduler's own filters passed for this pod (its selectors, affinities, taints):
        # gang members share a template, so they share these constraints.
        excluded = self._excluded(nodes, snapshot)
        if excluded:
            hosts = dict(snapshot.hosts)
            for h in excluded:
                hosts[h] = replace(hosts[h], schedulable=False)
            # a new Snapshot: its cached free vectors and arrays are derived again, with these hosts at zero
            snapshot = Snapshot(snapshot.topology, hosts)
        plan = self.engine.place(snapshot, spec)
        if not plan.placed:
            self.metrics.gangs.labels("unschedulable").inc()
            self._event(pod, "GangUnschedulable" if gang.source != "single" else "Unschedulable", plan.reason)
            return None, plan.reason
        self.metrics.gangs.labels("planned").inc()
        log.info("planned gang %s (%s) on %s, cost %s, proof %s, %.1f ms", gang.key, spec.shape(), plan.hosts(),
                 plan.cost, plan.proof.value, plan.solve_ms)
        res = Reservation(gang, {}, [(a.role, a.host) for a in plan.assignments], {}, roles, time.monotonic())
        self.reservations[gang.key] = res
        return self._host_for(pod, key, gang, nodes)

    def _excluded(self, nodes: list[str], snapshot: Snapshot) -> list[str]:
        """Hosts kube-scheduler's filters did not pass. kube-scheduler sends the same list of thousands of names
        for pod after pod; comparing it with the last one costs a fraction of building a set of it again."""
        last = self._last_excluded
        if last is not None and last[0] is snapshot.topology and last[1] == nodes:
            return last[2]
        candidates = set(nodes)
        excluded = [] if candidates.issuperset(snapshot.hosts) else [h for h in snapshot.hosts if h not in candidates]
        self._last_excluded = (snapshot.topology, nodes, excluded)
        return excluded

    def _check_tp(self, pod: dict, gang: GangRef, roles: dict, counts: dict) -> None:
        tp = declared_tp_size(pod)
        gpus = sum(roles[r][0] * counts[r] for r in roles)
        if tp is not None and gang.source != "single" and tp != gpus:
            self._event(pod, "TensorParallelMismatch",
                        f"pods declare tensor-parallel size {tp} but the gang has {gpus} GPUs "
                        f"({sum(counts.values())} pods)", warning=True)

    async def prioritize(self, body: Any) -> list:
        args = parse_extender_args(body)
        gang = recognize(args.pod)
        res = self.reservations.get(gang.key)
        planned = res.hosts.get(_pod_key(args.pod)) if res else None
        # Unlisted nodes score 0; send only the planned host.
        return priorities_json({planned: 10} if planned in args.node_names else {})

    async def bind(self, body: Any) -> dict:
        args = parse_binding_args(body)
        key = f"{args.pod_namespace}/{args.pod_name}"
        res = next((r for r in self.reservations.values() if key in r.hosts), None)
        if res is None or res.gang.source == "single":
            if res is not None:
                self.reservations.pop(res.gang.key, None)
            err = await self._create_binding(args.pod_namespace, args.pod_name, args.pod_uid, args.node)
            return binding_result_json(err)
        if res.hosts[key] != args.node:
            return binding_result_json(f"pod {key} was planned on {res.hosts[key]}, not {args.node}")
        res.arrived[key] = args.pod_uid
        if res.done is None:
            res.done = asyncio.get_running_loop().create_future()
        if len(res.arrived) == res.planned:
            asyncio.get_running_loop().create_task(self._bind_all(res))
        try:
            err = await asyncio.wait_for(asyncio.shield(res.done), self.bind_timeout_s)
        except asyncio.TimeoutError:
            err = (f"gang {res.gang.name}: only {len(res.arrived)} of {res.planned} pods reached bind within "
                   f"{self.bind_timeout_s:.0f}s; reservation released, kube-scheduler will retry")
            if self.reservations.get(res.gang.key) is res:
                self._release(res.gang.key, "bind timeout")
                self.metrics.gangs.labels("timed_out").inc()
                if not res.done.done():
                    res.done.set_result(err)
        return binding_result_json(err)

    async def _bind_all(self, res: Reservation) -> None:
        results = await asyncio.gather(*(
            self._create_binding(*k.split("/", 1), uid, res.hosts[k]) for k, uid in sorted(res.arrived.items())))
        errors = [e for e in results if e]
        if errors:
            # roll back: members already bound are deleted (their controller recreates them) so no half gang runs
            await self._rollback(res, [k for k, e in zip(sorted(res.arrived), results) if not e])
            err = f"gang {res.gang.name}: binding failed ({errors[0]}); rolled back"
            self.metrics.gangs.labels("rolled_back").inc()
        else:
            err = ""
            self.metrics.gangs.labels("bound").inc()
            log.info("bound gang %s: %s", res.gang.key, dict(sorted(res.hosts.items())))
        self.reservations.pop(res.gang.key, None)
        if res.done is not None and not res.done.done():
            res.done.set_result(err)

    async def _create_binding(self, ns: str, name: str, uid: str, node: str) -> str:
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns, "uid": uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            await client.CoreV1Api(self.api).create_namespaced_pod_binding(name, ns, body, _preload_content=False)
            return ""
        except ApiException as exc:
            return f"binding {ns}/{name} to {node}: {exc.status} {exc.reason}"

    async def _rollback(self, res: Reservation, bound: list[str]) -> None:
        from kubernetes_asyncio import client

        for key in bound:
            ns, name = key.split("/", 1)
            try:
                await client.CoreV1Api(self.api).delete_namespaced_pod(name, ns, grace_period_seconds=0)
            except Exception as exc:  # noqa: BLE001
                log.error("rollback of %s failed: %s", key, exc)

    def _expire(self) -> None:
        """Release reservations whose members stopped coming (e.g. pods deleted before bind)."""
        now = time.monotonic()
        for key, res in list(self.reservations.items()):
            if res.done is None and now - res.created > 3 * self.bind_timeout_s:
                self._release(key, "no member reached bind in time")
                self.metrics.gangs.labels("expired").inc()

    def _release(self, gang_key: str, why: str) -> None:
        if self.reservations.pop(gang_key, None) is not None:
            log.info("released gang %s: %s", gang_key, why)

    # ------------------------------------------------------------------ events
    def _event(self, pod: dict, reason: str, message: str, warning: bool = False) -> None:
        """An Event on the pod, at most once a minute per pod and reason; sent without blocking the verb."""
        key = (_pod_key(pod), reason)
        now = time.monotonic()
        if now - self._event_sent.get(key, -1e9) < 60:
            return
        self._event_sent[key] = now
        log.info("%s %s: %s", reason, key[0], message)
        asyncio.get_running_loop().create_task(self._send_event(pod, reason, message, warning))

    async def _send_event(self, pod: dict, reason: str, message: str, warning: bool) -> None:
        from datetime import datetime, timezone

        from kubernetes_asyncio import client

        md = pod.get("metadata") or {}
        ns = md.get("namespace") or "default"
        stamp = datetime.now(timezone.utc)
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{md.get('name')}.clique-", "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": md.get("name"), "namespace": ns, "uid": md.get("uid"),
                                   "apiVersion": "v1"},
                "reason": reason, "message": message[:1024], "type": "Warning" if warning else "Normal",
                "source": {"component": self.scheduler_name}, "firstTimestamp": stamp, "lastTimestamp": stamp,
                "count": 1}
        try:
            await client.CoreV1Api(self.api).create_namespaced_event(ns, body)
        except Exception as exc:  # noqa: BLE001 - an Event is advice; never fail the verb for it
            log.warning("event %s on %s/%s not sent: %s", reason, ns, md.get("name"), exc)


def _pod_key(pod: dict) -> str:
    md = pod.get("metadata") or {}
    return f"{md.get('namespace') or 'default'}/{md.get('name')}"
