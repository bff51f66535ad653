"""`clique bench kube-topology-models`: the offline `topology-placement` model checked against the real
kube-scheduler v1.37.2 (its in-tree GangScheduling, TopologyPlacementGenerator and PodGroupPodsCount plugins,
feature gates GenericWorkload + TopologyAwareWorkloadScheduling) on the same input, decision by decision.
Side effects: starts a local control plane with those gates, KWOK nodes, creates and deletes pods, Workloads and
PodGroups.

The shared check (simulations/model_check.py): a seeded spine / leaf / host cluster with an uneven pre-fill, then
gangs submitted one at a time, each placed first by the model on a snapshot of the real state. Here each gang is
a Workload with one PodGroupTemplate and the PodGroup made from it, as the v1.37.2 Job controller writes them
(k8s.io/kubernetes pkg/controller/job/job_scheduling_manager.go, k8s.io/component-helpers v0.37.2
scheduling/schedulingv1/workloadbuilder/podgroup.go `newPodGroup`; fields from k8s.io/api v0.37.2
scheduling/v1beta1/types.go): `schedulingPolicy.gang.minCount` = the gang's pods, `schedulingConstraints.topology
[0].key` = the required level's label (the API has no preferred level), and the pods name their PodGroup in
`spec.schedulingGroup.podGroupName`. Kinds: a required leaf, a required spine, or a gang with no topology
constraint (judged at the leaf). A refusal shows as the PodGroup's `PodGroupInitiallyScheduled` condition False
(reason `Unschedulable`, pkg/apis/scheduling/types.go).

By default every pod also requests 16 cores and 128 GiB per GPU (the nodes have 128 cores, 1 TiB, 8 GPUs): the
in-tree scores look at CPU and memory only, so with GPU-only pods (`--cpu-per-gpu 0 --memory-per-gpu 0`) every
score ties and the real scheduler's choices are random draws (see scheduler/placement/kube_topology.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from simulations.model_check import (GIB, CheckGang, CheckResult, RealScheduler, check_cluster, check_spec,
                                     check_workload,
                                     delete_pods, model_pass, offline_pass, play, pod_manifest,
                                     prefill_pods, snapshot_with)

KINDS = ("required-leaf", "required-spine", "gang-only")
GROUP, VERSION = "scheduling.k8s.io", "v1beta1"  # k8s.io/api v0.37.2 scheduling/v1beta1
TEMPLATE = "workers"
FEATURE_GATES = {"GenericWorkload": True, "TopologyAwareWorkloadScheduling": True}  # pkg/features, v1.37.2
RUNTIME_CONFIG = {f"{GROUP}/{VERSION}": True}
CPU_PER_GPU, MEMORY_PER_GPU = 16_000, 128 * GIB  # defaults: a node's share per GPU on 128-core, 1 TiB, 8-GPU nodes


# ----------------------------------------------------------------------------------------------- pure parts
def workload_objects(cg: CheckGang) -> tuple[dict, dict]:
    """(Workload, PodGroup) of one gang, shaped as the v1.37.2 API publishes them."""
    g = cg.gang
    template: dict[str, Any] = {"name": TEMPLATE, "schedulingPolicy": {"gang": {"minCount": g.pod_count}}}
    if g.required_level:
        template["schedulingConstraints"] = {"topology": [{"key": g.required_level}]}
    workload = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Workload", "metadata": {"name": g.name},
                "spec": {"podGroupTemplates": [template]}}
    spec: dict[str, Any] = {"workloadRef": {"workloadName": g.name, "templateName": TEMPLATE},
                            "schedulingPolicy": template["schedulingPolicy"]}
    if "schedulingConstraints" in template:
        spec["schedulingConstraints"] = template["schedulingConstraints"]
    podgroup = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PodGroup", "metadata": {"name": g.name}, "spec": spec}
    return workload, podgroup


def gang_pods(cg: CheckGang, pool: str) -> list[dict]:
    g = cg.gang
    pods = [pod_manifest(f"{g.name}-{i}", pool, g.roles[0], {"bench-gang": g.name}) for i in range(g.roles[0].pods)]
    for p in pods:
        p["spec"]["schedulingGroup"] = {"podGroupName": g.name}
    return pods


def refusal(podgroup: dict) -> str | None:
    """The scheduler's message when it tried the PodGroup and could not place it, else None."""
    for c in (podgroup.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodGroupInitiallyScheduled" and c.get("status") == "False":
            return c.get("message") or c.get("reason") or "unschedulable"
    return None


# ----------------------------------------------------------------------------------------------- real run
def run_check(cp, spec_data: dict, gangs: int, seed: int, namespace: str = "kube-topology-check",
              gang_timeout_s: float = 30.0, say=print, policy: Any = None, cpu_per_gpu: int = CPU_PER_GPU,
              memory_per_gpu: int = MEMORY_PER_GPU, kinds=KINDS) -> CheckResult:
    """Play the seeded workload on a running control plane started with FEATURE_GATES and RUNTIME_CONFIG.
    Creates its own namespace and nodes; removes its pods, Workloads, PodGroups and nodes afterwards."""
    from kubernetes.client.exceptions import ApiException

    from scheduler.placement.baselines import TopologyPlacement
    from scheduler.placement.engine import CliqueEngine
    from simulations.controlplane.kwok_nodes import delete_nodes

    spec, pool, api, core, custom, names, base = check_cluster(cp, spec_data)
    prefill, work = check_workload(sorted(base.hosts), spec.pools[0].gpus, gangs, seed, kinds=kinds,
                                   cpu_per_gpu=cpu_per_gpu, memory_per_gpu=memory_per_gpu)
    cp.create_namespace(namespace)
    policy = policy or TopologyPlacement(seed)
    res = CheckResult(total_gpus=sum(h.gpus for h in base.hosts.values()), kinds=tuple(kinds))
    made: list[str] = []

    def submit(cg: CheckGang, pods: list[dict]) -> None:
        workload, podgroup = workload_objects(cg)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "workloads", workload)
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "podgroups", podgroup)
        made.append(cg.gang.name)
        for p in pods:
            core.create_namespaced_pod(namespace, p)

    def refused(cg: CheckGang) -> str | None:
        try:
            return refusal(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "podgroups", cg.gang.name))
        except ApiException:
            return None

    def discard(name: str) -> None:
        for plural in ("podgroups", "workloads"):
            try:
                custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    try:
        state = prefill_pods(core, namespace, pool, prefill, cpu_per_gpu, memory_per_gpu)
        _, res.model_first_rejection = model_pass(policy, snapshot_with(base, state), work)
        for p in (policy, CliqueEngine()):
            res.offline[p.name] = offline_pass(p, snapshot_with(base, state), work)
        kube = RealScheduler("kube_scheduler", lambda cg: gang_pods(cg, pool), submit, refused,
                             lambda cg: discard(cg.gang.name),
                             lambda snap, cg, hosts: policy.explains(snap, cg.gang, hosts))
        play(core, namespace, base, state, work, policy, kube, res, gang_timeout_s, say, "kube-topology-models")
    finally:
        delete_pods(core, namespace, None)
        for name in made:
            discard(name)
        delete_nodes(api, names)
        api.close()
    return res


