"""Fuzzing the extender's HTTP verbs (filter, prioritize, bind, preempt) and the admission webhook (POST /mutate)
in-process: real aiohttp apps, a ClusterState fed as the watches feed it (nodes, bound and pending gang pods), a
real kubernetes_asyncio client whose API server is a closed local port (every write fails fast, as with an
API server that is down). Requests are built from valid ones (gang members that get planned, binds of planned
members, preemption of real victims, AdmissionReviews of gang pods) and then broken: wrong types at any path,
missing fields, huge lists, odd unicode, nested garbage, non-JSON bytes.

Each answer is a 4xx with a message or a valid answer of its verb; never a 5xx, never an exception in the log,
never a request unanswered after REQUEST_BOUND_S; memory stays bounded over a stream of requests.

Defaults fit `make test` (CLIQUE_FUZZ_EXAMPLES=60 hypothesis examples of 1-6 requests, CLIQUE_FUZZ_REQUESTS=600
streamed requests); the long run is `CLIQUE_FUZZ_EXAMPLES=3000 CLIQUE_FUZZ_REQUESTS=10000 .venv/bin/python -m pytest
tests/unit/test_fuzz_http.py -s` (prints the memory figures). Existing fixed probes: test_extender_bodies.py,
test_admission.py."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import os
import random
import time
import tracemalloc

import pytest
import aiohttp
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.extender.admission import webhook_app
from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from simulations.controlplane.kwok_nodes import node_manifest
from simulations.controlplane.processes import free_port
from topology.levels import preset
from topology.spec import parse_cluster_spec

EXAMPLES = int(os.environ.get("CLIQUE_FUZZ_EXAMPLES", "60"))
REQUESTS = int(os.environ.get("CLIQUE_FUZZ_REQUESTS", "600"))
BIND_TIMEOUT_S = 0.3
REQUEST_BOUND_S = 15.0  # the slowest legitimate answer is a bind waiting BIND_TIMEOUT_S for its gang; the rest
# is headroom for a loaded 2-core machine (a stuck request never answers at all)
VERBS = ("filter", "prioritize", "bind", "preempt", "mutate")
OURS = "clique-scheduler"
GPU = "nvidia.com/gpu"


# ------------------------------------------------------------------------------------------------ the cluster
def _pod(name: str, gpus: int = 8, node: str | None = None, ns: str = "default", **meta) -> dict:
    spec: dict = {"schedulerName": OURS, "containers": [{"name": "w", "image": "x", "args": ["--tp", str(gpus)],
                                                         "resources": {"limits": {GPU: str(gpus)}}}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": meta.get("labels", {}),
                         "annotations": meta.get("annotations", {}), "creationTimestamp": "2026-11-30T08:00:00Z"},
            "spec": spec, "status": {"phase": "Running" if node else "Pending"}}


def _gang(name: str, size: int, **extra) -> dict:
    return {"clique.dev/gang": name, "clique.dev/gang-size": str(size), **extra}


class Cluster:
    """16 Ready 8-GPU nodes in 2 spines x 4 leaves; a bound 2x8 gang and 4 bound single pods; pending: three
    gangs (2x8, 4x8 inside one leaf, 3x4), single pods, an LWS group, a StatefulSet gang."""

    def __init__(self) -> None:
        spec = parse_cluster_spec({"name": "fz", "pools": [{"name": "fz", "hosts": 16, "gpus": 8}],
                                   "levels": [{"name": "spine", "label": "clique.dev/spine", "hostsPerDomain": 8},
                                              {"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 2}]})
        self.nodes = [node_manifest(h, ready=True) for h in spec.hosts()]
        self.names = [n["metadata"]["name"] for n in self.nodes]
        n = self.names
        self.bound = ([_pod(f"run-{i}", 8, n[i], annotations=_gang("run", 2)) for i in range(2)]
                      + [_pod(f"solo-{i}", 4, n[2 + i]) for i in range(4)])
        lws = {"leaderworkerset.sigs.k8s.io/name": "llama", "leaderworkerset.sigs.k8s.io/group-index": "0"}
        self.pending = ([_pod(f"a-{i}", 8, annotations=_gang("a", 2)) for i in range(2)]
                        + [_pod(f"b-{i}", 8, annotations=_gang("b", 4, **{"clique.dev/topology-required": "leaf"}))
                           for i in range(4)]
                        + [_pod(f"c-{i}", 4, annotations=_gang("c", 3)) for i in range(3)]
                        + [_pod(f"single-{i}", g) for i, g in enumerate((0, 1, 2, 8))]
                        + [_pod(f"llama-0{'' if w == 0 else '-' + str(w)}", 8, labels={
                            **lws, "leaderworkerset.sigs.k8s.io/worker-index": str(w)},
                            annotations={"leaderworkerset.sigs.k8s.io/size": "2"}) for w in range(1)]
                        + [{**_pod(f"sts-{i}", 8, annotations={"clique.dev/gang-size": "2"}),
                            "metadata": {**_pod(f"sts-{i}", 8)["metadata"], "annotations": {"clique.dev/gang-size": "2"},
                                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                              "name": "sts", "uid": "sts-uid", "controller": True}]}}
                           for i in range(2)])

    def extender(self, api) -> Extender:
        state = ClusterState(preset("generic"))
        state._set_nodes(self.nodes)
        state._set_pods(self.bound + self.pending)
        for e in state.synced.values():
            e.set()
        return Extender(state, api, bind_timeout_s=BIND_TIMEOUT_S, reservation_timeout_s=2.0)


CLUSTER = Cluster()


# ------------------------------------------------------------------------------------------------ requests
ODD = ["", "\x00", "\u202e\u0644", "\ud800", "e\u0301", "😀", "A" * 300, "a/b", "..", "-a", "NaN", "1e99999",
       "ǅ", "\uffff", " ", "kube-system", "\n"]


def _garbage(rng: random.Random, depth: int = 0):
    """A JSON value of a random kind: wrong types, odd unicode, big or non-finite numbers, huge or nested lists."""
    kind = rng.randrange(14 if depth < 3 else 9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, -(2**63) - 1, 10**30, 7])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, float("nan"), float("inf"), -float("inf")])
    if kind in (4, 5):
        return rng.choice(ODD)
    if kind == 6:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 20)))
    if kind == 7:
        return rng.choice(["8", "500m", "64Gi", "1e3", "0.5", "-8", "8Ki", "9" * 80, "1e400"])
    if kind == 8:
        return [rng.choice(CLUSTER.names)] * rng.choice([2, 1000, 20_000])  # huge lists
    if kind == 9:
        return [_garbage(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 10:
        return {rng.choice(ODD + ["metadata", "spec", "Pod", "name"]): _garbage(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    if kind == 11:
        return json.loads("[" * 50 + "]" * 50)
    if kind == 12:
        return {"items": [{"metadata": {"name": n}} for n in rng.sample(CLUSTER.names, 3)]}
    return rng.choice(CLUSTER.names + [p["metadata"]["name"] for p in CLUSTER.pending])


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items:
        if not (isinstance(v, list) and len(v) > 50):
            yield from _paths(v, (*prefix, k))


def _break(rng: random.Random, body):
    """Up to three changes at random places of a valid body: a garbage value, a deleted key, a key in odd case."""
    for _ in range(rng.randrange(1, 4)):
        paths = [p for p in _paths(body) if p]
        if not paths:
            return _garbage(rng)
        path = rng.choice(paths)
        parent = body
        for k in path[:-1]:
            parent = parent[k]
        what = rng.randrange(3)
        if what == 0:
            parent[path[-1]] = _garbage(rng)
        elif what == 1 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict) and isinstance(path[-1], str):
            parent[path[-1].swapcase()] = parent.pop(path[-1])
    return body


def _valid(rng: random.Random, verb: str):
    """A request kube-scheduler (or the API server) could send."""
    pods = CLUSTER.pending + CLUSTER.bound
    pod = json.loads(json.dumps(rng.choice(CLUSTER.pending)))
    if rng.random() < 0.3:  # a pod the state does not know: a random gang shape
        size = rng.randrange(1, 6)
        gang = f"r{rng.randrange(50)}"
        pod = _pod(f"{gang}-{rng.randrange(size)}", rng.choice([0, 1, 4, 8]), annotations=_gang(gang, size))
    elif rng.random() < 0.1:  # the leader of a LeaderWorkerSet group whose workers do not exist yet (any name)
        lws = f"lws-{rng.getrandbits(32):08x}"
        pod = _pod(f"{lws}-0", 8, labels={"leaderworkerset.sigs.k8s.io/name": lws,
                                          "leaderworkerset.sigs.k8s.io/group-index": "0",
                                          "leaderworkerset.sigs.k8s.io/worker-index": "0"},
                   annotations={"leaderworkerset.sigs.k8s.io/size": "2"})
    names = rng.sample(CLUSTER.names, rng.randrange(1, len(CLUSTER.names) + 1))
    if verb in ("filter", "prioritize"):
        if rng.random() < 0.1:
            return {"Pod": pod, "Nodes": {"items": [n for n in CLUSTER.nodes if n["metadata"]["name"] in names]}}
        return {"Pod": pod, "NodeNames": names}
    if verb == "bind":
        target = rng.choice(pods)
        return {"PodName": target["metadata"]["name"], "PodNamespace": "default",
                "PodUID": target["metadata"]["uid"], "Node": rng.choice(CLUSTER.names)}
    if verb == "preempt":
        victims = {}
        for v in rng.sample(CLUSTER.bound, rng.randrange(len(CLUSTER.bound) + 1)):
            victims.setdefault(v["spec"]["nodeName"], {"Pods": [], "NumPDBViolations": rng.randrange(2)})[
                "Pods"].append({"UID": v["metadata"]["uid"]})
        if rng.random() < 0.2:  # the full-pods form (nodeCacheCapable: false)
            return {"Pod": pod, "NodeNameToVictims": {n: {"Pods": [{"metadata": {"uid": u["UID"]}} for u in v["Pods"]],
                                                          "NumPDBViolations": v["NumPDBViolations"]}
                                                      for n, v in victims.items()}}
        return {"Pod": pod, "NodeNameToMetaVictims": victims}
    obj = json.loads(json.dumps(pod))
    obj["metadata"].pop("uid")
    obj["spec"]["schedulerName"] = rng.choice(["default-scheduler", "kai-scheduler", "volcano", OURS])
    if rng.random() < 0.5:
        obj["metadata"]["labels"] = {"grove.io/podgang": "dgd-0", "grove.io/podclique": "w"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": f"{rng.getrandbits(64):016x}", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": "default", "operation": rng.choice(["CREATE"] * 5 + ["UPDATE"]),
                        "userInfo": {"username": "system:serviceaccount:grove-system:grove-operator"},
                        "object": obj, "oldObject": None, "dryRun": rng.random() < 0.1}}


def request(rng: random.Random) -> tuple[str, bytes, object]:
    """(verb, raw body, the body as sent or None when it is not JSON)."""
    verb = rng.choice(VERBS)
    body = json.loads(json.dumps(_valid(rng, verb)))  # a copy: breaking it must not touch CLUSTER
    how = rng.random()
    if how < 0.35:
        pass  # valid as it is
    elif how < 0.85:
        body = _break(rng, body)
    elif how < 0.92:
        body = _garbage(rng)
    else:  # not JSON, or JSON that Python's encoder would not write
        raw = rng.choice([b"", b"{", b"\xff\xfe{}", b"\xef\xbb\xbf{}", b'{"Pod": 1e999999}', b'{"a":' + b"9" * 5000 + b"}",
                          b'{"PodName": "a", "PodName": 5}', b"[" * 100_000, b"null", b'"\\ud800"',
                          json.dumps(body).encode()[: rng.randrange(1, 200)]])
        try:  # a cut that is still a whole JSON document is a request like any other
            return verb, raw, json.loads(raw)
        except (ValueError, RecursionError):
            return verb, raw, None
    return verb, json.dumps(body).encode("utf-8", "surrogatepass"), body


# ------------------------------------------------------------------------------------------------ answers
def check_answer(verb: str, sent, status: int, answer) -> None:
    assert status < 500, (verb, status, answer)
    if status >= 400:
        assert status in (400, 413), status
        assert isinstance(answer, dict) and isinstance(answer.get("Error"), str) and answer["Error"], answer
        return
    assert status == 200 and sent is not None, (status, answer)
    if verb == "filter":
        assert set(answer) == {"NodeNames", "Nodes", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}, answer
        full = {k.lower(): v for k, v in sent.items()}.get("nodenames") is None  # nodeCacheCapable: false
        assert (answer["Nodes"] is not None and answer["NodeNames"] is None) if full else (
            answer["NodeNames"] is not None and answer["Nodes"] is None), answer  # what kube-scheduler reads back
        passed = answer["NodeNames"] if not full else [n["metadata"]["name"] for n in answer["Nodes"]["items"]]
        asked = _asked_names(sent)
        assert set(passed) <= set(asked), (passed, asked)
        for failed in (answer["FailedNodes"], answer["FailedAndUnresolvableNodes"]):
            assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in failed.items())
            assert not set(failed) & set(passed)
        assert isinstance(answer["Error"], str)
    elif verb == "prioritize":
        assert isinstance(answer, list)
        asked = set(_asked_names(sent))
        for s in answer:
            assert s["Host"] in asked and isinstance(s["Score"], int) and 0 <= s["Score"] <= 10, s
    elif verb == "bind":
        assert set(answer) == {"Error"} and isinstance(answer["Error"], str)
    elif verb == "preempt":
        kept = answer["NodeNameToMetaVictims"]
        offered = {k.lower(): v for k, v in sent.items()}
        offered = offered.get("nodenametometavictims") or offered.get("nodenametovictims") or {}
        assert set(kept) <= set(offered), (kept, offered)
    else:
        resp = answer["response"]
        assert answer["kind"] == "AdmissionReview" and resp["allowed"] is True
        assert resp["uid"] == sent["request"]["uid"]
        if "patch" in resp:
            ops = json.loads(base64.b64decode(resp["patch"]))
            assert resp["patchType"] == "JSONPatch" and all(op["op"] == "add" for op in ops)
            assert {"op": "add", "path": "/spec/schedulerName", "value": OURS} in ops or \
                sent["request"]["object"]["spec"].get("schedulerName") == OURS


def _asked_names(sent) -> list[str]:
    low = {k.lower(): v for k, v in sent.items()}
    if low.get("nodenames") is not None:
        return low["nodenames"]
    return [n["metadata"]["name"] for n in low["nodes"]["items"]]


class Servers:
    """The extender's verbs and the webhook, each on a local test server in this event loop."""

    def __init__(self) -> None:
        from kubernetes_asyncio.client import ApiClient, Configuration

        cfg = Configuration()
        cfg.host = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the API server is down
        self.api = ApiClient(configuration=cfg)
        self.ext = CLUSTER.extender(self.api)
        self.verbs = TestServer(self.ext.app())
        self.webhook = TestServer(webhook_app(OURS, self.ext.metrics.registry, gate=True))
        self.session: aiohttp.ClientSession | None = None  # a plain session: a TestClient keeps every response

    async def __aenter__(self) -> "Servers":
        await self.verbs.start_server()
        await self.webhook.start_server()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.session is not None
        await self.session.close()
        await self.verbs.close()
        await self.webhook.close()
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.wait(pending, timeout=5) if pending else None  # Events and nominations in flight
        await self.api.close()

    async def post(self, verb: str, raw: bytes) -> tuple[int, object, float]:
        server = self.webhook if verb == "mutate" else self.verbs
        started = time.monotonic()

        async def once():
            assert self.session is not None
            async with self.session.post(server.make_url(f"/{verb}"), data=raw,
                                         headers={"Content-Type": "application/json"}) as resp:
                return resp.status, await resp.text()

        try:
            status, text = await asyncio.wait_for(once(), REQUEST_BOUND_S)
        except asyncio.TimeoutError:
            pytest.fail(f"{verb} request unanswered after {REQUEST_BOUND_S}s: {raw[:300]!r}")
        try:
            answer = json.loads(text)
        except ValueError:
            pytest.fail(f"{verb} answered {status} with a body that is not JSON: {text[:300]!r}")
        return status, answer, time.monotonic() - started


