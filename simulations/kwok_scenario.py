"""KWOK scenario runner: the offline simulator's cluster and workload, time-compressed, against the real control
plane (etcd, kube-apiserver, kube-scheduler, kwok) with Clique's scheduler and with the stock one, measured from
the API server. Side effects: starts a local control plane, KWOK nodes, the extender (and with `kueue-tas` the
real Kueue manager and its queues); creates and deletes pods.

    fill   (no times in the trace, e.g. openb multigpu50) pods are created in file order, at most `window`
           of them undecided at once; the run stops at the first pod the scheduler marks Unschedulable
           (plus `after_failure` more). Reported: GPUs bound when that condition arrives on the watch.
           `kueue-tas` (the real Kueue v0.17.0 TAS, then the stock kube-scheduler): Kueue's pods wait behind
           scheduling gates, so the stop signal is the first Workload Kueue rejects and the GPUs are those of the
           pods whose Workloads held a reservation then (simulations/kueue_fill.py).
    timed  (openb default, the Dynamo mix) arrivals and departures on a virtual clock: it runs at
           `speedup` x real time, and jumps to the next event whenever the cluster is quiet (default: only
           jumps, event by event). Each pod is deleted its trace duration after the API server shows it
           bound. Waits are virtual bind - arrival time. kube-scheduler retries a pod that waits for capacity
           after a backoff (1-10 s real), so a jump waits `pending_grace_s` while such pods exist. With
           `kueue-tas` a pod Kueue could not admit waits from its Workload's rejection until it is bound: Kueue
           admits it again once a departure has freed room, through a longer chain (the departed pods'
           finalizer, the Workload finished, its quota freed, the requeue, admission, TAS ungating, the bind;
           5-8 s real on this machine), so its jumps wait at least KUEUE_PENDING_GRACE_S. The run ends at the
           last arrival, as the offline simulator's does: what waits then is counted as not placed.
    gated  (`gated`, timed only) clique's namespace is opted in to the shipped admission webhook: gangs are gated,
           planned once complete and pinned (scheduler/extender/pinning.py), as the recommended configuration runs.
           A gated gang that waits never becomes Unschedulable; the extender's Events on it (GangUnschedulable, or
           GangWaiting while it holds for one preferred domain, `preferred_wait_s`) are its rejection signal,
           and a jump waits GATED_PENDING_GRACE_S while such gangs wait.

Every number comes from a watch on the scenario's pods (spec.nodeName, the PodScheduled condition) and from
the Node objects, not from the scheduler's own view. The same run also plays the workload through the
offline simulator, so each scheduler's real-cluster figures sit beside the offline policy that models it:
clique beside `clique`, the stock kube-scheduler beside `default-spread`, the real Kueue beside `kueue-bestfit`.
"""

from __future__ import annotations

import heapq
import json
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from scheduler.extender.pinning import RETRY_S, SETTLE_S
from scheduler.extender.service import GANG_INCOMPLETE
from scheduler.gangs import TOPOLOGY_PREFERRED_WAIT
from scheduler.placement.types import Gang, Snapshot
from simulations.controlplane.watching import WatchThread
from simulations.workloads import Arrival
from topology.spec import GPU_RESOURCE, HostSpec

SCENARIO = "clique.dev/scenario"
SIM_GANG = "clique.dev/sim-gang"
# which offline policy models each real scheduler
OFFLINE_TWIN = {"clique": "clique", "stock": "default-spread", "kueue-tas": "kueue-bestfit"}
# kueue-tas: Kueue admits and assigns nodes (TAS), the stock kube-scheduler binds
KUEUE_PENDING_GRACE_S = 10.0  # timed kueue-tas: see the module docstring
SCHEDULER_NAME = {"clique": "clique-scheduler", "stock": "default-scheduler", "kueue-tas": "default-scheduler"}
GATED_REASON = "SchedulingGated"  # k8s.io/api core/v1 PodReasonSchedulingGated: gated, not rejected
# gated (--gated): the extender's Events on a gated gang that waits for room (its plan found none, or it holds for
# one preferred domain: pinning.py); the scenario's rejection signal, as the Workload's is for Kueue
GATED_WAIT_REASONS = ("GangUnschedulable", "GangWaiting")
# gated: after a departure the pinner tries a waiting gang again within RETRY_S and commits a split plan after
# SETTLE_S of quiet; a jump waits that long and one second more for the release and bind
GATED_PENDING_GRACE_S = RETRY_S + SETTLE_S + 1.0


