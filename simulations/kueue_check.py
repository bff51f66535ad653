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
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from scheduler.placement.types import Gang, HostState, Role, Snapshot

SPINE, LEAF = "clique.dev/spine", "clique.dev/leaf"
POOL_LABEL = "clique.dev/pool"
KINDS = ("required-leaf", "preferred-leaf", "preferred-spine")


# ----------------------------------------------------------------------------------------------- pure parts
def check_spec(pool: str, spines: int, leaves_per_spine: int, hosts_per_leaf: int, gpus: int = 8) -> dict:
    """A cluster spec (topology/spec.py format) of spines x leaves x hosts, every node labelled with the pool."""
    if min(spines, leaves_per_spine, hosts_per_leaf, gpus) < 1:
        raise ValueError("spines, leaves per spine, hosts per leaf and GPUs must all be >= 1")
    return {"name": pool, "pools": [{"name": pool, "hosts": spines * leaves_per_spine * hosts_per_leaf, "gpus": gpus,
                                     "labels": {POOL_LABEL: pool}}],
            "levels": [{"name": "spine", "label": SPINE, "hostsPerDomain": leaves_per_spine * hosts_per_leaf,
                        "valueFormat": pool + "-s{index}"},
                       {"name": "leaf", "label": LEAF, "hostsPerDomain": hosts_per_leaf,
                        "valueFormat": pool + "-l{index}"}]}


@dataclass(frozen=True)
class CheckGang:
    gang: Gang
    kind: str  # one of KINDS

    @property
    def level(self) -> str:
        return self.gang.required_level or self.gang.preferred_level or LEAF


def check_workload(hosts: Sequence[str], gpus_per_host: int, gangs: int, seed: int,
                   busy_share: float = 0.5) -> tuple[dict[str, int], list[CheckGang]]:
    """(pre-fill GPUs per host, the gangs in submission order), seeded."""
    rng = random.Random(seed)
    prefill = {h: rng.randint(1, gpus_per_host - 1) for h in hosts if rng.random() < busy_share and gpus_per_host > 1}
    out = []
    for i in range(gangs):
        pods, gpus, kind = rng.choice((2, 3, 4)), rng.choice((1, 2, 4, 8)), rng.choice(KINDS)
        level = LEAF if kind.endswith("leaf") else SPINE
        gang = Gang(f"k{i:03d}", (Role("w", pods, gpus),), required_level=level if kind.startswith("required") else None,
                    preferred_level=None if kind.startswith("required") else level)
        out.append(CheckGang(gang, kind))
    return prefill, out


def snapshot_with(snap: Snapshot, used: dict[str, int], pods: dict[str, int]) -> Snapshot:
    """`snap` with these GPUs and pod counts used per host (the real cluster's state)."""
    hosts = {n: HostState(n, gpus=h.gpus, cpu_millis=h.cpu_millis, memory=h.memory, pods=h.pods,
                          gpus_used=used.get(n, 0), pods_used=pods.get(n, 0)) for n, h in snap.hosts.items()}
    return Snapshot(snap.topology, hosts)


def domain(snap: Snapshot, hosts: Sequence[str], level: str) -> tuple | None:
    """The one domain of `level` holding all these hosts, or None when they span several."""
    idx = snap.topology.level_index(level)
    paths = {snap.topology.host_paths[h][: idx + 1] for h in hosts}
    return next(iter(paths)) if len(paths) == 1 else None


@dataclass
class Decision:
    gang: str
    kind: str
    shape: str
    real: list[str] | None  # hosts (one per pod, sorted) or None when Kueue left it pending
    model: list[str] | None
    real_domain: tuple | None = None  # domain at the gang's level, None if spread (or not placed)
    model_domain: tuple | None = None
    real_s: float | None = None  # creation -> all pods bound