def _no_errors_logged(caplog) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, f"{len(bad)} exception(s) or errors in the log, e.g. {bad[0].getMessage()[:500]}"


# ------------------------------------------------------------------------------------------------ tests
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), count=st.integers(1, 6))
async def test_random_and_broken_requests_get_a_valid_answer_or_a_4xx_with_a_message_in_bounded_time(
        rng, count, caplog):
    caplog.set_level(logging.WARNING)
    async with Servers() as servers:
        for _ in range(count):
            verb, raw, sent = request(rng)
            status, answer, _ = await servers.post(verb, raw)
            check_answer(verb, sent, status, answer)
    _no_errors_logged(caplog)


class _Errors(logging.Handler):
    """Keeps the errors (and logged exceptions) only: pytest's own capture keeps every record, with the
    exceptions' tracebacks and their frames' request bodies, which would be the growth measured."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.errors: list[str] = []
        self.warnings = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.errors.append(record.getMessage()[:500])
        else:
            self.warnings += 1


async def test_a_stream_of_requests_keeps_memory_bounded_and_every_answer_in_time():
    """REQUESTS requests (random, seeded) at one extender and webhook, with the reservation expiry the recovery
    loop runs; traced Python memory (tracemalloc) after the first fifth (warm: caches filled, bounded tables full
    enough) and at the end; the growth over the rest must stay under GROWTH_MB. Logging goes to a handler that
    keeps only errors (asserted none) while it runs. Also reported: RSS, the slowest answer."""
    rng = random.Random(18)
    warm_at = REQUESTS // 5
    root, errors = logging.getLogger(), _Errors()
    handlers, level = root.handlers[:], root.level
    root.handlers, root.level = [errors], logging.WARNING
    tracemalloc.start()
    try:
        async with Servers() as servers:
            slowest, statuses = 0.0, {}
            for i in range(REQUESTS):
                verb, raw, sent = request(rng)
                status, answer, took = await servers.post(verb, raw)
                check_answer(verb, sent, status, answer)
                assert not errors.errors, f"an error in the log after {verb} {raw[:300]!r}: {errors.errors[0]}"
                slowest = max(slowest, took)
                statuses[status] = statuses.get(status, 0) + 1
                if i % 25 == 0:
                    servers.ext.expire()  # what scheduler/extender/recovery.py runs every 0.2 s
                if i + 1 == warm_at:
                    await asyncio.sleep(0.2)
                    gc.collect()
                    warm_snap, rss_warm = _snapshot(), _rss_mib()
            await asyncio.sleep(0.2)
            gc.collect()
            end_snap, rss_end = _snapshot(), _rss_mib()
            tables = {"reservations": len(servers.ext.reservations), "events": len(servers.ext._event_sent),
                      "lws": len(servers.ext._lws), "objects": len(servers.ext._objects)}
    finally:
        tracemalloc.stop()
        root.handlers, root.level = handlers, level
    warm, end = (sum(t.size for t in snap.statistics("filename")) for snap in (warm_snap, end_snap))
    growth_mb = (end - warm) / 1e6
    top = "; ".join(str(d) for d in end_snap.compare_to(warm_snap, "lineno")[:4])
    print(f"\n[fuzz] {REQUESTS} requests, answers by status {statuses}, slowest {slowest:.2f}s; traced memory "
          f"{warm / 1e6:.1f} MB after {warm_at} -> {end / 1e6:.1f} MB at the end (+{growth_mb:.2f} MB); RSS "
          f"{rss_warm:.0f} -> {rss_end:.0f} MiB; tables {tables}; {errors.warnings} warnings logged; grew most: {top}")
    assert growth_mb < GROWTH_MB, f"traced memory grew {growth_mb:.2f} MB over {REQUESTS - warm_at} requests: {top}"
    assert tables["reservations"] <= 16 and tables["lws"] <= LWS_CACHE + 1, tables
    assert errors.warnings, "the stream should have produced warnings (malformed requests) that were looked at"


LWS_CACHE = 1024  # Extender._lws: entries past their 10 s are dropped once it holds more than this
GROWTH_MB = 8.0  # bounded tables (Events sent, reservations, caches) fill up early; a leak grows with requests


def _snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


async def test_leader_worker_sets_of_any_number_of_names_keep_the_extenders_cache_bounded():
    """Each LWS leader's filter reads its LeaderWorkerSet (cached 10 s per name); names come and go, so the cache
    must not keep one entry per name ever seen (it did: a slow leak found by the stream above)."""
    async with Servers() as servers:
        for i in range(LWS_CACHE + 300):
            leader = _pod(f"w{i}-0", 8, labels={"leaderworkerset.sigs.k8s.io/name": f"w{i}",
                                                "leaderworkerset.sigs.k8s.io/group-index": "0",
                                                "leaderworkerset.sigs.k8s.io/worker-index": "0"},
                          annotations={"leaderworkerset.sigs.k8s.io/size": "2"})
            assert await servers.ext._leader_first(leader) is None  # unreadable object: LeaderCreated, no wait
        assert 0 < len(servers.ext._lws) <= LWS_CACHE