# ----------------------------------------------------------------------------------------------- pure parts
def host_specs(snap: Snapshot) -> list[HostSpec]:
    """The snapshot's hosts as KWOK node specs (capacity and every topology label)."""
    topo, out = snap.topology, []
    for name in topo.hosts:
        st = snap.hosts[name]
        labels = {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
        for level, value in zip(topo.levels, topo.host_paths[name]):
            if not value.startswith(("~", "<")):  # "~x" / "<host>": the host has no label at this level
                labels[level.label] = value
        out.append(HostSpec(name=name, pool="sim", gpus=st.gpus, gpu_product="",
                            cpu_millis=min(st.cpu_millis, 10**7), memory_bytes=min(st.memory, 2**50),
                            pods=st.pods, labels=labels))
    return out


def _dns(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:60] or "pod"


@dataclass(frozen=True)
class PodPlan:
    """One pod of the scenario: which arrival it belongs to and what it asks for."""

    name: str
    arrival: int  # index into the arrivals
    gang: str
    gpus: int
    manifest: dict


def gang_pods(index: int, gang: Gang, scheduler: str, scenario: str,
              level_label: dict[str, str] | None = None, preferred_wait: str | None = None) -> list[PodPlan]:
    """The pods of a gang as the user would write them: Clique's gang annotations when there is more than one
    pod (the stock scheduler ignores them), requests from the roles. Topology levels are written as node label
    keys (`level_label` maps level names to them), which any extender configuration understands.
    `preferred_wait`: the value of clique.dev/topology-preferred-wait on gangs with a preferred level."""
    key = lambda lv: (level_label or {}).get(lv, lv)  # noqa: E731
    pods = []
    size = gang.pod_count
    for role in gang.roles:
        for i in range(role.pods):
            name = _dns(gang.name) if size == 1 else _dns(f"{gang.name}-{role.name}-{i}")
            requests: dict[str, str] = {}
            if role.cpu_millis:
                requests["cpu"] = f"{role.cpu_millis}m"
            if role.memory:
                requests["memory"] = str(role.memory)
            limits = {}
            if role.gpus:
                requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(role.gpus)
            annotations = {}
            if size > 1:
                annotations = {"clique.dev/gang": _dns(gang.name), "clique.dev/gang-size": str(size),
                               "clique.dev/role": role.name}
                if gang.required_level:
                    annotations["clique.dev/topology-required"] = key(gang.required_level)
                if gang.preferred_level:
                    annotations["clique.dev/topology-preferred"] = key(gang.preferred_level)
                    if preferred_wait:
                        annotations[TOPOLOGY_PREFERRED_WAIT] = preferred_wait
            manifest = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {SCENARIO: scenario, SIM_GANG: _dns(gang.name)},
                             "annotations": annotations},
                "spec": {"schedulerName": scheduler, "automountServiceAccountToken": False,
                         "terminationGracePeriodSeconds": 0,
                         "containers": [{"name": "model", "image": "clique.dev/simulated",
                                         "resources": {"requests": requests, "limits": limits}}]},
            }
            pods.append(PodPlan(name, index, _dns(gang.name), role.gpus, manifest))
    return pods


# ----------------------------------------------------------------------------------------------- the watch
@dataclass
class PodSeen:
    gpus: int
    node: str | None = None
    bound_at: float | None = None
    failed_reason: str | None = None
    deleted: bool = False
    deleted_at: float | None = None


@dataclass
class FirstFailure:
    pod: str
    reason: str
    bound_gpus: int
    used_per_node: dict[str, int]
    signal: str = "pod"  # "pod": PodScheduled=False; "workload": Kueue's Workload (kueue_fill.py)
    kind: str = ""  # workload: which check failed ("topology", "quota", ...)
    reserved: frozenset[str] | None = None  # workload: pods whose Workloads held a reservation at the signal
    bound_pods: int = 0  # pods bound when the signal arrived


class PodObserver(WatchThread):
    """Watches the scenario's pods (raw JSON, one thread) and keeps what the API server says: which pods are bound
    where, GPUs bound per node, the first PodScheduled=False. Events go to `events` for the driver."""

    def __init__(self, api_client: Any, namespace: str, scenario: str) -> None:
        self.api_client, self.namespace, self.scenario = api_client, namespace, scenario
        self.pods: dict[str, PodSeen] = {}
        self.expected: dict[str, int] = {}  # pod name -> GPUs, registered before the create
        self.used: dict[str, int] = {}
        self.bound_gpus = 0
        self.first_failure: FirstFailure | None = None
        self.events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        super().__init__("pod-observer")

    def pending(self) -> bool:
        """Some pod was rejected and is still waiting (neither bound nor deleted)."""
        with self._lock:
            return any(p.failed_reason and not p.node and not p.deleted for p in self.pods.values())

    def expect(self, name: str, gpus: int) -> None:
        with self._lock:
            self.expected[name] = gpus

    def reject(self, pods: Sequence[str], reason: str, kind: str, reserved: frozenset[str] | None,
               signal: str = "workload") -> None:
        """A rejection that another object reports for these pods (Kueue's Workload, kueue_fill.py; `signal`
        "event": the extender's Event on a gated gang, gated_wait)."""
        now = time.monotonic()
        with self._lock:
            for name in pods:
                seen = self.pods.get(name)
                if seen is None:
                    seen = self.pods[name] = PodSeen(self.expected.get(name, 0))
                if seen.failed_reason is None and not seen.node:
                    seen.failed_reason = reason[:300]
                    self.events.put(("failed", name, now))
            if self.first_failure is None and pods:
                self.first_failure = FirstFailure(pods[0], reason[:300], self.bound_gpus, dict(self.used),
                                                  signal=signal, kind=kind, reserved=reserved,
                                                  bound_pods=self._bound_pods())

    def _bound_pods(self) -> int:
        return sum(1 for p in self.pods.values() if p.node and not p.deleted)

    def _run(self) -> None:
        from kubernetes import client

        from simulations.controlplane.watching import list_and_watch

        core = client.CoreV1Api(self.api_client)
        selector = f"{SCENARIO}={self.scenario}"
        list_and_watch(
            lambda: self.api_client.sanitize_for_serialization(
                core.list_namespaced_pod(self.namespace, label_selector=selector)),
            lambda rv: core.list_namespaced_pod(self.namespace, label_selector=selector, watch=True,
                                                resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=5,
                                                _preload_content=False),
            self._apply, self._stop, self.errors, "pod")

    def _apply(self, typ: str, obj: dict) -> None:
        name = obj["metadata"]["name"]
        now = time.monotonic()
        with self._lock:
            seen = self.pods.get(name)
            if seen is None:
                seen = self.pods[name] = PodSeen(self.expected.get(name, 0))
            if typ == "DELETED":
                if seen.node and not seen.deleted:
                    self.used[seen.node] -= seen.gpus
                    self.bound_gpus -= seen.gpus
                seen.deleted = True  # kept: a gang that ran and left was placed
                seen.deleted_at = now
                self.events.put(("deleted", name, now))
                return
            if seen.deleted:
                return
            node = (obj.get("spec") or {}).get("nodeName")
            if node and not seen.node:
                seen.node, seen.bound_at = node, now
                self.used[node] = self.used.get(node, 0) + seen.gpus
                self.bound_gpus += seen.gpus
                self.events.put(("bound", name, now))
                return
            if not node and seen.failed_reason is None:
                cond = next((c for c in (obj.get("status") or {}).get("conditions") or []
                             if c.get("type") == "PodScheduled" and c.get("status") == "False"), None)
                # a gang whose pods are still being created waits, a gated pod waits; neither is a rejection
                if (cond and GANG_INCOMPLETE not in (cond.get("message") or "")
                        and cond.get("reason") != GATED_REASON):
                    seen.failed_reason = f"{cond.get('reason')}: {cond.get('message', '')}"[:300]
                    if self.first_failure is None:
                        self.first_failure = FirstFailure(name, seen.failed_reason, self.bound_gpus, dict(self.used),
                                                          bound_pods=self._bound_pods())
                    self.events.put(("failed", name, now))


