"""`clique bench chaos`: gangs arrive and leave on KWOK nodes while a seeded driver SIGKILLs and restarts the
extender and the clique kube-scheduler and restarts kube-apiserver; a checker watching the API server asserts
the invariants of simulations/chaos_invariants.py the whole time. Side effects: a local control plane (with the
real LWS v0.8.0 controller unless --no-lws), KWOK nodes, our extender and a second kube-scheduler.

Workload (seeded): gangs of mixed shapes and sources, each pod 8 GPUs unless said: 1x8 (a single pod), 2x8 and
4x8 `clique.dev/gang` pods inside one NVLink domain, leader + workers (`clique.dev/role`: a 4-GPU leader and 3
workers, inside one leaf), StatefulSets of 2 or 4 (`clique.dev/gang-size`), LeaderWorkerSets of 2 or 4
(`exclusive-topology` nvidia.com/gpu.clique); some gangs also exclude one leaf by required node affinity. Gangs
arrive over `--arrival` seconds and are deleted a random lifetime after they are whole. Faults happen one at a
time at seeded random moments in the first 80% of the arrival window; after it, nothing is killed and the run
waits (at most `--settle` s) until every gang still there is bound, then judges the rest with `fits`.

With `autoscaler` (the benchmark's default) the autoscaler daemon runs too, as a process, on a workload of the
chaos kinds: a StatefulSet of 2-pod x 8-GPU gangs (`clique.dev/gang-size`) under a QueueDepth policy whose
metric it scrapes (policy `source: Scrape`) from a synthetic exporter of this process; the queue depth steps
through a seeded cycle so the daemon scales it up and down while the faults happen. Its pods are counted by the
checker like any other (GPUs, constraints). RSS and open fds of the extender and of the autoscaler are reported
at their start and at the end of the run (a leak shows as growth).

`run_chaos(cp, config)` works on any running ControlPlane (tests/e2e/test_chaos.py uses the session one);
`run(config)` starts its own. JSON on the last line; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from simulations.chaos_invariants import GANG_LABEL, Checker, GangSpec, fits

NVL = "nvidia.com/gpu.clique"  # topology/levels.py preset generic-nvlink
LEAF = "clique.dev/leaf"
SCHEDULER = "clique-scheduler"
KINDS = ("single", "gang2", "gang4", "leader-workers", "statefulset", "lws")


@dataclass(frozen=True)
class ChaosConfig:
    gangs: int = 200
    nodes: int = 256  # a multiple of 16: 8-host NVLink domains, 16-host leaves, 64-host spines (one if not 64 | nodes)
    extender_kills: int = 10
    scheduler_kills: int = 5
    apiserver_restarts: int = 1
    seed: int = 1
    arrival_s: float = 300.0
    lifetime_s: tuple[float, float] = (15.0, 60.0)
    settle_s: float = 150.0
    bind_timeout_s: float = 8.0
    lws: bool = True  # LeaderWorkerSet gangs (needs the control plane started with lws=True)
    namespace: str = ""  # "" = chaos-<random>
    autoscaler: bool = False  # also run the autoscaler daemon on a StatefulSet gang workload (`clique bench chaos`: on)


def _pid_stats(pid: int) -> dict[str, Any]:
    """RSS (MiB) and open file descriptors of a process, from /proc."""
    try:
        rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS:"))
        return {"rss_mib": round(rss_kb / 1024, 1), "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}
    except (OSError, StopIteration):
        return {"rss_mib": None, "open_fds": None}


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 2)


# ---------------------------------------------------------------------- workload (pure)
def plan_workload(cfg: ChaosConfig, leaves: list[str]) -> list[dict[str, Any]]:
    """The seeded submissions: id, kind, roles, required level key, arrival time, lifetime, excluded leaf."""
    rng = random.Random(cfg.seed)
    kinds = [k for k in KINDS if cfg.lws or k != "lws"]
    out = []
    for i in range(cfg.gangs):
        kind = rng.choice(kinds)
        if kind == "single":
            roles, key = ((1, 8),), NVL
        elif kind == "gang2":
            roles, key = ((2, 8),), NVL
        elif kind == "gang4":
            roles, key = ((4, 8),), NVL
        elif kind == "leader-workers":
            roles, key = ((1, 4), (3, 8)), LEAF
        else:
            roles, key = ((rng.choice((2, 4)), 8),), NVL
        out.append({"id": f"g{i:03d}", "kind": kind, "roles": roles, "key": key,
                    "at": round(rng.uniform(0, cfg.arrival_s), 3), "lifetime": round(rng.uniform(*cfg.lifetime_s), 3),
                    "exclude_leaf": rng.choice(leaves) if rng.random() < 0.15 else None})
    return sorted(out, key=lambda s: s["at"])


def plan_faults(cfg: ChaosConfig, rng: random.Random) -> list[tuple[float, str]]:
    """(time, component) of every fault, inside the first 80% of the arrival window, in order."""
    faults = (["extender"] * cfg.extender_kills + ["kube-scheduler"] * cfg.scheduler_kills
              + ["kube-apiserver"] * cfg.apiserver_restarts)
    end = max(1.0, cfg.arrival_s * 0.8)
    return sorted((round(rng.uniform(0.05 * cfg.arrival_s, end), 3), f) for f in faults)


def _pod_spec(pool: str, gpus: int, exclude_leaf: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": SCHEDULER, "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
        "nodeSelector": {"clique.dev/pool": pool},
        "containers": [{"name": "w", "image": "registry.example/vllm:test",
                        "resources": {"limits": {"nvidia.com/gpu": str(gpus)},
                                      "requests": {"cpu": "1", "memory": "1Gi"}}}]}
    if exclude_leaf:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": LEAF, "operator": "NotIn", "values": [exclude_leaf]}]}]}}}
    return spec


def manifests(sub: dict[str, Any], pool: str, ns: str) -> list[tuple[str, dict[str, Any]]]:
    """(kind, object) to create for one submission (pure)."""
    gid, kind, size = sub["id"], sub["kind"], sum(n for n, _ in sub["roles"])
    labels = {GANG_LABEL: gid}
    if kind == "single":
        return [("pod", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": gid, "labels": labels},
                         "spec": _pod_spec(pool, 8, sub["exclude_leaf"])})]
    if kind in ("gang2", "gang4", "leader-workers"):
        pods, i = [], 0
        for role_index, (n, gpus) in enumerate(sub["roles"]):
            role = "leader" if kind == "leader-workers" and role_index == 0 else "worker"
            for _ in range(n):
                ann = {"clique.dev/gang": gid, "clique.dev/gang-size": str(size), "clique.dev/role": role,
                       "clique.dev/topology-required": sub["key"]}
                pods.append(("pod", {"apiVersion": "v1", "kind": "Pod",
                                     "metadata": {"name": f"{gid}-{i}", "labels": labels, "annotations": ann},
                                     "spec": _pod_spec(pool, gpus, sub["exclude_leaf"])}))
                i += 1
        return pods
    if kind == "statefulset":
        return [("statefulset", {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": gid},
                                 "spec": {"replicas": size, "serviceName": gid, "podManagementPolicy": "Parallel",
                                          "selector": {"matchLabels": labels},
                                          "template": {"metadata": {"labels": labels, "annotations": {
                                              "clique.dev/gang-size": str(size),
                                              "clique.dev/topology-required": sub["key"]}},
                                              "spec": _pod_spec(pool, 8, sub["exclude_leaf"])}}})]
    from simulations.controlplane.lws import EXCLUSIVE_TOPOLOGY_ANNOTATION, lws_manifest

    m = lws_manifest(gid, size=size, replicas=1, gpus=8, scheduler_name=SCHEDULER,
                     annotations={EXCLUSIVE_TOPOLOGY_ANNOTATION: NVL}, pod_labels=labels, namespace=ns)
    m["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"] = _pod_spec(pool, 8, sub["exclude_leaf"])
    return [("lws", m)]


# ---------------------------------------------------------------------- the run (side effects)
class _Watch(threading.Thread):
    """The checker's eyes: one raw watch of pods (all namespaces) and one of nodes; a watch that ends resumes
    from the last version, a 410 relists (the checker is told to replace what it holds)."""

    def __init__(self, core, checker: Checker, lock: threading.Lock, kind: str, clock: Callable[[], float]) -> None:
        super().__init__(daemon=True, name=f"chaos-watch-{kind}")
        self.core, self.checker, self.lock, self.kind, self.clock = core, checker, lock, kind, clock
        self.stop = threading.Event()
        self.relists = 0

    def _list(self) -> str:
        fn = self.core.list_pod_for_all_namespaces if self.kind == "pods" else self.core.list_node
        resp = fn(_preload_content=False)
        listed = json.loads(resp.data)
        with self.lock:
            if self.kind == "pods":
                self.checker.relist(listed.get("items") or [], self.clock())
            else:
                for n in listed.get("items") or []:
                    self.checker.observe_node("ADDED", n, self.clock())
        self.relists += 1
        return listed["metadata"]["resourceVersion"]

    def run(self) -> None:
        fn = self.core.list_pod_for_all_namespaces if self.kind == "pods" else self.core.list_node
        rv = None
        while not self.stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                resp = fn(watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=60,
                          _preload_content=False, _request_timeout=90)
                for line in resp:
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    if ev.get("type") == "ERROR":
                        rv = None if obj.get("code") == 410 else rv
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if ev.get("type") == "BOOKMARK":
                        continue
                    with self.lock:
                        if self.kind == "pods":
                            self.checker.observe_pod(ev["type"], obj, self.clock())
                        else:
                            self.checker.observe_node(ev["type"], obj, self.clock())
                    if self.stop.is_set():
                        return
            except Exception:  # noqa: BLE001 - the API server may be restarting: resume after a moment
                time.sleep(0.3)


class _Extender:
    """Our extender process, restartable on its port."""

    def __init__(self, cp, log: Path, bind_timeout_s: float) -> None:
        from scheduler.extender.process import start_extender

        self.cp, self.log, self.bind_timeout_s = cp, log, bind_timeout_s
        self.proc, self.port = start_extender(cp.kubeconfig, log, preset="generic-nvlink", bind_timeout_s=bind_timeout_s)

    def kill_and_restart(self) -> None:
        from scheduler.extender.process import start_extender

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc, _ = start_extender(self.cp.kubeconfig, self.log, preset="generic-nvlink",
                                      bind_timeout_s=self.bind_timeout_s, port=self.port, ready_timeout_s=120)

    def stop(self) -> None:
        from scheduler.extender.process import stop_extender

        stop_extender(self.proc)


SCALED = "scaled"  # the autoscaled StatefulSet
SCALED_PODS = 2  # pods per replica (one gang)
QUEUE_METRIC = "vllm:num_requests_waiting"  # what SyntheticExporter.queue sets (vLLM's queue-depth gauge)
QUEUE_CYCLE = (5.0, 35.0, 35.0, 15.0, 0.0, 0.0)  # queue depth per step of AUTOSCALE_STEP_S: 1, 3 (max), 2, 1 replicas
AUTOSCALE_STEP_S = 12.0


def scaled_manifests(pool: str, ns: str, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The autoscaled StatefulSet (one 2-pod gang to start) and its policy ConfigMap (pure). The policy reads the
    queue depth by Scrape from `endpoint` and asks one replica per 10 queued requests, 1..3 replicas."""
    from autoscaler.policy import POLICY_LABEL

    labels = {"app": SCALED}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": SCALED},
           "spec": {"replicas": SCALED_PODS, "serviceName": SCALED, "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels, "annotations": {
                        "clique.dev/gang-size": str(SCALED_PODS), "clique.dev/topology-required": NVL}},
                        "spec": _pod_spec(pool, 8, None)}}}
    policy = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": SCALED},
              "minReplicas": 1, "maxReplicas": 3, "podsPerReplica": SCALED_PODS, "scaleUnit": "Pods",
              "evaluationIntervalSeconds": 2,
              "gang": {"gpusPerPod": 8, "topologyRequired": NVL, "nodeSelector": {"clique.dev/pool": pool}},
              "metrics": [{"type": "QueueDepth", "queueDepth": {"metric": QUEUE_METRIC, "source": "Scrape",
                                                                "endpoints": [endpoint]},
                           "target": {"type": "AverageValue", "averageValue": 10}}],
              "behavior": {"scaleDown": {"stabilizationWindowSeconds": 6}}}
    import yaml

    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": f"{SCALED}-policy", "labels": {POLICY_LABEL: "true"}},
          "data": {"policy.yaml": yaml.safe_dump(policy)}}
    return sts, cm


