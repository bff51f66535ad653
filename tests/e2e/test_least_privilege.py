"""Least privilege, proven: the extender (with clique-scheduler's kube-scheduler beside it, one ServiceAccount as in
manifests/scheduler/deployment.yaml), the autoscaler and the node agent run against the real API server with
TokenRequest tokens of the ServiceAccounts in manifests/, bound only by the shipped RBAC (applied from the
manifests, never the admin token). kube-apiserver's audit log records every request of those identities; the test
compares what they used with what their RBAC grants:

- no request was refused (HTTP 403 / authorizer "forbid");
- every successful request is allowed by a grant the RBAC matcher (simulations/controlplane/audit.py, RBAC's own
  semantics) finds in the live roles and bindings, so the matcher agrees with the API server;
- every single grant (one verb on one resource) of Clique's own roles was used by some code path, or is listed in
  JUSTIFIED with the reason (the same reason is a comment in the manifest).

The run drives each component's main code paths: the extender filters and binds gangs of every kind it reads a size
object for (clique.dev annotations, coscheduling and Volcano PodGroups, Grove PodGang through the shipped routing
policy and its gate, the Workload API PodGroup, an LWS group), nominates, releases a gated gang pinned, tells an
unschedulable gang why (Events), preempts a lower-priority domain through the Eviction API with a
PodDisruptionBudget in place, and restarts a broken StatefulSet gang; the autoscaler reads scraped metrics, scales
a StatefulSet, a Deployment and a LeaderWorkerSet through /scale, a DynamoGraphDeployment service by patching it and
one through its scaling adapter's /scale, writes policy status and Events, watches policy ConfigMaps, holds and
releases its Lease; agents patch their own Node's labels and annotations. Its own control plane (the real LWS
controller, the Workload API gates, the audit log on), module-scoped like test_autoscaler_targets.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from autoscaler.process import start_autoscaler, stop_autoscaler
from scheduler.extender.process import start_extender, stop_extender
from simulations.controlplane import ControlPlane, ControlPlaneOptions
from simulations.controlplane import audit as A
from simulations.controlplane.identities import service_account_kubeconfig
from simulations.controlplane.kwok_nodes import create_nodes
from simulations.controlplane.lws import create_lws, lws_manifest
from simulations.controlplane.processes import free_port
from simulations.exporter import SyntheticExporter
from tests.e2e.helpers import gpu_pod, opted_in_namespaces, wait_for
from tests.e2e.kustomize import build
from tests.e2e.test_agent import start_agent
from tests.e2e.test_autoscaler_targets import DGD_PLURAL, DGDSA_PLURAL, DynamoCRDs
from tests.e2e.test_extender import gang_pod
from tests.e2e.test_grove_volcano import CRDS, _crd
from tests.unit.test_admission import mint_certs
from topology.spec import parse_cluster_spec

MANIFESTS = Path(__file__).parents[2] / "manifests"
SYSTEM = "clique-system"
NVL = "nvidia.com/gpu.clique"
SCHEDULER_SA, AUTOSCALER_SA, AGENT_SA = "clique-scheduler", "clique-autoscaler", "clique-agent"
# the kinds applied for real; Deployments, the DaemonSet, Services and the webhook configuration are not run here
# (the routing policy is registered from its manifest by opted_in_namespaces)
APPLIED = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
           "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
LOW, HIGH = "clique-lp-low", "clique-lp-high"

# What this run does not need and the manifests keep on purpose, each with why (the manifest says so too). Keys:
# (role, single grant as audit.Rule.describe() writes it) or (binding, "binding").
JUSTIFIED: dict[tuple[str, str], str] = {
    ("ClusterRoleBinding/clique-scheduler:volume-scheduler", "binding"):
        "kube-scheduler's VolumeBinding plugin updates PVs/PVCs of WaitForFirstConsumer claims at PreBind; no PVCs here",
}
# Which container of the clique-scheduler pod each of its roles is for (the rest are kube-scheduler's built-ins).
CONTAINER_OF_ROLE = {"ClusterRole/clique:extender": "extender",
                     f"Role/{SYSTEM}/clique-scheduler:leader-election": "kube-scheduler"}


def user(sa: str) -> str:
    return f"system:serviceaccount:{SYSTEM}:{sa}"


@dataclass
class Run:
    requests: list[A.Request]  # every audited request of the clique-system ServiceAccounts during the run
    live_rbac: list[dict]  # the API server's ClusterRoles, Roles and bindings at the end
    shipped: list[dict]  # the RBAC objects as the manifests write them
    audit_lines: int

    def of(self, sa: str, container: str | None = None) -> list[A.Request]:
        """Requests of one ServiceAccount; for clique-scheduler, `container` "kube-scheduler" or "extender" splits
        them by user agent (kube-scheduler sends kube-scheduler/<version>, kubernetes_asyncio OpenAPI-Generator)."""
        out = [r for r in self.requests if r.user == user(sa)]
        if container is not None:
            out = [r for r in out if r.user_agent.startswith("kube-scheduler/") == (container == "kube-scheduler")]
        return out

    def grants(self, sa: str) -> list[A.Grant]:
        groups = ("system:serviceaccounts", f"system:serviceaccounts:{SYSTEM}", "system:authenticated")
        return A.grants_for(user(sa), groups, self.live_rbac)

    def requests_for_role(self, sa: str, role: str) -> list[A.Request]:
        """The requests a role is for: the whole ServiceAccount's, or one container's (CONTAINER_OF_ROLE)."""
        return self.of(sa, CONTAINER_OF_ROLE.get(role))

    def shipped_grants(self, sa: str) -> list[A.Grant]:
        """The grants of Clique's own roles (the rules the manifests write) reaching `sa`."""
        own = {A.role_key(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "") if o["kind"] == "Role"
                          else "") for o in self.shipped if o["kind"] in ("ClusterRole", "Role")}
        return [g for g in self.grants(sa) if g.role in own]


