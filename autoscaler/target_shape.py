"""What a scale target says about itself, read from its object (pure: dicts in, facts or problems out).

- Gang shape: pods per replica and GPUs per pod as the target declares them (LeaderWorkerSet
  spec.leaderWorkerTemplate.size and its templates' GPU requests; a StatefulSet's or Deployment's pod template GPU
  requests and the `clique.dev/gang-size` annotation on it; a DynamoGraphDeployment service's multinode.nodeCount
  and its GPUs per pod). `resolve_gang` fills what a policy leaves out from the target and names every field where
  the two disagree.
- DynamoGraphDeployment services: v1alpha1 `spec.services.<name>` (a map) and v1beta1 `spec.components[]` (a list
  keyed by `name`), whether a service's replicas are owned by its DynamoGraphDeploymentScalingAdapter, the label
  selector of its pods, and the JSON patch that sets a v1beta1 component's replicas by index with preconditions.
- Pending replicas: unbound pods per replica, or unbound leaders where the target's selector selects one leader pod
  per replica (a LeaderWorkerSet's /scale selector).

Upstream names, each read in the source named beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from autoscaler.policy import GangShape
from scheduler.gangs import GANG_SIZE, GPU, LWS_NAME, LWS_WORKER
from topology.quantity import parse_quantity

# ai-dynamo/dynamo: the CRD group (deploy/operator/api/v1beta1/groupversion_info.go), kinds
# (api/v1alpha1|v1beta1/dynamographdeployment_types.go, dynamographdeploymentscalingadapter_types.go), read at
# main commits 0fddc01b / 02046eff / 5b768b0d of the stored index, and as Dynamo 1.6.1 (PyPI ai-dynamo 1.6.1,
# the newest release) uses them in dynamo/planner/connectors/clients/kubernetes_api.py: NVIDIA_API_GROUP
# "nvidia.com", DYNAMO_API_VERSION "v1beta1", DGD_PLURAL / DGDSA_PLURAL.
DYNAMO_GROUP = "nvidia.com"
DGD_KIND = "DynamoGraphDeployment"
DGDSA_KIND = "DynamoGraphDeploymentScalingAdapter"
DGDSA_PLURAL = "dynamographdeploymentscalingadapters"
# Pod labels the Dynamo operator stamps on every pod of a graph: deploy/operator/internal/consts/consts.go
# (KubeLabelDynamoGraphDeploymentName, KubeLabelDynamoComponent); Dynamo 1.6.1's planner selects a DGD's pods by the
# first and partitions them by component with the second (kubernetes_api.py DYNAMO_DGD_NAME_LABEL,
# DYNAMO_COMPONENT_LABEL; the value is the service / component name).
DGD_NAME_LABEL = "nvidia.com/dynamo-graph-deployment-name"
DGD_COMPONENT_LABEL = "nvidia.com/dynamo-component"
# sigs.k8s.io/lws v0.8.0 api/leaderworkerset/v1/leaderworkerset_types.go: group, kind; the /scale subresource is
# specpath .spec.replicas, selectorpath .status.hpaPodSelector, and pkg/controllers/leaderworkerset_controller.go sets
# that selector to `leaderworkerset.sigs.k8s.io/name=<lws>,leaderworkerset.sigs.k8s.io/worker-index=0`: leaders
# only, one pod per group.
LWS_GROUP = "leaderworkerset.x-k8s.io"
LWS_KIND = "LeaderWorkerSet"
LEADERS_ONLY = f"{LWS_WORKER}=0"


class ShapeError(ValueError):
    """The target object is not shaped as its API publishes it; the message names the field."""


@dataclass(frozen=True)
class TargetShape:
    """The gang shape a target declares; None where it does not say."""

    pods: int | None = None  # pods per replica
    gpus_per_pod: int | None = None  # GPUs of each (worker) pod
    leader_gpus: int | None = None  # GPUs of the first pod, when they differ (an LWS leaderTemplate)
    pods_from: str = ""  # where each number was read, for messages
    gpus_from: str = ""
    counts: str = "Replicas"  # what the target's replicas count: Replicas (gangs) or Pods


# ---------------------------------------------------------------------------------------------- GPUs of pods
def _gpus(resources: Any, at: str) -> int | None:
    """nvidia.com/gpu of one container's resources (requests, else limits: an extended resource's request equals
    its limit, and a limit alone sets both). None when the container names no GPU."""
    if not isinstance(resources, dict):
        return None
    for key in ("requests", "limits"):
        part = resources.get(key)
        if isinstance(part, dict) and part.get(GPU) is not None:
            try:
                q = parse_quantity(part[GPU])
            except (ValueError, ArithmeticError) as exc:
                raise ShapeError(f"{at}.resources.{key}[{GPU}]: {part[GPU]!r} is not a quantity") from exc
            if q != int(q) or q < 0:
                raise ShapeError(f"{at}.resources.{key}[{GPU}]: {part[GPU]!r} is not a whole number of GPUs")
            return int(q)
    return None


def pod_spec_gpus(spec: Any, at: str) -> int | None:
    """GPUs one pod of this pod spec asks for: the sum over its containers (what kube-scheduler counts for
    regular containers). None when no container names nvidia.com/gpu (GPUs may come another way, e.g. DRA)."""
    if not isinstance(spec, dict):
        return None
    found = [g for i, c in enumerate(spec.get("containers") or []) if isinstance(c, dict)
             and (g := _gpus(c.get("resources"), f"{at}.containers[{i}]")) is not None]
    return sum(found) if found else None


def _template_gpus(template: Any, at: str) -> int | None:
    return pod_spec_gpus(template.get("spec"), f"{at}.spec") if isinstance(template, dict) else None


def _positive_int(v: Any, at: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        try:
            n = int(str(v))
        except ValueError:
            n = 0
        if n < 1:
            raise ShapeError(f"{at}: {v!r} is not a positive integer")
        return n
    return v


# ---------------------------------------------------------------------------------------------- shapes
def lws_shape(obj: dict) -> TargetShape:
    """sigs.k8s.io/lws v0.8.0 LeaderWorkerTemplate: size (default 1: leader plus size-1 workers), workerTemplate,
    leaderTemplate (optional; workers' template when absent)."""
    lwt = (obj.get("spec") or {}).get("leaderWorkerTemplate") or {}
    at = "spec.leaderWorkerTemplate"
    size = _positive_int(lwt.get("size", 1), f"{at}.size")
    worker = _template_gpus(lwt.get("workerTemplate"), f"{at}.workerTemplate")
    leader = _template_gpus(lwt["leaderTemplate"], f"{at}.leaderTemplate") if lwt.get("leaderTemplate") else worker
    if size == 1:  # the leader is the whole group
        return TargetShape(1, leader, None, f"{at}.size", f"{at}.leaderTemplate" if lwt.get("leaderTemplate")
                           else f"{at}.workerTemplate")
    return TargetShape(size, worker, leader if leader != worker else None, f"{at}.size", f"{at}.workerTemplate")


def pod_template_shape(obj: dict, counts: str) -> TargetShape:
    """A StatefulSet or Deployment: GPUs from spec.template; pods per gang from Clique's own `clique.dev/gang-size`
    annotation on the template (what scheduler/gangs.py groups a StatefulSet's ordinals by)."""
    template = (obj.get("spec") or {}).get("template") or {}
    ann = (template.get("metadata") or {}).get("annotations") or {}
    pods = _positive_int(ann[GANG_SIZE], f"spec.template.metadata.annotations[{GANG_SIZE}]") \
        if ann.get(GANG_SIZE) is not None else None
    return TargetShape(pods, _template_gpus(template, "spec.template"), None,
                       f"spec.template annotation {GANG_SIZE}", "spec.template", counts)


def dgd_version_layout(api_version: str) -> str:
    """`services` (v1alpha1: a map keyed by service name) or `components` (v1beta1: a list keyed by `name`)."""
    return "services" if api_version.rpartition("/")[2] == "v1alpha1" else "components"


def dgd_service(obj: dict, api_version: str, name: str) -> tuple[int | None, dict]:
    """(index in spec.components or None for v1alpha1's map, the service's spec). Raises ShapeError naming what is
    there when it is missing."""
    spec = obj.get("spec") or {}
    if dgd_version_layout(api_version) == "services":
        services = spec.get("services")
        if not isinstance(services, dict) or not isinstance(services.get(name), dict):
            have = sorted(services) if isinstance(services, dict) else []
            raise ShapeError(f"no service {name!r} in spec.services (it has {', '.join(have) or 'none'})")
        return None, services[name]
    comps = spec.get("components")
    if not isinstance(comps, list):
        hint = "; it has spec.services: write scaleTargetRef.apiVersion nvidia.com/v1alpha1" \
            if isinstance(spec.get("services"), dict) else ""
        raise ShapeError(f"spec.components is not a list{hint}")
    for i, c in enumerate(comps):
        if isinstance(c, dict) and c.get("name") == name:
            return i, c
    have = [str(c.get("name")) for c in comps if isinstance(c, dict)]
    raise ShapeError(f"no component named {name!r} in spec.components (it has {', '.join(have) or 'none'})")


def dgd_replicas(svc: dict) -> int:
    """spec replicas of a service / component (Dynamo's own readers treat a missing value as 0: Dynamo 1.6.1
    dynamo/planner/monitoring/dgd_services.py Service.number_replicas)."""
    v = svc.get("replicas")
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else 0


def dgd_adapter_enabled(svc: dict, api_version: str) -> bool:
    """Whether a DynamoGraphDeploymentScalingAdapter owns this service's replicas.
    v1alpha1 (api/v1alpha1/common.go ScalingAdapter): `scalingAdapter: {enabled: true}`; a bare `{}` is disabled.
    v1beta1 (api/v1beta1/common.go ScalingAdapter, an empty marker struct): present at all, even `{}`, is enabled."""
    sa = svc.get("scalingAdapter")
    if dgd_version_layout(api_version) == "services":
        return isinstance(sa, dict) and sa.get("enabled") is True
    return sa is not None


def dgd_shape(svc: dict, api_version: str, where: str) -> TargetShape:
    """Pods per replica: multinode.nodeCount (default 1; one pod per node, api/v1*/...: "Total GPUs used is
    nodeCount * container GPU request"). GPUs per pod: v1alpha1 resources.limits.gpu (else requests.gpu; a string,
    api/v1alpha1/common.go ResourceItem.GPU), else extraPodSpec.mainContainer's nvidia.com/gpu; v1beta1
    podTemplate.spec containers' nvidia.com/gpu (the operator's main container is named "main")."""
    mn = svc.get("multinode")
    pods = _positive_int(mn.get("nodeCount", 2), f"{where}.multinode.nodeCount") if isinstance(mn, dict) else 1
    gpus: int | None = None
    if dgd_version_layout(api_version) == "services":
        res = svc.get("resources") or {}
        for key in ("limits", "requests"):
            raw = (res.get(key) or {}).get("gpu") if isinstance(res.get(key), dict) else None
            if raw not in (None, ""):
                try:
                    q = parse_quantity(str(raw))
                except (ValueError, ArithmeticError) as exc:
                    raise ShapeError(f"{where}.resources.{key}.gpu: {raw!r} is not a number") from exc
                if q != int(q) or q < 0:
                    raise ShapeError(f"{where}.resources.{key}.gpu: {raw!r} is not a whole number of GPUs")
                gpus, gpus_from = int(q), f"{where}.resources.{key}.gpu"
                break
        else:
            main = ((svc.get("extraPodSpec") or {}).get("mainContainer")) or {}
            gpus = _gpus(main.get("resources"), f"{where}.extraPodSpec.mainContainer")
            gpus_from = f"{where}.extraPodSpec.mainContainer"
    else:
        gpus = _template_gpus(svc.get("podTemplate"), f"{where}.podTemplate")
        gpus_from = f"{where}.podTemplate"
    return TargetShape(pods, gpus, None, f"{where}.multinode.nodeCount", gpus_from)


def dgd_where(api_version: str, name: str, index: int | None) -> str:
    return f"spec.services.{name}" if index is None else f"spec.components[{index}] ({name})"


def dgd_pod_selector(dgd: str, service: str) -> str:
    return f"{DGD_NAME_LABEL}={dgd},{DGD_COMPONENT_LABEL}={service}"


def dgd_replicas_patch(index: int, name: str, resource_version: str, replicas: int) -> list[dict[str, Any]]:
    """RFC 6902 patch of spec.components[index].replicas that applies only to the object as it was read: `test`
    ops on metadata.resourceVersion and on the component's name, so an edit in between (a reordered list, any other
    change) makes the API server refuse it (HTTP 422) instead of writing over it. Dynamo 1.6.1's planner patches the
    same path with a `test` on the name (kubernetes_api.py _component_replicas_json_patch)."""
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "test", "path": f"/spec/components/{index}/name", "value": name},
            {"op": "add", "path": f"/spec/components/{index}/replicas", "value": replicas}]