class _Autoscaled:
    """The autoscaler daemon (a process) on the SCALED StatefulSet, its exporter, and a thread stepping the queue
    depth through QUEUE_CYCLE and recording the replicas it sees."""

    def __init__(self, run: "_Run") -> None:
        from autoscaler.process import start_autoscaler
        from simulations.exporter import SyntheticExporter

        self.run, ns = run, run.ns
        self.exporter = SyntheticExporter()
        self.exporter.queue(QUEUE_CYCLE[0], namespace=ns)
        sts, cm = scaled_manifests(run.pool, ns, self.exporter.url)
        _retry("create the autoscaled StatefulSet", lambda: run.apps.create_namespaced_stateful_set(ns, sts))
        _retry("create its policy", lambda: run.core.create_namespaced_config_map(ns, cm))
        self.proc, self.port = start_autoscaler(run.cp.kubeconfig, run.cp.workdir / f"autoscaler-{run.pool}.log",
                                                None, namespace=ns, preset="generic-nvlink", lease_namespace=ns)
        self.first = {"pid": self.proc.pid, "at_s": round(run.clock(), 1), **_pid_stats(self.proc.pid)}
        self.end: dict[str, Any] | None = None
        self.replicas: list[tuple[float, int]] = []  # (t, spec.replicas) at every change seen
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drive, name="chaos-autoscaled", daemon=True)

    def _drive(self) -> None:
        step, t_next = 0, time.monotonic() + AUTOSCALE_STEP_S
        while not self.stop.is_set():
            if time.monotonic() >= t_next:
                step += 1
                t_next += AUTOSCALE_STEP_S
                self.exporter.queue(QUEUE_CYCLE[step % len(QUEUE_CYCLE)], namespace=self.run.ns)
            try:
                n = self.run.apps.read_namespaced_stateful_set_scale(SCALED, self.run.ns).spec.replicas
                if not self.replicas or self.replicas[-1][1] != n:
                    self.replicas.append((round(self.run.clock(), 1), n))
            except Exception:  # noqa: BLE001 - the API server may be restarting
                pass
            self.stop.wait(1.0)

    def finish(self) -> None:
        """The end figures, then the daemon stopped and its workload deleted (before the namespace is drained)."""
        from autoscaler.process import stop_autoscaler

        self.stop.set()
        self.thread.join(timeout=5)
        if self.end is None and self.proc.poll() is None:
            self.end = {"pid": self.proc.pid, "at_s": round(self.run.clock(), 1), **_pid_stats(self.proc.pid)}
        stop_autoscaler(self.proc)
        self.exporter.close()
        ns = self.run.ns
        _retry("delete the autoscaled StatefulSet", lambda: self.run.apps.delete_namespaced_stateful_set(SCALED, ns))

    def result(self) -> dict[str, Any]:
        counts = [n for _, n in self.replicas]
        return {"first_start": self.first, "end": self.end, "exited": self.proc.returncode not in (None, 0, -15),
                "replicas_changes": [{"at_s": t, "pods": n} for t, n in self.replicas],
                "scale_ups": sum(1 for a, b in zip(counts, counts[1:]) if b > a),
                "scale_downs": sum(1 for a, b in zip(counts, counts[1:]) if b < a)}