@dataclass
class CheckResult:
    decisions: list[Decision] = field(default_factory=list)
    real_first_rejection: dict | None = None  # GPUs allocated / unallocated when the first gang was refused
    model_first_rejection: dict | None = None  # the same for the model's own free-running pass
    total_gpus: int = 0
    offline: dict = field(default_factory=dict)  # policy -> its free-running pass: first rejection, one-domain share

    def summary(self) -> dict:
        both = [d for d in self.decisions if d.real and d.model]
        agree = [d for d in self.decisions if bool(d.real) == bool(d.model)]
        leaf_real = [d for d in self.decisions if d.real]
        leaf_model = [d for d in self.decisions if d.model]
        return {
            "gangs": len(self.decisions),
            "placed_real": len(leaf_real), "placed_model": len(leaf_model),
            "same_admission_share": _share(len(agree), len(self.decisions)),
            "different_domain_share": _share(sum(d.real_domain != d.model_domain for d in both), len(both)),
            "different_hosts_share": _share(sum(d.real != d.model for d in both), len(both)),
            "one_domain_share_real": _share(sum(d.real_domain is not None for d in leaf_real), len(leaf_real)),
            "one_domain_share_model": _share(sum(d.model_domain is not None for d in leaf_model), len(leaf_model)),
            "by_kind": {k: {"gangs": sum(d.kind == k for d in both),
                            "different_domain": sum(d.kind == k and d.real_domain != d.model_domain for d in both)}
                        for k in KINDS},
            "real_first_rejection": self.real_first_rejection, "model_first_rejection": self.model_first_rejection,
            "total_gpus": self.total_gpus, "offline_passes": self.offline,
            "real_gang_bound_s": {"p50": _pct([d.real_s for d in self.decisions if d.real_s is not None], 0.5),
                                  "p99": _pct([d.real_s for d in self.decisions if d.real_s is not None], 0.99)},
        }


def _share(n: int, of: int) -> float | None:
    return round(n / of, 3) if of else None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 3)


def model_pass(policy: Any, base: Snapshot, gangs: Sequence[CheckGang]) -> tuple[list[list[str] | None], dict | None]:
    """The model alone over the sequence: its hosts per gang and its fill at its first rejection."""
    snap, out, first = base, [], None
    total = sum(h.gpus for h in base.hosts.values())
    for cg in gangs:
        plan = policy.place(snap, cg.gang)
        if plan.placed:
            snap = snap.apply(cg.gang, plan)
            out.append(sorted(a.host for a in plan.assignments))
        else:
            out.append(None)
            if first is None:
                used = sum(h.gpus_used for h in snap.hosts.values())
                first = {"gang": cg.gang.name, "allocated_gpus": used, "unallocated_gpus": total - used}
    return out, first


# ----------------------------------------------------------------------------------------------- real run
def _pods(cg: CheckGang, ns_queue: str, pool: str) -> list[dict]:
    from simulations.controlplane.kueue import pod_group_meta

    g = cg.gang
    labels, annotations = pod_group_meta(g.name, g.pod_count, ns_queue, required=g.required_level,
                                         preferred=g.preferred_level)
    role = g.roles[0]
    return [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": f"{g.name}-{i}", "labels": {**labels, "bench-gang": g.name},
                          "annotations": annotations},
             "spec": {"nodeSelector": {POOL_LABEL: pool}, "automountServiceAccountToken": False,
                      "terminationGracePeriodSeconds": 0,
                      "containers": [{"name": "w", "image": "x",
                                      "resources": {"limits": {"nvidia.com/gpu": str(role.gpus)}}}]}}
            for i in range(role.pods)]


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


def offline_pass(policy: Any, base: Snapshot, gangs: Sequence[CheckGang]) -> dict:
    """A policy's own pass over the sequence: placed gangs, one-domain share (at each gang's level), first rejection."""
    hosts, first = model_pass(policy, base, gangs)
    placed = [(cg, h) for cg, h in zip(gangs, hosts) if h]
    return {"placed": len(placed), "first_rejection": first,
            "one_domain_share": _share(sum(domain(base, h, cg.level) is not None for cg, h in placed), len(placed))}


