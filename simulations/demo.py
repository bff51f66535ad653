"""`clique demo`: the embedded default, end to end on the real control plane. Side effects: starts and stops a
local control plane, writes ./demo-output/.

What it shows today (before the placement engine lands): the local control plane with the embedded fake GPU
cluster (an H100 SuperPOD-style leaf/spine tree and two GB200 NVL72 NVLink domains), its topology as read
back from the API server, and where the stock kube-scheduler puts the four 8-GPU pods of one tensor-parallel
replica: pod by pod, with no notion of the gang or of the leaf switch they should share.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from simulations.cli import DEFAULT_SPEC
from topology.render import render_tree
from topology.spec import HostSpec, load_cluster_spec


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="run the demo on the embedded default cluster (needs no cluster of yours)")
    d.add_argument("--output", type=Path, default=Path("demo-output"), help="where the report goes")
    d.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="cluster spec YAML")
    d.set_defaults(func=cmd_demo)


def _hosts_from_api(nodes) -> list[HostSpec]:
    return [HostSpec(name=n.metadata.name, pool=n.metadata.labels.get("clique.dev/pool", ""),
                     gpus=int(n.status.allocatable.get("nvidia.com/gpu", 0)), gpu_product=n.metadata.labels.get(
                         "nvidia.com/gpu.product", ""), cpu_millis=0, memory_bytes=0, pods=0,
                     labels=dict(n.metadata.labels)) for n in nodes]


def cmd_demo(args: argparse.Namespace) -> int:
    from kubernetes import client

    from simulations.controlplane import ControlPlane
    from simulations.controlplane.kwok_nodes import create_nodes

    spec = load_cluster_spec(args.spec)
    levels = [lv.label for lv in spec.levels]
    args.output.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print("[demo] starting the local control plane (etcd, kube-apiserver, kube-controller-manager, "
          "kube-scheduler, kwok) ...", flush=True)
    with ControlPlane() as cp:
        print(f"[demo] up in {cp.startup_seconds:.1f}s at {cp.server}", flush=True)
        api = cp.api_client()
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        create_nodes(api, spec.hosts())
        nodes = core.list_node(label_selector="type=kwok").items
        tree = render_tree(_hosts_from_api(nodes), levels)
        print(f"[demo] {len(nodes)} KWOK nodes Ready; topology read back from the API server:\n{tree}\n", flush=True)

        # A TP32 replica: 4 pods x 8 GPUs, as a Deployment scaled through /scale, placed by the stock scheduler.
        # Some partly used hosts first, as in any busy cluster.
        for i in range(6):
            core.create_namespaced_pod("default", {
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"busy-{i}"},
                "spec": {"automountServiceAccountToken": False,
                         "nodeSelector": {"kubernetes.io/hostname": f"h100-{i * 5:04d}"},
                         "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}})
        pod_spec = {"automountServiceAccountToken": False, "nodeSelector": {"clique.dev/pool": "h100"},
                    "containers": [{"name": "vllm", "image": "vllm", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}
        apps.create_namespaced_deployment("default", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llama-405b-tp32"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "tp32"}},
                     "template": {"metadata": {"labels": {"app": "tp32"}}, "spec": pod_spec}}})
        apps.patch_namespaced_deployment_scale("llama-405b-tp32", "default", {"spec": {"replicas": 4}})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pods = core.list_namespaced_pod("default", label_selector="app=tp32").items
            if len(pods) == 4 and all(p.status.phase == "Running" for p in pods):
                break
            time.sleep(0.25)
        else:
            print("[demo] the replica's pods did not all start within 60s", flush=True)
            return 1
        labels = {n.metadata.name: n.metadata.labels for n in nodes}
        placed = sorted((p.metadata.name, p.spec.node_name) for p in pods)
        leaves = Counter(labels[n].get("clique.dev/leaf") for _, n in placed)
        spines = Counter(labels[n].get("clique.dev/spine") for _, n in placed)
        api.close()

    lines = [f"  {pod:40} -> {node:10} leaf={labels[node].get('clique.dev/leaf')} "
             f"spine={labels[node].get('clique.dev/spine')}" for pod, node in placed]
    summary = (f"The stock scheduler placed the 4 x 8-GPU replica on {len(leaves)} leaf switch(es) and "
               f"{len(spines)} spine block(s); one leaf holds 4 such hosts, so one leaf was possible.")
    print("[demo] stock kube-scheduler placement of one TP32 replica (4 pods x 8 GPUs):")
    print("\n".join(lines))
    print(f"[demo] {summary}")
    report = args.output / "report.md"
    report.write_text(
        "# Clique demo\n\n"
        "Local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built from "
        "their Go modules, on 127.0.0.1.\n\n"
        f"## Cluster (`{args.spec.name}`)\n\n```\n{tree}\n```\n\n"
        "## Stock kube-scheduler, one TP32 replica (4 pods x 8 GPUs)\n\n```\n" + "\n".join(lines) + "\n```\n\n"
        f"{summary}\n\nThe placement engine (topology-aware, all or nothing) is the next milestone; this report will "
        "compare it with the stock scheduler and the other baselines.\n")
    (args.output / "placement.json").write_text(json.dumps(
        {"placement": [{"pod": p, "node": n, "labels": labels[n]} for p, n in placed],
         "leaves": len(leaves), "spines": len(spines)}, indent=1))
    print(f"[demo] done in {time.monotonic() - t0:.0f}s; report: {report}")
    return 0