def _retry(what: str, fn: Callable[[], Any], deadline_s: float = 90.0) -> Any:
    """Retry an API write through an API server restart; 409 (already there) / 404 (already gone) are done."""
    from kubernetes.client.exceptions import ApiException

    end = time.monotonic() + deadline_s
    while True:
        try:
            return fn()
        except ApiException as exc:
            if exc.status in (404, 409):
                return None
            if time.monotonic() > end:
                raise RuntimeError(f"chaos: {what} failed: {exc.status} {exc.reason}") from exc
        except Exception as exc:  # noqa: BLE001 - connection refused while the API server restarts
            if time.monotonic() > end:
                raise RuntimeError(f"chaos: {what} failed: {exc}") from exc
        time.sleep(0.5)


class _Run:
    """One chaos run on a running control plane: the nodes, the processes, the threads, what happened."""

    def __init__(self, cp, cfg: ChaosConfig, say: Callable[[str], None]) -> None:
        from kubernetes import client

        self.cp, self.cfg, self.say = cp, cfg, say
        self.t0 = time.monotonic()
        self.pool = f"chaos{uuid.uuid4().hex[:5]}"
        self.ns = cfg.namespace or self.pool
        self.api = cp.api_client()
        self.core, self.apps = client.CoreV1Api(self.api), client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.checker = Checker(allowance_s=cfg.bind_timeout_s + 5.0, scheduler_name=SCHEDULER, namespace=self.ns)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.created: dict[str, list[tuple[str, str]]] = {}  # gang -> (kind, name) to delete
        self.errors: list[str] = []
        self.kills: list[dict[str, Any]] = []
        self.names: list[str] = []
        self.watches: list[_Watch] = []
        self.ext: _Extender | None = None
        self.autoscaled: _Autoscaled | None = None
        self.ext_restarted: dict[str, Any] | None = None  # the last restarted extender, right after it was ready
        self.t_run = 0.0

    def clock(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------ set-up and clean-up
    def setup(self) -> None:
        from scheduler.extender.process import clique_scheduler_config
        from simulations.controlplane.kwok_nodes import create_nodes
        from topology.spec import parse_cluster_spec

        cfg, pool = self.cfg, self.pool
        spec = parse_cluster_spec({"name": pool, "pools": [{"name": pool, "hosts": cfg.nodes, "gpus": 8}], "levels": [
            {"name": "zone", "label": "topology.kubernetes.io/zone", "hostsPerDomain": cfg.nodes,
             "valueFormat": pool + "-z{index}"},
            {"name": "spine", "label": "clique.dev/spine", "hostsPerDomain": 64 if cfg.nodes % 64 == 0 else cfg.nodes,
             "valueFormat": pool + "-s{index}"},
            {"name": "leaf", "label": LEAF, "hostsPerDomain": 16, "valueFormat": pool + "-l{index}"},
            {"name": "nvlink", "label": NVL, "hostsPerDomain": 8, "valueFormat": pool + "-nvl{index}"}]})
        hosts = spec.hosts()
        self.names = create_nodes(self.api, hosts, workers=8, wait_ready_s=300)
        self.leaves = sorted({h.labels[LEAF] for h in hosts})
        self.say(f"[bench chaos] {len(self.names)} KWOK nodes Ready ({len(self.leaves)} leaves) in {self.clock():.1f}s")
        self.cp.create_namespace(self.ns)
        self.subs = plan_workload(cfg, self.leaves)
        self.faults = plan_faults(cfg, random.Random(cfg.seed + 1))
        self.watches = [_Watch(self.core, self.checker, self.lock, kind, self.clock) for kind in ("nodes", "pods")]
        for w in self.watches:
            w.start()
        self.ext = _Extender(self.cp, self.cp.workdir / f"extender-{pool}.log", cfg.bind_timeout_s)
        self.cp.start_scheduler(clique_scheduler_config(self.ext.port), name=SCHEDULER)
        self.say(f"[bench chaos] extender and {SCHEDULER} up; {len(self.subs)} gangs over {cfg.arrival_s:.0f}s, "
                 f"{len(self.faults)} faults (seed {cfg.seed})")
        if cfg.autoscaler:
            self.autoscaled = _Autoscaled(self)
            self.say(f"[bench chaos] autoscaler up on StatefulSet {SCALED} (queue depth cycle {QUEUE_CYCLE}, "
                     f"{AUTOSCALE_STEP_S:.0f}s a step)")

    def teardown(self) -> None:
        from simulations.controlplane.kwok_nodes import delete_nodes

        self.stop.set()
        try:
            if self.autoscaled is not None and self.autoscaled.proc.poll() is None:
                self.autoscaled.finish()
            self.cp.stop_component(SCHEDULER)
            if self.ext is not None:
                self.ext.stop()
            for w in self.watches:
                w.stop.set()
            delete_nodes(self.api, self.names)
        finally:
            self.api.close()

    # ------------------------------------------------------------------ API writes
    def submit(self, sub: dict[str, Any]) -> None:
        from simulations.controlplane.lws import GROUP, PLURAL, VERSION

        ns = self.ns
        with self.lock:
            self.checker.submit(GangSpec(sub["id"], sub["kind"], tuple(sub["roles"]), sub["key"],
                                         submitted_at=self.clock()))
        for kind, obj in manifests(sub, self.pool, ns):
            name = obj["metadata"]["name"]
            if kind == "pod":
                _retry(f"create pod {name}", lambda o=obj: self.core.create_namespaced_pod(ns, o))
            elif kind == "statefulset":
                _retry(f"create StatefulSet {name}", lambda o=obj: self.apps.create_namespaced_stateful_set(ns, o))
            else:
                _retry(f"create LeaderWorkerSet {name}",
                       lambda o=obj: self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, o))
            self.created.setdefault(sub["id"], []).append((kind, name))

    def delete(self, gid: str) -> None:
        from simulations.controlplane.lws import GROUP, PLURAL, VERSION

        ns = self.ns
        with self.lock:
            self.checker.deleted(gid, self.clock())
        for kind, name in self.created.get(gid, []):
            if kind == "pod":
                _retry(f"delete pod {name}",
                       lambda n=name: self.core.delete_namespaced_pod(n, ns, grace_period_seconds=0))
            elif kind == "statefulset":
                _retry(f"delete StatefulSet {name}", lambda n=name: self.apps.delete_namespaced_stateful_set(
                    n, ns, propagation_policy="Background"))
            else:
                _retry(f"delete LeaderWorkerSet {name}", lambda n=name: self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, n, propagation_policy="Background"))

    # ------------------------------------------------------------------ the three drivers
    def arrivals(self, pool_exec: ThreadPoolExecutor) -> None:
        futures = []
        for sub in self.subs:
            while self.clock() - self.t_run < sub["at"] and not self.stop.is_set():
                time.sleep(0.05)
            futures.append(pool_exec.submit(self.submit, sub))
        for f in futures:
            try:
                f.result()
            except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                self.errors.append(str(exc))

    def departures(self, pool_exec: ThreadPoolExecutor) -> None:
        done: set[str] = set()
        lifetime = {s["id"]: s["lifetime"] for s in self.subs}
        while not self.stop.is_set():
            now = self.clock()
            with self.lock:
                due = [g.gang_id for g in self.checker.gangs.values() if g.whole_at is not None
                       and g.deleted_at is None and g.gang_id not in done and now >= g.whole_at + lifetime[g.gang_id]]
                self.checker.tick(now)
            for gid in due:
                done.add(gid)
                pool_exec.submit(self.delete, gid)
            time.sleep(0.25)

    def chaos(self) -> None:
        """The faults, in this (the caller's) thread: the harness's children die with the thread that started
        them (PR_SET_PDEATHSIG is per thread), so restarts must come from one that lives as long as the run."""
        assert self.ext is not None
        for at, comp in self.faults:
            while self.clock() - self.t_run < at and not self.stop.is_set():
                time.sleep(0.05)
            t0 = self.clock()
            try:
                if comp == "extender":
                    self.ext.kill_and_restart()
                    self.ext_restarted = {"pid": self.ext.proc.pid, "at_s": round(self.clock(), 1),
                                          **_pid_stats(self.ext.proc.pid)}
                elif comp == "kube-scheduler":
                    self.cp.restart_component(SCHEDULER, kill=True)
                else:
                    self.cp.restart_component("kube-apiserver")
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"{comp} restart failed: {exc}")
                return
            ready = self.clock()
            with self.lock:
                pending = any(v.live and not v.node for v in self.checker.pods.values() if v.gang in self.checker.gangs)
            self.kills.append({"component": comp, "at": round(t0, 2), "ready_s": round(ready - t0, 2),
                               "pending_at_ready": pending})
            self.say(f"[bench chaos] t={t0:.0f}s {comp} {'restarted' if comp == 'kube-apiserver' else 'killed'}, "
                     f"ready after {ready - t0:.1f}s")

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        assert self.ext is not None
        cfg, checker, lock = self.cfg, self.checker, self.lock
        ext_first = {"pid": self.ext.proc.pid, "at_s": round(self.clock(), 1), **_pid_stats(self.ext.proc.pid)}
        self.t_run = self.clock()
        if self.autoscaled is not None:
            self.autoscaled.thread.start()
        with ThreadPoolExecutor(6) as creators, ThreadPoolExecutor(4) as deleters:
            arrivals = threading.Thread(target=self.arrivals, args=(creators,), daemon=True)
            departures = threading.Thread(target=self.departures, args=(deleters,), daemon=True)
            arrivals.start()
            departures.start()
            self.chaos()
            arrivals.join()
            self.say(f"[bench chaos] t={self.clock():.0f}s all {len(self.subs)} gangs submitted, {len(self.kills)} "
                     "faults done; settling")
            settle_end = time.monotonic() + cfg.settle_s
            while time.monotonic() < settle_end:
                with lock:
                    waiting = [g for g in checker.gangs.values() if g.whole_at is None and g.deleted_at is None]
                if not waiting and len(checker.gangs) == len(self.subs):
                    break
                time.sleep(0.5)
            with lock:
                checker.tick(self.clock())
                feasible, infeasible = self._judge_waiting()
            self.stop.set()
            departures.join(timeout=5)
            with lock:
                checker.finish(self.clock())
            for gid in self.created:
                if checker.gangs[gid].deleted_at is None:
                    deleters.submit(self.delete, gid)
        for k in self.kills:  # from the kill to the first Binding once it was back (pods pending), else to ready
            ready_at = k["at"] + k["ready_s"]
            first = next((t for t in sorted(checker.binds) if t >= ready_at), None) if k["pending_at_ready"] else None
            k["recovery_s"] = round((first if first is not None else ready_at) - k["at"], 2)
        if self.autoscaled is not None:
            self.autoscaled.finish()
        _drain(self.core, self.ns, self.say)
        time.sleep(2)  # the extender sees the last deletions
        ext_end = {"pid": self.ext.proc.pid, "at_s": round(self.clock(), 1), **_pid_stats(self.ext.proc.pid)}
        # a leak shows as growth of one process: the last restarted one, from its start to the end of the run
        result = self._result(feasible, infeasible, {"first_start": ext_first, "last_restart": self.ext_restarted,
                                                     "end": ext_end})
        if self.autoscaled is not None:  # one process through the whole run (never killed): its growth is a leak
            result["autoscaler_process"] = self.autoscaled.result()
        return result

    def _judge_waiting(self) -> tuple[list[str], list[str]]:
        """Gangs not placed by the end, split by whether they fit the cluster as the API server shows it."""
        from scheduler.extender.nodefit import node_refusal

        c = self.checker
        mine = set(self.names)
        free = {n: info["gpus"] - c.used_gpus(n) for n, info in c.nodes.items() if info["schedulable"] and n in mine}
        feasible, infeasible = [], []
        for g in c.gangs.values():
            if g.whole_at is not None or g.deleted_at is not None:
                continue
            member = next((v.raw for v in c.members(g)), None)
            allowed = [n for n in free if member is None
                       or not node_refusal(member, n, c.nodes[n]["labels"], c.nodes[n]["taints"])]
            domain_of = {n: c.nodes[n]["labels"].get(g.required_key) for n in allowed}
            (feasible if fits(free, domain_of, g.roles, allowed) else infeasible).append(g.gang_id)
        return feasible, infeasible

    def _result(self, feasible: list[str], infeasible: list[str], ext_stats: dict) -> dict[str, Any]:
        c, subs, kills = self.checker, self.subs, self.kills
        gangs = list(c.gangs.values())
        by_comp = {}
        for comp in ("extender", "kube-scheduler", "kube-apiserver"):
            rec = [k["recovery_s"] for k in kills if k["component"] == comp]
            by_comp[comp] = {"count": len(rec), "p50": _percentile(rec, 0.5), "max": max(rec) if rec else None}
        all_rec = [k["recovery_s"] for k in kills]
        kinds: dict[str, int] = {}
        for s in subs:
            kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
        result = {
            "benchmark": "chaos", "seed": self.cfg.seed, "nodes": len(self.names), "config": asdict(self.cfg),
            "submissions": len(subs), "pods_submitted": sum(sum(n for n, _ in s["roles"]) for s in subs),
            "by_kind": kinds, "deletions": sum(1 for g in gangs if g.deleted_at is not None),
            "kills": {comp: by_comp[comp]["count"] for comp in by_comp},
            "over_commits": len(c.over_commits), "over_commit_examples": c.over_commits[:5],
            "partial_gang_seconds": round(sum(g.partial_s for g in gangs), 2),
            "partial_gang_seconds_beyond_allowance": round(sum(g.partial_beyond_s for g in gangs), 2),
            "partial_allowance_s": c.allowance_s,
            "max_partial_gang_s": round(max((g.max_partial_s for g in gangs), default=0.0), 2),
            "constraint_violations": len(c.violations), "violation_examples": c.violations[:5],
            "split_gangs": sorted(c.split_gangs),
            "gangs_placed": sum(1 for g in gangs if g.whole_at is not None),
            "gangs_unplaced_feasible": feasible, "gangs_unplaced_infeasible": infeasible,
            "recovery_s": {**by_comp, "all": {"p50": _percentile(all_rec, 0.5),
                                              "max": max(all_rec) if all_rec else None}},
            "faults": kills, "extender_process": ext_stats,
            "checker_relists": {w.kind: w.relists for w in self.watches},
            "errors": self.errors[:10], "duration_s": round(self.clock(), 1),
        }
        self.say(f"[bench chaos] {result['gangs_placed']}/{len(subs)} gangs placed, over-commits "
                 f"{result['over_commits']}, partial-gang s beyond {c.allowance_s:.0f}s: "
                 f"{result['partial_gang_seconds_beyond_allowance']}, recovery p50 {result['recovery_s']['all']['p50']}s "
                 f"max {result['recovery_s']['all']['max']}s")
        return result