def gated_wait(event: dict) -> tuple[str, str, str] | None:
    """(pod, reason, message) when a core/v1 Event is the extender's word that a gated gang waits for room or for
    one preferred domain (not a gang still being created: its members arrive within moments)."""
    obj = event.get("involvedObject") or {}
    reason, message = event.get("reason"), event.get("message") or ""
    if obj.get("kind") != "Pod" or reason not in GATED_WAIT_REASONS or GANG_INCOMPLETE in message:
        return None
    return obj.get("name") or "", reason, message


class GatedWaitObserver(WatchThread):
    """Watches one namespace's Events (raw JSON) and calls `on_wait(pod, reason, message)` for each the extender
    sends about a gated gang that waits (gated_wait): such pods never become Unschedulable, so this is what tells
    the driver that they wait for a departure (as Kueue's Workload condition does for its pods)."""

    def __init__(self, api_client: Any, namespace: str, on_wait: Callable[[str, str, str], None]) -> None:
        self.api_client, self.namespace, self.on_wait = api_client, namespace, on_wait
        super().__init__("gated-wait-observer")

    def _run(self) -> None:
        from kubernetes import client

        from simulations.controlplane.watching import list_and_watch

        core = client.CoreV1Api(self.api_client)
        list_and_watch(
            lambda: self.api_client.sanitize_for_serialization(core.list_namespaced_event(self.namespace)),
            lambda rv: core.list_namespaced_event(self.namespace, watch=True, resource_version=rv,
                                                  allow_watch_bookmarks=True, timeout_seconds=5, _preload_content=False),
            self._apply, self._stop, self.errors, "event")

    def _apply(self, typ: str, obj: dict) -> None:
        seen = gated_wait(obj) if typ == "ADDED" else None
        if seen:
            self.on_wait(*seen)


# ----------------------------------------------------------------------------------------------- a run
@dataclass
class KwokResult:
    scheduler: str
    gangs: int  # arrivals submitted
    pods: int = 0
    placed: int = 0  # gangs with every pod bound at the end
    partial_gangs: int = 0
    failed: int = 0  # gangs with no pod bound at the end
    departed: int = 0  # placed gangs whose pods the run deleted at their trace departure
    first_failure_index: int | None = None
    placed_at_first_failure: int | None = None  # pods bound (Kueue: reserved, then bound) at the first rejection
    first_failure_reason: str = ""
    allocation_ratio_at_first_failure: float | None = None
    unallocated_gpus: int | None = None
    stranded_gpus: int | None = None
    final_allocation_ratio: float = 0.0
    one_domain_share: dict[str, float] = field(default_factory=dict)  # per level, multi-pod gangs placed
    # per level, every multi-pod gang submitted: one not placed whole by the end counts as not in one domain
    one_domain_share_all: dict[str, float] = field(default_factory=dict)
    gang_domains: dict[str, dict[str, int]] = field(default_factory=dict)  # placed multi-pod gang: domains per level
    multi_gangs: int = 0  # multi-pod gangs submitted
    not_placed: list[str] = field(default_factory=list)  # gangs not bound whole by the end (failed or partial)
    # placed multi-pod gangs spanning more than one domain somewhere: trace-s waited, and per level whether one
    # domain had enough free hosts for it when its first pod was bound (split_gang_diagnostics)
    split_gangs: dict[str, dict] = field(default_factory=dict)
    waits_s: list[float] = field(default_factory=list)  # trace seconds
    gang_waits_s: dict[str, float] = field(default_factory=dict)  # timed: placed gang -> trace seconds it waited
    bind_latency_ms: list[float] = field(default_factory=list)  # real milliseconds, create -> bound
    timeline: list[tuple[float, float]] = field(default_factory=list)
    wall_s: float = 0.0
    speedup: float | None = None
    watch_errors: int = 0
    stop_signal: str = ""  # what the first rejection was read from: "pod" (PodScheduled), "workload" (Kueue) or "event" (gated)
    first_failure_kind: str = ""  # workload: "topology", "quota", ...
    reserved_unbound: int | None = None  # workload: pods reserved at the signal that were never bound
    reserved_after_signal: int | None = None  # workload: reservations arriving within 1 s after the signal

    def summary(self) -> dict:
        from simulations.placement_sim import _r as r, pct

        return {"scheduler": self.scheduler, "policy": self.scheduler, "offline_twin": OFFLINE_TWIN[self.scheduler],
                "gangs": self.gangs, "pods": self.pods, "placed": self.placed, "partial_gangs": self.partial_gangs,
                "failed": self.failed, "departed": self.departed, "first_failure_at": self.first_failure_index,
                "placed_at_first_failure": self.placed_at_first_failure,
                "first_failure_reason": self.first_failure_reason,
                "allocation_ratio_at_first_failure": r(self.allocation_ratio_at_first_failure),
                "unallocated_gpus": self.unallocated_gpus, "stranded_gpus": self.stranded_gpus,
                "final_allocation_ratio": r(self.final_allocation_ratio),
                "one_domain_share": {k: r(v) for k, v in self.one_domain_share.items()},
                "one_domain_share_all": {k: r(v) for k, v in self.one_domain_share_all.items()},
                "multi_gangs": self.multi_gangs, "gang_domains": self.gang_domains, "not_placed": self.not_placed,
                "split_gangs": self.split_gangs,
                "mean_wait_s": r(sum(self.waits_s) / len(self.waits_s)) if self.waits_s else 0.0,
                "p99_wait_s": pct(self.waits_s, 0.99), "waited": sum(1 for w in self.waits_s if w > 0),
                "gang_waits_s": self.gang_waits_s,
                "p50_bind_ms": pct(self.bind_latency_ms, 0.5), "p99_bind_ms": pct(self.bind_latency_ms, 0.99),
                "wall_s": round(self.wall_s, 1), "speedup": self.speedup, "watch_errors": self.watch_errors,
                "stop_signal": self.stop_signal, "first_failure_kind": self.first_failure_kind,
                "reserved_unbound": self.reserved_unbound, "reserved_after_signal": self.reserved_after_signal}