# ----------------------------------------------------------------------------------------------- CLI
def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("kube-topology-models",
                             help="the topology-placement model vs the real kube-scheduler 1.37 gang + topology "
                                  "plugins, gang by gang, on KWOK")
    p.add_argument("--spines", type=int, default=2)
    p.add_argument("--leaves", type=int, default=4, help="leaves per spine")
    p.add_argument("--hosts", type=int, default=4, help="hosts per leaf")
    p.add_argument("--gangs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="run this many seeds (seed, seed+1, ...), one after another")
    p.add_argument("--cpu-per-gpu", type=float, default=CPU_PER_GPU / 1000,
                   help="cores each pod requests per GPU (0: GPU-only pods, where every in-tree score ties)")
    p.add_argument("--memory-per-gpu", type=float, default=MEMORY_PER_GPU / GIB, help="GiB each pod requests per GPU")
    p.set_defaults(func=cmd_bench_kube_topology_models)


def combined(results: list[CheckResult]) -> dict:
    """One summary over several seeds' decisions, with each seed's fill figures (GPUs allocated at the first
    refusal, real and model) side by side."""
    allr = CheckResult(decisions=[d for r in results for d in r.decisions], kinds=results[0].kinds,
                       total_gpus=results[0].total_gpus)
    s = allr.summary()
    for k in ("real_first_rejection", "model_first_rejection", "offline_passes"):
        s.pop(k)
    s["fill"] = [{"real_allocated_at_first_refusal": (r.real_first_rejection or {}).get("allocated_gpus"),
                  "model_allocated_at_first_refusal": (r.model_first_rejection or {}).get("allocated_gpus"),
                  "model_free_running": r.offline} for r in results]
    return s


def cmd_bench_kube_topology_models(args: argparse.Namespace) -> int:
    from simulations.controlplane import ControlPlane, ControlPlaneOptions

    try:
        if args.cpu_per_gpu < 0 or args.memory_per_gpu < 0 or args.gangs < 1 or args.seeds < 1:
            raise ValueError("--cpu-per-gpu and --memory-per-gpu must be >= 0, --gangs and --seeds >= 1")
        specs = [check_spec(f"kt{i}", args.spines, args.leaves, args.hosts) for i in range(args.seeds)]
    except ValueError as exc:
        print(f"bench kube-topology-models: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = []
    with ControlPlane(ControlPlaneOptions(feature_gates=FEATURE_GATES, runtime_config=RUNTIME_CONFIG)) as cp:
        for i, spec in enumerate(specs):  # one seed after another, each on its own nodes and namespace
            results.append(run_check(cp, spec, args.gangs, args.seed + i, namespace=f"kube-topology-check-{i}",
                                     say=lambda m: print(m, file=sys.stderr, flush=True),
                                     cpu_per_gpu=int(args.cpu_per_gpu * 1000),
                                     memory_per_gpu=int(args.memory_per_gpu * GIB)))
    s = combined(results)
    print(f"# {s['gangs']} gangs ({args.seeds} seed(s) x {args.gangs}) on {args.spines}x{args.leaves}x{args.hosts} "
          f"hosts ({s['total_gpus']} GPUs), {args.cpu_per_gpu:g} cores + {args.memory_per_gpu:g} GiB per GPU, "
          f"{time.perf_counter() - started:.0f}s")
    print(f"placed: real kube-scheduler {s['placed_real']}, topology-placement model {s['placed_model']}; same "
          f"admission {s['same_admission_share']}; different domain {s['different_domain_share']} (not a tie the model "
          f"scores equal: {s.get('different_domain_not_a_tie_share')}), different hosts {s['different_hosts_share']} "
          f"(not a tie: {s.get('real_not_a_model_tie_share')}); one-domain share real {s['one_domain_share_real']} "
          f"model {s['one_domain_share_model']}")
    for i, f in enumerate(s["fill"]):
        print(f"seed {args.seed + i}: GPUs allocated at the first refusal: real {f['real_allocated_at_first_refusal']}"
              f", model {f['model_allocated_at_first_refusal']} (of {s['total_gpus']})")
    print(json.dumps({"benchmark": "kube-topology-models", "args": vars(args) | {"func": None}, "summary": s,
                      "decisions": [d.__dict__ for r in results for d in r.decisions]}, default=str))
    return 0