# ------------------------------------------------------------------------------------------------ builders
def _apply(api, objects: list[dict]) -> None:
    dyn = DynamicClient(api)
    for obj in objects:
        res = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        dyn.server_side_apply(res, body=obj, name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"),
                              field_manager="clique-least-privilege", force_conflicts=True)


def _pool(api, name: str, domains: int, hosts: int) -> dict[str, str]:
    """KWOK nodes of 8 GPUs labelled clique.dev/pool=<name> in NVLink domains of `hosts`: node -> domain."""
    names = create_nodes(api, parse_cluster_spec({
        "name": name, "pools": [{"name": name, "hosts": domains * hosts, "gpus": 8}],
        "levels": [{"name": "nvlink", "label": NVL, "hostsPerDomain": hosts, "valueFormat": name + ".{index}"}]}).hosts())
    return {n: f"{name}.{i // hosts}" for i, n in enumerate(names)}


def _served(custom, group: str, version: str, plural: str) -> bool:
    try:
        custom.list_cluster_custom_object(group, version, plural)
        return True
    except ApiException:
        return False


def _pods(core, ns: str, selector: str) -> list:
    return [p for p in core.list_namespaced_pod(ns, label_selector=selector).items if not p.metadata.deletion_timestamp]


def _whole(core, ns: str, selector: str, n: int, domain: dict[str, str], not_uids: set[str] = frozenset()):
    """The gang's pods -> nodes once all `n` are bound (none of `not_uids`) inside one NVLink domain."""
    pods = _pods(core, ns, selector)
    if len(pods) == n and all(p.spec.node_name and p.metadata.uid not in not_uids for p in pods):
        placed = {p.metadata.name: p.spec.node_name for p in pods}
        assert len({domain[x] for x in placed.values()}) == 1, f"{selector}: gang spans domains: {placed}"
        return placed
    return None


def _reasons(core, ns: str, name: str) -> set[str]:
    return {e.reason for e in core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items}


def _member(name: str, pool: str, labels: dict[str, str], annotations: dict[str, str] | None = None,
            scheduler: str = "clique-scheduler", **spec) -> dict:
    pod = gpu_pod(name, 8, scheduler=scheduler, labels=labels)
    pod["metadata"]["annotations"] = annotations or {}
    pod["spec"]["nodeSelector"] = {"clique.dev/pool": pool}
    pod["spec"]["terminationGracePeriodSeconds"] = 0
    pod["spec"].update(spec)
    return pod