@dataclass
class ScenarioOptions:
    schedulers: tuple[str, ...] = ("clique", "stock")
    speedup: float | None = None  # timed: trace seconds per real second; None: only jumps (event by event)
    pending_grace_s: float = 2.0  # timed: quiet time before a jump while pods wait for capacity
    window: int = 64  # fill: pods created but neither bound nor failed, at most
    after_failure: int = 0  # fill: pods still submitted after the first failure
    settle_s: float = 20.0  # after the last arrival: wait this long at most for undecided pods
    create_workers: int = 8
    # clique through the shipped admission webhook (its namespace opted in): gangs gated, planned once complete,
    # pinned (pinning.py), as `clique.dev/scheduler=enabled` namespaces run; False: the per-pod filter path
    gated: bool = False
    preferred_wait_s: float = 0.0  # gated: clique.dev/topology-preferred-wait on gangs with a preferred level (real s)


class ScenarioRun:
    """One scheduler over the workload on a running control plane (nodes already there)."""

    def __init__(self, api_client: Any, namespace: str, scheduler: str, arrivals: Sequence[Arrival], timed: bool,
                 capacity: dict[str, int], labels: dict[str, dict[str, str]],
                 level_labels: Sequence[tuple[str, str]], opts: ScenarioOptions, progress: Callable[[int, int], None] | None = None) -> None:
        from kubernetes import client

        self.api, self.ns, self.scheduler = api_client, namespace, scheduler
        self.core = client.CoreV1Api(api_client)
        self.arrivals, self.timed = arrivals, timed
        self.capacity, self.total = capacity, max(1, sum(capacity.values()))
        self.labels, self.level_labels, self.opts, self.progress = labels, level_labels, opts, progress
        self.scenario = namespace
        names = dict(level_labels)
        wait = f"{max(1, round(opts.preferred_wait_s))}s" if scheduler == "clique" and opts.preferred_wait_s else None
        self.plans = [gang_pods(i, a.gang, SCHEDULER_NAME[scheduler], self.scenario, names, wait)
                      for i, a in enumerate(arrivals)]
        self.workloads = None
        if scheduler == "kueue-tas":
            from simulations.kueue_fill import WorkloadObserver, kueue_pod

            key = lambda lv: names.get(lv, lv) if lv else None  # noqa: E731
            self.plans = [[PodPlan(p.name, p.arrival, p.gang, p.gpus,
                                   kueue_pod(p.manifest, len(plans), p.gang, required=key(a.gang.required_level),
                                             preferred=key(a.gang.preferred_level))) for p in plans]
                          for plans, a in zip(self.plans, arrivals)]
        self.workload_signal = scheduler == "kueue-tas"
        self.pending_grace_s = max(opts.pending_grace_s, KUEUE_PENDING_GRACE_S) if self.workload_signal \
            else max(opts.pending_grace_s, GATED_PENDING_GRACE_S) if scheduler == "clique" and opts.gated \
            else opts.pending_grace_s
        self.by_pod = {p.name: p for plans in self.plans for p in plans}
        self.created: dict[str, float] = {}
        self.undecided: set[str] = set()  # submitted, neither bound nor rejected yet
        self.inflight = 0  # API calls (creates, deletes) submitted and not finished
        self._lock = threading.Lock()
        self.vcreated: dict[str, float] = {}  # timed: virtual (trace) times
        self.vbound: dict[str, float] = {}
        self.observer = PodObserver(api_client, namespace, self.scenario)
        if self.workload_signal:
            self.workloads = WorkloadObserver(
                api_client, namespace, lambda pods, v, held: self.observer.reject(pods, f"Kueue {v.kind}: {v.message}",
                                                                                 v.kind, held))
        elif scheduler == "clique" and opts.gated:
            gangs: dict[str, list[str]] = {}
            for p in self.by_pod.values():
                gangs.setdefault(p.gang, []).append(p.name)
            self.workloads = GatedWaitObserver(
                api_client, namespace, lambda pod, reason, message: self.observer.reject(
                    gangs[self.by_pod[pod].gang], f"clique {reason}: {message}", reason, None, signal="event")
                if pod in self.by_pod else None)  # not the scenario's pod (a probe): nothing waits
        self.pool = ThreadPoolExecutor(opts.create_workers)
        self.failures: list[str] = []

    # side effects through the pool: creation and deletion never block the driver loop
    def _submit(self, plans: list[PodPlan]) -> None:
        for p in plans:
            self.observer.expect(p.name, p.gpus)
            self.undecided.add(p.name)
            self._inflight(+1)
            self.pool.submit(self._create, p)

    def _create(self, plan: PodPlan) -> None:
        from kubernetes.client.exceptions import ApiException

        self.created[plan.name] = time.monotonic()
        try:
            self.core.create_namespaced_pod(self.ns, plan.manifest)
        except ApiException as exc:
            self.failures.append(f"create {plan.name}: {exc.status} {exc.reason}")
            self.undecided.discard(plan.name)
        finally:
            self._inflight(-1)

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespaced_pod(name, self.ns, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                self.failures.append(f"delete {name}: {exc.status} {exc.reason}")
        finally:
            self._inflight(-1)

    def run(self) -> KwokResult:
        res = KwokResult(self.scheduler, 0)
        self.observer.start()
        if self.workloads is not None:
            self.workloads.start()
        started = time.monotonic()
        try:
            if self.timed:
                self._timed(res)
            else:
                self._fill(res)
        finally:
            res.wall_s = time.monotonic() - started
            self.pool.shutdown(wait=True)
            self.observer.stop()
            if self.workloads is not None:
                self.workloads.stop()
        self._measure(res)
        return res

    def _fill(self, res: KwokResult) -> None:
        obs, after = self.observer, None
        for i, plans in enumerate(self.plans):
            while len(self.undecided) + len(plans) > max(self.opts.window, len(plans)):
                self._drain(0.02)
            if obs.first_failure is not None:  # checked after the wait: a rejection may have come meanwhile
                after = (after or 0) + len(plans)
                if after > self.opts.after_failure:
                    break
            self._submit(plans)
            res.gangs = i + 1
            if self.progress and i % 20 == 0:
                self.progress(i, len(self.plans))
            self._sample(res, float(i))
        self._settle()
        self._sample(res, float(res.gangs))

    def _timed(self, res: KwokResult) -> None:
        """Arrivals and departures on a virtual clock: trace time runs at `speedup` x real time (None: it does
        not run by itself), and whenever the cluster is quiet (nothing being created or deleted, no pod waiting
        for a decision, no watch event for a moment) it jumps to the next event. Long idle stretches of a trace
        cost nothing, bursts keep their pace. Times of binds and departures are virtual."""
        speed = self.opts.speedup
        res.speedup = speed
        clock = [min((a.time for a in self.arrivals), default=0.0), time.monotonic()]  # virtual, real at last jump

        def vt(real: float) -> float:
            return clock[0] + (max(0.0, real - clock[1]) * speed if speed else 0.0)

        heap: list[tuple[float, int, int, Any]] = [(a.time, 1, i, i) for i, a in enumerate(self.arrivals)]
        heapq.heapify(heap)
        seq, arrived, quiet_since, last_sample = len(heap), 0, time.monotonic(), -1.0
        while heap:
            when, kind, _, payload = heap[0]
            if when > vt(time.monotonic()):
                wait = 0.01 if not speed else min(0.05, max(0.001, (when - vt(time.monotonic())) / speed))
                events = self._drain(wait)
                if events:
                    quiet_since = time.monotonic()
                for ev in events:
                    if ev[0] == "bound":
                        self.vbound[ev[1]] = vt(ev[2])
                        plan = self.by_pod.get(ev[1])
                        dur = self.arrivals[plan.arrival].duration if plan else None
                        if dur is not None:
                            seq += 1
                            heapq.heappush(heap, (self.vbound[ev[1]] + dur, 0, seq, ev[1]))
                # quiet: jump; after a departure, pods waiting for capacity get a moment (kube-scheduler's
                # backoff) to be bound at this virtual time rather than at the next event's
                quiet = time.monotonic() - quiet_since
                if (not self.undecided and self.inflight == 0 and quiet > 0.05
                        and (quiet > self.pending_grace_s or not self.observer.pending())):
                    clock[:] = [when, time.monotonic()]
                now_v = vt(time.monotonic())
                if now_v - last_sample >= 60 or last_sample < 0:
                    self._sample(res, now_v)
                    last_sample = now_v
                continue
            heapq.heappop(heap)
            if kind == 0:
                self._inflight(+1)
                self.pool.submit(self._delete, payload)
            else:
                arrived += 1
                for p in self.plans[payload]:
                    self.vcreated[p.name] = when
                self._submit(self.plans[payload])
                res.gangs = arrived
                if self.progress and arrived % 20 == 0:
                    self.progress(arrived, len(self.plans))
            quiet_since = time.monotonic()
            # stop once every arrival is in and only departures of still-running pods remain
            if arrived == len(self.arrivals) and all(k == 0 for _, k, _, _ in heap):
                break
        self._settle()
        for name, seen in list(self.observer.pods.items()):  # binds seen while settling
            if seen.bound_at is not None and name not in self.vbound:
                self.vbound[name] = vt(seen.bound_at)
        self._sample(res, vt(time.monotonic()))

    def _inflight(self, delta: int) -> None:
        with self._lock:
            self.inflight += delta

    def _drain(self, timeout: float) -> list[tuple]:
        """Events from the watch since the last call (waits up to `timeout` for the first)."""
        out = []
        try:
            out.append(self.observer.events.get(timeout=timeout))
            while True:
                out.append(self.observer.events.get_nowait())
        except queue.Empty:
            pass
        for ev in out:
            if ev[0] in ("bound", "failed", "deleted"):
                self.undecided.discard(ev[1])
        return out

    def _settle(self) -> None:
        """Wait until every pod is bound or rejected, or nothing has happened for a few seconds (pods that wait
        for capacity stay pending), at most settle_s."""
        deadline = time.monotonic() + self.opts.settle_s
        self.pool.shutdown(wait=True)
        quiet_since = time.monotonic()
        while self.undecided and time.monotonic() < deadline and time.monotonic() - quiet_since < 5:
            if self._drain(0.1):
                quiet_since = time.monotonic()
        self._drain(0.5)  # let the watch deliver what is already on its way
        end = time.monotonic() + 5
        while self._half_bound() and time.monotonic() < end:
            self._drain(0.1)

    def _half_bound(self) -> bool:
        """Some gang has members bound and others not yet: a bind in flight (a gang that waited is bound member
        by member; its waiting signal took it out of `undecided`), which the end of the run must not cut."""
        pods = self.observer.pods
        by_gang: dict[str, list[bool]] = {}
        for name in self.created:
            seen = pods.get(name)
            by_gang.setdefault(self.by_pod[name].gang, []).append(bool(seen and seen.node))
        return any(any(b) and not all(b) for b in by_gang.values())

    def _sample(self, res: KwokResult, x: float) -> None:
        res.timeline.append((x, self.observer.bound_gpus / self.total))

    def _measure(self, res: KwokResult) -> None:
        obs = self.observer
        res.pods = len(self.created)
        res.watch_errors = len(obs.errors) + (len(self.workloads.errors) if self.workloads is not None else 0)
        gangs: dict[int, list[PodPlan]] = {}
        for name in self.created:
            plan = self.by_pod[name]
            gangs.setdefault(plan.arrival, []).append(plan)
        inside = {lv: 0 for lv, _ in self.level_labels}
        multi = 0
        for idx, plans in gangs.items():
            seen = [obs.pods.get(p.name) for p in plans]
            bound = [s for s in seen if s and s.node]
            res.multi_gangs += len(plans) > 1
            if len(bound) == len(plans):
                res.placed += 1
                res.departed += all(s.deleted for s in bound)
                if self.timed:
                    wait = (max(self.vbound.get(p.name, self.vcreated[p.name]) for p in plans)
                            - min(self.vcreated[p.name] for p in plans))
                    res.waits_s.append(max(0.0, wait))
                    res.gang_waits_s[plans[0].gang] = round(res.waits_s[-1], 3)
                if len(plans) > 1:
                    multi += 1
                    doms = {lv: len({self.labels[s.node].get(key, f"<{s.node}>") for s in bound})
                            for lv, key in self.level_labels}
                    res.gang_domains[plans[0].gang] = doms
                    if max(doms.values()) > 1:
                        res.split_gangs[plans[0].gang] = {
                            "wait_s": round(res.waits_s[-1], 3) if self.timed else None,
                            "fit_then": split_gang_diagnostics(plans, obs.pods, self.capacity, self.labels,
                                                               self.level_labels)}
                    for lv in inside:
                        inside[lv] += doms[lv] == 1
            elif bound:
                res.partial_gangs += 1
                res.not_placed.append(plans[0].gang)
            else:
                res.failed += 1
                res.not_placed.append(plans[0].gang)
            for p, s in zip(plans, seen):
                if s and s.bound_at is not None:
                    res.bind_latency_ms.append((s.bound_at - self.created[p.name]) * 1000)
        res.one_domain_share = {lv: inside[lv] / multi for lv in inside} if multi else {}
        res.one_domain_share_all = {lv: inside[lv] / res.multi_gangs for lv in inside} if res.multi_gangs else {}
        res.final_allocation_ratio = obs.bound_gpus / self.total
        ff = obs.first_failure
        if ff is not None:
            plan = self.by_pod.get(ff.pod)
            res.first_failure_index = plan.arrival if plan else None
            res.first_failure_reason = ff.reason
            res.stop_signal, res.first_failure_kind = ff.signal, ff.kind
            bound_gpus, used = ff.bound_gpus, ff.used_per_node
            res.placed_at_first_failure = ff.bound_pods
            if ff.reserved is not None:  # Kueue: what it had reserved, where those pods were bound
                held = [obs.pods[p] for p in ff.reserved if p in obs.pods]
                res.reserved_unbound = len(ff.reserved) - sum(1 for s in held if s.node)
                res.reserved_after_signal = self.workloads.reserved_after_signal if self.workloads else None
                bound_gpus, used = 0, {}
                res.placed_at_first_failure = sum(1 for s in held if s.node)
                for s in held:
                    if s.node:
                        bound_gpus += s.gpus
                        used[s.node] = used.get(s.node, 0) + s.gpus
            res.allocation_ratio_at_first_failure = bound_gpus / self.total
            res.unallocated_gpus = self.total - bound_gpus
            need = plan.gpus if plan else 1
            res.stranded_gpus = sum(free for n, cap in self.capacity.items()
                                    if 0 < (free := cap - used.get(n, 0)) < need)


def split_gang_diagnostics(plans: Sequence[PodPlan], pods: dict[str, PodSeen], capacity: dict[str, int],
                           labels: dict[str, dict[str, str]], level_labels: Sequence[tuple[str, str]]
                           ) -> dict[str, bool]:
    """Per level: whether one domain had free hosts for every pod of the gang when its first pod was bound, from
    the watch's times alone (GPUs of the other pods bound by then and not yet deleted). A host counts when its
    free GPUs hold the gang's largest pod: exact for gangs of equal whole-host pods (the Dynamo mix's), optimistic
    for mixed ones. Pure."""
    mine = {p.name for p in plans}
    t0 = min(pods[p.name].bound_at for p in plans)  # type: ignore[type-var]
    used: dict[str, int] = {}
    for name, s in pods.items():
        if name in mine or not s.node or s.bound_at is None or s.bound_at >= t0:
            continue
        if s.deleted_at is not None and s.deleted_at <= t0:
            continue
        used[s.node] = used.get(s.node, 0) + s.gpus
    need = max(p.gpus for p in plans)
    hosts = [n for n, cap in capacity.items() if cap - used.get(n, 0) >= need]
    out = {}
    for lv, key in level_labels:
        per: dict[str, int] = {}
        for n in hosts:
            d = labels.get(n, {}).get(key, f"<{n}>")
            per[d] = per.get(d, 0) + 1
        out[lv] = max(per.values(), default=0) >= len(plans)
    return out


def run_scenario(base: Snapshot, arrivals: Sequence[Arrival], timed: bool, opts: ScenarioOptions,
                 say: Callable[[str], None] = print,
                 progress: Callable[[str, int, int], None] | None = None) -> list[KwokResult]:
    """Start a control plane (with the real Kueue manager when `kueue-tas` is among the schedulers), create the
    snapshot's hosts as KWOK nodes, run each scheduler in its own namespace (emptied before the next one), stop
    everything."""
    from kubernetes import client

    from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender
    from simulations.controlplane import ControlPlane, ControlPlaneOptions
    from simulations.controlplane.kwok_nodes import create_nodes

    hosts = host_specs(base)
    total = sum(h.gpus for h in hosts)
    level_labels = [(lv.name, lv.label) for lv in base.topology.levels]
    results = []
    with ControlPlane(ControlPlaneOptions(kueue="kueue-tas" in opts.schedulers)) as cp:
        api = cp.api_client()
        core = client.CoreV1Api(api)
        t = time.monotonic()
        create_nodes(api, hosts, workers=16, wait_ready_s=max(120.0, len(hosts) / 5))
        nodes = core.list_node(label_selector="type=kwok").items
        labels = {n.metadata.name: dict(n.metadata.labels or {}) for n in nodes}
        capacity = {n.metadata.name: int(n.status.allocatable.get(GPU_RESOURCE, "0")) for n in nodes}
        say(f"[kwok] {len(nodes)} KWOK nodes Ready in {time.monotonic() - t:.1f}s ({total} GPUs); "
            f"control plane at {cp.server}, logs in {cp.workdir}")
        ext = None
        try:
            if "clique" in opts.schedulers:
                gated = {}
                if opts.gated:  # the shipped webhook (gates on, pins at release), namespace opted in
                    from simulations.controlplane.pki import create_serving_certs
                    from simulations.controlplane.processes import free_port

                    gated = {"webhook_port": free_port(), "webhook_cert_dir": cp.workdir / "webhook-tls",
                             "gate_gangs": True, "pin_at_creation": False}
                    ca = create_serving_certs(gated["webhook_cert_dir"])
                ext, port = start_extender(cp.kubeconfig, cp.workdir / "extender.log",
                                           levels=[lbl for _, lbl in level_labels], **gated)
                if opts.gated:
                    _opt_in(cp, api, "scenario-clique", gated["webhook_port"], ca)
                cp.start_scheduler(clique_scheduler_config(port), name="clique-scheduler")
            for n, sched in enumerate(opts.schedulers):
                ns = f"scenario-{sched}"
                if not (sched == "clique" and opts.gated):  # made opted in above
                    cp.create_namespace(ns)
                if sched == "kueue-tas":
                    _kueue_queues(api, ns, nodes, [lbl for _, lbl in level_labels], say)
                run = ScenarioRun(api, ns, sched, arrivals, timed, capacity, labels, level_labels, opts,
                                  (lambda d, n, s=sched: progress(f"kwok {s}", d, n)) if progress else None)
                res = run.run()
                if progress:
                    progress(f"kwok {sched}", len(arrivals), len(arrivals))
                for f in run.failures[:5]:
                    say(f"[kwok] {sched}: {f}")
                last = n == len(opts.schedulers) - 1  # the last namespace goes with the control plane
                say(f"[kwok] {sched}: {res.placed}/{res.gangs} gangs placed, {res.partial_gangs} partial, "
                    f"{res.pods} pods in {res.wall_s:.0f}s" + ("" if last else f"; emptying {ns}"))
                results.append(res)
                say(f"[kwok] {sched} summary: {json.dumps(res.summary())}")  # kept if a later run fails
                if not last:  # pod by pod: one delete-collection of thousands of pods outlives its 60 s timeout
                    from simulations.kueue_fill import empty_namespace

                    empty_namespace(core, ns)
        finally:
            if ext is not None:
                stop_extender(ext)
            api.close()
    return results


def _opt_in(cp, api, ns: str, port: int, ca: bytes, timeout_s: float = 60) -> None:
    """The shipped MutatingWebhookConfiguration on the extender's webhook at 127.0.0.1:`port`, and namespace `ns`
    labelled as opted in; waits until a dry-run gang pod there comes out gated."""
    from kubernetes import client

    from scheduler.extender.pinning import GATE
    from simulations.controlplane.webhook import OPT_IN, webhook_configuration

    client.AdmissionregistrationV1Api(api).create_mutating_webhook_configuration(webhook_configuration(port, ca))
    core = client.CoreV1Api(api)
    cp.create_namespace(ns)
    core.patch_namespace(ns, {"metadata": {"labels": OPT_IN}})
    probe = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "gate-probe", "annotations": {"clique.dev/gang": "probe", "clique.dev/gang-size": "2"}},
             "spec": {"schedulerName": "clique-scheduler", "containers": [{"name": "c", "image": "x"}]}}
    end = time.monotonic() + timeout_s
    while True:
        try:
            gates = core.create_namespaced_pod(ns, probe, dry_run="All").spec.scheduling_gates or []
            if any(g.name == GATE for g in gates):
                return
        except Exception:  # noqa: BLE001 - the webhook's port may not listen yet
            pass
        if time.monotonic() > end:
            raise RuntimeError(f"the admission webhook on 127.0.0.1:{port} did not gate a gang pod in {ns} in "
                               f"{timeout_s:g}s; see the extender's log")
        time.sleep(0.2)


