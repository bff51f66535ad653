"""`clique bench autoscaler`: how fast a metric change becomes a /scale patch, and how quiet the autoscaler is
under noisy-but-steady load. Side effects: starts a local control plane, real Prometheus, a synthetic
exporter and the autoscaler daemon as a process.

Two Deployments, one per metric source (Prometheus scraping every 1 s; direct Scrape of the exporter), each
with a queue-depth policy evaluated every `--interval` seconds. Latency trials flip the queue between
a high and a low value and time each flip until the Deployment's replicas change (polled every 50 ms).
Then the queue wanders +-8% around a steady value for `--steady-minutes` and every replica change counts.
Target (issue #5): latency <= interval + 1 s; zero scale events in a 10-minute steady run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _deployment(name: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"nodeSelector": {"clique.dev/bench": "none"},  # stays Pending: no nodes
                                           "automountServiceAccountToken": False,
                                           "containers": [{"name": "w", "image": "x"}]}}}}


def _policy(name: str, source: str, exporter_url: str, interval: float) -> dict:
    body = {"metric": "vllm:num_requests_waiting", "selector": {"deployment": name}}
    if source == "Scrape":
        body.update(source="Scrape", endpoints=[exporter_url])
    doc = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
           "minReplicas": 1, "maxReplicas": 20, "evaluationIntervalSeconds": interval, "capacityAware": False,
           "metrics": [{"type": "QueueDepth", "queueDepth": body,
                        "target": {"type": "AverageValue", "averageValue": 10}}],
           "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}
    import yaml

    return {"metadata": {"name": f"{name}-policy", "labels": {"clique.dev/autoscaling-policy": "true"}},
            "data": {"policy.yaml": yaml.safe_dump(doc)}}


def run(trials: int, interval: float, steady_minutes: float, say=print) -> dict:
    from kubernetes import client

    from autoscaler.process import start_autoscaler, stop_autoscaler
    from simulations.controlplane import ControlPlane, ControlPlaneOptions
    from simulations.controlplane.prometheus import Prometheus
    from simulations.exporter import SyntheticExporter

    sources = {"prometheus": "Prometheus", "scrape": "Scrape"}
    results, steady_events = [], {}
    with tempfile.TemporaryDirectory(prefix="clique-bench-as-") as tmp, SyntheticExporter() as ex, \
            ControlPlane(ControlPlaneOptions(start_scheduler=False, start_kwok=False)) as cp, \
            Prometheus([ex.target]) as prom:
        api = cp.api_client()
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        for name in sources:
            ex.queue(40, deployment=name)
            apps.create_namespaced_deployment("default", _deployment(name))
        prom.wait_for_series("vllm:num_requests_waiting")
        for name, source in sources.items():
            core.create_namespaced_config_map("default", _policy(name, source, ex.url, interval))
        proc, _ = start_autoscaler(cp.kubeconfig, Path(tmp) / "autoscaler.log", prom.url, namespace="default",
                                   extra=["--no-capacity-check", "--no-leader-elect", "--tick", "0.1"])
        try:
            def replicas(name: str) -> int:
                return apps.read_namespaced_deployment_scale(name, "default").spec.replicas

            def settle(name: str, want: int, limit: float) -> float:
                t0 = time.monotonic()
                while time.monotonic() - t0 < limit:
                    if replicas(name) == want:
                        return time.monotonic() - t0
                    time.sleep(0.05)
                raise RuntimeError(f"{name}: replicas did not reach {want} within {limit:.0f}s; see the log")

            for name in sources:
                settle(name, 4, 30)
            lat: dict[str, list[float]] = {n: [] for n in sources}
            for i in range(trials):
                for name in sources:  # one flip at a time: the timing is not shared between the two
                    value, want = (80, 8) if i % 2 == 0 else (40, 4)
                    time.sleep(random.Random(i).uniform(0, interval))  # land anywhere in the evaluation cycle
                    ex.queue(value, deployment=name)
                    lat[name].append(settle(name, want, 4 * interval + 10))
                say(f"[bench autoscaler] trial {i + 1}/{trials}: " +
                    ", ".join(f"{n} {lat[n][-1]:.2f}s" for n in sources))
            for name in sources:
                xs = sorted(lat[name])
                results.append({"source": name, "interval_s": interval, "trials": len(xs),
                                "p50_s": round(statistics.median(xs), 3), "max_s": round(xs[-1], 3),
                                "target_s": interval + 1, "within_target": xs[-1] <= interval + 1})
            for name in sources:
                ex.queue(40, deployment=name)
                settle(name, 4, 4 * interval + 10)
            rng = random.Random(7)
            changes = {n: 0 for n in sources}
            last = {n: replicas(n) for n in sources}
            end = time.monotonic() + steady_minutes * 60
            say(f"[bench autoscaler] steady load for {steady_minutes:g} min (queue 40 +-8%, target 10 per replica)")
            while time.monotonic() < end:
                for name in sources:
                    ex.queue(40 * (1 + rng.uniform(-0.08, 0.08)), deployment=name)
                    r = replicas(name)
                    changes[name] += r != last[name]
                    last[name] = r
                time.sleep(1)
            steady_events = changes
        finally:
            stop_autoscaler(proc)
            api.close()
    return {"benchmark": "autoscaler", "results": results,
            "steady": {"minutes": steady_minutes, "scale_events": steady_events}}


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    b = bench_sub.add_parser("autoscaler", help="metric change -> /scale patch latency; scale events under steady load")
    b.add_argument("--quick", action="store_true", help="4 trials and 1 minute of steady load")
    b.add_argument("--trials", type=int, default=10)
    b.add_argument("--interval", type=float, default=2.0, help="the policies' evaluationIntervalSeconds")
    b.add_argument("--steady-minutes", type=float, default=10.0)
    b.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    trials, minutes = (4, 1.0) if args.quick else (args.trials, args.steady_minutes)
    out = run(trials, args.interval, minutes, say=lambda m: print(m, file=sys.stderr, flush=True))
    for r in out["results"]:
        print(f"{r['source']:<10} p50 {r['p50_s']:.2f}s  max {r['max_s']:.2f}s  target <= {r['target_s']:.1f}s",
              file=sys.stderr)
    print(f"steady {minutes:g} min: scale events {out['steady']['scale_events']}", file=sys.stderr)
    print(json.dumps(out))
    return 0
