"""`clique bench admission`: what routing costs each pod's creation, on the real kube-apiserver, three ways in one
run: no routing, the routing MutatingAdmissionPolicy (manifests/routing/) and the routing webhook served by the
extender (manifests/scheduler/webhook.yaml). Each way gets its own namespace (the shipped objects, their
namespaceSelector narrowed to it by name), the same gang pods (clique.dev/gang, 4 per gang), created with
dryRun=All by 8 threads: admission runs in full, nothing is stored, so the figures are admission's own, not
etcd's or the watchers'. Reported per way and round: creations/s, and kube-apiserver's and the extender's CPU per
creation (from /proc). Side effects: a local control plane and an extender, stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

WAYS = ("none", "policy", "webhook")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run(pods: int, rounds: int, threads: int = 8, say=print) -> list[dict]:
    from kubernetes import client

    from scheduler.extender.process import start_extender, stop_extender
    from simulations.bench_e2e import _pod
    from simulations.controlplane import ControlPlane
    from simulations.controlplane.pki import create_serving_certs
    from simulations.controlplane.processes import free_port
    from simulations.controlplane.webhook import routing_objects, webhook_configuration

    rows = []
    with ControlPlane() as cp:
        api = cp.api_client()
        core, adm = client.CoreV1Api(api), client.AdmissionregistrationV1Api(api)
        ca = create_serving_certs(cp.workdir / "webhook-tls")
        hook_port = free_port()
        ext, _ = start_extender(cp.kubeconfig, cp.workdir / "extender.log", webhook_port=hook_port,
                                webhook_cert_dir=cp.workdir / "webhook-tls")
        try:
            def only(ns: str) -> dict:
                return {"matchLabels": {"kubernetes.io/metadata.name": ns}}

            policy, binding = routing_objects()
            binding["spec"]["matchResources"]["namespaceSelector"] = only("adm-policy")
            adm.create_mutating_admission_policy(policy)
            adm.create_mutating_admission_policy_binding(binding)
            hook = webhook_configuration(hook_port, ca)
            hook["webhooks"][0]["namespaceSelector"] = only("adm-webhook")
            adm.create_mutating_webhook_configuration(hook)
            for way in WAYS:
                cp.create_namespace(f"adm-{way}")
            probe = _pod("probe", "probe", "default-scheduler", "clique")
            for way in WAYS[1:]:  # both in effect (a dry-run pod comes out gated) before anything is timed
                end = time.monotonic() + 60
                while not _gated(core, f"adm-{way}", probe):
                    if time.monotonic() > end:
                        raise RuntimeError(f"routing by {way} did not take effect in 60 s")
                    time.sleep(0.5)
            apiserver = cp.procs["kube-apiserver"].pid
            for rnd in range(rounds):
                for way in WAYS:
                    ns = f"adm-{way}"
                    batch = [_pod(f"p{i}", f"g{i // 4}", "default-scheduler", "clique") for i in range(pods)]
                    a0, e0, t0 = _cpu_s(apiserver), _cpu_s(ext.pid), time.perf_counter()
                    with ThreadPoolExecutor(threads) as pool:
                        made = list(pool.map(lambda p: core.create_namespaced_pod(ns, p, dry_run="All"), batch))
                    wall = time.perf_counter() - t0
                    row = {"way": way, "round": rnd, "pods": pods,
                           "routed": sum(m.spec.scheduler_name == "clique-scheduler" for m in made),
                           "creates_per_s": round(pods / wall, 1),
                           "apiserver_cpu_ms_per_pod": round(1000 * (_cpu_s(apiserver) - a0) / pods, 2),
                           "extender_cpu_ms_per_pod": round(1000 * (_cpu_s(ext.pid) - e0) / pods, 2)}
                    say(f"[bench admission] round {rnd} {way}: {row['creates_per_s']} creations/s, kube-apiserver "
                        f"{row['apiserver_cpu_ms_per_pod']} ms CPU/pod, extender {row['extender_cpu_ms_per_pod']}")
                    rows.append(row)
        finally:
            stop_extender(ext)
            api.close()
    return rows


def _gated(core, ns: str, probe: dict) -> bool:
    try:
        return bool(core.create_namespaced_pod(ns, probe, dry_run="All").spec.scheduling_gates)
    except Exception:  # noqa: BLE001 - the webhook's port may not listen yet
        return False


def summary(rows: list[dict]) -> dict:
    """Per way: the median over rounds of each figure, and the CPU routing adds over no routing."""
    def median(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else round((xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2, 2)

    out = {}
    for way in WAYS:
        mine = [r for r in rows if r["way"] == way]
        out[way] = {k: median([r[k] for r in mine]) for k in
                    ("creates_per_s", "apiserver_cpu_ms_per_pod", "extender_cpu_ms_per_pod")}
    base = out["none"]["apiserver_cpu_ms_per_pod"] + out["none"]["extender_cpu_ms_per_pod"]
    for way in WAYS[1:]:
        out[way]["added_cpu_ms_per_pod"] = round(out[way]["apiserver_cpu_ms_per_pod"]
                                                 + out[way]["extender_cpu_ms_per_pod"] - base, 2)
    return out


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("admission", help="what routing costs a pod's creation: none vs policy vs webhook")
    p.add_argument("--pods", type=int, default=1500, help="dry-run creations per way and round")
    p.add_argument("--rounds", type=int, default=2)
    p.set_defaults(func=cmd_bench_admission)


def cmd_bench_admission(args: argparse.Namespace) -> int:
    if args.pods < 1 or args.rounds < 1:
        print("bench admission: --pods and --rounds must be at least 1", file=sys.stderr)
        return 2
    rows = run(args.pods, args.rounds, say=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({"benchmark": "admission", "results": rows, "summary": summary(rows)}))
    return 0