def _custom(custom, group: str, version: str, ns: str, plural: str, kind: str, name: str, spec: dict) -> None:
    custom.create_namespaced_custom_object(group, version, ns, plural, {
        "apiVersion": f"{group}/{version}", "kind": kind, "metadata": {"name": name}, "spec": spec})


def _statefulset(name: str, pool: str, replicas: int, gang_size: int | None) -> dict:
    ann = {"clique.dev/gang-size": str(gang_size), "clique.dev/topology-required": "nvlink"} if gang_size else {}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}, "annotations": ann},
                                  "spec": _template_spec(pool, "clique-scheduler" if gang_size else "default-scheduler")}}}


def _deployment(name: str, pool: str) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": _template_spec(pool)}}}


def _template_spec(pool: str, scheduler: str = "default-scheduler") -> dict:
    return {"schedulerName": scheduler, "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
            "nodeSelector": {"clique.dev/pool": pool},
            "containers": [{"name": "w", "image": "registry.example/vllm:test",
                            "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}


def _policy(name: str, target: dict, key: str, exporter: SyntheticExporter, pool: str, depth: float,
            **extra) -> dict:
    exporter.set("vllm:num_requests_waiting", depth, target=key)
    doc = {"scaleTargetRef": target, "minReplicas": 1, "maxReplicas": 2, "evaluationIntervalSeconds": 1,
           "gang": {"nodeSelector": {"clique.dev/pool": pool}},
           "metrics": [{"type": "QueueDepth", "queueDepth": {"source": "Scrape", "endpoints": [exporter.url],
                                                             "metric": "vllm:num_requests_waiting",
                                                             "selector": {"target": key}},
                        "target": {"type": "AverageValue", "averageValue": 10}}], **extra}
    return {"metadata": {"name": name, "labels": {"clique.dev/autoscaling-policy": "true"}},
            "data": {"policy.yaml": yaml.safe_dump(doc)}}


def _priority_classes(api) -> None:
    for name, value in ((LOW, 10), (HIGH, 1000)):
        try:
            client.SchedulingV1Api(api).create_priority_class({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value})
        except ApiException as exc:
            assert exc.status == 409, exc


def _scheduler_config(extender_port: int) -> dict:
    """The shipped KubeSchedulerConfiguration (manifests/scheduler/config.yaml, leader election included), the
    extender's URL pointed at this run's port."""
    cm = next(o for o in build(MANIFESTS) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "clique-scheduler-config")
    cfg = yaml.safe_load(cm["data"]["scheduler-config.yaml"])
    cfg["extenders"][0]["urlPrefix"] = f"http://127.0.0.1:{extender_port}"
    return cfg


# ------------------------------------------------------------------------------------------------ the run
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    work = tmp_path_factory.mktemp("least-privilege")
    opts = ControlPlaneOptions(lws=True, audit_user_groups=(f"system:serviceaccounts:{SYSTEM}",),
                               feature_gates={"GenericWorkload": True, "TopologyAwareWorkloadScheduling": True},
                               runtime_config={"scheduling.k8s.io/v1beta1": True})
    with ControlPlane(opts) as cp:
        api = cp.api_client()
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        shipped = [o for o in build(MANIFESTS) if o["kind"] in APPLIED]
        _apply(api, shipped)
        wait_for(lambda: core.read_namespaced_service_account(AGENT_SA, SYSTEM), 30, "the ServiceAccounts")
        ext_api = client.ApiextensionsV1Api(api)
        for group, kind, plural, version, schema in CRDS:  # Grove, Volcano, coscheduling: their published fields
            ext_api.create_custom_resource_definition(_crd(group, kind, plural, version, schema))
        DynamoCRDs(api).serve("v1alpha1")
        for group, _, plural, version, _ in CRDS:
            wait_for(lambda g=group, v=version, pl=plural: _served(custom, g, v, pl), 30, f"{plural}.{group} served")
        _priority_classes(api)
        e, p = _pool(api, "lpe", 9, 2), _pool(api, "lpp", 2, 2)
        _pool(api, "lpa", 6, 2)  # the autoscaler's targets' pods and its capacity what-if
        agent_nodes = create_nodes(api, parse_cluster_spec({"name": "lpg", "pools": [
            {"name": "lpg", "hosts": 2, "gpus": 4}]}).hosts())

        # identities: TokenRequest tokens of the shipped ServiceAccounts; the agent's bound to a pod on its node
        sched_kc = service_account_kubeconfig(cp, SYSTEM, SCHEDULER_SA, work / "scheduler.kubeconfig")
        auto_kc = service_account_kubeconfig(cp, SYSTEM, AUTOSCALER_SA, work / "autoscaler.kubeconfig")
        agent_kcs = []
        for node in agent_nodes:
            pod = core.create_namespaced_pod(SYSTEM, {"apiVersion": "v1", "kind": "Pod",
                                                      "metadata": {"name": f"clique-agent-{node}"},
                                                      "spec": {"nodeName": node, "serviceAccountName": AGENT_SA,
                                                               "containers": [{"name": "agent", "image": "clique"}]}})
            agent_kcs.append(service_account_kubeconfig(cp, SYSTEM, AGENT_SA, work / f"agent-{node}.kubeconfig",
                                                        bound_pod=(pod.metadata.name, pod.metadata.uid)))
        size_before = cp.audit_log.stat().st_size if cp.audit_log.exists() else 0

        # the components, as the shipped Deployments and DaemonSet run them (webhook on, leader election on); pods
        # are routed by the shipped routing policy (the webhook serves, but no configuration calls it)
        ca = mint_certs(work / "tls")
        hook_port = free_port()
        ext_proc, ext_port = start_extender(sched_kc, work / "extender.log", preset="gb200-nvl72", bind_timeout_s=8,
                                            webhook_port=hook_port, webhook_cert_dir=work / "tls",
                                            follow_lease=f"{SYSTEM}/clique-scheduler")
        procs = []
        exporter = SyntheticExporter()
        try:
            cp.start_scheduler(_scheduler_config(ext_port), kubeconfig=sched_kc, name="clique-scheduler")
            agents = [start_agent(cp, n, "nvl72-4:rack-lp:1", work, kubeconfig=kc) for n, kc in zip(agent_nodes, agent_kcs)]
            procs += [x[0] for x in agents]
            as_ns = f"lpa-{uuid.uuid4().hex[:4]}"
            cp.create_namespace(as_ns)
            _autoscaler_targets(api, as_ns, exporter)
            auto_proc, _ = start_autoscaler(auto_kc, work / "autoscaler.log", None, preset="gb200-nvl72",
                                            lease_namespace=SYSTEM)
            procs.append(auto_proc)
            probe = _member("probe", "none", {"grove.io/podgang": "probe"}, scheduler="default-scheduler")
            with opted_in_namespaces(cp, api, None, None, "lp", probe) as (on, off):
                _extender_paths(api, on, off, e, p)
                _autoscaler_paths(api, as_ns)
                for node in agent_nodes:
                    wait_for(lambda node=node: "clique.dev/nvlink-matrix" in (core.read_node(node).metadata.annotations
                                                                              or {}), 30, f"agent's annotations on {node}")
                assert core.read_node(agent_nodes[0]).metadata.labels[NVL] == "rack-lp.1"
        finally:
            for proc in procs:  # SIGTERM first: the autoscaler releases its Lease on the way out
                stop_autoscaler(proc)
            cp.stop_component("clique-scheduler")
            stop_extender(ext_proc)
            exporter.close()
        with open(cp.audit_log) as fh:
            fh.seek(size_before)
            lines = fh.read().splitlines()
        live = []
        rbac = client.RbacAuthorizationV1Api(api)
        for kind, items in (("ClusterRole", rbac.list_cluster_role().items), ("Role", rbac.list_role_for_all_namespaces().items),
                            ("ClusterRoleBinding", rbac.list_cluster_role_binding().items),
                            ("RoleBinding", rbac.list_role_binding_for_all_namespaces().items)):
            live += [dict(api.sanitize_for_serialization(o), kind=kind) for o in items]
        api.close()
        result = Run(A.parse_audit(lines), live, [o for o in shipped if o["kind"] in (
            "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")], len(lines))
        _print_tables(result)
        yield result


def _extender_paths(api, on: str, off: str, e: dict[str, str], p: dict[str, str]) -> None:
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    # filter + bind (nominating the other member), gangs whose size lives in an object: coscheduling, Volcano,
    # the Workload API's PodGroup; an LWS group (the extender reads the LWS); a gang too big for any domain
    for i in range(2):
        core.create_namespaced_pod(off, _member(f"plain-{i}", "lpe", {"gang": "plain"}, {
            "clique.dev/gang": "plain", "clique.dev/gang-size": "2", "clique.dev/topology-required": "nvlink"}))
    _custom(custom, "scheduling.x-k8s.io", "v1alpha1", off, "podgroups", "PodGroup", "cosched", {"minMember": 2})
    _custom(custom, "scheduling.volcano.sh", "v1beta1", off, "podgroups", "PodGroup", "volcano", {"minMember": 2})
    _custom(custom, "scheduling.k8s.io", "v1beta1", off, "podgroups", "PodGroup", "wl", {
        "schedulingPolicy": {"gang": {"minCount": 2}}, "schedulingConstraints": {"topology": [{"key": NVL}]}})
    for i in range(2):
        core.create_namespaced_pod(off, _member(f"cosched-{i}", "lpe", {"gang": "cosched",
                                                                         "scheduling.x-k8s.io/pod-group": "cosched"}))
        core.create_namespaced_pod(off, _member(f"volcano-{i}", "lpe", {"gang": "volcano"},
                                                {"scheduling.k8s.io/group-name": "volcano"}))
        core.create_namespaced_pod(off, _member(f"wl-{i}", "lpe", {"gang": "wl"},
                                                schedulingGroup={"podGroupName": "wl"}))
        core.create_namespaced_pod(off, _member(f"toobig-{i}", "lpe", {"gang": "toobig"}, {
            "clique.dev/gang": "toobig", "clique.dev/gang-size": "3", "clique.dev/topology-required": "nvlink"}))
    core.create_namespaced_pod(off, _member("toobig-2", "lpe", {"gang": "toobig"}, {
        "clique.dev/gang": "toobig", "clique.dev/gang-size": "3", "clique.dev/topology-required": "nvlink"}))
    # LeaderReady: the workers come only once the leader runs, so the extender plans the group at its leader and
    # reads the LWS for the workers' template (service.py _leader_first) every time, not only when it races them
    create_lws(api, lws_manifest("lws-e", size=2, replicas=1, gpus=8, namespace=off, scheduler_name="clique-scheduler",
                                 startup_policy="LeaderReady", node_selector={"clique.dev/pool": "lpe"}))
    # the routing policy routes and gates a Grove gang created with default-scheduler; the extender releases it pinned
    _custom(custom, "scheduler.grove.io", "v1alpha1", on, "podgangs", "PodGang", "grove", {"podgroups": [
        {"name": "grove-w", "minReplicas": 2,
         "podReferences": [{"namespace": on, "name": f"grove-{i}"} for i in range(2)]}]})
    for i in range(2):
        core.create_namespaced_pod(on, _member(f"grove-{i}", "lpe", {"gang": "grove", "grove.io/podgang": "grove",
                                                                      "grove.io/podclique": "grove-w"},
                                               scheduler="default-scheduler"))
    # a StatefulSet gang, for gang health
    apps.create_namespaced_stateful_set(off, _statefulset("sts", "lpe", 2, 2))
    for ns, sel, n in ((off, "gang=plain", 2), (off, "gang=cosched", 2), (off, "gang=volcano", 2), (off, "gang=wl", 2),
                       (off, "leaderworkerset.sigs.k8s.io/name=lws-e", 2), (on, "gang=grove", 2), (off, "app=sts", 2)):
        wait_for(lambda ns=ns, sel=sel, n=n: _whole(core, ns, sel, n, e), 120, f"{ns} {sel}: bound whole")
    grove = core.read_namespaced_pod("grove-0", on)
    assert grove.spec.scheduler_name == "clique-scheduler" and grove.spec.affinity.node_affinity, "routed, pinned"
    wait_for(lambda: "GangUnschedulable" in _reasons(core, off, "toobig-0"), 60, "toobig told why it waits")
    assert not [x for x in _pods(core, off, "gang=toobig") if x.spec.node_name]
    for i in range(3):
        core.delete_namespaced_pod(f"toobig-{i}", off, grace_period_seconds=0)
    # gang health: a member deleted by hand, the gang restarted whole
    old = {x.metadata.uid for x in _pods(core, off, "app=sts")}
    core.delete_namespaced_pod("sts-1", off, grace_period_seconds=0)
    wait_for(lambda: _whole(core, off, "app=sts", 2, e, old), 90, "the StatefulSet gang restarted whole")
    assert "GangRestarted" in _reasons(core, off, "sts-0")
    # gang preemption: a full pool of low-priority pods, one protected by a PodDisruptionBudget; a high-priority
    # gang evicts the other domain's pods
    nodes = sorted(p)
    for node in nodes:
        pod = _member(f"low-{node}", "lpp", {"victim": "lp", "keep": "yes" if node == nodes[0] else "no"},
                      scheduler="default-scheduler", priorityClassName=LOW)
        pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
        core.create_namespaced_pod(off, pod)
    client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(off, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "keep"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"keep": "yes"}}}})
    wait_for(lambda: len([x for x in _pods(core, off, "victim=lp") if x.status.phase == "Running"]) == 4, 60,
             "four low-priority pods Running")
    wait_for(lambda: (s := client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("keep", off).status)
             and s.current_healthy == 1, 60, "the disruption controller counted the budget's pod")
    for i in range(2):
        pod = gang_pod(f"high-{i}", "high", 2, pool="lpp")
        pod["spec"]["priorityClassName"] = HIGH
        core.create_namespaced_pod(off, pod)
    placed = wait_for(lambda: _whole(core, off, "gang=high", 2, p), 90, "the high-priority gang bound whole")
    assert p[nodes[0]] not in {p[n] for n in placed.values()}, "the protected pod's domain was left alone"
    assert "Preempting" in _reasons(core, off, "high-0")


