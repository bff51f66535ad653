"""`clique bench e2e`: pods/s bound on KWOK nodes by the real kube-scheduler, three ways, in one run.
Side effects: starts a local control plane (with the workload-aware alpha gates on), KWOK nodes, our extender.

    stock          the default kube-scheduler, no extender; the gangs' pods are plain pods
    clique         the second kube-scheduler (profile clique-scheduler) calling Clique's extender; the namespace
                   opted in to the shipped routing policy (a MutatingAdmissionPolicy, manifests/routing/), so
                   gangs are gated, planned once complete and pinned (pinning.py)
    clique-webhook the same through the extender's routing webhook instead (manifests/scheduler/webhook.yaml),
                   selecting this one namespace by name; the webhook pins each gang at creation (pinning.py,
                   `created`: planned at its first member, every member created pinned, no gate, no release
                   patch)
    clique-template  no admission at all: the pods carry the gate clique.dev/placement from their template
    clique-filter  no webhook and no gate: every pod goes through the per-pod filter path
    kube-workload  the default kube-scheduler with Kubernetes' own gang + topology scheduling: a PodGroup per
                   gang (scheduling.k8s.io/v1beta1, gang minCount, topology key nvidia.com/gpu.clique);
                   feature gates GenericWorkload and TopologyAwareWorkloadScheduling
    kueue-tas      the real Kueue (v0.17.0, simulations/controlplane/kueue.py) with topology-aware scheduling, then
                   the default kube-scheduler: each gang a Kueue plain pod group (kueue.x-k8s.io/pod-group-name,
                   pod-group-total-count, queue-name) with kueue.x-k8s.io/podset-required-topology
                   nvidia.com/gpu.clique; a ClusterQueue with quota for every GPU of the cluster. Not in the default
                   --modes (it builds and starts Kueue); ask for it with --modes ...,kueue-tas

Workload per run: gangs of 4 pods x 8 GPUs filling half the cluster, NVLink domains of 16 hosts. Each
scheduler gets the same workload in its own namespace, one after another; the cluster is emptied between.
`--rounds N` runs the phases N times, every other round in the reverse order (ABBA...): on this machine a phase
that runs second binds faster than the same phase run first (1,000 nodes: stock 85 pods/s first, 93 second), so
one order flatters whichever scheduler comes last. The summary gives each Clique mode's share of stock's pods/s
per round (same round, so the same machine load) and their median.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from simulations.controlplane.webhook import OPT_IN  # the namespace label the shipped policy and webhook select

NVL = "nvidia.com/gpu.clique"
GANG = 4
DOMAIN_HOSTS = 16
MODES = ("stock", "clique", "clique-webhook", "clique-template", "clique-filter", "kube-workload")
WEBHOOK_NS = "bench-clique-webhook"
ALL_MODES = (*MODES, "kueue-tas")
KUEUE_QUEUE = "tas"  # the LocalQueue of the kueue-tas namespace


def _pod(name: str, gang: str, scheduler: str, mode: str) -> dict:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"bench-gang": gang}},
           "spec": {"schedulerName": scheduler, "automountServiceAccountToken": False,
                    "containers": [{"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}
    if mode.startswith("clique"):
        pod["metadata"]["annotations"] = {"clique.dev/gang": gang, "clique.dev/gang-size": str(GANG),
                                          "clique.dev/topology-required": "nvlink"}
        if mode == "clique-template":
            pod["spec"]["schedulingGates"] = [{"name": "clique.dev/placement"}]  # scheduler/extender/pinning.py
    elif mode == "kube-workload":
        pod["spec"]["schedulingGroup"] = {"podGroupName": gang}
    elif mode == "kueue-tas":
        from simulations.controlplane.kueue import pod_group_meta

        labels, annotations = pod_group_meta(gang, GANG, KUEUE_QUEUE, required=NVL)
        pod["metadata"]["labels"].update(labels)
        pod["metadata"]["annotations"] = annotations
    return pod


def run(nodes: int, timeout_s: float, say=print, modes: tuple[str, ...] = MODES, latency_gangs: int = 20,
        rounds: int = 1) -> list[dict]:
    from kubernetes import client

    from simulations.controlplane import ControlPlane, ControlPlaneOptions
    from simulations.controlplane.cluster import node_lease_for
    from simulations.controlplane.kwok_nodes import create_nodes
    from simulations.controlplane.pki import create_serving_certs
    from simulations.controlplane.processes import free_port
    from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender
    from topology.spec import parse_cluster_spec

    opts = ControlPlaneOptions(feature_gates={"GenericWorkload": True, "TopologyAwareWorkloadScheduling": True},
                               runtime_config={"scheduling.k8s.io/v1beta1": True}, kueue="kueue-tas" in modes,
                               node_lease_s=node_lease_for(nodes))
    rows = []
    with ControlPlane(opts) as cp:
        api = cp.api_client()
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        spec = parse_cluster_spec({"name": "e2e", "pools": [{"name": "e2e", "hosts": nodes, "gpus": 8}],
                                   "levels": [{"name": "nvlink", "label": NVL, "hostsPerDomain": DOMAIN_HOSTS,
                                               "valueFormat": "e2e.{index}"}]})
        t = time.perf_counter()
        create_nodes(api, spec.hosts(), workers=16, wait_ready_s=300)
        domain = {h.name: h.labels[NVL] for h in spec.hosts()}
        say(f"[bench e2e] {nodes} KWOK nodes Ready in {time.perf_counter() - t:.1f}s (node leases of "
            f"{opts.node_lease_s} s)")
        webhook_port = free_port()
        ca = create_serving_certs(cp.workdir / "webhook-tls")
        ext, port = start_extender(cp.kubeconfig, cp.workdir / "extender.log", preset="gb200-nvl72",
                                   webhook_port=webhook_port, webhook_cert_dir=cp.workdir / "webhook-tls")
        try:
            register_routing(cp, api, webhook_port, ca)
            cp.start_scheduler(clique_scheduler_config(port), name="clique-scheduler")
            probe = Probe(cp, api, ext.pid, port)
            gangs = max(1, nodes // (2 * GANG))
            for n, mode in phase_order(modes, rounds):
                scheduler = "clique-scheduler" if mode.startswith("clique") else "default-scheduler"
                if rounds > 1:
                    say(f"[bench e2e] round {n} of {rounds}: {mode}")
                row = _phase(cp, core, custom, probe, mode, scheduler, gangs, nodes, domain, timeout_s,
                             latency_gangs, say, first=(n == 1))
                rows.append({**row, "round": n})
        finally:
            stop_extender(ext)
            api.close()
    return rows


def phase_order(modes: tuple[str, ...], rounds: int) -> list[tuple[int, str]]:
    """(round, mode) in the order they run: every other round reversed, so each mode runs as often early as late."""
    return [(r + 1, m) for r in range(rounds) for m in (modes if r % 2 == 0 else modes[::-1])]


def register_routing(cp, api, port: int, ca: bytes, timeout_s: float = 60) -> None:
    """The shipped routing policy and binding, and the shipped MutatingWebhookConfiguration calling the extender's
    webhook on 127.0.0.1 with its namespaceSelector narrowed to WEBHOOK_NS (which does not carry the opt-in label),
    so each clique mode is routed one way only; waits until the API server applies both (a dry-run pod comes out
    gated). The control plane goes away with the benchmark, these objects with it."""
    from kubernetes import client

    from simulations.controlplane.webhook import routing_objects, webhook_configuration

    admission = client.AdmissionregistrationV1Api(api)
    policy, binding = routing_objects()
    admission.create_mutating_admission_policy(policy)
    admission.create_mutating_admission_policy_binding(binding)
    hook = webhook_configuration(port, ca)
    hook["webhooks"][0]["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": WEBHOOK_NS}}
    admission.create_mutating_webhook_configuration(hook)
    core = client.CoreV1Api(api)
    for ns in ("bench-routing-probe", WEBHOOK_NS):
        cp.create_namespace(ns)
    core.patch_namespace("bench-routing-probe", {"metadata": {"labels": OPT_IN}})
    probe = _pod("probe", "probe", "clique-scheduler", "clique")
    for ns, how in (("bench-routing-probe", "routing policy"), (WEBHOOK_NS, f"admission webhook on 127.0.0.1:{port}")):
        end = time.monotonic() + timeout_s
        while True:
            try:
                if core.create_namespaced_pod(ns, probe, dry_run="All").spec.scheduling_gates:
                    break
            except Exception:  # noqa: BLE001 - the webhook's port may not listen yet
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"the {how} did not take effect in {timeout_s}s")
            time.sleep(0.5)


class Probe:
    """What to sample around a phase: each kube-scheduler's and the extender's /metrics, every process's CPU."""

    def __init__(self, cp, api, extender_pid: int, extender_port: int) -> None:
        self.api = api
        self.urls = {name: f"https://127.0.0.1:{cp.ports[name]}/metrics" for name in ("kube-scheduler", "clique-scheduler")}
        self.urls["extender"] = f"http://127.0.0.1:{extender_port}/metrics"
        self.pids = {name: proc.pid for name, proc in cp.procs.items()}
        self.pids.update({"extender": extender_pid, "bench": os.getpid()})

    def sample(self):
        from simulations.bench_breakdown import sample

        def apiserver() -> str:
            method, url, headers, body, _ = self.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
            resp = self.api.call_api(method, url, headers, body)
            resp.read()
            return resp.data.decode()

        return sample(self.urls, self.pids, {"apiserver": apiserver})


