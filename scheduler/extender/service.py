"""The extender HTTP service (aiohttp): filter, prioritize, bind, health, metrics. Side effects: API writes
(Bindings, Events) through kubernetes_asyncio; never a blocking call on the event loop.

Gang semantics on top of a protocol that sees one pod at a time and has no Permit stage:
  filter      first member of a gang: plan the whole gang with the placement engine and reserve it; every
              member is answered with its planned host (other nodes fail with the reason)
  prioritize  the planned host scores 10, others 0 (kube-scheduler skips this when one node passes)
  bind        each member waits (bounded, well below the scheduler's httpTimeout) until every member has
              reached bind; then all Bindings are created together. On timeout or a failed Binding the
              whole reservation is released, bound members are rolled back, and every waiting member gets
              an Error, so kube-scheduler retries them with backoff. Only the planned host is ever bound.
Pods without a gang are placed alone by the same engine (topology-aware bin-packing) and bound at once.
A gang with bound and pending members (a replacement pod, or a bind cut short by a crash) is planned so the
pending ones join the bound ones (scheduler/extender/gangbook.py); scheduler/extender/recovery.py completes or
restarts such gangs without waiting for kube-scheduler. The API writes are in scheduler/extender/binder.py.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
import logging
import time
from dataclasses import replace
from typing import Any, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from scheduler.extender import preemption
from scheduler.extender.binder import Binder
from scheduler.extender.gangbook import (LeaderFirst, Live, Request, Reservation, gang_spec, gang_view, join_bound,
                                         leader_first, members_of, not_terminating, pod_key, reserved_total,
                                         split_group)
from scheduler.extender.leadership import Leadership
from scheduler.extender.nodefit import judges_labels, node_refusal
from scheduler.extender.state import ClusterState
from scheduler.extender.wire import (FilterResult, WireError, binding_result_json, parse_binding_args,
                                     parse_extender_args, parse_preemption_args, preemption_result_json,
                                     priorities_json)
from scheduler.gangs import (LWS_EXCLUSIVE, LWS_NAME, LWS_OBJECT, SIZE_OBJECTS, GangObject, GangRef, GangView,
                             declared_tp_size, pod_request, recognize, size_from_object)
from scheduler.placement.engine import CliqueEngine
from scheduler.placement.types import Gang, Snapshot

log = logging.getLogger("clique.extender")
MAX_BODY = 16 * 2**20
# In the reason of a gang whose pods do not all exist yet: a wait, not a lack of capacity (tools tell them apart).
GANG_INCOMPLETE = "waits for its pods"
GANG_CATCH_UP_S = 0.2  # how long filter waits for the watch to deliver a gang's other pods
CACHE_ENTRIES = 1024  # objects read from the API (LeaderWorkerSets, PodGroups) kept at most


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("clique_extender_request_seconds", "Extender request latency", ["verb"],
                                 registry=self.registry, buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1, 5, 30))
        # outcomes: planned (every plan made), held / settling (of those, plans a preferred wait or the settle
        # rule dropped), bound, rolled_back, timed_out, expired, unschedulable, pinned, pinned_at_creation,
        # pin_failed, completed, completion_failed
        self.gangs = Counter("clique_gangs_total", "Gangs by outcome", ["outcome"], registry=self.registry)
        self.reasons = Counter("clique_unschedulable_total", "Unschedulable answers by kind", ["kind"],
                               registry=self.registry)
        self.bad_requests = Counter("clique_extender_bad_requests_total", "Malformed requests", ["verb"],
                                    registry=self.registry)
        self.refused_binds = Counter("clique_extender_refused_binds_total", "Bind requests refused before any "
                                     "Binding (not planned, wrong node)", registry=self.registry)
        self.filter_scope = Counter("clique_extender_filter_calls_total", "Filter calls by the nodes sent: a pod's "
                                    "nominated node alone, or more", ["scope"], registry=self.registry)
        self.recovered = Counter("clique_half_gangs_total", "Gangs found partly bound, by action", ["action"],
                                 registry=self.registry)
        self.acting = Gauge("clique_extender_acting", "1 while this extender releases, recovers and pins gangs "
                            "(its kube-scheduler holds the Lease it follows, or it follows none)",
                            registry=self.registry)


JUST_BOUND_S = 60.0


def _spawn(coro) -> None:
    """Run an API write in the background; without a running loop (in-process tests of the pure paths) it is
    dropped."""
    try:
        asyncio.get_running_loop().create_task(coro)
    except RuntimeError:
        coro.close()  # how long a Binding we made counts as bound while the watch has not shown it yet


class Extender:
    def __init__(self, state: ClusterState, api_client: Any, engine: CliqueEngine | None = None,
                 bind_timeout_s: float = 10.0, scheduler_name: str = "clique-scheduler",
                 reservation_timeout_s: float = 60.0) -> None:
        self.state = state
        self.api = api_client
        self.engine = engine or CliqueEngine()
        self.bind_timeout_s = bind_timeout_s
        self.reservation_timeout_s = max(reservation_timeout_s, bind_timeout_s)
        self.scheduler_name = scheduler_name
        self.binder = Binder(api_client, scheduler_name)
        self.reservations: dict[str, Reservation] = {}
        self.metrics = Metrics()
        self._event_sent: dict[tuple[str, str], float] = {}
        self._objects: dict[str, tuple[GangObject, float]] = {}  # size object -> (what it says, read at)
        self._lws: dict[str, tuple[LeaderFirst | None, float]] = {}  # "ns/name" -> (how its groups start, read at)
        self.nominations: deque[tuple[str, str]] = deque(maxlen=1000)  # (pod, node) nominated, newest last
        # whether this extender acts on its own (releases, recovery, pins at creation): leadership.py
        self.leadership = Leadership()
        self._to_nominate: list[tuple[str, str]] = []  # nominations the current filter call sends as it answers
        self._served: dict[str, str] = {}  # gang source -> API version of its size object this server serves
        # pod key -> (node, uid, when): our Bindings the watch has not shown yet
        self._just_bound: dict[str, tuple[str, str, float]] = {}
        self._last_excluded: tuple[Any, list[str], list[str]] | None = None  # (topology, node names, excluded)
        self._refusals: dict[tuple, list[str]] = {}  # (pod constraint sets, node/taint versions) -> refused hosts

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/filter", self._wrap("filter", self.filter))
        app.router.add_post("/prioritize", self._wrap("prioritize", self.prioritize))
        app.router.add_post("/bind", self._wrap("bind", self.bind))
        app.router.add_post("/preempt", self._wrap("preempt", self.preempt))
        app.router.add_get("/debug/usage", self.debug_usage)  # read-only; on the loopback listener only
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
                except RecursionError:
                    raise WireError(f"{verb}: request body is nested too deeply") from None
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

    async def debug_usage(self, request: web.Request) -> web.Response:
        """What the watches hold: per-node usage of bound pods (nodes with none left out), counts, relists and
        410s per kind. Tests compare it with a fresh count from the API (tests/e2e/test_watch_faults.py)."""
        st = self.state
        usage = {node: dict(zip(("gpus", "cpu_millis", "memory", "pods"), u)) for node, u in st.usage.items() if any(u)}
        return web.json_response({"usage": usage, "pods": len(st.pods), "nodes": len(st.nodes), "lists": st.lists,
                                  "expired": st.expired, "watches": st.watches,
                                  "reservations": len(self.reservations)})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = all(e.is_set() for e in self.state.synced.values())
        return web.Response(text="ok" if ready else "cluster state not synced yet", status=200 if ready else 503)

    # ------------------------------------------------------------------ verbs
    async def filter(self, body: Any) -> dict:
        args = parse_extender_args(body)
        sizes, topology, problem = await self._gang_object(args.pod)
        if problem:  # waiting for the object may help; evicting pods cannot
            self.event(args.pod, "GangSizeUnknown", problem)
            return FilterResult([], unresolvable={n: problem for n in args.node_names}).to_json(args.nodes)
        lead = await self._leader_first(args.pod)
        result = self._filter(args.pod, args.node_names, sizes, topology, lead)
        # A gang that looks incomplete may only be ahead of our watch (kube-scheduler saw its pods first): give
        # the watch a moment. Still incomplete, it is an Error, not FailedNodes: kube-scheduler then retries
        # the pod after its backoff (1-10 s); rejected nodes would park it among the unschedulable pods until
        # some unrelated cluster event (a gated last member never sends one).
        deadline = time.monotonic() + GANG_CATCH_UP_S
        while result.error and GANG_INCOMPLETE in result.error and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            result = self._filter(args.pod, args.node_names, sizes, topology, lead)
        if result.error and GANG_INCOMPLETE in result.error:  # told only once the watch had its chance
            self.event(args.pod, "GangWaiting", result.error)
        if self._to_nominate:  # sent in the background: waiting for them cost this call tens of milliseconds
            sends, self._to_nominate = self._to_nominate, []
            for k, h in sends:
                _spawn(self.binder.nominate(k, h))
        # nodeCacheCapable: false sends Nodes and reads only Nodes back (k8s.io/kubernetes v1.37.2
        # pkg/scheduler/extender.go, Filter): answering NodeNames alone would filter out every node
        return result.to_json(args.nodes)

    def gang_sizes(self, gang: GangRef) -> tuple[dict[str, int], dict[str, GangView]]:
        """Sizes and views of size objects read recently (for callers that cannot wait for a read). A group with
        pods beyond its gang's minimum is left out: those are placed one by one as kube-scheduler sends them."""
        cached = self._objects.get(gang.size_object or "")
        if not cached or not gang.size_object:
            return {}, {}
        split = split_group(self.state.gang_members(gang.key), cached[0], self.just_bound())
        if split.extras:
            return {}, {}
        size, view = gang_view(cached[0], split, "")
        return {gang.size_object: size}, {gang.size_object: view}

    async def _gang_object(self, pod: dict) -> tuple[Mapping[str, int], Mapping[str, GangView], str]:
        """Read the PodGroup / PodGang that holds a gang's size (cached 10 s). Returns sizes, views (the gang's
        topology, which pods are its members, whether this pod is an extra beyond them), problem."""
        from kubernetes_asyncio import client
        from kubernetes_asyncio.client.exceptions import ApiException

        gang = recognize(pod)
        if gang.size is not None or not gang.size_object:
            return {}, {}, ""
        now = time.monotonic()
        cached = self._objects.get(gang.size_object)
        if cached and now - cached[1] < 10:
            return self._view_of(pod, gang, cached[0])
        group, versions, plural = SIZE_OBJECTS[gang.source]
        kind = gang.size_object.split(" ", 1)[0]
        # the version this server serves first (remembered), then the others: a 404 may mean "not served"
        served = self._served.get(gang.source)
        tries = [served] if served else list(versions)
        try:
            for i, version in enumerate(tries):
                try:
                    obj = await client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                        group, version, gang.namespace, plural, gang.name)
                    self._served[gang.source] = version
                    break
                except ApiException as exc:
                    if exc.status != 404 or i == len(tries) - 1:
                        raise
        except ApiException as exc:
            version = " or ".join(tries)
            what = {404: "not found (or its CRD is not installed)", 403: "not readable: RBAC forbids it"}.get(
                exc.status, f"unreadable ({exc.status} {exc.reason})")
            return {}, {}, (f"gang {gang.name}: {kind} {gang.namespace}/{gang.name} ({group}/{version}) is {what}; "
                            "create it, or annotate the pods with clique.dev/gang-size")
        except Exception as exc:  # noqa: BLE001 - API server unreachable or its answer unreadable: wait, retry
            return {}, {}, f"gang {gang.name}: {kind} {gang.namespace}/{gang.name} could not be read ({exc!r:.200})"
        if not isinstance(obj, dict):
            return {}, {}, f"gang {gang.name}: {kind} {gang.namespace}/{gang.name} is not an object"
        facts = size_from_object(gang.source, obj, self.state.levels)
        if facts.size is None:
            return {}, {}, f"gang {gang.name}: {gang.size_object} has no member count; set it, or annotate clique.dev/gang-size"
        if len(self._objects) >= CACHE_ENTRIES:  # bounded as _lws; gang_sizes uses older entries, so keep 10 min
            self._objects = {k: v for k, v in self._objects.items() if now - v[1] < 600}
            if len(self._objects) >= CACHE_ENTRIES:
                self._objects.clear()
        self._objects[gang.size_object] = (facts, now)
        return self._view_of(pod, gang, facts)

    def _view_of(self, pod: dict, gang: GangRef, facts: GangObject) -> tuple[Live, Live, str]:
        """The gang's size and this pod's view of it (gangbook.split_group: member or extra), computed from the
        pods the watch shows whenever they are read; fields of the object Clique does not honour are said in a
        Warning Event on the pod (at most once a minute)."""
        for note in facts.not_honoured:
            self.event(pod, "GangSpecNotHonoured", f"gang {gang.name}: {gang.size_object}: {note}", warning=True)

        def view() -> tuple[int, GangView]:
            split = split_group(self.state.gang_members(gang.key), facts, self.just_bound(), asking=pod)
            return gang_view(facts, split, pod_key(pod))

        key = gang.size_object or ""
        return Live(key, lambda: view()[0]), Live(key, lambda: view()[1]), ""

    async def _leader_first(self, pod: dict) -> LeaderFirst | None:
        """For the leader of a LeaderWorkerSet group whose workers do not exist yet: whether the LWS controller
        creates them only once the leader is placed (exclusive topology) or Ready (startupPolicy LeaderReady),
        and the workers' request. None for every other pod. The LWS object is read at most every 10 s."""
        from kubernetes_asyncio import client

        gang = recognize(pod)
        if gang.source != "lws" or gang.role != "leader" or gang.size is None:
            return None
        if len(self.state.gang_members(gang.key)) >= gang.size:
            return None
        md = pod.get("metadata") or {}
        name = (md.get("labels") or {}).get(LWS_NAME, "")
        key = f"{gang.namespace}/{name}"
        now = time.monotonic()
        cached = self._lws.get(key)
        if cached and now - cached[1] < 10:
            return cached[0]
        exclusive = bool((md.get("annotations") or {}).get(LWS_EXCLUSIVE))
        try:
            obj = await client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                *LWS_OBJECT[:2], gang.namespace, LWS_OBJECT[2], name)
        except Exception as exc:  # noqa: BLE001 - without the object only the pod's own annotations are known
            log.warning("LeaderWorkerSet %s not readable (%s); its startup policy is taken as LeaderCreated", key, exc)
            obj = {}
        lead = leader_first(obj if isinstance(obj, dict) else {}, exclusive)
        if len(self._lws) >= CACHE_ENTRIES:  # bounded: LWS names come and go (entries past 10 s are read again)
            self._lws = {k: v for k, v in self._lws.items() if now - v[1] < 10}
            if len(self._lws) >= CACHE_ENTRIES:
                self._lws.clear()
        self._lws[key] = (lead, now)
        return lead

    def _filter(self, pod: dict, nodes: list[str], sizes: dict[str, int] | None = None,
                topology: dict[str, str] | None = None, lead: LeaderFirst | None = None) -> FilterResult:
        self.expire()
        gang = recognize(pod, sizes, topology)
        nominated = (pod.get("status") or {}).get("nominatedNodeName")
        self.metrics.filter_scope.labels("nominated" if nominated and nodes == [nominated] else "nodes").inc()
        if nominated and nodes == [nominated] and gang.source != "single" and gang.key not in self.reservations:
            # kube-scheduler's look at a nominated node alone (see _nominate) for a gang with no plan now (e.g.
            # released, or planned by an extender since restarted): not a place to plan a gang; all nodes follow
            return FilterResult([], {nominated: f"gang {gang.name} has no plan yet; trying all nodes"})
        host, reason = self._host_for(pod, pod_key(pod), gang, nodes, lead)
        if host is None and GANG_INCOMPLETE in reason:
            self.metrics.reasons.labels("gang_incomplete").inc()
            return FilterResult([], error=reason)
        if host is None:
            self.metrics.reasons.labels("unschedulable").inc()
            if gang.source == "single":  # evicting a lower-priority pod from one node may make room for one pod
                return FilterResult([], {n: reason for n in nodes})
            if wait := preemption.on_unschedulable(self, pod, gang):  # gang-aware (scheduler/extender/preemption.py)
                return FilterResult([], error=wait)
            # A gang's plan covers every node at once: kube-scheduler's pod-by-pod preemption on one node cannot
            # make it fit, so no node is offered to it (k8s.io/kube-scheduler/extender/v1/types.go).
            return FilterResult([], unresolvable={n: reason for n in nodes})
        if host not in nodes:  # a list scan: cheaper than building a set of thousands of names per call
            nominated = (pod.get("status") or {}).get("nominatedNodeName")
            if len(nodes) == 1 and nodes[0] == nominated:
                # kube-scheduler tries a pod's nominated node alone first; one that is not (or no longer) the plan
                # fails here, and kube-scheduler goes on to all nodes in the same cycle
                return FilterResult([], {nominated: f"gang {gang.name} is planned on {host}, not {nominated}"})
            # kube-scheduler's own filters rejected the planned host (taint, selector, ...): replan the gang on
            # the next attempt, which an Error brings after a short backoff.
            self._release(gang.key, "planned host rejected by kube-scheduler's filters")
            return FilterResult([], error=f"planned host {host} for gang {gang.name} did not pass kube-scheduler's "
                                          "filters; replanning")
        # Only the planned host: nodes missing from NodeNames are simply not feasible, and a reason for each of
        # thousands of other nodes would cost more to send than the whole decision.
        return FilterResult([host])

    def _host_for(self, pod: dict, key: str, gang: GangRef, nodes: list[str],
                  lead: LeaderFirst | None = None) -> tuple[str | None, str]:
        req = pod_request(pod)
        request = (req.gpus, req.cpu_millis, req.memory, 1)
        res = self.reservations.get(gang.key)
        if res is not None:
            host = res.claim(key, gang.role, request)
            if host is not None:
                return host, ""
            return None, f"gang {gang.name} is already planned without a place for this pod (role {gang.role})"
        if gang.size is None:
            reason = f"gang {gang.name} has no size: add the clique.dev/gang-size annotation to its pods"
            self.event(pod, "GangSizeUnknown", reason)
            return None, reason
        workers: tuple[int, Request] | None = None
        if gang.source == "single":
            pending, bound = [pod], {}
        else:
            pods = not_terminating(self.state.gang_members(gang.key))  # a member being deleted is leaving
            if len(pods) < gang.size and lead is None:
                return None, f"gang {gang.name} {GANG_INCOMPLETE}: {len(pods)} of {gang.size} exist"
            members = members_of(pods, self.just_bound())
            pending, bound = members.pending or [pod], members.bound
            if len(pods) < gang.size and lead is not None:
                # the group's workers appear only after its leader is placed: plan the whole group now, from the
                # size annotation and the workers' template, and hold the workers' places for them
                worker_request = lead.worker_request or request
                workers = (gang.size - len(pods), worker_request)
        res, reason = self.plan(gang, pending, bound, nodes=nodes, pod=pod, workers=workers)
        if res is None:
            return None, reason
        if workers is not None:
            res.leader_first = True
        return self._host_for(pod, key, gang, nodes)

    def plan(self, gang: GangRef, pending: list[dict], bound: dict[str, str], nodes: list[str] | None,
             pod: dict, workers: tuple[int, Request] | None = None) -> tuple[Reservation | None, str]:
        """Plan the pending members of a gang (joining its bound ones) and reserve their places. `nodes`: the
        nodes kube-scheduler's filters passed; None: judge each node by the pending pods' own spec instead.
        `workers`: places for workers not created yet (count, per-pod request). Returns the reservation, or
        None and the reason (an Event on `pod` says it too)."""
        spec, roles = gang_spec(gang, pending, workers)
        if not bound:
            self._check_tp(pod, gang, spec)
        snapshot = self.state.snapshot(self._held())
        # Only the nodes kube-scheduler's own filters passed for this pod (its selectors, affinities, taints):
        # gang members share a template, so they share these constraints.
        excluded = self._excluded(nodes, snapshot) if nodes is not None else self._refused_by_spec(pending, snapshot)
        if excluded:
            hosts = dict(snapshot.hosts)
            for h in excluded:
                hosts[h] = replace(hosts[h], schedulable=False)
            # a new Snapshot: its cached free vectors and arrays are derived again, with these hosts at zero
            snapshot = Snapshot(snapshot.topology, hosts)
        snapshot, spec, problem = join_bound(snapshot, spec, bound.values())
        plan = self.engine.place(snapshot, spec) if not problem else None
        if plan is None or not plan.placed:
            reason = problem or (plan.reason if plan else "")
            self.metrics.gangs.labels("unschedulable").inc()
            self.event(pod, "GangUnschedulable" if gang.source != "single" else "Unschedulable", reason)
            return None, reason
        self.metrics.gangs.labels("planned").inc()
        log.info("planned gang %s (%s) on %s%s, cost %s, proof %s, %.1f ms", gang.key, spec.shape(), plan.hosts(),
                 f" beside bound {sorted(set(bound.values()))}" if bound else "", plan.cost, plan.proof.value,
                 plan.solve_ms)
        res = Reservation(gang, {}, [(a.role, a.host) for a in plan.assignments], {}, roles, time.monotonic())
        self.reservations[gang.key] = res
        if nodes is not None and gang.source != "single":
            self._nominate(res, pending, pod)
        return res, ""

    def _nominate(self, res: Reservation, pending: list[dict], pod: dict) -> None:
        """Give each other pending member its place now and record it as the pod's nominatedNodeName:
        kube-scheduler tries a pod's nominated node alone before all nodes (k8s.io/kubernetes v1.37.2
        pkg/scheduler/schedule_one.go, evaluateNominatedNode), so those members cost one node's filters and a
        one-name extender call instead of a whole-cluster pass, and kube-scheduler counts them on those nodes
        for other pods meanwhile. The filter call that planned starts the patches as it answers, without waiting
        for them (that wait was most of its p99); a member kube-scheduler takes before its patch lands, or a
        failed patch, only loses the shortcut: its full pass still gets the member's claimed host."""
        me = pod_key(pod)
        for m in sorted(pending, key=pod_key):
            key = pod_key(m)
            if key == me:
                continue
            q = pod_request(m)
            host = res.claim(key, recognize(m).role, (q.gpus, q.cpu_millis, q.memory, 1))
            if host is not None and (m.get("status") or {}).get("nominatedNodeName") != host:
                self.nominations.append((key, host))
                self._to_nominate.append((key, host))

    def _held(self) -> dict[str, Request]:
        """What reservations hold, plus pods this process bound that the watch does not count yet (so no plan
        uses their GPUs twice in that window)."""
        held = {h: list(v) for h, v in reserved_total(self.reservations.values()).items()}
        for key, node in self.just_bound().items():
            pod = self.state.pods.get(key)
            if pod is not None:
                q = pod_request(pod)
                acc = held.setdefault(node, [0, 0, 0, 0])
                for i, v in enumerate((q.gpus, q.cpu_millis, q.memory, 1)):
                    acc[i] += v
        return {h: (v[0], v[1], v[2], v[3]) for h, v in held.items()}

    def _refused_by_spec(self, pods: list[dict], snapshot: Snapshot) -> list[str]:
        """Hosts the pods' own nodeSelector, node affinity or tolerations refuse. Members of a gang share a
        template, and gang after gang has the same one: judged once per distinct constraint set and node
        generation (a pass over thousands of nodes per gang would cost more than planning it)."""
        specs = {json.dumps([(p.get("spec") or {}).get(k) for k in ("nodeSelector", "affinity", "tolerations")],
                            sort_keys=True, default=str): p for p in pods}
        key = (tuple(sorted(specs)), self.state.node_version, self.state.taint_version, len(snapshot.hosts))
        cached = self._refusals.get(key)
        if cached is not None:
            return cached
        out = []
        # Pods without a nodeSelector or required node affinity refuse only tainted nodes: the untainted ones are
        # skipped without asking (at 15,000 nodes the full check held the event loop for ~30 ms)
        by_labels = any(judges_labels(p) for p in specs.values())
        nodes = self.state.nodes
        for name in snapshot.hosts:
            node = nodes.get(name)
            if node is None or ((by_labels or node.taints)
                                and any(node_refusal(p, name, node.labels, node.taints) for p in specs.values())):
                out.append(name)
        if len(self._refusals) >= 256:  # bounded: a new node generation makes the old entries useless anyway
            self._refusals.clear()
        self._refusals[key] = out
        return out

    def _excluded(self, nodes: list[str], snapshot: Snapshot) -> list[str]:
        """Hosts kube-scheduler's filters did not pass. kube-scheduler sends the same list of thousands of names
        for pod after pod; comparing it with the last one costs a fraction of building a set of it again."""
        last = self._last_excluded
        if last is not None and last[0] is snapshot.topology and last[1] == nodes:
            return last[2]
        candidates = set(nodes)
        excluded = [] if candidates.issuperset(snapshot.hosts) else [h for h in snapshot.hosts if h not in candidates]
        self._last_excluded = (snapshot.topology, list(nodes), excluded)  # a copy: the caller's list may change
        return excluded

    def _check_tp(self, pod: dict, gang: GangRef, spec: Gang) -> None:
        tp = declared_tp_size(pod)
        if tp is not None and gang.source != "single" and tp != spec.gpu_count:
            self.event(pod, "TensorParallelMismatch",
                        f"pods declare tensor-parallel size {tp} but the gang has {spec.gpu_count} GPUs "
                        f"({spec.pod_count} pods)", warning=True)

    async def prioritize(self, body: Any) -> list:
        args = parse_extender_args(body)
        gang = recognize(args.pod)
        res = self.reservations.get(gang.key)
        planned = res.hosts.get(pod_key(args.pod)) if res else None
        # Unlisted nodes score 0; send only the planned host.
        return priorities_json({planned: 10} if planned in args.node_names else {})

    async def preempt(self, body: Any) -> dict:
        """kube-scheduler's pod-by-pod preemption, vetted: a gang member preempts nothing pod by pod (no victims on
        one node can make a whole gang fit; gang-aware preemption starts instead), and a single pod may not
        take a victim that belongs to a gang (evicting one member would break the whole replica)."""
        args = parse_preemption_args(body)
        gang = recognize(args.pod)
        if gang.source != "single":
            if args.victims:
                log.info("preemption for %s refused: gang members do not preempt pod by pod", pod_key(args.pod))
            preemption.on_unschedulable(self, args.pod, recognize(args.pod, *self.gang_sizes(gang)))  # whole gangs
            return preemption_result_json({})
        in_gang = {str((p.get("metadata") or {}).get("uid")) for p in self.state.pods.values()
                   if recognize(p).source != "single"} if args.victims else set()
        kept = {n: v for n, v in args.victims.items() if not in_gang.intersection(v[0])}
        return preemption_result_json(kept)

    async def bind(self, body: Any) -> dict:
        args = parse_binding_args(body)
        key = f"{args.pod_namespace}/{args.pod_name}"
        res = next((r for r in self.reservations.values() if key in r.hosts), None)
        refusal = self._bind_refusal(key, res, args.node)
        if refusal:
            self.metrics.refused_binds.inc()
            log.warning("bind refused: %s", refusal)
            return binding_result_json(refusal)
        if res is None or res.gang.source == "single":
            # the place stays reserved while the Binding is on its way and counts as just bound once it is made:
            # released before, the host looked free to a plan made meanwhile (the pinner's, planning a gang
            # on this very host 7 ms later; kube-scheduler's filters then refused the gang's pinned member)
            err = await self.binder.bind(args.pod_namespace, args.pod_name, args.pod_uid, args.node)
            if not err:
                self.note_bound(key, args.node, args.pod_uid)
            if res is not None and self.reservations.get(res.gang.key) is res:
                self.reservations.pop(res.gang.key, None)
            return binding_result_json(err)
        if res.leader_first and recognize(self.state.pods.get(key) or {}).role == "leader":
            # LWS creates this group's workers only once the leader is placed (or Ready): bind it alone; the
            # workers' places stay reserved until they come, or until the reservation's deadline
            err = await self.binder.bind(args.pod_namespace, args.pod_name, args.pod_uid, args.node)
            if err:
                self._release(res.gang.key, f"the leader's Binding failed ({err})")
                return binding_result_json(err)
            self.note_bound(key, args.node, args.pod_uid)
            del res.hosts[key], res.requests[key]
            res._usage = None  # its usage no longer counts the bound leader (the watch does)
            res.leader_first, res.created = False, time.monotonic()
            log.info("bound leader %s of gang %s on %s; %d worker place(s) held for %.0fs", key, res.gang.key,
                     args.node, res.planned, self.reservation_timeout_s)
            return binding_result_json("")
        if res.done is None:
            res.done = asyncio.get_running_loop().create_future()
        if not res.direct:
            if key in res.arrived:
                log.info("bind of %s asked again while its gang %s is waiting or binding", key, res.gang.key)
            res.arrived[key] = args.pod_uid
            if len(res.arrived) == res.planned and not res.binding:
                res.binding = True  # once: a repeated request must not bind the gang twice
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

    def _bind_refusal(self, key: str, res: Reservation | None, node: str) -> str:
        """Why a bind request must not be carried out ("" when it may): only a planned host is ever bound."""
        if res is not None:
            planned = res.hosts[key]
            return "" if planned == node else f"pod {key} was planned on {planned}, not {node}; no Binding sent"
        pod = self.state.pods.get(key)
        if pod is None:
            return f"pod {key} is not a pending pod this extender knows; no Binding sent"
        if recognize(pod).source != "single":
            return (f"pod {key} belongs to gang {recognize(pod).name}, which has no plan here (was the extender "
                    "restarted?); no Binding sent, kube-scheduler will retry")
        info = self.state.nodes.get(node)
        if info is None or not info.schedulable:
            return f"node {node} is {'unknown' if info is None else 'not schedulable'}; no Binding sent for {key}"
        return ""

    async def _bind_all(self, res: Reservation) -> None:
        places = [(k, uid, res.hosts[k]) for k, uid in sorted(res.arrived.items())]
        results = await self.binder.bind_gang(places)
        done = [k for (k, _, _), e in zip(places, results) if not e]
        for (k, uid, node), e in zip(places, results):
            if not e:
                self.note_bound(k, node, uid)
        errors = [e for e in results if e]
        if errors:
            # roll back: members already bound are deleted (their controller recreates them) so no half gang runs
            uids = {k: uid for k, uid, _ in places if k in done}
            for k in done:
                self._just_bound.pop(k, None)
            failed = await self.binder.delete_pods(done, f"gang {res.gang.key}: a Binding failed", uids)
            for k in done:
                self.state.forget(k, uids[k])
            err = f"gang {res.gang.name}: binding failed ({errors[0]}); rolled back {len(done)} bound member(s)"
            if failed:
                err += f"; rollback failed: {'; '.join(failed)}"
            self.metrics.gangs.labels("rolled_back").inc()
            log.warning("%s", err)
        else:
            err = ""
            self.metrics.gangs.labels("bound").inc()
            log.info("bound gang %s: %s", res.gang.key, dict(sorted(res.hosts.items())))
        self.reservations.pop(res.gang.key, None)
        if res.done is not None and not res.done.done():
            res.done.set_result(err)

    def note_bound(self, key: str, node: str, uid: str) -> None:
        self._just_bound[key] = (node, uid, time.monotonic())

    def just_bound(self) -> dict[str, str]:
        """Pods this process bound that the watch does not show bound yet (pod key -> node). An entry counts only
        for the same pod (its UID): a pod re-created under the same name (a StatefulSet's) is a new, pending pod."""
        now = time.monotonic()
        for k, (_, uid, at) in list(self._just_bound.items()):
            pod = self.state.pods.get(k)
            if (now - at > JUST_BOUND_S or pod is None or (pod.get("spec") or {}).get("nodeName")
                    or (pod.get("metadata") or {}).get("uid") != uid):
                del self._just_bound[k]
        return {k: node for k, (node, _, _) in self._just_bound.items()}

    def expire(self) -> None:
        """Release reservations whose members stopped coming: none reached bind within the reservation timeout
        (e.g. workers never created), or every pod of the gang went away."""
        now = time.monotonic()
        for key, res in list(self.reservations.items()):
            if res.direct or res.binding or (res.done is not None and res.gang.timeout_s is None):
                continue  # members are waiting in bind: the bind timeout settles it (unless the gang sets its own)
            if now - res.created > (res.gang.timeout_s or self.reservation_timeout_s):
                # a gang's own bound (coscheduling scheduleTimeoutSeconds) also ends the wait of members in bind
                why = (f"its scheduleTimeoutSeconds ({res.gang.timeout_s:.0f}s) passed before all of it was bound"
                       if res.gang.timeout_s else f"no member reached bind within {self.reservation_timeout_s:.0f}s")
                self._release(key, why)
                self.metrics.gangs.labels("expired").inc()
                if res.done is not None and not res.done.done():
                    res.done.set_result(f"gang {res.gang.name}: {why}; reservation released, kube-scheduler will retry")
            elif not self.state.gang_index.get(key) and not res.admitted:
                # (a gang planned at its first member's admission may have no pod in the watch for a while: it is
                # released by the timeout above, never by a lagging watch)
                self._release(key, "the gang's pods went away")
                self.metrics.gangs.labels("expired").inc()

    def _release(self, gang_key: str, why: str) -> None:
        if self.reservations.pop(gang_key, None) is not None:
            log.info("released gang %s: %s", gang_key, why)

    # ------------------------------------------------------------------ events
    def event(self, pod: dict, reason: str, message: str, warning: bool = False) -> None:
        """An Event on the pod, at most once a minute per pod and reason; sent without blocking the verb."""
        key = (pod_key(pod), reason)
        now = time.monotonic()
        if now - self._event_sent.get(key, -1e9) < 60:
            return
        if len(self._event_sent) > 10_000:  # bounded: forget what is past its minute
            self._event_sent = {k: t for k, t in self._event_sent.items() if now - t < 60}
        self._event_sent[key] = now
        log.info("%s %s: %s", reason, key[0], message)
        _spawn(self.binder.event(pod, reason, message, warning))
