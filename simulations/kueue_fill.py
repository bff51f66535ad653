"""The real Kueue (TAS) as a scheduler of the KWOK fill (`clique simulate --kwok --schedulers ...,kueue-tas`): its pods,
its queues sized to the cluster, and the fill's stop signal read from Kueue's own Workload objects.

Why a signal of its own: the fill stops at the first pod the scheduler rejects. kube-scheduler says so on the pod
(PodScheduled=False, reason Unschedulable); a Kueue pod never gets that far. Kueue's pod webhook creates it with
the scheduling gates `kueue.x-k8s.io/admission` and `kueue.x-k8s.io/topology` (pkg/controller/jobs/pod/
pod_webhook.go, v0.17.0), so kube-scheduler leaves it alone (its only condition is PodScheduled=False reason
SchedulingGated, written by kube-apiserver: k8s.io/kubernetes v1.37.2 pkg/registry/core/pod/strategy.go), and
Kueue's scheduler decides on the pod's Workload instead.

The stop signal (`workload_verdict`), all names from sigs.k8s.io/kueue v0.17.0:
- a Workload is **rejected** when its condition `QuotaReserved` (apis/kueue/v1beta2/workload_types.go
  WorkloadQuotaReserved) is False with reason `Pending` and a message from the flavor assigner:
  `couldn't assign flavors to pod set <name>: <why>` (pkg/scheduler/flavorassigner/flavorassigner.go
  Assignment.Message; "failed to assign flavors to pod set" when the assignment errs). The scheduler writes it in
  requeueAndUpdate (pkg/scheduler/scheduler.go: workload.UnsetQuotaReservationWithCondition(wl, "Pending",
  e.inadmissibleMsg, ...), pkg/workload/workload.go) after a cycle in which the workload got no assignment.
  Other Pending messages of the same condition are not rejections of this workload's shape and are not counted:
  "Workload no longer fits after processing another workload" (setSkipped: another head of the same cycle took
  the room), "ClusterQueue ... is inactive / not found", namespace-selector mismatches.
- `<why>` says which check failed (`rejection_kind`): TAS's `topology "<name>" doesn't allow to fit any of N
  pod(s)` or `allows to fit only K out of N pod(s)` (pkg/cache/scheduler/tas_flavor_snapshot.go notFitMessage),
  or quota's `insufficient quota for <resource> in flavor <f>, ...` / `insufficient unused quota for ...`
  (flavorassigner.go fitsResourceQuota), or `resource <r> unavailable in ClusterQueue`.
- a Workload **holds a reservation** while QuotaReserved is True (its pods are then ungated and bound by
  kube-scheduler where TAS put them).

`queues_for` sizes the ClusterQueue's nominal quota to twice the cluster's allocatable GPUs, CPU and memory
(every resource the pods request must be covered, flavorassigner.go "resource %s unavailable in ClusterQueue"):
Kueue checks quota before topology (flavorassigner.go: TAS runs only when the quota assignment is Fit), and with
quota above what the nodes hold, quota is never the reason; the rejection is always TAS finding no node. The run
reports the kind of the first rejection, so a quota rejection would show.

What "allocated at the first rejection" means for Kueue: the GPUs of the pods whose Workloads held a reservation
when the rejection arrived on the Workload watch (Kueue decided against them), on the nodes those pods were then
bound to. Kueue applies admissions from a goroutine (scheduler.go admit: admissionRoutineWrapper), so an
admission of the cycle just before may reach the API server a moment after the rejection; the run counts the
reservations that arrive in the second after it (`reserved_after_signal`) so that fuzz is visible.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from simulations.controlplane.watching import WatchThread

QUEUE = "tas"  # the LocalQueue of the scenario's namespace
# pkg/workload/workload.go UnsetQuotaReservationWithCondition is called with this reason by requeueAndUpdate
PENDING_REASON = "Pending"
# pkg/scheduler/flavorassigner/flavorassigner.go Assignment.Message (v0.17.0)
REJECTION_PREFIXES = ("couldn't assign flavors to pod set ", "failed to assign flavors to pod set ")
# pkg/cache/scheduler/tas_flavor_snapshot.go notFitMessage / multiLayerNotFitMessage (v0.17.0)
TOPOLOGY_MARKERS = ("doesn't allow to fit", "allows to fit only")
# pkg/scheduler/flavorassigner/flavorassigner.go fitsResourceQuota / assignFlavors (v0.17.0)
QUOTA_MARKERS = ("insufficient quota for ", "insufficient unused quota for ")
MISSING_RESOURCE_MARKER = "unavailable in ClusterQueue"
QUOTA_FACTOR = 2  # nominal quota = this x the cluster's allocatable: never the reason


@dataclass(frozen=True)
class Verdict:
    state: str  # "reserved", "rejected", "waiting" (created, not decided, or skipped for this cycle)
    kind: str = ""  # rejected: "topology", "quota", "missing-resource", "other"
    message: str = ""


def rejection_kind(message: str) -> str:
    """Which of Kueue's checks a `couldn't assign flavors` message names (TAS, quota, a resource not covered)."""
    if any(m in message for m in QUOTA_MARKERS):
        return "quota"
    if MISSING_RESOURCE_MARKER in message:
        return "missing-resource"
    if "topology " in message and any(m in message for m in TOPOLOGY_MARKERS):
        return "topology"
    return "other"


def workload_verdict(workload: Mapping[str, Any]) -> Verdict:
    """What a kueue.x-k8s.io/v1beta2 Workload's QuotaReserved condition says (see the module docstring)."""
    cond = next((c for c in (workload.get("status") or {}).get("conditions") or []
                 if c.get("type") == "QuotaReserved"), None)
    if cond is None:
        return Verdict("waiting")
    message = cond.get("message") or ""
    if cond.get("status") == "True":
        return Verdict("reserved", message=message)
    if cond.get("reason") == PENDING_REASON and message.startswith(REJECTION_PREFIXES):
        return Verdict("rejected", rejection_kind(message), message)
    return Verdict("waiting", message=message)


def workload_pods(workload: Mapping[str, Any]) -> list[str]:
    """The pods a Workload stands for: its Pod owners (one for a plain pod, every member for a pod group)."""
    return [o["name"] for o in (workload.get("metadata") or {}).get("ownerReferences") or []
            if o.get("kind") == "Pod" and o.get("name")]


def kueue_pod(manifest: dict, size: int, group: str, queue: str = QUEUE, required: str | None = None,
              preferred: str | None = None) -> dict:
    """`manifest` (a scenario pod, schedulerName default-scheduler) as a Kueue pod in LocalQueue `queue`: a plain pod
    (the queue label only) or a member of a plain pod group of `size` pods with its topology level."""
    from simulations.controlplane.kueue import QUEUE_LABEL, pod_group_meta

    out = json.loads(json.dumps(manifest))
    meta = out["metadata"]
    if size == 1:
        meta["labels"][QUEUE_LABEL] = queue
        return out
    labels, annotations = pod_group_meta(group, size, queue, required=required, preferred=preferred)
    meta["labels"].update(labels)
    meta["annotations"] = {**meta.get("annotations", {}), **annotations}
    return out


def queues_for(namespace: str, level_labels: Sequence[str], allocatable: Mapping[str, int],
               node_labels: Mapping[str, str], factor: int = QUOTA_FACTOR):
    """The Topology / ResourceFlavor / ClusterQueue / LocalQueue of the scenario namespace, quota `factor` x the
    cluster's allocatable (`allocatable`: resource name -> total in base units: GPUs, CPU millicores, bytes)."""
    from simulations.controlplane.kueue import TasQueues

    units = {"cpu": lambda v: f"{v * factor}m"}
    quotas = {r: units.get(r, lambda v: str(v * factor))(int(v)) for r, v in allocatable.items() if v > 0}
    return TasQueues(namespace, list(level_labels), quotas, node_labels=dict(node_labels),
                     name=f"{namespace}-tas", local_queue=QUEUE)


class WorkloadObserver(WatchThread):
    """Watches the Workloads of one namespace (raw JSON, one thread) and reports, in the order the API server
    shows them: `on_reserved(pods)` when a Workload gets its reservation, `on_rejected(pods, verdict, reserved)`
    the first time one is rejected (`reserved`: the pods of every Workload holding a reservation just then)."""

    def __init__(self, api_client: Any, namespace: str,
                 on_rejected: Callable[[list[str], Verdict, frozenset[str]], None],
                 on_reserved: Callable[[list[str]], None] | None = None) -> None:
        self.api_client, self.namespace = api_client, namespace
        self.on_rejected, self.on_reserved = on_rejected, on_reserved
        self.reserved: dict[str, list[str]] = {}  # workload -> its pods, while it holds a reservation
        self.rejected: set[str] = set()
        self.first_rejection_at: float | None = None
        self.reserved_after_signal = 0  # reservations that arrived within 1 s after the first rejection
        self.verdicts: dict[str, Verdict] = {}
        super().__init__("workload-observer")

    def _run(self) -> None:
        from kubernetes import client

        from simulations.controlplane.kueue import GROUP, VERSION
        from simulations.controlplane.watching import list_and_watch

        custom = client.CustomObjectsApi(self.api_client)
        list_and_watch(
            lambda: custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "workloads"),
            lambda rv: custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "workloads", watch=True,
                                                            resource_version=rv, allow_watch_bookmarks=True,
                                                            timeout_seconds=5, _preload_content=False),
            self._apply, self._stop, self.errors, "workload")

    def _apply(self, typ: str, obj: dict) -> None:
        name = obj["metadata"]["name"]
        if typ == "DELETED":
            self.reserved.pop(name, None)
            return
        verdict = workload_verdict(obj)
        self.verdicts[name] = verdict
        pods = workload_pods(obj)
        if verdict.state == "reserved":
            if name not in self.reserved:
                self.reserved[name] = pods
                if self.first_rejection_at is not None and time.monotonic() - self.first_rejection_at <= 1.0:
                    self.reserved_after_signal += 1
                if self.on_reserved:
                    self.on_reserved(pods)
            return
        self.reserved.pop(name, None)
        if verdict.state == "rejected" and name not in self.rejected:
            self.rejected.add(name)
            if self.first_rejection_at is None:
                self.first_rejection_at = time.monotonic()
            held = frozenset(p for ps in self.reserved.values() for p in ps)
            self.on_rejected(pods, verdict, held)


def empty_namespace(core: Any, ns: str, timeout_s: float = 900) -> None:
    """Delete every pod of `ns` (any scheduler's) and wait until they are gone. Kueue v0.17.0 keeps its finalizer
    kueue.x-k8s.io/managed (pkg/controller/jobs/pod/constants PodFinalizer) on pods it never admitted; on
    KWOK, where no container ever runs, the harness takes it off deleted pods rather than wait."""
    from kubernetes.client.exceptions import ApiException

    from concurrent.futures import ThreadPoolExecutor

    def unfinalize(name: str) -> None:
        try:
            core.patch_namespaced_pod(name, ns, {"metadata": {"finalizers": None}})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete(name: str) -> None:
        try:
            core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # pod by pod, not one delete-collection: with thousands of Kueue pods (each deletion an update through Kueue's
    # pod webhook) a single collection call outlives kube-apiserver's 60 s request timeout
    deadline = time.monotonic() + timeout_s
    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            left = core.list_namespaced_pod(ns).items
            if not left:
                return
            list(pool.map(delete, [p.metadata.name for p in left if not p.metadata.deletion_timestamp]))
            list(pool.map(unfinalize, [p.metadata.name for p in left if p.metadata.finalizers]))
            time.sleep(0.5)
    raise TimeoutError(f"pods of namespace {ns} not gone after {timeout_s:.0f}s")