def adapter_matches(adapter: dict, dgd: str, service: str) -> bool:
    """A DynamoGraphDeploymentScalingAdapter's spec.dgdRef names this DGD service: v1alpha1 dgdRef.serviceName,
    v1beta1 dgdRef.componentName (api/v1*/dynamographdeploymentscalingadapter_types.go)."""
    ref = (adapter.get("spec") or {}).get("dgdRef") or {}
    return ref.get("name") == dgd and service in (ref.get("serviceName"), ref.get("componentName"))


def adapter_ref(adapter: dict) -> tuple[str | None, str | None]:
    """(DGD name, service / component name) an adapter scales."""
    ref = (adapter.get("spec") or {}).get("dgdRef") or {}
    return ref.get("name"), ref.get("componentName") or ref.get("serviceName")


def adapter_name(dgd: str, service: str) -> str:
    """The name the Dynamo operator gives a service's adapter, <dgd>-<lowercased service> (Dynamo 1.6.1
    kubernetes_api.py update_service_replicas: "DGDSA naming convention")."""
    return f"{dgd}-{service.lower()}"


# ---------------------------------------------------------------------------------------------- resolving
def resolve_gang(gang: GangShape, scale_unit: str, shape: TargetShape | None, target: str
                 ) -> tuple[GangShape, list[str]]:
    """The policy's gang shape with what it left out filled from the target, and every contradiction between the
    two as "<field>: <what the policy says> but <target> <field> says <what>; <fix>"."""
    if shape is None:
        return gang, []
    problems: list[str] = []
    pods, gpus, leader = gang.pods, gang.gpus_per_pod, gang.leader_gpus
    if shape.pods is not None:
        if "podsPerReplica" in gang.stated and gang.pods != shape.pods:
            problems.append(f"podsPerReplica: {gang.pods} but {target} {shape.pods_from} says {shape.pods} pod(s) "
                            "per replica; remove podsPerReplica (it is read from the target) or make them agree")
        pods = shape.pods
    if shape.gpus_per_pod is not None:
        if "gang.gpusPerPod" in gang.stated and gang.gpus_per_pod != shape.gpus_per_pod:
            problems.append(f"gang.gpusPerPod: {gang.gpus_per_pod} but {target} {shape.gpus_from} asks for "
                            f"{shape.gpus_per_pod} {GPU} per pod; remove gang.gpusPerPod (it is read from the "
                            "target) or make them agree")
        gpus = shape.gpus_per_pod
        leader = shape.leader_gpus
    if shape.counts == "Replicas" and scale_unit == "Pods":
        problems.append(f"scaleUnit: Pods but {target} counts replicas (gangs), not pods; remove scaleUnit")
    elif shape.counts == "Pods" and scale_unit == "Replicas" and (shape.pods or 1) > 1:
        problems.append(f"scaleUnit: Replicas (the default) but {target} counts pods and {shape.pods_from} makes "
                        f"its gangs {shape.pods} pods; write scaleUnit: Pods")
    return replace(gang, pods=pods, gpus_per_pod=gpus, leader_gpus=leader), problems


def pending_replicas(unbound: int, selects: str, pods_per_replica: int) -> int:
    """Replicas created but not placed yet: each unbound leader is one (a selector of leaders only sees one pod per
    replica), else unbound pods in whole replicas, a partial one counting as one."""
    if selects == "leaders":
        return unbound
    return math.ceil(unbound / max(1, pods_per_replica))


def lws_leader_selector(name: str) -> str:
    """The hpaPodSelector the LWS v0.8.0 controller writes (pkg/controllers/leaderworkerset_controller.go)."""
    return f"{LWS_NAME}={name},{LEADERS_ONLY}"


def selects_leaders_only(selector: str | None) -> bool:
    """Whether a /scale selector picks one leader pod per replica (LWS's hpaPodSelector has worker-index=0)."""
    return bool(selector) and LEADERS_ONLY in {s.strip() for s in (selector or "").split(",")}
