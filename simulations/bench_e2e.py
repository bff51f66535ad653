"""`clique bench e2e`: pods/s bound on KWOK nodes by the real kube-scheduler, three ways, in one run.
Side effects: starts a local control plane (with the workload-aware alpha gates on), KWOK nodes, our extender.

    stock          the default kube-scheduler, no extender; the gangs' pods are plain pods
    clique         the second kube-scheduler (profile clique-scheduler) calling Clique's extender
    kube-workload  the default kube-scheduler with Kubernetes' own gang + topology scheduling: a PodGroup per
                   gang (scheduling.k8s.io/v1beta1, gang minCount, topology key nvidia.com/gpu.clique);
                   feature gates GenericWorkload and TopologyAwareWorkloadScheduling

Workload per run: gangs of 4 pods x 8 GPUs filling half the cluster, NVLink domains of 16 hosts. Each
scheduler gets the same workload in its own namespace, one after another; the cluster is emptied between.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

NVL = "nvidia.com/gpu.clique"
GANG = 4
DOMAIN_HOSTS = 16


def _pod(name: str, gang: str, scheduler: str, mode: str) -> dict:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"bench-gang": gang}},
           "spec": {"schedulerName": scheduler, "automountServiceAccountToken": False,
                    "containers": [{"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}
    if mode == "clique":
        pod["metadata"]["annotations"] = {"clique.dev/gang": gang, "clique.dev/gang-size": str(GANG),
                                          "clique.dev/topology-required": "nvlink"}
    elif mode == "kube-workload":
        pod["spec"]["schedulingGroup"] = {"podGroupName": gang}
    return pod


def run(nodes: int, timeout_s: float, say=print) -> list[dict]:
    from kubernetes import client

    from simulations.controlplane import ControlPlane, ControlPlaneOptions
    from simulations.controlplane.kwok_nodes import create_nodes
    from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender
    from topology.spec import parse_cluster_spec

    opts = ControlPlaneOptions(feature_gates={"GenericWorkload": True, "TopologyAwareWorkloadScheduling": True},
                               runtime_config={"scheduling.k8s.io/v1beta1": True})
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
        say(f"[bench e2e] {nodes} KWOK nodes Ready in {time.perf_counter() - t:.1f}s")
        ext, port = start_extender(cp.kubeconfig, cp.workdir / "extender.log", preset="gb200-nvl72")
        try:
            cp.start_scheduler(clique_scheduler_config(port), name="clique-scheduler")
            gangs = max(1, nodes // (2 * GANG))
            for mode, scheduler in (("stock", "default-scheduler"), ("clique", "clique-scheduler"),
                                    ("kube-workload", "default-scheduler")):
                rows.append(_phase(cp, core, custom, mode, scheduler, gangs, nodes, domain, timeout_s, say))
        finally:
            stop_extender(ext)
            api.close()
    return rows


def _phase(cp, core, custom, mode: str, scheduler: str, gangs: int, nodes: int, domain: dict, timeout_s: float, say) -> dict:
    ns = f"bench-{mode}"
    cp.create_namespace(ns)
    if mode == "kube-workload":
        for g in range(gangs):
            custom.create_namespaced_custom_object("scheduling.k8s.io", "v1beta1", ns, "podgroups", {
                "apiVersion": "scheduling.k8s.io/v1beta1", "kind": "PodGroup", "metadata": {"name": f"g{g:04d}"},
                "spec": {"schedulingPolicy": {"gang": {"minCount": GANG}},
                         "schedulingConstraints": {"topology": [{"key": NVL}]}}})
    pods = [_pod(f"g{g:04d}-{i}", f"g{g:04d}", scheduler, mode) for g in range(gangs) for i in range(GANG)]
    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: core.create_namespaced_pod(ns, p), pods))
    total = len(pods)
    end = time.monotonic() + timeout_s
    last_bound, placed = started, {}
    while time.monotonic() < end:
        items = core.list_namespaced_pod(ns, resource_version="0").items
        now_placed = {p.metadata.name: p.spec.node_name for p in items if p.spec.node_name}
        if len(now_placed) > len(placed):
            last_bound = time.perf_counter()
        placed = now_placed
        if len(placed) == total:
            break
        time.sleep(0.2)
    elapsed = max(1e-6, last_bound - started)
    by_gang: dict[str, list[str]] = {}
    for name, node in placed.items():
        by_gang.setdefault(name.rsplit("-", 1)[0], []).append(node)
    whole = [hosts for hosts in by_gang.values() if len(hosts) == GANG]
    row = {"scheduler": mode, "nodes": nodes, "pods": total, "pods_bound": len(placed),
           "pods_per_s": round(len(placed) / elapsed, 1),
           "partial_gangs": sum(1 for hosts in by_gang.values() if 0 < len(hosts) < GANG),
           "one_domain_share": round(sum(len({domain[h] for h in hosts}) == 1 for hosts in whole) / max(1, len(whole)), 3)}
    say(f"[bench e2e] {mode}: {len(placed)}/{total} pods bound in {elapsed:.1f}s ({row['pods_per_s']} pods/s), "
        f"partial gangs {row['partial_gangs']}, one-domain share {row['one_domain_share']:.0%}")
    from kubernetes.client.exceptions import ApiException

    try:
        core.delete_collection_namespaced_pod(ns, grace_period_seconds=0)
    except ApiException as exc:  # thousands of pods: the request may time out (504) while the deletion goes on
        if exc.status != 504:
            raise
        say(f"[bench e2e] deleting {total} pods took longer than the API server's request timeout; waiting")
    end = time.monotonic() + 300
    while core.list_namespaced_pod(ns, resource_version="0").items and time.monotonic() < end:
        time.sleep(0.3)
    return row


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("e2e", help="pods/s on KWOK with the real kube-scheduler: stock vs Clique vs kube's own gangs")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=300, help="seconds per scheduler to bind everything")
    p.set_defaults(func=cmd_bench_e2e)


def cmd_bench_e2e(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    rows = run(args.nodes, args.timeout, say=lambda m: print(m, file=sys.stderr, flush=True))
    cols = ["scheduler", "nodes", "pods", "pods_bound", "pods_per_s", "partial_gangs", "one_domain_share"]
    print(" ".join(f"{c:>16}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]:>16}" for c in cols))
    stock = next(r for r in rows if r["scheduler"] == "stock")["pods_per_s"]
    ours = next(r for r in rows if r["scheduler"] == "clique")["pods_per_s"]
    print(f"# {time.perf_counter() - started:.0f}s; Clique at {ours / max(stock, 1e-9):.0%} of the stock scheduler's pods/s")
    print(json.dumps({"benchmark": "e2e", "results": [{k: r[k] for k in ("scheduler", "nodes", "pods", "pods_per_s",
                                                                         "partial_gangs", "one_domain_share")}
                                                      for r in rows]}))
    return 0