def _autoscaler_targets(api, ns: str, exporter: SyntheticExporter) -> None:
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    apps.create_namespaced_stateful_set(ns, _statefulset("as-sts", "lpa", 1, None))
    apps.create_namespaced_deployment(ns, _deployment("as-dep", "lpa"))
    create_lws(api, lws_manifest("as-lws", size=2, replicas=1, gpus=8, namespace=ns,
                                 node_selector={"clique.dev/pool": "lpa"}))
    _custom(custom, "nvidia.com", "v1alpha1", ns, DGD_PLURAL, "DynamoGraphDeployment", "llm", {"services": {
        "decode": {"componentType": "worker", "replicas": 1, "multinode": {"nodeCount": 2},
                   "resources": {"limits": {"gpu": "8"}}},
        "VllmWorker": {"replicas": 1, "scalingAdapter": {"enabled": True}, "resources": {"limits": {"gpu": "8"}}},
        "prefill": {"replicas": 1, "scalingAdapter": {"enabled": True}, "resources": {"limits": {"gpu": "8"}}}}})
    for svc in ("VllmWorker", "prefill"):  # what the operator creates for each (name: <dgd>-<lowercased service>)
        _custom(custom, "nvidia.com", "v1alpha1", ns, DGDSA_PLURAL, "DynamoGraphDeploymentScalingAdapter",
                f"llm-{svc.lower()}", {"replicas": 1, "dgdRef": {"name": "llm", "serviceName": svc}})
    for name, target in (
            ("as-sts", {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "as-sts"}),
            ("as-dep", {"apiVersion": "apps/v1", "kind": "Deployment", "name": "as-dep"}),
            ("as-lws", {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "as-lws"}),
            ("llm-decode", {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "name": "llm",
                            "service": "decode"}),
            ("llm-worker", {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "name": "llm",
                            "service": "VllmWorker"}),
            ("llm-prefill", {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeploymentScalingAdapter",
                             "name": "llm-prefill"})):
        core.create_namespaced_config_map(ns, _policy(name, target, name, exporter, "lpa", 25))
    core.create_namespaced_config_map(ns, {"metadata": {"name": "broken", "labels": {
        "clique.dev/autoscaling-policy": "true"}}, "data": {"policy.yaml": "scaleTargetRef: [unclosed"}})