class BindWatch:
    """When each pod of a namespace was first seen with a node: one raw watch (cheaper for the API server than
    listing thousands of pods every few hundred milliseconds, and 10 ms resolution)."""

    def __init__(self, core, ns: str) -> None:
        self.core, self.ns = core, ns
        self.bound: dict[str, tuple[str, float]] = {}  # pod -> (node, perf_counter when seen bound)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rv = self.core.list_namespaced_pod(self.ns).metadata.resource_version
        while not self._stop.is_set():
            try:
                resp = self.core.list_namespaced_pod(self.ns, watch=True, resource_version=rv, timeout_seconds=30,
                                                     allow_watch_bookmarks=True, _preload_content=False)
                for line in resp:
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    name, node = (obj.get("metadata") or {}).get("name"), (obj.get("spec") or {}).get("nodeName")
                    if node and name and name not in self.bound and event.get("type") in ("ADDED", "MODIFIED"):
                        self.bound[name] = (node, time.perf_counter())
                    if self._stop.is_set():
                        break
            except Exception:  # noqa: BLE001 - a broken watch is restarted from the last version seen
                if self._stop.is_set():
                    return
                time.sleep(0.2)
                rv = self.core.list_namespaced_pod(self.ns).metadata.resource_version

    def wait(self, names: set[str], timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if names <= self.bound.keys():
                return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        self._stop.set()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 3)


