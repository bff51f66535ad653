"""What the model-vs-real-scheduler checks share (`clique bench kueue-models`, `clique bench kube-topology-models`):
the seeded workload, snapshots of the real cluster's state, the decision-by-decision comparison and its summary
(pure), and the loop that plays the gangs one at a time on a running control plane (side effects: creates and
deletes pods; what a gang is made of and how a refusal shows are given by the caller).

Input (seeded, pure: `check_workload`): a spine / leaf / host cluster, an uneven pre-fill (plain pods bound to
their nodes by name), then gangs of 2-4 pods x 1, 2, 4 or 8 GPUs, each of one of three kinds (a required or
preferred leaf or spine, or none), submitted one at a time. Before each real decision the model places the same
gang on a snapshot of the same cluster state (the real placements so far), so every difference is one decision,
not drift. A gang the real scheduler refuses is deleted (the model's state stays in step). A second,
free-running pass of the model over the whole sequence gives its own fill figures (GPUs allocated at its first
rejection) beside the real ones.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

from scheduler.placement.types import Gang, HostState, Role, Snapshot

SPINE, LEAF = "clique.dev/spine", "clique.dev/leaf"
POOL_LABEL = "clique.dev/pool"
KINDS = ("required-leaf", "preferred-leaf", "preferred-spine")  # Kueue's: a required or preferred level
GIB = 1024 ** 3


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
    kind: str  # "required-leaf", "preferred-spine", ..., or "gang-only" (no topology constraint)

    @property
    def level(self) -> str:
        """The level a decision is judged at: the gang's own, else the leaf."""
        return self.gang.required_level or self.gang.preferred_level or LEAF


def gang_of_kind(name: str, pods: int, gpus: int, kind: str, cpu_per_gpu: int = 0, memory_per_gpu: int = 0) -> Gang:
    """A one-role gang whose kind names its constraint: required-<level>, preferred-<level> or gang-only."""
    how, _, level = kind.partition("-")
    label = {"leaf": LEAF, "spine": SPINE}.get(level)
    if kind != "gang-only" and (how not in ("required", "preferred") or label is None):
        raise ValueError(f"gang kind {kind!r}: use required-leaf, required-spine, preferred-leaf, preferred-spine "
                         "or gang-only")
    role = Role("w", pods, gpus, cpu_millis=gpus * cpu_per_gpu, memory=gpus * memory_per_gpu)
    return Gang(name, (role,), required_level=label if how == "required" else None,
                preferred_level=label if how == "preferred" else None)


def check_workload(hosts: Sequence[str], gpus_per_host: int, gangs: int, seed: int, busy_share: float = 0.5,
                   kinds: Sequence[str] = KINDS, cpu_per_gpu: int = 0,
                   memory_per_gpu: int = 0) -> tuple[dict[str, int], list[CheckGang]]:
    """(pre-fill GPUs per host, the gangs in submission order), seeded. With `cpu_per_gpu` / `memory_per_gpu`
    (millicores, bytes) every gang pod also requests that much per GPU (the pre-fill pods too: `prefill_pods`)."""
    rng = random.Random(seed)
    prefill = {h: rng.randint(1, gpus_per_host - 1) for h in hosts if rng.random() < busy_share and gpus_per_host > 1}
    out = []
    for i in range(gangs):
        pods, gpus, kind = rng.choice((2, 3, 4)), rng.choice((1, 2, 4, 8)), rng.choice(tuple(kinds))
        out.append(CheckGang(gang_of_kind(f"k{i:03d}", pods, gpus, kind, cpu_per_gpu, memory_per_gpu), kind))
    return prefill, out


@dataclass
class ClusterState:
    """What the real cluster holds per host, as the checks track it: GPUs, pods, CPU (millicores), memory (bytes)."""

    gpus: dict[str, int] = field(default_factory=dict)
    pods: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, int] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)

    def add(self, host: str, gpus: int, cpu: int = 0, memory: int = 0) -> None:
        for d, v in ((self.gpus, gpus), (self.pods, 1), (self.cpu, cpu), (self.memory, memory)):
            d[host] = d.get(host, 0) + v


def snapshot_with(snap: Snapshot, used: dict[str, int] | ClusterState, pods: dict[str, int] | None = None) -> Snapshot:
    """`snap` with what the real cluster uses per host: a ClusterState, or GPUs and pod counts."""
    st = used if isinstance(used, ClusterState) else ClusterState(dict(used), dict(pods or {}))
    hosts = {n: HostState(n, gpus=h.gpus, cpu_millis=h.cpu_millis, memory=h.memory, pods=h.pods,
                          gpus_used=st.gpus.get(n, 0), pods_used=st.pods.get(n, 0), cpu_used=st.cpu.get(n, 0),
                          memory_used=st.memory.get(n, 0)) for n, h in snap.hosts.items()}
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
    real: list[str] | None  # hosts (one per pod, sorted) or None when the real scheduler left it pending
    model: list[str] | None
    real_domain: tuple | None = None  # domain at the gang's level, None if spread (or not placed)
    model_domain: tuple | None = None
    real_s: float | None = None  # creation -> all pods bound
    real_is_model_tie: bool | None = None  # the real placement is one the model scores as high as its own choice