def _autoscaler_paths(api, ns: str) -> None:
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    wait_for(lambda: apps.read_namespaced_stateful_set_scale("as-sts", ns).spec.replicas == 2, 60, "StatefulSet to 2")
    wait_for(lambda: apps.read_namespaced_deployment_scale("as-dep", ns).spec.replicas == 2, 60, "Deployment to 2")
    wait_for(lambda: custom.get_namespaced_custom_object_scale("leaderworkerset.x-k8s.io", "v1", ns, "leaderworkersets",
                                                               "as-lws")["spec"]["replicas"] == 2, 60, "LWS to 2")
    wait_for(lambda: custom.get_namespaced_custom_object("nvidia.com", "v1alpha1", ns, DGD_PLURAL, "llm")
             ["spec"]["services"]["decode"]["replicas"] == 2, 60, "the DGD decode service patched to 2")
    wait_for(lambda: custom.get_namespaced_custom_object_scale("nvidia.com", "v1alpha1", ns, DGDSA_PLURAL,
                                                               "llm-vllmworker")["spec"]["replicas"] == 2, 60,
             "the VllmWorker adapter's /scale set to 2")
    wait_for(lambda: custom.get_namespaced_custom_object_scale("nvidia.com", "v1alpha1", ns, DGDSA_PLURAL,
                                                               "llm-prefill")["spec"]["replicas"] == 2, 60,
             "the adapter target llm-prefill's /scale set to 2")
    wait_for(lambda: "ScaledUp" in _reasons(core, ns, "as-sts"), 30, "a ScaledUp Event on the StatefulSet")
    wait_for(lambda: "InvalidPolicy" in _reasons(core, ns, "broken"), 30, "an InvalidPolicy Event")
    wait_for(lambda: "clique.dev/autoscaling-status" in str(core.read_namespaced_config_map("as-sts", ns).metadata.annotations),
             30, "the policy's status annotation")


