"""`clique bench kueue-models`: the offline `kueue-bestfit` model checked against the real Kueue TAS (v0.17.0) on
the same input, decision by decision. Side effects: starts a local control plane with the real Kueue manager,
KWOK nodes, creates and deletes pods.

Input (seeded, pure: `check_workload`): a spine / leaf / host cluster, an uneven pre-fill (plain pods bound to
their nodes by name, which Kueue's TAS counts as non-TAS usage: pkg/controller/tas/non_tas_usage_controller.go),
then gangs of 2-4 pods x 1, 2, 4 or 8 GPUs, each with a required leaf, a preferred leaf or a preferred spine
(`kueue.x-k8s.io/podset-required-topology` / `podset-preferred-topology`), submitted one at a time. The real
Kueue admits (or leaves pending) each gang, the stock kube-scheduler binds the pods where Kueue's TAS put them.
Before each real decision the model places the same gang on a snapshot of the same cluster state (the real
placements so far), so every difference is one decision, not drift. A gang the real Kueue cannot admit is
deleted (the model's state stays in step). A second, free-running pass of the model over the whole sequence
gives its own fill figures (GPUs allocated at its first rejection) beside the real ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

# The pure parts and the play loop are shared with `clique bench kube-topology-models`; re-exported here.
from simulations.model_check import (KINDS, LEAF, POOL_LABEL, SPINE, CheckGang, CheckResult, Decision,  # noqa: F401
                                     RealScheduler, check_cluster, check_spec, check_workload, delete_pods, domain,
                                     model_pass, offline_pass, play, pod_manifest, prefill_pods, snapshot_with)


# ----------------------------------------------------------------------------------------------- real run
def _pods(cg: CheckGang, ns_queue: str, pool: str) -> list[dict]:
    from simulations.controlplane.kueue import pod_group_meta

    g = cg.gang
    labels, annotations = pod_group_meta(g.name, g.pod_count, ns_queue, required=g.required_level,
                                         preferred=g.preferred_level)
    return [pod_manifest(f"{g.name}-{i}", pool, g.roles[0], {**labels, "bench-gang": g.name}, annotations)
            for i in range(g.roles[0].pods)]


def _rejected(custom, ns: str, name: str) -> str | None:
    """Kueue's reason when it tried the gang's workload and left it pending (QuotaReserved False), else None."""
    from kubernetes.client.exceptions import ApiException

    from simulations.controlplane.kueue import GROUP, VERSION

    try:
        wl = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "workloads", name)
    except ApiException:
        return None
    for c in (wl.get("status") or {}).get("conditions") or []:
        if c.get("type") == "QuotaReserved" and c.get("status") == "False":
            return c.get("message") or c.get("reason") or "pending"
    return None


def run_check(cp, spec_data: dict, gangs: int, seed: int, namespace: str = "kueue-check",
              gang_timeout_s: float = 30.0, say=print, policy: Any = None) -> CheckResult:
    """Play the seeded workload on a running control plane that has the real Kueue (ControlPlaneOptions(kueue=True)).
    Creates its own namespace, nodes and Kueue queues; removes its pods, queues and nodes afterwards."""

    from scheduler.placement.baselines import KueueBestFit
    from scheduler.placement.engine import CliqueEngine
    from simulations.controlplane.kueue import TasQueues, delete_tas_queues, setup_tas_queues
    from simulations.controlplane.kwok_nodes import delete_nodes

    spec, pool, api, core, custom, names, base = check_cluster(cp, spec_data)
    gpus_per_host = spec.pools[0].gpus
    prefill, work = check_workload(sorted(base.hosts), gpus_per_host, gangs, seed)
    cp.create_namespace(namespace)
    queues = TasQueues(namespace, [SPINE, LEAF], {"nvidia.com/gpu": gpus_per_host * len(names), "cpu": 1000 * len(names),
                                                 "memory": f"{len(names)}Ti"}, node_labels={POOL_LABEL: pool},
                       name=f"{pool}-tas")
    policy = policy or KueueBestFit()
    res = CheckResult(total_gpus=gpus_per_host * len(names))
    try:
        setup_tas_queues(api, queues)
        state = prefill_pods(core, namespace, pool, prefill)  # bound by name: no scheduler, no Kueue
        time.sleep(1.0)  # Kueue's non-TAS usage cache catches up with the Running pods
        _, res.model_first_rejection = model_pass(policy, snapshot_with(base, state), work)
        for p in (policy, CliqueEngine()):
            res.offline[p.name] = offline_pass(p, snapshot_with(base, state), work)

        def submit(cg: CheckGang, pods: list[dict]) -> None:
            for p in pods:
                core.create_namespaced_pod(namespace, p)

        kueue = RealScheduler("kueue", lambda cg: _pods(cg, queues.local_queue, pool), submit,
                              lambda cg: _rejected(custom, namespace, cg.gang.name))
        play(core, namespace, base, state, work, policy, kueue, res, gang_timeout_s, say, "kueue-models")
    finally:
        delete_pods(core, namespace, None)
        delete_tas_queues(api, queues)
        delete_nodes(api, names)
        api.close()
    return res


# ----------------------------------------------------------------------------------------------- CLI
def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("kueue-models", help="the kueue-bestfit model vs the real Kueue TAS, gang by gang, on KWOK")
    p.add_argument("--spines", type=int, default=2)
    p.add_argument("--leaves", type=int, default=4, help="leaves per spine")
    p.add_argument("--hosts", type=int, default=4, help="hosts per leaf")
    p.add_argument("--gangs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bench_kueue_models)


def cmd_bench_kueue_models(args: argparse.Namespace) -> int:
    from simulations.controlplane import ControlPlane, ControlPlaneOptions

    try:
        spec = check_spec("kq", args.spines, args.leaves, args.hosts)
    except ValueError as exc:
        print(f"bench kueue-models: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with ControlPlane(ControlPlaneOptions(kueue=True)) as cp:
        res = run_check(cp, spec, args.gangs, args.seed, say=lambda m: print(m, file=sys.stderr, flush=True))
    s = res.summary()
    print(f"# {s['gangs']} gangs on {args.spines}x{args.leaves}x{args.hosts} hosts ({s['total_gpus']} GPUs), "
          f"{time.perf_counter() - started:.0f}s")
    print(f"placed: real Kueue {s['placed_real']}, kueue-bestfit model {s['placed_model']}; same admission "
          f"{s['same_admission_share']}; different domain {s['different_domain_share']}, different hosts "
          f"{s['different_hosts_share']}; one-domain share real {s['one_domain_share_real']} model "
          f"{s['one_domain_share_model']}")
    print(f"first rejection: real {s['real_first_rejection']}; model {s['model_first_rejection']}")
    print(f"offline passes: {s['offline_passes']}")
    print(json.dumps({"benchmark": "kueue-models", "args": vars(args) | {"func": None}, "summary": s,
                      "decisions": [d.__dict__ for d in res.decisions]}, default=str))
    return 0