@dataclass
class CheckResult:
    decisions: list[Decision] = field(default_factory=list)
    real_first_rejection: dict | None = None  # GPUs allocated / unallocated when the first gang was refused
    model_first_rejection: dict | None = None  # the same for the model's own free-running pass
    total_gpus: int = 0
    offline: dict = field(default_factory=dict)  # policy -> its free-running pass: first rejection, one-domain share
    kinds: tuple[str, ...] = KINDS

    def summary(self) -> dict:
        both = [d for d in self.decisions if d.real and d.model]
        agree = [d for d in self.decisions if bool(d.real) == bool(d.model)]
        leaf_real = [d for d in self.decisions if d.real]
        leaf_model = [d for d in self.decisions if d.model]
        out = {
            "gangs": len(self.decisions),
            "placed_real": len(leaf_real), "placed_model": len(leaf_model),
            "same_admission_share": _share(len(agree), len(self.decisions)),
            "different_domain_share": _share(sum(d.real_domain != d.model_domain for d in both), len(both)),
            "different_hosts_share": _share(sum(d.real != d.model for d in both), len(both)),
            "one_domain_share_real": _share(sum(d.real_domain is not None for d in leaf_real), len(leaf_real)),
            "one_domain_share_model": _share(sum(d.model_domain is not None for d in leaf_model), len(leaf_model)),
            "by_kind": {k: {"gangs": sum(d.kind == k for d in both),
                            "different_domain": sum(d.kind == k and d.real_domain != d.model_domain for d in both)}
                        for k in self.kinds},
            "real_first_rejection": self.real_first_rejection, "model_first_rejection": self.model_first_rejection,
            "total_gpus": self.total_gpus, "offline_passes": self.offline,
            "real_gang_bound_s": {"p50": _pct([d.real_s for d in self.decisions if d.real_s is not None], 0.5),
                                  "p99": _pct([d.real_s for d in self.decisions if d.real_s is not None], 0.99)},
        }
        judged = [d for d in both if d.real_is_model_tie is not None]
        if judged:  # a different outcome that the model scores as high as its own pick is a tie-break, not a decision
            out["real_not_a_model_tie_share"] = _share(sum(not d.real_is_model_tie for d in judged), len(judged))
            out["different_domain_not_a_tie_share"] = _share(
                sum(d.real_domain != d.model_domain and not d.real_is_model_tie for d in judged), len(judged))
        return out


def _share(n: int, of: int) -> float | None:
    return round(n / of, 3) if of else None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 3)


class CheckCluster(NamedTuple):
    spec: Any  # topology.spec ClusterSpec
    pool: str
    api: Any
    core: Any
    custom: Any
    names: list[str]  # the KWOK nodes created
    base: Snapshot  # the model's view of them, empty


def check_cluster(cp, spec_data: dict) -> CheckCluster:
    """The check's KWOK nodes on a running control plane (side effect: creates them), API clients, and the model's
    empty snapshot of the same nodes; shared by both model checks."""
    from kubernetes import client

    from scheduler.placement.snapshots import snapshot_from_spec
    from simulations.controlplane.kwok_nodes import create_nodes
    from topology.spec import parse_cluster_spec

    spec = parse_cluster_spec(spec_data)
    api = cp.api_client()
    names = create_nodes(api, spec.hosts())
    return CheckCluster(spec, spec.pools[0].name, api, client.CoreV1Api(api), client.CustomObjectsApi(api), names,
                        snapshot_from_spec(spec))


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


def offline_pass(policy: Any, base: Snapshot, gangs: Sequence[CheckGang]) -> dict:
    """A policy's own pass over the sequence: placed gangs, one-domain share (at each gang's level), first rejection."""
    hosts, first = model_pass(policy, base, gangs)
    placed = [(cg, h) for cg, h in zip(gangs, hosts) if h]
    return {"placed": len(placed), "first_rejection": first,
            "one_domain_share": _share(sum(domain(base, h, cg.level) is not None for cg, h in placed), len(placed))}


def where(hosts: list[str] | None, dom: tuple | None) -> str:
    if not hosts:
        return "pending"
    return f"{'/'.join(dom) if dom else 'spread'} ({len(set(hosts))} host(s))"


