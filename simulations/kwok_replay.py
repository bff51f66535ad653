"""The autoscaler replay against the real thing: a request trace, time-compressed, drives the replay's prefill and
decode model, whose metrics a synthetic exporter serves; the real autoscaler daemon reads them (Scrape) and scales
two StatefulSets of gangs on a local control plane; clique-scheduler places them on KWOK nodes; and the model
serves with the gangs the API server shows bound (each after the model-load delay). Side effects: starts a
control plane, KWOK nodes, the extender, the autoscaler and the exporter; creates objects.

What is real: the API server, kube-scheduler, the StatefulSet controller, kwok, Clique's extender and autoscaler
(the policies of `replay.clique_policy_docs`, times divided by the speedup). What is modelled: the serving
itself (no GPU, no model): the same fluid model as `clique replay`, so the two runs differ only by the real
control loop: scrape and evaluation delays, scale patches, pod creation, scheduling and capacity.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import yaml

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

    def summary(self) -> dict:
        out = self.replay.summary()
        out.update({"policy": "clique (API server)", "scale_events": self.scale_patches, "speedup": self.speedup,
                    "max_pending_gangs": self.max_pending_gangs, "pending_gang_s": round(self.pending_gang_s, 1),
                    "longest_pending_s": round(self.longest_pending_s, 1),
                    "wall_s": round(self.wall_s, 1), "hosts": self.hosts})
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
        """pool -> (gangs asked for, gangs bound)."""
        out = {}
        pods = self.core.list_namespaced_pod(NAMESPACE, resource_version="0").items
        for name, size in self.size.items():
            spec = self.apps.read_namespaced_stateful_set_scale(name, NAMESPACE).spec.replicas or 0
            if name in self.last_spec and spec != self.last_spec[name]:
                self.patches += 1
            self.last_spec[name] = spec
            groups: dict[int, int] = {}
            for p in pods:
                if (p.metadata.labels or {}).get("app") != name or p.metadata.deletion_timestamp or not p.spec.node_name:
                    continue
                ordinal = int(p.metadata.name.rsplit("-", 1)[1])
                if ordinal < spec:
                    groups[ordinal // size] = groups.get(ordinal // size, 0) + 1
            out[name] = (spec // size, sum(1 for n in groups.values() if n == size))
        return out


# vLLM's series the daemon's planner reads (autoscaler/policy.py PLANNER_METRICS["vllm"]), served here by the
# synthetic exporter from the replay's model: cumulative prompt tokens and requests arrived, the prefill queue, and
# the decode sequences in flight.
PLANNER_SERIES = ("vllm:prompt_tokens_total", "vllm:request_success_total", "vllm:num_requests_waiting",
                  "vllm:num_requests_running")


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
                            "historySeconds": pc.history_s / speedup, "engine": "vllm"}}
    return {"prefill": doc("prefill", "Prefill", cfg.prefill_pods, None),
            "decode": doc("decode", "Decode", cfg.decode_pods, "leaf")}


def planner_values(s: Signals, arrived_tokens: float, arrived_requests: float) -> dict[str, float]:
    """PLANNER_SERIES at one observation: the counters (cumulative arrivals) and the two gauges."""
    return dict(zip(PLANNER_SERIES, (arrived_tokens, arrived_requests, float(s.prefill_queue_requests),
                                     float(s.decode_running + s.decode_waiting))))


def run_kwok_replay(requests: Sequence[Request], cfg: ModelConfig, speedup: float, hosts: int,
                    say: Callable[[str], None] = print,
                    progress: Callable[[int, int], None] | None = None, observe_s: float = 5.0,
                    planner: bool = False) -> KwokReplayResult:
    """`planner`: the pools are scaled by the look-ahead planner (policies of `planner_policy_docs`, fed by a real
    Prometheus scraping the exporter every second), else by the reactive rules of `clique_policy_docs`."""
    from kubernetes import client

    from autoscaler.process import start_autoscaler, stop_autoscaler
    from scheduler.extender.process import clique_scheduler_config, start_extender, stop_extender
    from simulations.controlplane import ControlPlane
    from simulations.controlplane.kwok_nodes import create_nodes
    from simulations.controlplane.prometheus import Prometheus
    from simulations.exporter import SyntheticExporter
    from topology.spec import parse_cluster_spec

    spec = parse_cluster_spec({"name": "replay", "pools": [{"name": "replay", "hosts": hosts, "gpus": cfg.gpus_per_pod}],
                               "levels": [{"name": "leaf", "label": LEAF, "hostsPerDomain": 8}]})
    started = time.monotonic()
    with ControlPlane() as cp, SyntheticExporter() as exporter, contextlib.ExitStack() as stack:
        prom = None
        if planner:
            (cp.workdir / "prometheus").mkdir(parents=True, exist_ok=True)
            prom = stack.enter_context(Prometheus([exporter.target], cp.workdir / "prometheus"))
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
            for metric, value in (planner_values(zero, 0, 0) if planner else signal_values(zero, cfg)).items():
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
                                         lease_namespace=NAMESPACE, levels=[LEAF], extra=["--tick", "0.2"])
            say(f"[kwok replay] {hosts} KWOK hosts x {cfg.gpus_per_pod} GPUs, autoscaler and clique-scheduler up in "
                f"{time.monotonic() - started:.0f}s; replaying {len(requests)} requests at {speedup:g}x "
                f"(~{(requests[-1].time + 600) / speedup / 60:.1f} min)")
            out = KwokReplayResult(ReplayResult("clique (API server)"), speedup, hosts=hosts)
            t0 = time.monotonic()
            last: dict[str, Any] = {"now": 0.0, "since": None}
            arrived: list[tuple[float, float]] = []  # (trace time, prompt tokens) per observation
            total = {"tokens": 0.0, "requests": 0.0}  # arrived since the start (the planner's counters)

            def policy(s: Signals) -> tuple[int, int]:
                # pace the model to real time, publish its metrics, and serve with what the cluster has bound
                ahead = t0 + s.now / speedup - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                # the arrival rate over the policy's own interval, as the offline replay computes it
                arrived.append((s.now, s.prefill_arrival_tps * (s.now - last["now"])))
                while arrived and arrived[0][0] <= s.now - cfg.interval_s:
                    arrived.pop(0)
                total["tokens"] += s.prefill_arrival_tps * (s.now - last["now"])
                total["requests"] += s.arrived_requests
                if planner:
                    values = planner_values(s, total["tokens"], total["requests"])
                else:
                    values = signal_values(replace(s, prefill_arrival_tps=sum(t for _, t in arrived) / cfg.interval_s),
                                           cfg)
                for metric, value in values.items():
                    exporter.set(metric, value)
                seen = view.read()
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