def run_check(cp, spec_data: dict, gangs: int, seed: int, namespace: str = "kueue-check",
              gang_timeout_s: float = 30.0, say=print, policy: Any = None) -> CheckResult:
    """Play the seeded workload on a running control plane that has the real Kueue (ControlPlaneOptions(kueue=True)).
    Creates its own namespace, nodes and Kueue queues; removes its pods, queues and nodes afterwards."""
    from kubernetes import client

    from scheduler.placement.baselines import KueueBestFit
    from scheduler.placement.snapshots import snapshot_from_spec
    from simulations.controlplane.kueue import TasQueues, delete_tas_queues, setup_tas_queues
    from simulations.controlplane.kwok_nodes import create_nodes, delete_nodes
    from topology.spec import parse_cluster_spec

    spec = parse_cluster_spec(spec_data)
    pool = spec.pools[0].name
    api = cp.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    names = create_nodes(api, spec.hosts())
    base = snapshot_from_spec(spec)
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
        used, pods_on = dict(prefill), {h: 1 for h in prefill}
        for h, g in sorted(prefill.items()):  # bound by name: no scheduler, no Kueue
            core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod",
                                                   "metadata": {"name": f"fill-{h}"},
                                                   "spec": {"nodeName": h, "automountServiceAccountToken": False,
                                                            "terminationGracePeriodSeconds": 0,
                                                            "containers": [{"name": "f", "image": "x", "resources": {
                                                                "limits": {"nvidia.com/gpu": str(g)}}}]}})
        _wait(lambda: sum(p.status.phase == "Running" for p in core.list_namespaced_pod(namespace).items)
              >= len(prefill), 60, "pre-fill pods Running")
        time.sleep(1.0)  # Kueue's non-TAS usage cache catches up with the Running pods
        _, res.model_first_rejection = model_pass(policy, snapshot_with(base, used, pods_on), work)
        from scheduler.placement.engine import CliqueEngine

        for p in (policy, CliqueEngine()):
            res.offline[p.name] = offline_pass(p, snapshot_with(base, used, pods_on), work)
        for cg in work:
            snap = snapshot_with(base, used, pods_on)
            plan = policy.place(snap, cg.gang)
            d = Decision(cg.gang.name, cg.kind, cg.gang.shape(), None,
                         sorted(a.host for a in plan.assignments) if plan.placed else None)
            pods = _pods(cg, queues.local_queue, pool)
            t0 = time.perf_counter()
            for p in pods:
                core.create_namespaced_pod(namespace, p)
            want = {p["metadata"]["name"] for p in pods}
            bound: dict[str, str] = {}
            reason, reason_since = None, None
            end = time.monotonic() + gang_timeout_s
            while time.monotonic() < end:
                listed = core.list_namespaced_pod(namespace, label_selector=f"bench-gang={cg.gang.name}").items
                bound = {p.metadata.name: p.spec.node_name for p in listed if p.spec.node_name}
                if want <= bound.keys():
                    d.real_s = round(time.perf_counter() - t0, 3)
                    break
                reason = _rejected(custom, namespace, cg.gang.name)
                reason_since = (reason_since or time.monotonic()) if reason else None
                if reason_since and not bound and time.monotonic() - reason_since > 1.0:  # tried, and still pending
                    break
                time.sleep(0.1)
            if want <= bound.keys():
                d.real = sorted(bound.values())
                for h in d.real:
                    used[h] = used.get(h, 0) + cg.gang.roles[0].gpus
                    pods_on[h] = pods_on.get(h, 0) + 1
            else:
                if res.real_first_rejection is None:
                    alloc = sum(used.values())
                    res.real_first_rejection = {"gang": cg.gang.name, "allocated_gpus": alloc,
                                                "unallocated_gpus": res.total_gpus - alloc,
                                                "kueue_reason": (reason or "timed out")[:240]}
                _delete_pods(core, namespace, f"bench-gang={cg.gang.name}")
            if d.real:
                d.real_domain = domain(snap, d.real, cg.level)
            if d.model:
                d.model_domain = domain(snap, d.model, cg.level)
            res.decisions.append(d)
            say(f"[kueue-models] {cg.gang.name} {cg.kind:<15} {cg.gang.shape():>5}: real "
                f"{_where(d.real, d.real_domain)} model {_where(d.model, d.model_domain)}"
                + ("" if d.real_domain == d.model_domain else "  <- differs"))
    finally:
        _delete_pods(core, namespace, None)
        delete_tas_queues(api, queues)
        delete_nodes(api, names)
        api.close()
    return res


def _delete_pods(core, ns: str, selector: str | None, timeout_s: float = 60.0) -> None:
    """Delete pods and wait until they are gone. Kueue v0.17.0 keeps its finalizer kueue.x-k8s.io/managed on the
    gated pods of a pod group it never admitted (seen here for over 60 s), so once deleted, pods that never ran
    (no node) have it taken off here."""
    from kubernetes.client.exceptions import ApiException

    kw = {"label_selector": selector} if selector else {}
    core.delete_collection_namespaced_pod(ns, grace_period_seconds=0, **kw)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        left = core.list_namespaced_pod(ns, **kw).items
        if not left:
            return
        for p in left:
            if p.metadata.deletion_timestamp and not p.spec.node_name and p.metadata.finalizers:
                try:
                    core.patch_namespaced_pod(p.metadata.name, ns, {"metadata": {"finalizers": None}})
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        time.sleep(0.3)
    raise TimeoutError(f"pods of {ns} ({selector or 'all'}) not gone after {timeout_s:.0f}s")


def _where(hosts: list[str] | None, dom: tuple | None) -> str:
    if not hosts:
        return "pending"
    return f"{'/'.join(dom) if dom else 'spread'} ({len(set(hosts))} host(s))"


def _wait(predicate, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")


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
