"""`clique bench extender`: latency and throughput of the extender's verbs at 1,000 and 5,000 nodes.
Side effects: starts a local API server (no kubelet, no kwok, no controllers), creates Ready nodes and pending
gang pods, runs the extender as its own process, prints a table and, last, one JSON line.

The client calls the verbs as kube-scheduler does (nodeCacheCapable: every node name in each request, one
keep-alive connection): for each gang, filter then prioritize for every member, then all members' binds at
once (bind waits for the whole gang, so its latency includes the siblings). Bindings are real API writes.
`cpu_ms`: CPU time (user + system) the extender process used per request while the requests of that verb ran
(/proc/PID/stat, in clock ticks of 10 ms, summed over all of them): less at the mercy of other processes on a
shared machine than the latency.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

GANG_PODS = 4


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[float, dict | list]:
    t = time.perf_counter()
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read())
    return (time.perf_counter() - t) * 1000, data


def _buckets(port: int, verb: str) -> dict[float, float]:
    """The extender's own latency histogram for one verb (clique_extender_request_seconds, cumulative counts by
    upper bound in seconds), read from its /metrics: the time inside the extender, without the client's or the
    machine's share of what the client measures."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("clique_extender_request_seconds_bucket{") and f'verb="{verb}"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def server_side(before: dict[float, float], after: dict[float, float]) -> dict:
    """From two readings of a cumulative histogram: the requests between them, the bucket bound (ms) that holds 99%
    of them (a bound, not an exact p99: the histogram's resolution), and the share over 5 ms."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return {"requests": 0, "p99_le_ms": None, "over_5ms": None}
    p99 = min(le for le, n in delta.items() if n >= 0.99 * total)
    return {"requests": int(total), "p99_le_ms": None if p99 == float("inf") else round(p99 * 1000, 3),
            "over_5ms": round(1 - delta.get(0.005, 0.0) / total, 4)}


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far: fields 14 and 15 of /proc/PID/stat (proc(5))."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()  # the command name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gang_pod(gang: str, i: int, level: str, gated: bool = False) -> dict:
    """Member i of a gang of GANG_PODS 8-GPU pods required inside one `level`; `gated`: under the gate that the
    extender's pinning loop (scheduler/extender/pinning.py) removes."""
    spec: dict = {"schedulerName": "clique-scheduler", "automountServiceAccountToken": False,
                  "containers": [{"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}
    if gated:
        spec["schedulingGates"] = [{"name": "clique.dev/placement"}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{gang}-{i}", "namespace": "default",
                         "annotations": {"clique.dev/gang": gang, "clique.dev/gang-size": str(GANG_PODS),
                                         "clique.dev/topology-required": level}},
            "spec": spec}


def run_size(nodes: int, gangs: int, say=print) -> list[dict]:
    from kubernetes import client

    from simulations.controlplane import ControlPlane, ControlPlaneOptions
    from simulations.controlplane.kwok_nodes import create_nodes
    from scheduler.extender.process import start_extender, stop_extender
    from topology.spec import parse_cluster_spec

    spec = parse_cluster_spec({
        "name": "bx", "pools": [{"name": "bx", "hosts": nodes, "gpus": 8}],
        "levels": [{"name": "zone", "label": "topology.kubernetes.io/zone", "hostsPerDomain": 128 * max(1, nodes // 256)},
                   {"name": "spine", "label": "clique.dev/spine", "hostsPerDomain": 128},
                   {"name": "leaf", "label": "clique.dev/leaf", "hostsPerDomain": 16}]})
    opts = ControlPlaneOptions(start_controller_manager=False, start_scheduler=False, start_kwok=False)
    with ControlPlane(opts) as cp:
        api = cp.api_client()
        core = client.CoreV1Api(api)
        t = time.perf_counter()
        names = create_nodes(api, spec.hosts(), workers=16, ready=True)
        say(f"[bench extender] {nodes} Ready nodes created in {time.perf_counter() - t:.1f}s")
        pods = []
        for g in range(gangs + 1):  # the last gang is the untimed warm-up
            for i in range(GANG_PODS):
                pod = _gang_pod(f"g{g:03d}", i, "spine")
                pods.append(api.sanitize_for_serialization(core.create_namespaced_pod("default", pod)))
        ext, port = start_extender(cp.kubeconfig, cp.workdir / "extender.log", preset="generic")
        try:
            time.sleep(0.5)  # let the pod watch deliver the gang pods created just before the list
            conn = http.client.HTTPConnection("127.0.0.1", port)
            bind_conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(GANG_PODS)]
            times: dict[str, list[float]] = {"filter": [], "prioritize": [], "bind": []}
            spent = {"filter": 0.0, "prioritize": 0.0, "bind": 0.0}
            cpu = {"filter": 0.0, "prioritize": 0.0, "bind": 0.0}  # the extender's CPU seconds per verb

            def post(verb: str, path: str, body: bytes) -> tuple[float, dict | list]:
                c0 = _cpu_s(ext.pid)
                ms, res = _post(conn, path, body)
                cpu[verb] += _cpu_s(ext.pid) - c0
                times[verb].append(ms)
                spent[verb] += ms
                return ms, res

            errors = 0
            # The client is Python, kube-scheduler is Go: a collection in this process while a request is timed
            # (it holds 15,000 node names and every pod's dict) would count a pause of the client's own as the
            # extender's latency. Collected once now, then not until the timed requests are done.
            gc.collect()
            gc.freeze()
            gc.disable()
            # Warm-up gang, untimed: the first plan after a node-set change builds the topology model.
            warm = time.perf_counter()
            _post(conn, "/filter", json.dumps({"Pod": pods[-1], "NodeNames": names, "Nodes": None}).encode())
            say(f"[bench extender] {nodes} nodes: first plan (topology model built) {1000 * (time.perf_counter() - warm):.0f} ms")
            started = time.perf_counter()
            for g in range(gangs):
                members = pods[g * GANG_PODS:(g + 1) * GANG_PODS]
                hosts = []
                for pod in members:
                    body = json.dumps({"Pod": pod, "NodeNames": names, "Nodes": None}).encode()
                    ms, res = post("filter", "/filter", body)
                    hosts.append((res.get("NodeNames") or [None])[0])
                    # kube-scheduler skips prioritize when one node passes; measured anyway on all nodes
                    post("prioritize", "/prioritize", body)
                if None in hosts:
                    errors += 1
                    if errors == 1:
                        say(f"[bench extender] gang g{g:03d} not placed: {next(iter({**(res.get('FailedNodes') or {}), **(res.get('FailedAndUnresolvableNodes') or {})}.values()), res)}")
                    continue
                t0, c0 = time.perf_counter(), _cpu_s(ext.pid)
                with ThreadPoolExecutor(GANG_PODS) as pool:
                    results = list(pool.map(lambda a: _post(bind_conns[a[0]], "/bind", json.dumps({
                        "PodName": a[1]["metadata"]["name"], "PodNamespace": "default",
                        "PodUID": a[1]["metadata"]["uid"], "Node": a[2]}).encode()),
                        [(i, p, h) for i, (p, h) in enumerate(zip(members, hosts))]))
                spent["bind"] += (time.perf_counter() - t0) * 1000
                cpu["bind"] += _cpu_s(ext.pid) - c0
                for ms, res in results:
                    times["bind"].append(ms)
                    errors += bool(res.get("Error"))
            total = time.perf_counter() - started
            say(f"[bench extender] {nodes} nodes: {gangs} gangs of {GANG_PODS} in {total:.1f}s, {errors} errors")
            # The gated path (scheduler/extender/pinning.py): gangs created under the scheduling gate are planned by
            # the extender's own loop once complete and released pinned; kube-scheduler then sends each member's
            # filter call with only the pinned nodes that pass its own filters. Measured: creation -> released
            # (the loop's planning, for the record), and filter/bind as kube-scheduler would call them.
            times["release"], times["filter-gated"], times["bind-gated"] = [], [], []
            spent["release"] = spent["filter-gated"] = spent["bind-gated"] = 0.0
            cpu["filter-gated"] = cpu["bind-gated"] = 0.0
            inside_before = _buckets(port, "filter")  # only the gated filters from here on
            for g in range(gangs):
                members = []
                t0 = time.perf_counter()
                for i in range(GANG_PODS):
                    pod = _gang_pod(f"z{g:03d}", i, "leaf", gated=True)
                    core.create_namespaced_pod("default", pod)
                    members.append(pod["metadata"]["name"])
                deadline = time.monotonic() + 30
                released: list = []
                while time.monotonic() < deadline:
                    released = [core.read_namespaced_pod(n, "default") for n in members]
                    if all(not p.spec.scheduling_gates for p in released):
                        break
                    time.sleep(0.005)
                else:
                    errors += 1
                    continue
                ms = (time.perf_counter() - t0) * 1000
                times["release"].append(ms)
                spent["release"] += ms
                hosts = []
                for p in released:
                    pins = [f.values[0] for t in p.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution.node_selector_terms
                            for f in (t.match_fields or [])]
                    body = json.dumps({"Pod": api.sanitize_for_serialization(p), "NodeNames": pins, "Nodes": None}).encode()
                    ms, res = post("filter-gated", "/filter", body)
                    hosts.append((res.get("NodeNames") or [None])[0])
                if None in hosts:
                    errors += 1
                    continue
                t0, c0 = time.perf_counter(), _cpu_s(ext.pid)
                with ThreadPoolExecutor(GANG_PODS) as pool:
                    results = list(pool.map(lambda a: _post(bind_conns[a[0]], "/bind", json.dumps({
                        "PodName": a[1].metadata.name, "PodNamespace": "default",
                        "PodUID": a[1].metadata.uid, "Node": a[2]}).encode()),
                        [(i, p, h) for i, (p, h) in enumerate(zip(released, hosts))]))
                spent["bind-gated"] += (time.perf_counter() - t0) * 1000
                cpu["bind-gated"] += _cpu_s(ext.pid) - c0
                for ms, res in results:
                    times["bind-gated"].append(ms)
                    errors += bool(res.get("Error"))
            gc.enable()
            gc.unfreeze()
            inside = server_side(inside_before, _buckets(port, "filter"))
            say(f"[bench extender] {nodes} nodes: {gangs} gated gangs released and bound, {errors} errors so far; "
                f"inside the extender, 99% of their filters took <= {inside['p99_le_ms']} ms, "
                f"{inside['over_5ms']:.1%} over 5 ms")
            bound = sum(1 for p in core.list_namespaced_pod("default").items if p.spec.node_name)
            if bound != 2 * gangs * GANG_PODS - errors * GANG_PODS:
                raise RuntimeError(f"expected every gang bound; the API shows {bound} bound pods")
        finally:
            gc.enable()  # also when a timed step failed
            gc.unfreeze()
            stop_extender(ext)
            api.close()
    rows = []
    for verb, ts in times.items():
        if not ts:
            continue
        s = sorted(ts)
        rows.append({"nodes": nodes, "verb": verb, "requests": len(s), "p50_ms": round(statistics.median(s), 3),
                     "p99_ms": round(s[min(len(s) - 1, int(0.99 * len(s)))], 3),
                     "rps": round(len(s) / (spent[verb] / 1000), 1), "errors": errors,
                     "cpu_ms": round(1000 * cpu[verb] / len(s), 3) if verb in cpu else None,
                     **({"inside_extender": inside} if verb == "filter-gated" else {})})
    return rows


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("extender", help="extender verbs: p50/p99 latency and requests/s at 1,000 and 5,000 nodes")
    p.add_argument("--quick", action="store_true", help="fewer gangs (within 60 s)")
    p.add_argument("--sizes", default="1000,5000")
    p.add_argument("--gangs", type=int, default=None, help="gangs of 4 pods per size (default 50; --quick 12)")
    p.add_argument("--memory", action="store_true",
                   help="instead: RSS of the extender process with --memory-nodes nodes and --memory-pods pods in its "
                        "state, filled by its own list+watch from a replay server (scheduler/extender/bench_memory.py)")
    p.add_argument("--memory-nodes", type=int, default=5000)
    p.add_argument("--memory-pods", type=int, default=50_000)
    p.set_defaults(func=cmd_bench_extender)


def cmd_bench_memory(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from scheduler.extender.bench_memory import iter_rows

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clique-bench-memory-") as tmp:
        empty, full = iter_rows(args.memory_nodes, args.memory_pods, Path(tmp),
                                say=lambda m: print(m, file=sys.stderr, flush=True))
    state = round(full["rss_mib"] - empty["rss_mib"], 1)
    print(f"{'nodes':>8} {'pods':>8} {'RSS MiB':>9} {'peak MiB':>9}")
    for r in (empty, full):
        print(f"{r['nodes']:>8} {r['pods']:>8} {r['rss_mib']:>9} {r['peak_rss_mib']:>9}")
    print(f"# {time.perf_counter() - started:.0f}s; VmRSS of the extender process (/proc/PID/status) after its "
          f"watches applied every event; the state's share: {state} MiB; target <= 300 MB")
    print(json.dumps({"benchmark": "extender-memory", "nodes": full["nodes"], "pods": full["pods"],
                      "rss_mib": full["rss_mib"], "peak_rss_mib": full["peak_rss_mib"],
                      "rss_empty_mib": empty["rss_mib"], "state_mib": state,
                      "rss_mb": round(full["rss_mib"] * 2**20 / 1e6, 1), "target_mb": 300,
                      "served_mib": full["served_mib"]}))
    return 0


def cmd_bench_extender(args: argparse.Namespace) -> int:
    if args.memory:
        return cmd_bench_memory(args)
    gangs = args.gangs or (12 if args.quick else 50)
    rows = []
    started = time.perf_counter()
    for n in (int(x) for x in args.sizes.split(",") if x):
        rows += run_size(n, gangs, say=lambda m: print(m, file=sys.stderr, flush=True))
    cols = ["nodes", "verb", "requests", "p50_ms", "p99_ms", "rps", "errors", "cpu_ms"]
    print(" ".join(f"{c:>10}" for c in cols))
    for r in rows:
        print(" ".join(f"{'-' if r[c] is None else r[c]:>10}" for c in cols))
    print(f"# {time.perf_counter() - started:.1f}s; client-side latency over loopback HTTP, as kube-scheduler sees it; "
          "cpu_ms: the extender's CPU time per request")
    keys = ("nodes", "verb", "p50_ms", "p99_ms", "rps", "cpu_ms", "inside_extender")
    for r in rows:
        if "inside_extender" in r:
            i = r["inside_extender"]
            print(f"# {r['nodes']} nodes, {r['verb']}: inside the extender (its own histogram) 99% took <= "
                  f"{i['p99_le_ms']} ms and {i['over_5ms']:.1%} over 5 ms; the client-side p99 adds the client's "
                  "and the machine's share")
    print(json.dumps({"benchmark": "extender", "results": [{k: r[k] for k in keys if k in r}
                                                           for r in rows]}))
    return 0