# ------------------------------------------------------------------------------------------------ the report
IDENTITIES = ((SCHEDULER_SA, "extender"), (SCHEDULER_SA, "kube-scheduler"), (AUTOSCALER_SA, None), (AGENT_SA, None))


def _print_tables(run: Run) -> None:
    print(f"\naudit: {run.audit_lines} lines, {len(run.requests)} requests")
    for sa, container in IDENTITIES:
        print(f"\n{sa}{' (' + container + ')' if container else ''}:")
        for verb, what, ns, count in A.Usage(run.of(sa, container)).table():
            print(f"  {verb:7} {what:70} {ns:20} {count}")
    for sa in (SCHEDULER_SA, AUTOSCALER_SA, AGENT_SA):
        for g in run.shipped_grants(sa):
            for u in A.unused_atoms([g], run.requests_for_role(sa, g.role)):
                print(f"UNUSED {sa}: {u.describe()}")


def test_no_request_of_any_clique_identity_was_denied(run):
    assert run.requests, "the audit log recorded nothing: is the audit policy on?"
    for sa in (SCHEDULER_SA, AUTOSCALER_SA, AGENT_SA):
        assert run.of(sa), f"{sa} made no requests: it did not run with its own token"
    refused = [f"{r.user} ({r.user_agent[:30]}): {r.key()} -> {r.code}" for r in A.denied(run.requests)]
    assert not refused, "requests the shipped RBAC refused:\n" + "\n".join(refused)