def _phase(cp, core, custom, probe: Probe, mode: str, scheduler: str, gangs: int, nodes: int, domain: dict,
           timeout_s: float, latency_gangs: int, say, first: bool = True) -> dict:
    """One scheduler's burst and idle gangs; `first`: its first round (the namespace and its objects are made)."""
    from simulations.bench_breakdown import breakdown

    ns = f"bench-{mode}"
    if ns != WEBHOOK_NS and first:  # made by register_routing
        cp.create_namespace(ns)
    if mode == "clique" and first:
        core.patch_namespace(ns, {"metadata": {"labels": OPT_IN}})
    if mode == "kueue-tas" and first:
        from simulations.controlplane.kueue import TasQueues, setup_tas_queues

        setup_tas_queues(core.api_client, TasQueues(ns, [NVL], {"nvidia.com/gpu": 8 * nodes, "cpu": 1000 * nodes,
                                                                "memory": f"{nodes}Ti"},
                                                     node_labels={"clique.dev/pool": "e2e"}, local_queue=KUEUE_QUEUE))
    if mode == "kube-workload" and first:
        for g in range(gangs + latency_gangs):
            custom.create_namespaced_custom_object("scheduling.k8s.io", "v1beta1", ns, "podgroups", {
                "apiVersion": "scheduling.k8s.io/v1beta1", "kind": "PodGroup", "metadata": {"name": f"g{g:04d}"},
                "spec": {"schedulingPolicy": {"gang": {"minCount": GANG}},
                         "schedulingConstraints": {"topology": [{"key": NVL}]}}})
    watch = BindWatch(core, ns)
    pods = [_pod(f"g{g:04d}-{i}", f"g{g:04d}", scheduler, mode) for g in range(gangs) for i in range(GANG)]
    created: dict[str, float] = {}

    def create(p: dict) -> None:
        created.setdefault(p["metadata"]["labels"]["bench-gang"], time.perf_counter())
        core.create_namespaced_pod(ns, p)

    before = probe.sample()
    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, pods))
    total = len(pods)
    watch.wait({p["metadata"]["name"] for p in pods}, max(0.0, timeout_s - (time.perf_counter() - started)))
    placed = {name: node for name, (node, _) in watch.bound.items()}
    last_bound = max((t for _, t in watch.bound.values()), default=started)
    after = probe.sample()
    elapsed = max(1e-6, last_bound - started)
    by_gang: dict[str, list[str]] = {}
    bound_at: dict[str, list[float]] = {}
    for name, (node, at) in watch.bound.items():
        by_gang.setdefault(name.rsplit("-", 1)[0], []).append(node)
        bound_at.setdefault(name.rsplit("-", 1)[0], []).append(at)
    whole = [hosts for hosts in by_gang.values() if len(hosts) == GANG]
    burst = [max(bound_at[g]) - created[g] for g, hosts in by_gang.items() if len(hosts) == GANG]
    row = {"scheduler": mode, "nodes": nodes, "pods": total, "pods_bound": len(placed),
           "pods_per_s": round(len(placed) / elapsed, 1),
           "partial_gangs": sum(1 for hosts in by_gang.values() if 0 < len(hosts) < GANG),
           "one_domain_share": round(sum(len({domain[h] for h in hosts}) == 1 for hosts in whole) / max(1, len(whole)), 3),
           "burst_gang_bound_s": {"p50": _percentile(burst, 0.5), "p99": _percentile(burst, 0.99)}}
    ours = mode.startswith("clique")
    row["breakdown"] = breakdown(before, after, "clique-scheduler" if ours else "kube-scheduler",
                                 "clique-scheduler" if ours else "default-scheduler", len(placed))
    say(f"[bench e2e] {mode}: {len(placed)}/{total} pods bound in {elapsed:.1f}s ({row['pods_per_s']} pods/s), "
        f"partial gangs {row['partial_gangs']}, one-domain share {row['one_domain_share']:.0%}")
    _empty(core, ns, total, say)
    # Latency on an idle cluster: one gang at a time, from its first pod's creation to its last pod bound.
    idle = []
    for g in range(gangs, gangs + latency_gangs):
        members = [_pod(f"g{g:04d}-{i}", f"g{g:04d}", scheduler, mode) for i in range(GANG)]
        t0 = time.perf_counter()
        for p in members:
            core.create_namespaced_pod(ns, p)
        if not watch.wait({p["metadata"]["name"] for p in members}, 30):
            break
        idle.append(max(watch.bound[p["metadata"]["name"]][1] for p in members) - t0)
    row["idle_gang_bound_s"] = {"gangs": len(idle), "p50": _percentile(idle, 0.5), "p99": _percentile(idle, 0.99)}
    if idle:
        say(f"[bench e2e] {mode}: idle cluster, gang created -> all bound p50 {row['idle_gang_bound_s']['p50']}s "
            f"p99 {row['idle_gang_bound_s']['p99']}s over {len(idle)} gangs")
    watch.stop()
    _empty(core, ns, latency_gangs * GANG, say)
    return row


