"""`clique demo`, part 4: the real control plane. Side effects: starts and stops a local control plane (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kwok), Clique's extender with a second kube-scheduler
(`clique-scheduler`), the autoscaler daemon and a synthetic metrics exporter; creates KWOK nodes and workloads.

On the demo cluster (32 H100 hosts in leaves of 4, 36 GB200 hosts in two NVLink domains of 18):
  a. the stock kube-scheduler places one TP32 replica (a Deployment of 4 pods x 8 GPUs) pod by pod;
  b. the same replica as a StatefulSet gang, placed by clique-scheduler + the extender: one leaf, all four
     bound together; a second replica takes the other free leaf; a third cannot fit and waits whole, with the
     extender's GangUnschedulable Event;
  c. the autoscaler daemon scales a StatefulSet of GB200 gangs (8 pods x 4 GPUs inside one NVLink domain) on a
     queue depth it scrapes from the exporter: one step up, then up to capacity, where it reports
     BlockedByCapacity.
`run_controlplane_demo` returns what it saw (a dict, also the e2e test's input) and the report's Markdown.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from simulations.controlplane.processes import wait_for
from topology.levels import levels_from_labels, preset
from topology.model import HostInfo, Topology
from topology.render import render_png, render_text

NS = "default"
LEAF, SPINE, NVLINK = "clique.dev/leaf", "clique.dev/spine", "nvidia.com/gpu.clique"
STOCK, CLIQUE, DECODE = "tp32-stock", "tp32-clique", "decode-gb200"  # workload names
DECODE_PODS, DECODE_GPUS = 8, 4  # one autoscaled replica: 8 GB200 hosts x 4 GPUs inside one NVLink domain
QUEUE_TARGET = 10  # requests waiting per replica
INTERVAL_S = 2  # the policy's evaluationIntervalSeconds
QUEUE_STEPS = (5, 18, 45)  # queue depth: steady at 1 replica, one step to 2, then more than capacity allows


def _binary_missing() -> list[str]:
    from simulations.controlplane.build import binary_path
    from simulations.controlplane.versions import ALL_COMPONENTS

    return [c.name for c in ALL_COMPONENTS
            if not (binary_path(c).exists() and (binary_path(c).parent / ".complete").exists())]


def ensure_controlplane_binaries(say: Callable[[str], None] = print) -> None:
    """Build the control-plane binaries if they are not cached yet, saying so first (raises BuildError)."""
    from simulations.controlplane.build import cache_dir, ensure_binaries

    missing = _binary_missing()
    if missing:
        say(f"[demo] building the control plane once: {', '.join(missing)} from their Go modules, cached in "
            f"{cache_dir() / 'bin'} (roughly 10-20 minutes cold on 2 cores; later runs start at once) ...")
        started = time.monotonic()
        ensure_binaries(log=say)
        say(f"[demo] control-plane binaries ready after {time.monotonic() - started:.0f}s")
    else:
        ensure_binaries(log=say)


def _hosts_from_api(nodes) -> list[HostInfo]:
    return [HostInfo(n.metadata.name, int(n.status.allocatable.get("nvidia.com/gpu", 0)), dict(n.metadata.labels),
                     dict(n.metadata.annotations or {})) for n in nodes]


class BindWatch:
    """When the API server first shows each pod of a namespace bound to a node: a watch of its own client,
    on this process's monotonic clock."""

    def __init__(self, cp: Any, namespace: str = NS) -> None:
        self.bound: dict[str, tuple[str, float]] = {}
        self._api, self._ns = cp.api_client(), namespace
        self._stop, self._synced = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="bind-watch", daemon=True)
        self._thread.start()
        self._synced.wait(30)

    def _see(self, pod: Any) -> None:
        if pod.spec.node_name and pod.metadata.name not in self.bound:
            self.bound[pod.metadata.name] = (pod.spec.node_name, time.monotonic())

    def _run(self) -> None:
        from kubernetes import client, watch

        core = client.CoreV1Api(self._api)
        rv = None
        try:
            while not self._stop.is_set():
                try:
                    if rv is None:
                        listed = core.list_namespaced_pod(self._ns)
                        for p in listed.items:
                            self._see(p)
                        rv = listed.metadata.resource_version
                        self._synced.set()
                    for ev in watch.Watch().stream(core.list_namespaced_pod, self._ns, resource_version=rv,
                                                   timeout_seconds=2, _request_timeout=10):
                        rv = ev["object"].metadata.resource_version
                        if ev["type"] in ("ADDED", "MODIFIED"):
                            self._see(ev["object"])
                        if self._stop.is_set():
                            break
                except Exception:  # noqa: BLE001 - expired resourceVersion, connection reset: list again
                    rv = None
                    self._stop.wait(0.2)
        finally:
            self._synced.set()
            self._api.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _wait(pred: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    return wait_for(pred, timeout_s, f"[demo] {what}", interval_s)


def _pod_spec(pool: str, gpus: int, scheduler: str | None = None, tp: int | None = None) -> dict:
    spec: dict[str, Any] = {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
                            "nodeSelector": {"clique.dev/pool": pool},
                            "containers": [{"name": "vllm", "image": "vllm",
                                            **({"args": ["--tensor-parallel-size", str(tp)]} if tp else {}),
                                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}
    if scheduler:
        spec["schedulerName"] = scheduler
    return spec


def gang_statefulset(name: str, pods_per_gang: int, gpus: int, pool: str, required: str, replicas: int = 0) -> dict:
    """A StatefulSet whose ordinals form gangs of `pods_per_gang` (clique.dev/gang-size), placed by
    clique-scheduler inside one domain of `required`."""
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name},
                                               "annotations": {"clique.dev/gang-size": str(pods_per_gang),
                                                               "clique.dev/topology-required": required}},
                                  "spec": _pod_spec(pool, gpus, "clique-scheduler", pods_per_gang * gpus)}}}