def test_every_request_is_allowed_by_a_grant_the_rbac_matcher_finds(run):
    for sa in (SCHEDULER_SA, AUTOSCALER_SA, AGENT_SA):
        odd = A.unexplained(run.grants(sa), run.of(sa))
        assert not odd, f"{sa}: the API server allowed what no RBAC grant found here allows: {[r.key() for r in odd]}"


def test_every_grant_of_the_shipped_roles_is_used_or_justified(run):
    unused = {sa: [u.describe() for g in run.shipped_grants(sa)
                   for u in A.unused_atoms([g], run.requests_for_role(sa, g.role))
                   if (u.grant.role, u.atom.describe()) not in JUSTIFIED]
              for sa in (SCHEDULER_SA, AUTOSCALER_SA, AGENT_SA)}
    assert not any(unused.values()), f"grants no code path used (remove, or justify in the manifest and JUSTIFIED): {unused}"


def test_the_extender_needs_nothing_beyond_its_own_role(run):
    """The extender shares its ServiceAccount with kube-scheduler; clique:extender alone allows all it does, so
    it does not lean on system:kube-scheduler's grants (which could change with a Kubernetes release)."""
    own = [g for g in run.grants(SCHEDULER_SA) if g.role == "ClusterRole/clique:extender"
           or (g.role == f"Role/{SYSTEM}/clique-scheduler:leader-election" and g.rule.verbs == ("get",))]  # --follow-lease
    reqs = run.of(SCHEDULER_SA, "extender")
    assert reqs and not A.unexplained(own, reqs), [r.key() for r in A.unexplained(own, reqs)]