def _kueue_queues(api, ns: str, nodes, level_labels: list[str], say) -> None:
    """Kueue's Topology (the scenario's levels, then kubernetes.io/hostname), a ResourceFlavor over the KWOK nodes,
    a ClusterQueue whose quota is twice the nodes' allocatable (quota is never the reason) and the LocalQueue."""
    from simulations.controlplane.kueue import setup_tas_queues
    from simulations.kueue_fill import queues_for
    from topology.quantity import parse_quantity

    alloc = {GPU_RESOURCE: 0, "cpu": 0, "memory": 0}
    for node in nodes:
        a = node.status.allocatable or {}
        alloc[GPU_RESOURCE] += int(parse_quantity(a.get(GPU_RESOURCE, "0")))
        alloc["cpu"] += int(parse_quantity(a.get("cpu", "0")) * 1000)  # millicores
        alloc["memory"] += int(parse_quantity(a.get("memory", "0")))
    queues = queues_for(ns, level_labels, alloc, {"type": "kwok"})  # host_specs labels every node type=kwok
    setup_tas_queues(api, queues)
    say(f"[kwok] kueue-tas: ClusterQueue {queues.name} quota {dict(queues.quotas)}; Topology levels "
        f"{[*level_labels, 'kubernetes.io/hostname']}")