def _decode_policy(exporter_url: str) -> dict:
    return {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": DECODE},
            "minReplicas": 1, "maxReplicas": 6, "podsPerReplica": DECODE_PODS, "scaleUnit": "Pods",
            "evaluationIntervalSeconds": INTERVAL_S,
            "gang": {"gpusPerPod": DECODE_GPUS, "topologyRequired": NVLINK, "nodeSelector": {"clique.dev/pool": "gb200"}},
            "metrics": [{"type": "QueueDepth", "queueDepth": {"source": "Scrape", "endpoints": [exporter_url],
                                                              "metric": "vllm:num_requests_waiting"},
                         "target": {"type": "AverageValue", "averageValue": QUEUE_TARGET}}]}


def _ordinal(pod: str) -> int:
    return int(pod.rsplit("-", 1)[1])


def run_controlplane_demo(spec: Any, output: Path, say: Callable[[str], None] = print) -> tuple[dict, str]:
    """Parts a-c above on `spec` (the demo cluster). Returns (results, report Markdown)."""
    import yaml
    from kubernetes import client

    from autoscaler.process import start_autoscaler, stop_autoscaler
    from autoscaler.reconciler import STATUS_ANNOTATION
    from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender
    from simulations.controlplane import ControlPlane
    from simulations.controlplane.kwok_nodes import create_nodes
    from simulations.exporter import SyntheticExporter

    output.mkdir(parents=True, exist_ok=True)
    labels_keys = [lv.label for lv in spec.levels]
    levels = levels_from_labels(labels_keys, [lv.name for lv in spec.levels])
    # the preset's level names (leaf, nvlink) read better in reasons than names made from label keys
    how = ({"preset": "generic-nvlink"} if [lv.label for lv in preset("generic-nvlink")] == labels_keys
           else {"levels": labels_keys})
    t_start = time.monotonic()
    say("[demo] 4/4 real control plane: starting (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, "
        "kwok) ...")
    res: dict[str, Any] = {}
    with ControlPlane() as cp, SyntheticExporter() as exporter, ThreadPoolExecutor(2) as pool:
        say(f"[demo] up in {cp.startup_seconds:.1f}s at {cp.server}")
        api = cp.api_client()
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        ext_f = scaler_f = None
        watch = None
        try:
            create_nodes(api, spec.hosts())
            # Clique's services start while the stock scheduler works (each waits until its watches synced).
            ext_f = pool.submit(start_extender, cp.kubeconfig, cp.workdir / "extender.log", **how)
            scaler_f = pool.submit(start_autoscaler, cp.kubeconfig, cp.workdir / "autoscaler.log", None,
                                   namespace=NS, lease_namespace=NS, extra=["--tick", "0.2"], **how)
            nodes = core.list_node(label_selector="type=kwok").items
            labels = {n.metadata.name: n.metadata.labels for n in nodes}
            topo = Topology(_hosts_from_api(nodes), levels)
            tree = render_text(topo)
            render_png(topo, output / "topology.png", title="embedded demo cluster, as read from the API server")
            say(f"[demo] {len(nodes)} KWOK nodes Ready; topology read back from the API server:\n{tree}\n")
            res.update(nodes=len(nodes), startup_s=round(cp.startup_seconds, 1))
            watch = BindWatch(cp)

            def where(node: str) -> str:
                return f"{node:10} {labels[node].get(LEAF, '-'):7} {labels[node].get(SPINE, '-'):7}"

            # ---- a. the stock kube-scheduler: a Deployment of 4 x 8 GPUs, after some partly used hosts
            for i in range(6):
                core.create_namespaced_pod(NS, {
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"busy-{i}"},
                    "spec": {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
                             "nodeSelector": {"kubernetes.io/hostname": f"h100-{i * 5:04d}"},
                             "containers": [{"name": "c", "image": "x",
                                             "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}})
            _wait(lambda: sum(f"busy-{i}" in watch.bound for i in range(6)) == 6, 60, "the busy pods bound")
            apps.create_namespaced_deployment(NS, {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": STOCK},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": STOCK}},
                         "template": {"metadata": {"labels": {"app": STOCK}}, "spec": _pod_spec("h100", 8, tp=32)}}})
            t0 = time.monotonic()
            apps.patch_namespaced_deployment_scale(STOCK, NS, {"spec": {"replicas": 4}})
            stock_pods = _wait(lambda: (ps := [p.metadata.name for p in core.list_namespaced_pod(
                NS, label_selector=f"app={STOCK}").items]) and len(ps) == 4 and all(p in watch.bound for p in ps)
                and sorted(ps), 60, "the stock replica's 4 pods bound")
            stock = [{"pod": p, "node": watch.bound[p][0], "leaf": labels[watch.bound[p][0]].get(LEAF),
                      "spine": labels[watch.bound[p][0]].get(SPINE), "bound_s": round(watch.bound[p][1] - t0, 3)}
                     for p in sorted(stock_pods, key=lambda p: watch.bound[p][1])]
            # gone again, so that both schedulers start from the same cluster
            apps.patch_namespaced_deployment_scale(STOCK, NS, {"spec": {"replicas": 0}})
            _wait(lambda: not core.list_namespaced_pod(NS, label_selector=f"app={STOCK}").items, 60,
                  "the stock replica's pods deleted")

            # ---- b. clique-scheduler + the extender: the same replica as a StatefulSet gang, inside one leaf
            ext, ext_port = ext_f.result()
            cp.start_scheduler(clique_scheduler_config(ext_port), name="clique-scheduler")
            apps.create_namespaced_stateful_set(NS, gang_statefulset(CLIQUE, 4, 8, "h100", LEAF))

            def gang_bound(first: int, size: int) -> list[str] | None:
                names = [f"{CLIQUE}-{i}" for i in range(first, first + size)]
                return names if all(n in watch.bound for n in names) else None

            gangs = []
            for g in range(2):
                t0 = time.monotonic()
                apps.patch_namespaced_stateful_set_scale(CLIQUE, NS, {"spec": {"replicas": 4 * (g + 1)}})
                names = _wait(lambda g=g: gang_bound(4 * g, 4), 90, f"clique's TP32 replica {g} bound")
                gangs.append([{"pod": n, "node": watch.bound[n][0], "leaf": labels[watch.bound[n][0]].get(LEAF),
                               "spine": labels[watch.bound[n][0]].get(SPINE),
                               "bound_s": round(watch.bound[n][1] - t0, 3)} for n in names])
            clique = gangs[0]
            spread_ms = (max(p["bound_s"] for p in clique) - min(p["bound_s"] for p in clique)) * 1000
            stock_spread_ms = (max(p["bound_s"] for p in stock) - min(p["bound_s"] for p in stock)) * 1000
            rows = [f"  {'stock kube-scheduler':26} {'bound':>7}    {'clique-scheduler + extender':26} {'bound':>7}",
                    f"  {'host       leaf    spine':26} {'':>7}    {'host       leaf    spine':26}"]
            for s, c in zip(stock, clique):
                rows.append(f"  {where(s['node']):26} {s['bound_s']:>+6.2f}s    {where(c['node']):26} "
                            f"{c['bound_s']:>+6.2f}s")
            stock_leaves = Counter(p["leaf"] for p in stock)
            clique_leaves = Counter(p["leaf"] for p in clique)
            compare = (f"stock kube-scheduler: {len(stock_leaves)} leaf switch(es) ({', '.join(sorted(stock_leaves))}), "
                       f"{len({p['spine'] for p in stock})} spine block(s), pods bound one by one over "
                       f"{stock_spread_ms:.0f} ms; one leaf was possible.\nclique-scheduler: {len(clique_leaves)} leaf "
                       f"({', '.join(sorted(clique_leaves))}), all 4 pods bound within {spread_ms:.0f} ms of each "
                       f"other; a second replica took {gangs[1][0]['leaf']} "
                       f"({', '.join(sorted({p['node'] for p in gangs[1]}))}).")
            say("[demo] one TP32 replica (4 pods x 8 GPUs) on the same cluster (6 partly used H100 hosts), by "
                "each scheduler: a Deployment for the stock one, a StatefulSet gang (clique.dev/gang-size: 4, "
                "topology-required: clique.dev/leaf) for Clique's; bound = seconds after the /scale patch:")
            say("\n".join(rows))
            say("[demo] " + compare.replace("\n", "\n[demo] "))

            # a third replica: no leaf has 4 free hosts now; it waits whole, and the extender says why
            apps.patch_namespaced_stateful_set_scale(CLIQUE, NS, {"spec": {"replicas": 12}})
            waiting = [f"{CLIQUE}-{i}" for i in range(8, 12)]

            def unschedulable() -> list[str]:
                evs = core.list_namespaced_event(NS, field_selector="reason=GangUnschedulable").items
                return [e.message for e in evs if e.involved_object.name in waiting]
            message = _wait(unschedulable, 60, "the waiting gang's GangUnschedulable Event", 0.25)[0]
            time.sleep(2)  # kube-scheduler keeps retrying it; still nothing bound
            bound_now = [p.metadata.name for p in core.list_namespaced_pod(NS, label_selector=f"app={CLIQUE}").items
                         if p.spec.node_name and p.metadata.name in waiting]
            say(f"[demo] a third TP32 replica ({CLIQUE}-8..11): {len(bound_now)} of 4 pods bound; it waits whole. "
                f"Event GangUnschedulable (from the API server):\n  {message}")
            res.update(stock={"placement": stock, "leaves": sorted(stock_leaves),
                              "spines": len({p['spine'] for p in stock}), "bind_spread_ms": round(stock_spread_ms, 1)},
                       clique={"placement": clique, "leaves": sorted(clique_leaves),
                               "bind_spread_ms": round(spread_ms, 1), "second_replica": gangs[1]},
                       waiting={"pods": waiting, "bound": len(bound_now), "event": message})

            # ---- c. the autoscaler daemon, on a queue depth scraped from the exporter
            scaler, _ = scaler_f.result()
            exporter.queue(QUEUE_STEPS[0])
            apps.create_namespaced_stateful_set(NS, gang_statefulset(DECODE, DECODE_PODS, DECODE_GPUS, "gb200", NVLINK,
                                                                     replicas=DECODE_PODS))
            core.create_namespaced_config_map(NS, {
                "metadata": {"name": f"{DECODE}-policy", "labels": {"clique.dev/autoscaling-policy": "true"}},
                "data": {"policy.yaml": yaml.safe_dump(_decode_policy(exporter.url), sort_keys=False)}})
            say(f"[demo] the autoscaler daemon scales StatefulSet {DECODE} (replicas = gangs of {DECODE_PODS} pods x "
                f"{DECODE_GPUS} GPUs inside one NVLink domain; 2 fit in each of the 2 domains) on the queue depth it "
                f"scrapes from a synthetic exporter, target {QUEUE_TARGET} waiting requests per replica, evaluated "
                f"every {INTERVAL_S}s:")
            steps: list[dict] = []
            seen_events: set[str] = set()
            state: dict[str, Any] = {"status": None, "bound": None, "replicas": None, "last_msg": None}
            t0 = time.monotonic()

            def note(kind: str, text: str, **extra: Any) -> None:
                t = time.monotonic() - t0
                steps.append({"t": round(t, 2), "kind": kind, "text": text, **extra})
                say(f"  {t:6.1f}s  {text}")

            def poll() -> None:
                replicas = apps.read_namespaced_stateful_set_scale(DECODE, NS).spec.replicas or 0
                if replicas != state["replicas"]:
                    state["replicas"] = replicas
                    if steps:
                        note("replicas", f"StatefulSet {DECODE} at {replicas} pods ({replicas // DECODE_PODS} "
                                         "replica(s))", replicas=replicas // DECODE_PODS)
                evs = core.list_namespaced_event(NS, field_selector=f"involvedObject.name={DECODE}").items
                for e in sorted(evs, key=lambda e: int(e.metadata.resource_version or 0)):  # creation order
                    component = (e.source.component if e.source else None) or e.reporting_component
                    if e.metadata.uid in seen_events or component != "clique-autoscaler":
                        continue
                    seen_events.add(e.metadata.uid)
                    same = e.message == state["last_msg"]
                    state["last_msg"] = e.message
                    note("event", f"Event {e.reason}: " + ("(the same message)" if same else e.message),
                         reason=e.reason, message=e.message)
                ann = core.read_namespaced_config_map(f"{DECODE}-policy", NS).metadata.annotations or {}
                st = json.loads(ann.get(STATUS_ANNOTATION, "null") or "null")
                key = st and (st.get("reason"), st.get("currentReplicas"), st.get("desiredReplicas"), st.get("message"))
                if st and st.get("valid") and key != state["status"]:
                    state["status"] = key
                    state["last_status"] = st
                    note("status", f"status {st['reason']}: {st['message']}", reason=st["reason"],
                         replicas=st.get("desiredReplicas"), blocked=st.get("blockedByCapacity"))
                by_gang: dict[int, set[str]] = {}
                for n, (node, _) in list(watch.bound.items()):
                    if n.startswith(DECODE + "-"):
                        by_gang.setdefault(_ordinal(n) // DECODE_PODS, set()).add(labels[node].get(NVLINK, "?"))
                whole = {g: d for g, d in by_gang.items()
                         if sum(1 for n in watch.bound if n.startswith(DECODE + "-")
                                and _ordinal(n) // DECODE_PODS == g) == DECODE_PODS}
                if len(whole) != state["bound"]:
                    state["bound"] = len(whole)
                    if not whole:
                        return
                    domains = ", ".join(f"{g}: {'+'.join(sorted(d))}" for g, d in sorted(whole.items()))
                    note("bound", f"{len(whole)} replica(s) bound whole ({len(whole) * DECODE_PODS} pods); "
                                  f"NVLink domain per replica {domains}", bound=len(whole))

            def follow(until: Callable[[], bool], timeout_s: float, what: str) -> None:
                deadline = time.monotonic() + timeout_s
                while True:
                    poll()
                    if until():
                        return
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"[demo] timed out after {timeout_s:.0f}s waiting for {what}; see "
                                           f"{cp.workdir / 'autoscaler.log'}")
                    time.sleep(0.2)

            def settled_at(reason: str, replicas: int) -> bool:
                """The daemon's latest evaluation holds `replicas` for `reason`, with no gang of its own pending."""
                st = state["status"]
                return bool(st) and st[0] == reason and st[1] == st[2] == replicas and "still pending" not in st[3]

            note("queue", f"queue depth {QUEUE_STEPS[0]}")
            follow(lambda: state["bound"] == 1 and state["status"] is not None, 60, "the first evaluation")
            note("queue", f"queue depth {QUEUE_STEPS[1]}")
            exporter.queue(QUEUE_STEPS[1])
            follow(lambda: state["bound"] == 2, 60, "the scale-up to 2 replicas, bound")
            note("queue", f"queue depth {QUEUE_STEPS[2]}")
            exporter.queue(QUEUE_STEPS[2])
            follow(lambda: state["bound"] == 4 and settled_at("BlockedByCapacity", 4), 90,
                   "the scale-up to capacity and BlockedByCapacity")
            final = state.get("last_status") or {}
            scale_ups = [s for s in steps if s["kind"] == "event" and s["reason"] == "ScaledUp"]
            blocked = [s for s in steps if s.get("reason") == "BlockedByCapacity"]
            res["autoscaler"] = {"steps": steps, "scale_ups": len(scale_ups), "blocked_by_capacity": bool(blocked),
                                 "final_status": final, "replicas": state["replicas"] // DECODE_PODS,
                                 "bound_replicas": state["bound"],
                                 "blocked_message": blocked[-1].get("message") or final.get("message") if blocked
                                 else None}
        finally:
            if watch is not None:
                watch.close()
            if "clique-scheduler" in cp.procs:
                cp.stop_component("clique-scheduler")
            for fut, stop in ((scaler_f, stop_autoscaler), (ext_f, stop_extender)):
                if fut is not None:
                    try:
                        stop(fut.result()[0])
                    except Exception:  # noqa: BLE001 - it never started; start_service killed it
                        pass
            api.close()
    res["seconds"] = round(time.monotonic() - t_start, 1)
    say(f"[demo] real control plane part done in {res['seconds']:.0f}s")
    return res, _report(res, tree, rows, compare)


def _report(res: dict, tree: str, rows: list[str], compare: str) -> str:
    a = res["autoscaler"]
    steps = "\n".join(f"{s['t']:6.1f}s  {s['text']}" for s in a["steps"])
    return (
        f"## Cluster on the real control plane ({res['nodes']} KWOK nodes, up in {res['startup_s']}s)\n\n"
        f"![topology](topology.png)\n\n```\n{tree}\n```\n\n"
        "## One TP32 replica (4 pods x 8 GPUs): stock kube-scheduler vs clique-scheduler\n\n"
        "The same cluster (6 H100 hosts partly used) for both. The stock kube-scheduler places a Deployment pod by "
        "pod; clique-scheduler (a second kube-scheduler profile calling Clique's extender) places a StatefulSet "
        "whose ordinals form gangs (`clique.dev/gang-size: 4`, `clique.dev/topology-required: clique.dev/leaf`). "
        "Bound = seconds after the `/scale` patch, as the API server showed it.\n\n"
        "```\n" + "\n".join(rows) + "\n```\n\n" + compare.replace("\n", "\n\n") + "\n\n"
        "## A gang that cannot fit waits whole\n\n"
        f"A third TP32 replica, when no leaf has 4 free hosts: {res['waiting']['bound']} of 4 pods bound. "
        "The extender's `GangUnschedulable` Event, read from the API server:\n\n"
        f"```\n{res['waiting']['event']}\n```\n\n"
        "## The autoscaler daemon on the real control plane\n\n"
        f"StatefulSet `{DECODE}`: replicas are gangs of {DECODE_PODS} pods x {DECODE_GPUS} GPUs inside one NVLink "
        f"domain (2 fit in each of the 2). The daemon scrapes the queue depth from a synthetic exporter (target "
        f"{QUEUE_TARGET} per replica, evaluated every {INTERVAL_S}s) and asks the placement engine how many more "
        "gangs fit before it patches `/scale`. Its Events on the StatefulSet and its status annotation on the "
        "policy ConfigMap, as they appeared:\n\n"
        f"```\n{steps}\n```\n\n"
        f"{a['scale_ups']} scale-up(s); it stopped at {a['replicas']} replicas and reported BlockedByCapacity.\n")