def test_every_shipped_binding_is_needed(run):
    """Bindings to built-in roles (system:kube-scheduler, the authentication reader) count too: each allows at
    least one request the identity made that no other binding allows."""
    for sa in (SCHEDULER_SA, AUTOSCALER_SA, AGENT_SA):
        grants = run.grants(sa)
        used = set()
        for r in run.of(sa):
            allowing = {g.binding for g in grants if g.allows(r)}
            if len(allowing) == 1:
                used |= allowing
        mine = {A.role_key(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "")
                           if o["kind"] == "RoleBinding" else "") for o in run.shipped if o["kind"].endswith("Binding")
                and any(A.applies_to_user(s, user(sa), (), o["metadata"].get("namespace", "")) for s in o["subjects"])}
        missing = sorted(b for b in mine - used if (b, "binding") not in JUSTIFIED)
        assert not missing, f"{sa}: bindings no request needed: {missing}"


def test_the_run_drove_each_component_through_its_api_paths(run):
    """What makes an "unused" verdict mean something: each main code path reached the API server."""
    ext = {r.key()[:2] for r in run.of(SCHEDULER_SA, "extender")}
    for need in (("create", "core/pods/binding"), ("patch", "core/pods"), ("patch", "core/pods/status"),
                 ("create", "core/pods/eviction"), ("delete", "core/pods"), ("create", "core/events"),
                 ("list", "policy/poddisruptionbudgets"), ("get", "leaderworkerset.x-k8s.io/leaderworkersets"),
                 ("get", "scheduling.k8s.io/podgroups"), ("get", "scheduling.x-k8s.io/podgroups"),
                 ("get", "scheduling.volcano.sh/podgroups"), ("get", "scheduler.grove.io/podgangs")):
        assert need in ext, f"the extender never did {need}"
    auto = {r.key()[:2] for r in run.of(AUTOSCALER_SA)}
    for need in (("patch", "apps/statefulsets/scale"), ("patch", "apps/deployments/scale"),
                 ("patch", "leaderworkerset.x-k8s.io/leaderworkersets/scale"),
                 ("patch", "nvidia.com/dynamographdeployments"),
                 ("patch", "nvidia.com/dynamographdeploymentscalingadapters/scale"),
                 ("patch", "core/configmaps"), ("create", "core/events"), ("patch", "coordination.k8s.io/leases")):
        assert need in auto, f"the autoscaler never did {need}"
    agent = {r.key()[:2] for r in run.of(AGENT_SA)}
    assert {("get", "core/nodes"), ("patch", "core/nodes")} <= agent