DELETE_CHUNK = 250  # pods per deletecollection: one call must end inside the API server's 60 s request timeout


def _empty(core, ns: str, total: int, say) -> None:
    """Delete the phase's pods, DELETE_CHUNK at a time, and wait until they are gone. One deletecollection of
    thousands of pods outlives kube-apiserver's request timeout, and then the deletion stops with the request
    (seen at 5,000 nodes: ~700 of 2,500 pods deleted in 60 s, "context deadline exceeded"), so it is never asked
    for all at once: a deletecollection with `limit` deletes one page and returns (k8s.io/apiserver v0.37.2
    pkg/registry/generic/registry/store.go, DeleteCollection); a chunk that still times out is asked for again."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    end = time.monotonic() + 600
    while time.monotonic() < end:
        try:
            core.delete_collection_namespaced_pod(ns, grace_period_seconds=0, limit=DELETE_CHUNK,
                                                  _request_timeout=(10, 70))
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            if isinstance(exc, ApiException) and exc.status != 504:
                raise
            say(f"[bench e2e] deleting pods of {ns}: a chunk of {DELETE_CHUNK} outlived the request timeout "
                f"({type(exc).__name__}); asking again")
        if not core.list_namespaced_pod(ns, limit=1).items:
            return
    raise RuntimeError(f"the {total} pods of {ns} were not all deleted within 600 s")


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("e2e", help="pods/s on KWOK with the real kube-scheduler: stock vs Clique vs kube's own gangs")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=300, help="seconds per scheduler to bind everything")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(ALL_MODES)}")
    p.add_argument("--latency-gangs", type=int, default=20,
                   help="gangs submitted one at a time on the idle cluster after each burst, for creation -> bound")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the phases this many times, every other round in reverse order; the summary gives each "
                        "Clique mode's share of stock's pods/s per round and the median")
    p.set_defaults(func=cmd_bench_e2e)


def summary(rows: list[dict]) -> dict:
    """Per mode: its pods/s per round and their median; per Clique mode, its share of stock's pods/s in each round
    that ran both (the same round: the same control plane and machine load) and the median share."""
    import statistics

    out: dict = {}
    rounds = sorted({r.get("round", 1) for r in rows})
    for mode in dict.fromkeys(r["scheduler"] for r in rows):
        rates = [r["pods_per_s"] for r in rows if r["scheduler"] == mode]
        out[mode] = {"pods_per_s": rates, "pods_per_s_median": round(statistics.median(rates), 1)}
        if mode.startswith("clique"):
            shares = []
            for n in rounds:
                mine = [r["pods_per_s"] for r in rows if r["scheduler"] == mode and r.get("round", 1) == n]
                stock = [r["pods_per_s"] for r in rows if r["scheduler"] == "stock" and r.get("round", 1) == n]
                if mine and stock and stock[0] > 0:
                    shares.append(round(mine[0] / stock[0], 3))
            if shares:
                out[mode]["share_of_stock"] = shares
                out[mode]["share_of_stock_median"] = round(statistics.median(shares), 3)
    return out


def cmd_bench_e2e(args: argparse.Namespace) -> int:
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = [m for m in modes if m not in ALL_MODES]
    if unknown or not modes:
        print(f"bench e2e: unknown --modes {unknown or args.modes!r}; choose from {', '.join(ALL_MODES)}",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    if args.rounds < 1:
        print(f"bench e2e: --rounds {args.rounds}: at least 1", file=sys.stderr)
        return 2
    rows = run(args.nodes, args.timeout, say=lambda m: print(m, file=sys.stderr, flush=True), modes=modes,
               latency_gangs=args.latency_gangs, rounds=args.rounds)
    cols = ["round", "scheduler", "nodes", "pods", "pods_bound", "pods_per_s", "partial_gangs", "one_domain_share"]
    print(" ".join(f"{c:>16}" for c in cols) + f" {'idle p50/p99 s':>16}")
    for r in rows:
        idle = r["idle_gang_bound_s"]
        print(" ".join(f"{r[c]:>16}" for c in cols) + f" {str(idle['p50']) + '/' + str(idle['p99']):>16}")
    for r in rows:
        b = r["breakdown"]
        print(f"# {r['scheduler']}: attempts/pod {b['attempts_per_pod']}, cycle {b['cycle_ms_per_pod']} ms/pod "
              f"(busy {b['cycle_busy_share']:.0%}), extension points ms/pod {b['extension_point_ms_per_pod']}")
        print(f"#   CPU ms/pod {b['cpu_ms_per_pod']} (all cores busy {b['cpu_busy_share']:.0%})"
              + (f"; extender ms/pod {b['extender_ms_per_pod']}, calls/pod {b['extender_calls_per_pod']}, "
                 f"filter scope/pod {b['filter_scope_per_pod']}" if "extender_ms_per_pod" in b else ""))
        print(f"#   API writes/pod {b.get('api_writes_per_pod')}, reads/pod {b.get('api_reads_per_pod')}")
        print(f"#   kube-apiserver ms/pod {b.get('api_ms_per_pod')}, admission webhooks ms/pod {b.get('webhook_ms_per_pod')}")
    summed = summary(rows)
    for mode, s in summed.items():
        if "share_of_stock" in s:
            print(f"# {mode}: {', '.join(f'{x:.0%}' for x in s['share_of_stock'])} of the stock scheduler's pods/s "
                  f"(round by round; median {s['share_of_stock_median']:.0%})")
    print(f"# {time.perf_counter() - started:.0f}s")
    keys = ("round", "scheduler", "nodes", "pods", "pods_per_s", "partial_gangs", "one_domain_share",
            "burst_gang_bound_s", "idle_gang_bound_s", "breakdown")
    print(json.dumps({"benchmark": "e2e", "results": [{k: r[k] for k in keys} for r in rows], "summary": summed}))
    return 0
