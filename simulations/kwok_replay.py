"""The autoscaler replay against the real thing: a request trace, time-compressed, drives the replay's prefill and
decode model, whose metrics a synthetic exporter serves; the real autoscaler daemon reads them (through a real
Prometheus for the planner's policies, by Scrape for the reactive ones) and scales two StatefulSets of gangs on a
local control plane; clique-scheduler places them on KWOK nodes; and the model serves with the gangs the API
server shows bound (each after the model-load delay). Side effects: starts a control plane, KWOK nodes, the
extender, the autoscaler, Prometheus and the exporter; creates objects.

What is real: the API server, kube-scheduler, the StatefulSet controller, kwok, Clique's extender and autoscaler
(the policies of `planner_policy_docs` or `replay.clique_policy_docs`), Prometheus. What is modelled: the serving
itself (no GPU, no model): the same fluid model as `clique replay`, so the two runs differ only by the real
control loop: scrape and evaluation timing, scale patches, pod creation, scheduling and capacity.

Time compression (speedup s): every time constant the offline replay has is divided by s, so the two runs are
comparable: the policies' evaluation interval, model load, TTFT SLO, history, idle-to-zero time (and capacities in
tokens/s multiplied by s); the daemon's tick (0.5 s / s); Prometheus' scrape interval (the planner's 1 s bin / s,
in whole milliseconds: 33 ms at 30x); the trace starts at the daemon's first reading of the counters (the offline
planner starts at the trace's start). What is not compressed is the control plane's own latency (patch, pod
creation, scheduling, the daemon's queries: milliseconds of real time, x s in trace time), reported as
`bind_lags_s`, and scrapes that miss Prometheus' timeout (its interval: 33 ms at 30x on a loaded machine), reported
as `failed_scrapes` and the evaluations they held. `daemon_planner` is the daemon's own planner path without a
cluster, evaluated on the replay's grid: against `clique` it checks the metric path, against the API-server run it
shows what the control loop adds.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from simulations.exporter import SyntheticExporter
from simulations.replay import (ModelConfig, ReplayResult, Signals, clique_policy_docs, planner_config, replay,
                                signal_values)
from simulations.workloads import Request

NAMESPACE = "replay"
LEAF = "clique.dev/leaf"


@dataclass
class KwokReplayResult:
    replay: ReplayResult
    speedup: float
    scale_patches: int = 0  # changes of the StatefulSets' replicas seen on the API server
    max_pending_gangs: int = 0  # replicas asked for but not (yet) bound, at most
    pending_gang_s: float = 0.0  # trace seconds x gangs asked for and not bound
    longest_pending_s: float = 0.0  # longest stretch of trace time with some gang asked for and not bound
    wall_s: float = 0.0
    hosts: int = 0
    # per observation (trace s): (t, prefill asked, prefill bound, decode asked, decode bound), gangs on the API server
    cluster_timeline: list[tuple[float, int, int, int, int]] = field(default_factory=list)
    bind_lags_s: list[float] = field(default_factory=list)  # trace s from a gang asked for to all its pods bound
    twin: ReplayResult | None = None  # the daemon's planner path offline (`daemon_planner`), for the same requests
    scrapes: int = 0  # Prometheus' scrapes of the exporter during the replay, and how many failed (up == 0)
    failed_scrapes: int = 0
    held_evaluations: int = 0  # the daemon's evaluations that held because a signal was missing (NoMetrics)
    evaluations: int = 0
    evaluation_period_s: float = 0.0  # trace seconds between two evaluations of a policy, on average
    interval_s: float = 15.0  # what the policies ask for (trace seconds)

    @property
    def kept_time(self) -> bool:
        """Whether the real loop kept the compressed time well enough for its figures to stand beside the offline
        run's: at most 20% of the evaluations held for a missing signal (scrapes past Prometheus' timeout) and
        evaluations on average at most 25% further apart than the interval. A machine too loaded for the speedup
        fails this; run at a lower --kwok-speedup."""
        return (self.evaluations > 0 and self.held_evaluations <= 0.2 * self.evaluations
                and self.evaluation_period_s <= 1.25 * self.interval_s)

    def summary(self) -> dict:
        out = self.replay.summary()
        out.update({"policy": "clique (API server)", "scale_events": self.scale_patches, "speedup": self.speedup,
                    "max_pending_gangs": self.max_pending_gangs, "pending_gang_s": round(self.pending_gang_s, 1),
                    "longest_pending_s": round(self.longest_pending_s, 1),
                    "wall_s": round(self.wall_s, 1), "hosts": self.hosts})
        if self.scrapes:
            out.update({"scrapes": self.scrapes, "failed_scrapes": self.failed_scrapes})
        if self.evaluations:
            out.update({"evaluations": self.evaluations, "held_no_metrics": self.held_evaluations,
                        "evaluation_period_trace_s": round(self.evaluation_period_s, 1), "kept_time": self.kept_time})
        if self.bind_lags_s:
            lags = sorted(self.bind_lags_s)
            out.update({"bind_lag_trace_s_median": round(lags[len(lags) // 2], 1),
                        "bind_lag_trace_s_max": round(lags[-1], 1)})
        return out


def statefulset(name: str, pods_per_gang: int, replicas: int, gpus: int, preferred: str | None) -> dict:
    ann = {"clique.dev/gang-size": str(pods_per_gang)}
    if preferred:
        ann["clique.dev/topology-preferred"] = preferred
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": replicas * pods_per_gang, "serviceName": name, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}, "annotations": ann},
                                  "spec": {"schedulerName": "clique-scheduler", "automountServiceAccountToken": False,
                                           "terminationGracePeriodSeconds": 0,
                                           "containers": [{"name": "worker", "image": "clique.dev/simulated",
                                                           "args": ["--tp-size", str(gpus * pods_per_gang)],
                                                           "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}}}


class ClusterView:
    """What the API server says about the two pools: replicas asked for, gangs with every pod bound."""

    def __init__(self, api_client: Any, cfg: ModelConfig) -> None:
        from kubernetes import client

        self.core, self.apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        self.size = {"prefill": cfg.prefill_pods, "decode": cfg.decode_pods}
        self.last_spec: dict[str, int] = {}
        self.patches = 0

    def read(self) -> dict[str, tuple[int, int]]:
        """pool -> (gangs asked for, gangs bound). Two lists read as plain JSON (the client's model objects cost
        tens of milliseconds of the GIL per read, which the exporter's scrapes, every 33 ms at 30x, cannot spare)."""
        out = {}
        pods = json.loads(self.core.list_namespaced_pod(NAMESPACE, resource_version="0",
                                                        _preload_content=False).data)["items"]
        sets = json.loads(self.apps.list_namespaced_stateful_set(NAMESPACE, _preload_content=False).data)["items"]
        replicas = {st["metadata"]["name"]: st["spec"].get("replicas") or 0 for st in sets}
        for name, size in self.size.items():
            spec = replicas.get(name, 0)
            if name in self.last_spec and spec != self.last_spec[name]:
                self.patches += 1
            self.last_spec[name] = spec
            groups: dict[int, int] = {}
            for p in pods:
                md = p["metadata"]
                if (md.get("labels") or {}).get("app") != name or md.get("deletionTimestamp") or \
                        not p["spec"].get("nodeName"):
                    continue
                ordinal = int(md["name"].rsplit("-", 1)[1])
                if ordinal < spec:
                    groups[ordinal // size] = groups.get(ordinal // size, 0) + 1
            out[name] = (spec // size, sum(1 for n in groups.values() if n == size))
        return out


# vLLM's series the daemon's planner reads (autoscaler/policy.py PLANNER_METRICS["vllm"]), served here by the
# synthetic exporter from the replay's model, once per pool (label POOL_LABEL, each policy's `selector` picks its
# pool's, as a policy would select its own workers'): cumulative prompt tokens and requests arrived, and the gauges
# of `pool_gauges`.
PLANNER_SERIES = ("vllm:prompt_tokens_total", "vllm:request_success_total", "vllm:num_requests_waiting",
                  "vllm:num_requests_running")
POOL_LABEL = "pool"
POOLS = ("prefill", "decode")


def planner_policy_docs(cfg: ModelConfig, speedup: float = 1.0) -> dict[str, dict]:
    """The two pools' policies with a `planner:` section (the look-ahead planner decides, `clique` offline): the
    capacities, load time and SLO of `replay.planner_config`, with time divided by `speedup` (the daemon sees a
    compressed trace: rates x speedup, times / speedup)."""
    pc = planner_config(cfg)

    def doc(name: str, role: str, pods: int, preferred: str | None) -> dict:
        return {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name},
                "minReplicas": cfg.min_replicas, "maxReplicas": cfg.max_replicas,
                "evaluationIntervalSeconds": cfg.interval_s / speedup, "podsPerReplica": pods, "scaleUnit": "Pods",
                "gang": {"gpusPerPod": cfg.gpus_per_pod, **({"topologyPreferred": preferred} if preferred else {})},
                "planner": {"role": role, "prefillTokensPerSecond": pc.prefill_tokens_per_s * speedup,
                            "decodeSlots": pc.decode_slots, "modelLoadSeconds": pc.load_s / speedup,
                            "ttftSeconds": pc.ttft_slo_s / speedup, "attainment": pc.attainment,
                            "historySeconds": pc.history_s / speedup, "idleToZeroSeconds": pc.idle_to_zero_s / speedup,
                            "engine": "vllm", "selector": {POOL_LABEL: name}}}
    return {"prefill": doc("prefill", "Prefill", cfg.prefill_pods, None),
            "decode": doc("decode", "Decode", cfg.decode_pods, "leaf")}


def pool_gauges(s: Signals) -> dict[str, tuple[float, float]]:
    """Per pool, (vllm:num_requests_waiting, vllm:num_requests_running) at one observation, so that the daemon's
    signals (autoscaler/planned.py: queue = waiting, decode in flight = running + waiting) are the offline
    planner's: the prefill pool's waiting is its queue (the prompts in progress included, as the replay's queue
    depth counts them) and it runs no sequences; the decode pool's waiting are the sequences waiting for a slot,
    its running the ones in a slot. (One set of gauges for both pools, as this harness served before, counted the
    prefill queue into the decode pool's sequences in flight, so a burst's queue asked for decode replicas.)"""
    return {"prefill": (float(s.prefill_queue_requests), 0.0),
            "decode": (float(s.decode_waiting), float(s.decode_running))}


def planner_values(s: Signals, arrived_tokens: float, arrived_requests: float, pool: str) -> dict[str, float]:
    """PLANNER_SERIES of one pool at one observation: the counters (cumulative arrivals) and its two gauges."""
    return dict(zip(PLANNER_SERIES, (arrived_tokens, arrived_requests, *pool_gauges(s)[pool])))


class ArrivalCounters:
    """vLLM's two counters (PLANNER_SERIES[:2]) as the trace makes them: the prompt tokens and requests that
    arrived before a trace time. A serving stack's counters move as requests come, not at the model's
    observations, so the exporter reads them at each scrape (`TraceExporter`) and the offline twin at each
    emulated scrape (`daemon_planner`). They count every request, as vLLM's do; the offline planner's bins leave out
    the ones no replica can prefill within the SLO (none in the Azure code trace's first 3,000)."""

    def __init__(self, requests: Sequence[Request]) -> None:
        self.times = [r.time for r in requests]
        self.tokens = [0.0]
        for r in requests:
            self.tokens.append(self.tokens[-1] + r.prompt)

    def at(self, trace_t: float) -> tuple[float, float]:
        """(prompt tokens, requests) arrived before `trace_t` (bin k of the offline replay holds [k, k + 1))."""
        i = bisect.bisect_left(self.times, trace_t)
        return self.tokens[i], float(i)


def scrape_interval_s(cfg: ModelConfig, speedup: float) -> float:
    """Prometheus' scrape interval for a run at `speedup`: the planner's bin (cfg.bin_s of trace time), so the
    daemon's bins are the offline replay's (see autoscaler/planned.py); whole milliseconds."""
    return max(0.001, round(cfg.bin_s / speedup, 3))


def daemon_planner(requests: Sequence[Request], cfg: ModelConfig, speedup: float = 1.0,
                   scrape_s: float | None = None) -> Callable[[Signals], tuple[int, int]]:
    """The daemon's planner path without a cluster, as a replay policy (evaluate it every cfg.interval_s): the
    policies of `planner_policy_docs` parsed as the daemon parses them, one `autoscaler.planned.PlannerFeed` per
    pool, fed what Prometheus would answer (the counters' samples every `scrape_s` of wall time, default
    `scrape_interval_s`; the gauges at the evaluation), at wall time = trace time / speedup, and its decision
    (`planned_decision`) applied at once. Pure. Against `replay.clique_planner` it isolates the metric path
    (bins from scrapes, queue tokens estimated from the waiting count); against the API-server run, the control
    loop (patch, pod creation, scheduling)."""
    from autoscaler.planned import PlannerFeed, PlannerSignals, planned_decision
    from autoscaler.policy import parse_policy

    docs = planner_policy_docs(cfg, speedup)
    pols = {n: parse_policy(NAMESPACE, f"{n}-policy", docs[n]) for n in ("prefill", "decode")}
    feeds = {n: PlannerFeed.for_policy(p) for n, p in pols.items()}
    scrape = scrape_interval_s(cfg, speedup) if scrape_s is None else scrape_s
    counters = ArrivalCounters(requests)
    wall0 = 1_000_000.0  # any epoch: the planner's time-of-day profile needs a day, far longer than these runs
    state = {"k": 0}  # the next scrape's index
    scraped: list[tuple[float, float, float]] = []  # (wall t, tokens, requests) since the last evaluation

    def run(s: Signals) -> tuple[int, int]:
        if state["k"] == 0:  # the daemon is up before the trace starts: its first reading (only primes) at 0
            scraped.append((wall0, 0.0, 0.0))
            state["k"] = 1
            zero = {"promptTokens": {frozenset(): [(wall0, 0.0)]}, "requests": {frozenset(): [(wall0, 0.0)]}}
            for name in feeds:
                feeds[name].plan(wall0, PlannerSignals({c: {frozenset(): 0.0} for c in zero},
                                                       {"waiting": 0.0, "running": 0.0}, None, zero), s.prefill)
        now = wall0 + s.now / speedup
        while wall0 + state["k"] * scrape <= now + 1e-9:
            t = state["k"] * scrape
            scraped.append((wall0 + t, *counters.at(t * speedup)))
            state["k"] += 1
        key = frozenset()
        gauges = pool_gauges(s)
        samples = {"promptTokens": {key: [(t, v) for t, v, _ in scraped]},
                   "requests": {key: [(t, v) for t, _, v in scraped]}}
        latest = {"promptTokens": {key: scraped[-1][1]}, "requests": {key: scraped[-1][2]}}
        del scraped[:-1]  # the last one stays: the next window starts at it
        want = []
        for name, current in (("prefill", s.prefill), ("decode", s.decode)):
            sig = PlannerSignals(latest, dict(zip(("waiting", "running"), gauges[name])), None, samples)
            plan = feeds[name].plan(now, sig, current)
            want.append(current if plan is None else
                        planned_decision(pols[name], current, plan, sig, feeds[name].prompt_rate()).desired)
        return want[0], want[1]
    return run


class TraceExporter(SyntheticExporter):
    """The synthetic exporter with the arrival counters (both pools' series) read at each scrape, at the trace time
    of the wall clock (`start` sets trace time 0; before it they stay as set)."""

    def __init__(self, requests: Sequence[Request], speedup: float) -> None:
        super().__init__()
        self.counters, self.speedup, self.t0 = ArrivalCounters(requests), speedup, None
        # a scrape Prometheus gave up on (its timeout is the 33 ms interval at 30x) breaks the pipe: counted from
        # Prometheus' `up` at the end (KwokReplayResult.failed_scrapes), not printed per scrape
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]

    def start(self, t0: float) -> None:
        self.t0 = t0

    def render(self) -> str:
        if self.t0 is not None:
            tokens, reqs = self.counters.at((time.monotonic() - self.t0) * self.speedup)
            for pool in POOLS:
                self.set(PLANNER_SERIES[0], tokens, **{POOL_LABEL: pool})
                self.set(PLANNER_SERIES[1], reqs, **{POOL_LABEL: pool})
        return super().render()


def query_value(url: str, promql: str) -> float:
    """One number from Prometheus' /api/v1/query (0 when the result is empty)."""
    import urllib.parse
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=10) as resp:
        result = json.loads(resp.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def count_evaluations(log: Path, since_monotonic: float) -> tuple[int, int, float]:
    """(evaluations, the ones held for a missing signal, the mean wall seconds between two evaluations of one
    policy) the daemon logged since `since_monotonic` (its log lines' times are wall clock, to the millisecond)."""
    import datetime
    import re

    since = time.time() - (time.monotonic() - since_monotonic)
    total = held = 0
    times: dict[str, list[float]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        m = re.search(r"policy (\S+): (holding |\d+ -> \d+ replicas \(planner )", line)
        if m is None:
            continue
        stamp = datetime.datetime.strptime(line[7:30], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if stamp >= since:
            total += 1
            held += "[NoMetrics]" in line
            times.setdefault(m.group(1), []).append(stamp)
    gaps = [b - a for ts in times.values() for a, b in zip(ts, ts[1:])]
    return total, held, sum(gaps) / len(gaps) if gaps else 0.0


def wait_first_reading(core: Any, configmaps: Sequence[str], workdir: Any, timeout_s: float = 60.0) -> None:
    """Block until the daemon's planner has read the counters of every policy once (its status says so), so that the
    trace starts at the daemon's first reading, as the offline replay's planner starts at the trace's start. (A
    daemon planning for seconds before would have planned over minutes of empty trace time at the speedup: measured,
    that idle history alone took a run from the offline planner's 87.2% to 31.3%.)"""
    import json

    from autoscaler.reconciler import STATUS_ANNOTATION

    deadline = time.monotonic() + timeout_s
    read: set[str] = set()
    while True:
        for name in set(configmaps) - read:
            ann = core.read_namespaced_config_map(name, NAMESPACE).metadata.annotations or {}
            message = json.loads(ann.get(STATUS_ANNOTATION, "{}")).get("message", "")
            if "first reading of the planner's counters" in message or "(planner " in message:  # primed, or past it
                read.add(name)
        if read == set(configmaps):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the autoscaler did not evaluate {', '.join(configmaps)} within {timeout_s:.0f}s; "
                               f"see {workdir}/autoscaler.log")
        time.sleep(0.01)


def run_kwok_replay(requests: Sequence[Request], cfg: ModelConfig, speedup: float, hosts: int,
                    say: Callable[[str], None] = print,
                    progress: Callable[[int, int], None] | None = None, observe_s: float = 5.0,
                    planner: bool = False, logs_to: Path | None = None) -> KwokReplayResult:
    """`planner`: the pools are scaled by the look-ahead planner (policies of `planner_policy_docs`, fed by a real
    Prometheus scraping the exporter every `scrape_interval_s`), else by the reactive rules of `clique_policy_docs`.
    `logs_to`: a folder the autoscaler's and the extender's logs are copied into at the end (the daemon logs every
    evaluation's decision and the planner's reason)."""
    from kubernetes import client

    from autoscaler.process import start_autoscaler, stop_autoscaler
    from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender
    from simulations.controlplane import ControlPlane
    from simulations.controlplane.kwok_nodes import create_nodes
    from simulations.controlplane.prometheus import Prometheus
    from topology.spec import parse_cluster_spec

    spec = parse_cluster_spec({"name": "replay", "pools": [{"name": "replay", "hosts": hosts, "gpus": cfg.gpus_per_pod}],
                               "levels": [{"name": "leaf", "label": LEAF, "hostsPerDomain": 8}]})
    started = time.monotonic()
    with ControlPlane() as cp, (TraceExporter(requests, speedup) if planner else SyntheticExporter()) as exporter, \
            contextlib.ExitStack() as stack:
        prom = None
        if planner:  # scraped at the planner's bin, trace time (see scrape_interval_s)
            (cp.workdir / "prometheus").mkdir(parents=True, exist_ok=True)
            prom = stack.enter_context(Prometheus([exporter.target], cp.workdir / "prometheus",
                                                  scrape_interval=f"{round(scrape_interval_s(cfg, speedup) * 1000)}ms"))
        api = cp.api_client()
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        ext = scaler = None
        try:
            create_nodes(api, spec.hosts(), workers=16)
            ext, port = start_extender(cp.kubeconfig, cp.workdir / "extender.log", levels=[LEAF])
            cp.start_scheduler(clique_scheduler_config(port), name="clique-scheduler")
            cp.create_namespace(NAMESPACE)
            docs = planner_policy_docs(cfg, speedup) if planner else clique_policy_docs(cfg, exporter.url, speedup)
            for name, pods, pref in (("prefill", cfg.prefill_pods, None), ("decode", cfg.decode_pods, "leaf")):
                apps.create_namespaced_stateful_set(NAMESPACE, statefulset(name, pods, cfg.min_replicas,
                                                                           cfg.gpus_per_pod, pref))
                core.create_namespaced_config_map(NAMESPACE, {
                    "metadata": {"name": f"{name}-policy", "labels": {"clique.dev/autoscaling-policy": "true"}},
                    "data": {"policy.yaml": yaml.safe_dump(docs[name])}})
            zero = Signals(0, 0, 0, 0, 0, 0, 0, cfg.min_replicas, cfg.min_replicas)
            if planner:
                for pool in POOLS:
                    for metric, value in planner_values(zero, 0, 0, pool).items():
                        exporter.set(metric, value, **{POOL_LABEL: pool})
            else:
                for metric, value in signal_values(zero, cfg).items():
                    exporter.set(metric, value)
            if prom is not None:
                prom.wait_for_series(PLANNER_SERIES[0])
            view = ClusterView(api, cfg)
            deadline = time.monotonic() + 120
            while any(bound < cfg.min_replicas for _, bound in view.read().values()):
                if time.monotonic() > deadline:
                    raise TimeoutError("the first replicas were not bound within 120 s; see the extender log in "
                                       f"{cp.workdir}")
                time.sleep(0.2)
            scaler, _ = start_autoscaler(cp.kubeconfig, cp.workdir / "autoscaler.log", prom.url if prom else None,
                                         namespace=NAMESPACE,
                                         lease_namespace=NAMESPACE, levels=[LEAF],
                                         extra=["--tick", f"{max(0.01, 0.5 / speedup):.3f}"])  # its 0.5 s, compressed
            if planner:
                wait_first_reading(core, ("prefill-policy", "decode-policy"), cp.workdir)
            say(f"[kwok replay] {hosts} KWOK hosts x {cfg.gpus_per_pod} GPUs, autoscaler and clique-scheduler up in "
                f"{time.monotonic() - started:.0f}s; replaying {len(requests)} requests at {speedup:g}x "
                f"(~{(requests[-1].time + 600) / speedup / 60:.1f} min)")
            out = KwokReplayResult(ReplayResult("clique (API server)"), speedup, hosts=hosts)
            t0 = time.monotonic()
            if planner:
                exporter.start(t0)
            last: dict[str, Any] = {"now": 0.0, "since": None}
            asked_at: dict[str, list[float]] = {"prefill": [], "decode": []}  # trace t each unbound gang was asked
            last_bound: dict[str, int] = {}
            arrived: list[tuple[float, float]] = []  # (trace time, prompt tokens) per observation

            def policy(s: Signals) -> tuple[int, int]:
                # pace the model to real time, publish its metrics, and serve with what the cluster has bound
                ahead = t0 + s.now / speedup - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                # the arrival rate over the policy's own interval, as the offline replay computes it
                arrived.append((s.now, s.prefill_arrival_tps * (s.now - last["now"])))
                while arrived and arrived[0][0] <= s.now - cfg.interval_s:
                    arrived.pop(0)
                if planner:  # the counters are the exporter's own (read at each scrape); the gauges from here
                    for pool, gauges in pool_gauges(s).items():
                        for metric, value in zip(PLANNER_SERIES[2:], gauges):
                            exporter.set(metric, value, **{POOL_LABEL: pool})
                else:
                    values = signal_values(replace(s, prefill_arrival_tps=sum(t for _, t in arrived) / cfg.interval_s),
                                           cfg)
                    for metric, value in values.items():
                        exporter.set(metric, value)
                seen = view.read()
                out.cluster_timeline.append((s.now, *seen["prefill"], *seen["decode"]))
                for pool, (asked, bound) in seen.items():  # each gang asked for: when, and when it was bound
                    waits, before = asked_at[pool], last_bound.get(pool, bound)
                    while before + len(waits) < asked:  # asked for since the last observation
                        waits.append(s.now)
                    for _ in range(max(0, bound - before)):  # newly bound, oldest ask first (0: within one observation)
                        if waits:
                            out.bind_lags_s.append(s.now - waits.pop(0))
                    while waits and bound + len(waits) > asked:  # asked for fewer: the latest no longer wait
                        waits.pop()
                    last_bound[pool] = bound
                pending = sum(max(0, asked - bound) for asked, bound in seen.values())
                out.max_pending_gangs = max(out.max_pending_gangs, pending)
                out.pending_gang_s += pending * (s.now - last["now"])
                if pending:  # began after the previous observation at the earliest: counted from there
                    if last["since"] is None:
                        last["since"] = last["now"]
                    out.longest_pending_s = max(out.longest_pending_s, s.now - last["since"])
                else:
                    last["since"] = None
                last["now"] = s.now
                return seen["prefill"][1], seen["decode"][1]

            out.replay = replay(requests, replace(cfg, interval_s=observe_s), "clique (API server)", policy, progress)
            if planner:
                out.twin = replay(requests, cfg, "clique (daemon path, offline)",
                                  daemon_planner(requests, cfg, speedup))
                window = f"{max(1, round(time.monotonic() - t0))}s"
                out.scrapes = round(query_value(prom.url, f"sum(count_over_time(up[{window}]))"))
                out.failed_scrapes = out.scrapes - round(query_value(prom.url, f"sum(sum_over_time(up[{window}]))"))
                out.evaluations, out.held_evaluations, period = count_evaluations(cp.workdir / "autoscaler.log", t0)
                out.evaluation_period_s, out.interval_s = period * speedup, cfg.interval_s
            out.replay.cfg = cfg
            out.scale_patches = out.replay.scale_events = view.patches
            out.wall_s = time.monotonic() - started
            return out
        finally:
            if scaler is not None:
                stop_autoscaler(scaler)
            if ext is not None:
                stop_extender(ext)
            api.close()
            if logs_to is not None:
                logs_to.mkdir(parents=True, exist_ok=True)
                for name in ("autoscaler.log", "extender.log"):
                    if (cp.workdir / name).exists():
                        shutil.copy(cp.workdir / name, logs_to / f"kwok-replay-{name}")