# ----------------------------------------------------------------------------------------------- real run
def pod_manifest(name: str, pool: str, role: Role, labels: dict | None = None, annotations: dict | None = None,
                 node: str | None = None) -> dict:
    """A pod of the checks: confined to the pool's nodes (or bound to `node` by name), requesting the role's GPUs
    and, when it has them, its CPU and memory."""
    limits = {"nvidia.com/gpu": str(role.gpus)}
    requests = {}
    if role.cpu_millis:
        requests["cpu"] = f"{role.cpu_millis}m"
    if role.memory:
        requests["memory"] = str(role.memory)
    res = {"limits": {**limits, **requests}, "requests": {**limits, **requests}} if requests else {"limits": limits}
    spec: dict = {"automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
                  "containers": [{"name": "w", "image": "x", "resources": res}]}
    spec.update({"nodeName": node} if node else {"nodeSelector": {POOL_LABEL: pool}})
    meta: dict = {"name": name, "labels": labels or {}}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def prefill_pods(core, namespace: str, pool: str, prefill: dict[str, int], cpu_per_gpu: int = 0,
                 memory_per_gpu: int = 0) -> ClusterState:
    """Bind the pre-fill pods by node name (no scheduler) and wait until they run; returns the state they make."""
    state = ClusterState()
    for h, g in sorted(prefill.items()):
        role = Role("f", 1, g, cpu_millis=g * cpu_per_gpu, memory=g * memory_per_gpu)
        core.create_namespaced_pod(namespace, pod_manifest(f"fill-{h}", pool, role, node=h))
        state.add(h, g, role.cpu_millis, role.memory)
    wait_until(lambda: sum(p.status.phase == "Running" for p in core.list_namespaced_pod(namespace).items)
               >= len(prefill), 60, "pre-fill pods Running")
    return state


@dataclass
class RealScheduler:
    """How one real scheduler takes a gang: `submit` creates what the gang is made of (its pods' manifests are
    given) and returns nothing; `refused` returns the scheduler's reason once it has tried the gang and left it
    pending, else None; `discard` deletes a refused gang's objects besides its pods (PodGroup, Workload)."""

    name: str
    pods: Callable[[CheckGang], list[dict]]
    submit: Callable[[CheckGang, list[dict]], None]
    refused: Callable[[CheckGang], str | None]
    discard: Callable[[CheckGang], None] = lambda cg: None
    # whether the model scores a placement (hosts) as high as its own choice, for models with random tie-breaks
    explains: Callable[[Snapshot, CheckGang, list[str]], bool] | None = None


def play(core, namespace: str, base: Snapshot, state: ClusterState, work: Sequence[CheckGang], policy: Any,
         real: RealScheduler, res: CheckResult, gang_timeout_s: float = 30.0, say=print, tag: str = "") -> CheckResult:
    """Each gang through the model (on a snapshot of the real state) and then through the real scheduler, one at a
    time; the decisions go into `res`, `state` follows the real cluster."""
    for cg in work:
        snap = snapshot_with(base, state)
        plan = policy.place(snap, cg.gang)
        d = Decision(cg.gang.name, cg.kind, cg.gang.shape(), None,
                     sorted(a.host for a in plan.assignments) if plan.placed else None)
        pods = real.pods(cg)
        t0 = time.perf_counter()
        real.submit(cg, pods)
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
            reason = real.refused(cg)
            reason_since = (reason_since or time.monotonic()) if reason else None
            if reason_since and not bound and time.monotonic() - reason_since > 1.0:  # tried, and still pending
                break
            time.sleep(0.1)
        role = cg.gang.roles[0]
        if want <= bound.keys():
            d.real = sorted(bound.values())
            for h in d.real:
                state.add(h, role.gpus, role.cpu_millis, role.memory)
        else:
            if res.real_first_rejection is None:
                alloc = sum(state.gpus.values())
                res.real_first_rejection = {"gang": cg.gang.name, "allocated_gpus": alloc,
                                            "unallocated_gpus": res.total_gpus - alloc,
                                            f"{real.name}_reason": (reason or "timed out")[:240]}
            delete_pods(core, namespace, f"bench-gang={cg.gang.name}")
            real.discard(cg)
        if d.real:
            d.real_domain = domain(snap, d.real, cg.level)
        if d.model:
            d.model_domain = domain(snap, d.model, cg.level)
        if real.explains is not None and d.real and d.model:
            d.real_is_model_tie = d.real == d.model or real.explains(snap, cg, d.real)
        res.decisions.append(d)
        differs = d.real_domain != d.model_domain
        tie = differs and bool(d.real_is_model_tie)
        say(f"[{tag}] {cg.gang.name} {cg.kind:<15} {cg.gang.shape():>5}: real {where(d.real, d.real_domain)} "
            f"model {where(d.model, d.model_domain)}" + ("  <- tie, broken differently" if tie else
                                                         "  <- differs" if differs else ""))
    return res


def delete_pods(core, ns: str, selector: str | None, timeout_s: float = 60.0) -> None:
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


def wait_until(predicate, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