def kwok_table(results: list[KwokResult], offline: dict[str, Any], timed: bool) -> str:
    """Each scheduler on the API server beside its offline twin. One-domain share three ways: over the gangs it
    placed (the first column), over every multi-pod gang submitted (`all`: one not placed counts as not in one
    domain), and over the gangs every API-server row (or every offline row) placed (`common`)."""
    from simulations.placement_sim import with_common_share

    head = (f"{'where':11} {'scheduler/policy':18} {'placed':>7} {'partial':>7} {'placed@1st fail':>15} "
            f"{'alloc@1st fail':>14} "
            f"{'unalloc GPUs':>12} {'final alloc':>11} {'1-domain':>10} {'all':>5} {'common':>6}"
            + (f" {'mean wait s':>11}" if timed else "") + f" {'wall s':>7}")

    real = with_common_share([r.summary() for r in results])
    offline = dict(zip(offline, with_common_share(list(offline.values()))))
    everything = real + list(offline.values())
    # the innermost level any gang was kept inside (8-GPU gangs never fit a 4-GPU NVLink pool, say)
    level = next((lv for lv in reversed([k for s in everything for k in s["one_domain_share"]])
                  if any(s["one_domain_share"].get(lv) for s in everything)), None)
    head = head.replace("  1-domain", f"{'1-' + (level or 'domain'):>10}")
    lines = [head]

    def line(where: str, s: dict) -> str:
        a = s["allocation_ratio_at_first_failure"]
        inner = s["one_domain_share"].get(level) if level else None
        share_all = s.get("one_domain_share_all", {}).get(level) if level else None
        common = s.get("one_domain_share_common", {}).get(level) if level else None
        # offline, every gang before the first failure was placed; on the API server, what was bound at the signal
        at = s.get("placed_at_first_failure", s["first_failure_at"])
        return (f"{where:11} {s['policy']:18} {s['placed']:>7} {s['partial_gangs']:>7} "
                f"{str(at if at is not None else '-'):>15} "
                f"{(f'{a:.1%}' if a is not None else 'never'):>14} "
                f"{str(s['unallocated_gpus'] if s['unallocated_gpus'] is not None else '-'):>12} "
                f"{s['final_allocation_ratio']:>11.1%} {(f'{inner:.0%}' if inner is not None else '-'):>10}"
                f" {(f'{share_all:.0%}' if share_all is not None else '-'):>5}"
                f" {(f'{common:.0%}' if common is not None else '-'):>6}"
                + (f" {s['mean_wait_s']:>11.0f}" if timed else "") + f" {str(s.get('wall_s', '-')):>7}")

    for r, s in zip(results, real):
        lines.append(line("API server", s))
        twin = offline.get(OFFLINE_TWIN[r.scheduler])
        if twin is not None:
            lines.append(line("offline", twin))
    return "\n".join(lines)


def kwok_plot(results: list[KwokResult], offline: dict[str, Any], timed: bool, path, title: str):
    """GPU allocation over the run: each scheduler as the API server saw it (solid) beside its offline twin
    (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simulations.placement_sim import finish_allocation_plot

    fig, ax = plt.subplots(figsize=(8, 4))
    colors = {"clique": "#2a7ab9", "stock": "#d2691e", "kueue-tas": "#3a9a3a"}
    for r in results:
        c = colors.get(r.scheduler)
        if r.timeline:
            xs, ys = zip(*r.timeline)
            ax.plot([x / 3600 for x in xs] if timed else xs, ys, color=c, lw=2, label=f"{r.scheduler} (API server)")
        twin = offline.get(OFFLINE_TWIN[r.scheduler])
        if twin is not None and twin.timeline:
            xs, ys = zip(*twin.timeline)
            ax.plot([x / 3600 for x in xs] if timed else xs, ys, color=c, lw=1.2, ls="--",
                    label=f"{twin.policy} (offline)")
        if r.first_failure_index is not None and not timed:
            ax.axvline(r.first_failure_index, color=c, lw=0.8, ls=":")
    finish_allocation_plot(fig, ax, timed, title, path, "gangs submitted (file order)", "bound")
    return path