def run_chaos(cp, cfg: ChaosConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """One chaos run on the running control plane `cp`; call it from a thread that outlives the run."""
    run = _Run(cp, cfg, say)
    try:
        run.setup()
        return run.run()
    finally:
        run.teardown()


def _drain(core, ns: str, say, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            left = core.list_namespaced_pod(ns, resource_version="0").items
        except Exception:  # noqa: BLE001
            left = [None]
        if not left:
            return
        time.sleep(0.5)
    say(f"[bench chaos] pods of namespace {ns} still there after {timeout_s:.0f}s")


def run(cfg: ChaosConfig, say: Callable[[str], None] = print, workdir: Path | None = None) -> dict[str, Any]:
    """On a control plane of its own; `workdir` keeps its logs (the extender's among them) after the run."""
    from simulations.controlplane import ControlPlane, ControlPlaneOptions

    with ControlPlane(ControlPlaneOptions(lws=cfg.lws, workdir=workdir)) as cp:
        say(f"[bench chaos] control plane up in {cp.startup_seconds:.0f}s (work directory {cp.workdir})")
        return run_chaos(cp, cfg, say)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    d = ChaosConfig()
    p = bench_sub.add_parser("chaos", help="gangs arrive and leave while the extender, kube-scheduler and "
                                           "kube-apiserver are killed; invariants checked from the API server")
    p.add_argument("--gangs", type=int, default=d.gangs)
    p.add_argument("--nodes", type=int, default=d.nodes)
    p.add_argument("--extender-kills", type=int, default=d.extender_kills)
    p.add_argument("--scheduler-kills", type=int, default=d.scheduler_kills)
    p.add_argument("--apiserver-restarts", type=int, default=d.apiserver_restarts)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--arrival", type=float, default=d.arrival_s, help="seconds over which the gangs arrive")
    p.add_argument("--settle", type=float, default=d.settle_s,
                   help="at most this many seconds after the arrivals for every gang to be placed")
    p.add_argument("--no-lws", action="store_true", help="no LeaderWorkerSet gangs (no LWS controller)")
    p.add_argument("--no-autoscaler", action="store_true",
                   help="without the autoscaler daemon scaling a StatefulSet gang workload during the run")
    p.add_argument("--workdir", type=Path, default=None,
                   help="the control plane's work directory, kept after the run (logs); default: a temporary one")
    p.set_defaults(func=cmd_bench_chaos)


def cmd_bench_chaos(args: argparse.Namespace) -> int:
    if (args.gangs < 1 or args.nodes < 16 or args.nodes % 16
            or min(args.extender_kills, args.scheduler_kills, args.apiserver_restarts) < 0):
        print(f"bench chaos: --gangs >= 1, --nodes a multiple of 16 (16-host leaves) and kill counts >= 0, please "
              f"(got --gangs {args.gangs} --nodes {args.nodes})", file=sys.stderr)
        return 2
    cfg = ChaosConfig(gangs=args.gangs, nodes=args.nodes, extender_kills=args.extender_kills,
                      scheduler_kills=args.scheduler_kills, apiserver_restarts=args.apiserver_restarts,
                      seed=args.seed, arrival_s=args.arrival, settle_s=args.settle, lws=not args.no_lws,
                      autoscaler=not args.no_autoscaler)
    import logging

    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retries while kube-apiserver restarts, by the hundred
    result = run(cfg, say=lambda m: print(m, file=sys.stderr, flush=True), workdir=args.workdir)
    ok = (result["over_commits"] == 0 and result["partial_gang_seconds_beyond_allowance"] == 0
          and not result["gangs_unplaced_feasible"] and result["constraint_violations"] == 0
          and not result["split_gangs"])
    result["targets_met"] = ok and (result["recovery_s"]["all"]["p50"] or 0) <= 15
    print(json.dumps(result))
    return 0
