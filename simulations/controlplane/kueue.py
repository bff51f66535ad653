"""The real Kueue manager (sigs.k8s.io/kueue, `versions.KUEUE_VERSION`) with topology-aware scheduling (TAS) in
the local control plane.

Side effects: builds the `kueue` manager once (cached, like the other components), writes its config and webhook
certificates under <workdir>/kueue/, creates Kueue's CRDs and webhook configurations in the cluster, writes a
metrics serving certificate to /etc/kueue/metrics/certs (see below), starts the manager process on 127.0.0.1.
`setup_tas_queues` creates a Topology, a ResourceFlavor with `topologyName`, a ClusterQueue and a LocalQueue.

    with ControlPlane(ControlPlaneOptions(kueue=True)) as cp:     # or `clique cluster up --with kueue`
        setup_tas_queues(cp.api_client(), TasQueues("bench", ["nvidia.com/gpu.clique"], {"nvidia.com/gpu": 8000},
                                                    node_labels={"clique.dev/pool": "bench"}))
        labels, annotations = pod_group_meta("g0", 4, "tas", required="nvidia.com/gpu.clique")  # on each of 4 pods

What comes from the kueue module (copied into the binary cache by build.py, so it is the same version as the binary):
- the CRDs: `config/components/crd/bases/*.yaml`, applied as they are. Each serves v1beta1 and v1beta2 with
  v1beta2 the storage version; the conversion-webhook patches of `config/components/crd/patches/` are not
  applied (conversion strategy None): everything here, the manager included, reads and writes v1beta2 only.
- the webhooks: `config/components/webhook/manifests.yaml` with the namespaceSelector patches of
  `config/components/webhook/kustomization.yaml` (mpod/vpod: not kube-system, kueue-system), named with the
  `kueue-` prefix of `config/default/kustomization.yaml`; each `clientConfig.service` becomes
  `clientConfig.url: https://127.0.0.1:<port><path>` plus our `caBundle`. Only the webhooks of Kueue's own
  types (paths `/mutate-kueue-x-k8s-io-*`, `/validate-kueue-x-k8s-io-*`) and of the one integration we enable
  (`pod`: `/mutate--v1-pod`, `/validate--v1-pod`) are installed: the others (Deployment, StatefulSet, Job,
  LeaderWorkerSet, ...) would send every such object of other tests through a manager that does not manage
  them. The pod webhooks also get an objectSelector `kueue.x-k8s.io/queue-name Exists` (our addition): with
  `manageJobsWithoutQueueName: false` Kueue leaves pods without that label alone anyway, and other tests' pods
  then never depend on this manager being up.

The manager runs with a `config.kueue.x-k8s.io/v1beta2` Configuration (`apis/config/v1beta2/configuration_types.go`):
internal cert management off (we give it tls.crt/tls.key signed by a CA of our own), leader election off,
webhook on 127.0.0.1, health probes on 127.0.0.1, metrics off ("0"), `integrations.frameworks: [pod]`, and the
feature gates of `FEATURE_GATES`. It talks to the API server as the harness admin.

/etc/kueue: v0.17.0's `cmd/kueue/main.go` (lines 204-222) builds a certwatcher on the fixed paths
`/etc/kueue/metrics/certs/tls.crt` and `tls.key` whenever internal cert management is off, even with metrics
disabled, and exits if they cannot be read; no flag or config field moves them. `MetricsCertSlot` writes a
self-signed pair there before the manager starts (only if none is there) and removes what it wrote when the last
manager of this machine that uses it stops (owners are counted under /etc/kueue/metrics/clique-owners/). The
files must stay while the manager runs: controller-runtime v0.23.3's certwatcher adds file watches when the
manager starts and reads them again every 10 s. Without write access to /etc the manager cannot start with
internal cert management off; the error says so.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import yaml

from simulations.controlplane import processes as P
from simulations.controlplane.build import asset_path, ensure_optional
from simulations.controlplane.managers import start_manager, stop_manager, wait_webhooks_answer
from simulations.controlplane.pki import create_serving_certs
from simulations.controlplane.webhook import create_or_replace as create_or_replace_webhooks
from simulations.controlplane.versions import KUEUE

if TYPE_CHECKING:
    from simulations.controlplane.cluster import ControlPlane

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"  # storage version of every CRD in config/components/crd/bases (v0.17.0)
NAME_PREFIX = "kueue-"  # config/default/kustomization.yaml namePrefix
PROCESS_NAME = "kueue-controller-manager"
KUEUE_NAMESPACE = "kueue-system"  # Configuration.namespace default (apis/config/v1beta2/defaults.go)

# Names read from sigs.k8s.io/kueue v0.17.0:
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # pkg/controller/constants/constants.go QueueLabel
POD_GROUP_NAME_LABEL = "kueue.x-k8s.io/pod-group-name"  # pkg/controller/jobs/pod/constants/constants.go GroupNameLabel
POD_GROUP_TOTAL_COUNT_ANNOTATION = "kueue.x-k8s.io/pod-group-total-count"  # ... GroupTotalCountAnnotation
ADMISSION_GATE = "kueue.x-k8s.io/admission"  # pkg/controller/jobs/pod/constants/constants.go SchedulingGateName
# apis/kueue/v1beta2/topology_types.go:
REQUIRED_TOPOLOGY_ANNOTATION = "kueue.x-k8s.io/podset-required-topology"  # PodSetRequiredTopologyAnnotation
PREFERRED_TOPOLOGY_ANNOTATION = "kueue.x-k8s.io/podset-preferred-topology"  # PodSetPreferredTopologyAnnotation
UNCONSTRAINED_TOPOLOGY_ANNOTATION = "kueue.x-k8s.io/podset-unconstrained-topology"  # PodSetUnconstrainedTopology...
TOPOLOGY_GATE = "kueue.x-k8s.io/topology"  # TopologySchedulingGate
HOSTNAME_LABEL = "kubernetes.io/hostname"

# pkg/features/kube_features.go (v0.17.0): TopologyAwareScheduling beta, on since 0.14; TASProfileMixed beta, on
# since 0.15 (BestFit for required/preferred pod sets, LeastFreeCapacity for unconstrained ones); written out so
# the run does not depend on the defaults. VisibilityOnDemand (on by default) would start the visibility API
# server on 0.0.0.0:8082.
FEATURE_GATES: dict[str, bool] = {"TopologyAwareScheduling": True, "TASProfileMixed": True,
                                  "VisibilityOnDemand": False}

METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")  # cmd/kueue/main.go metricsCertPath (v0.17.0, fixed)
IMAGE = "registry.example/vllm:test"  # never pulled: KWOK runs no containers


# ----------------------------------------------------------------------------------------- pure builders
def manager_config(webhook_port: int, health_port: int, cert_dir: Path, host: str = "127.0.0.1",
                   feature_gates: Mapping[str, bool] | None = None) -> dict[str, Any]:
    """The manager's --config (config.kueue.x-k8s.io/v1beta2 Configuration; apis/config/v1beta2)."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "manageJobsWithoutQueueName": False,
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": host, "port": webhook_port, "certDir": str(cert_dir)},
        "metrics": {"bindAddress": "0"},  # "0" disables metrics serving (default ":8443", all interfaces)
        "health": {"healthProbeBindAddress": f"{host}:{health_port}"},  # default ":8081"
        "clientConnection": {"qps": 500, "burst": 500},
        "integrations": {"frameworks": ["pod"]},
        "featureGates": dict(FEATURE_GATES if feature_gates is None else feature_gates),
    }


def crd_manifests() -> list[dict[str, Any]]:
    """Every Kueue CRD of the built module version, as the module publishes it."""
    base = asset_path(KUEUE, "config/components/crd/bases")
    files = sorted(base.glob("*.yaml"))
    if not files:
        raise P.ControlPlaneError(f"no Kueue CRDs under {base}; rebuild with `clique build --with kueue`")
    return [yaml.safe_load(f.read_text()) for f in files]


def _is_ours(path: str) -> bool:
    return path.startswith(("/mutate-kueue-x-k8s-io-", "/validate-kueue-x-k8s-io-")) or path.endswith("--v1-pod")


def _strategic_merge_webhooks(doc: dict[str, Any], patch: dict[str, Any]) -> None:
    """The kustomization's strategic-merge patches: webhooks merged by name (all that kueue's patches use)."""
    by_name = {h["name"]: h for h in doc["webhooks"]}
    for hook in patch.get("webhooks", []):
        if hook["name"] in by_name:
            by_name[hook["name"]].update(copy.deepcopy({k: v for k, v in hook.items() if k != "name"}))


def webhook_manifests(port: int, ca_pem: bytes, host: str = "127.0.0.1",
                      webhook_dir: Path | None = None) -> list[dict[str, Any]]:
    """Kueue's Mutating/ValidatingWebhookConfigurations as its kustomize build makes them (Kueue's own types and
    pods only), calling https://host:port<path> (the manager on loopback) and trusting `ca_pem`."""
    webhook_dir = webhook_dir or asset_path(KUEUE, "config/components/webhook")
    docs = [d for d in yaml.safe_load_all((webhook_dir / "manifests.yaml").read_text()) if d]
    kustomization = yaml.safe_load((webhook_dir / "kustomization.yaml").read_text())
    for entry in kustomization.get("patches", []):
        text = entry["patch"] if "patch" in entry else (webhook_dir / entry["path"]).read_text()
        patch = yaml.safe_load(text)
        for doc in docs:
            if doc["kind"] == patch.get("kind") and doc["metadata"]["name"] == patch["metadata"]["name"]:
                _strategic_merge_webhooks(doc, patch)
    ca_bundle = base64.b64encode(ca_pem).decode()
    out = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        doc["metadata"]["name"] = NAME_PREFIX + doc["metadata"]["name"]
        doc["metadata"].setdefault("labels", {})["app.kubernetes.io/name"] = "kueue"
        hooks = []
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"].get("path", "/")
            if not _is_ours(path):
                continue
            hook["clientConfig"] = {"url": f"https://{host}:{port}{path}", "caBundle": ca_bundle}
            if path.endswith("--v1-pod"):
                hook["objectSelector"] = {"matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]}
            hooks.append(hook)
        doc["webhooks"] = hooks
        out.append(doc)
    return out


def topology_levels(level_labels: Sequence[str]) -> list[str]:
    """Node label keys, outermost first, with kubernetes.io/hostname last (Kueue then assigns exact nodes)."""
    levels = [k for k in level_labels if k != HOSTNAME_LABEL]
    if len(set(levels)) != len(levels):
        raise ValueError(f"topology levels repeat a label: {list(level_labels)}")
    return [*levels, HOSTNAME_LABEL]


@dataclass(frozen=True)
class TasQueues:
    """The Kueue objects one TAS setup needs: Topology -> ResourceFlavor -> ClusterQueue -> LocalQueue."""

    namespace: str  # where the LocalQueue (and the workloads' pods) live
    level_labels: Sequence[str]  # node label keys, outermost first (hostname is appended)
    quotas: Mapping[str, int | str]  # resource -> nominal quota of the flavor (size it to the cluster)
    # the flavor's nodes, e.g. {"clique.dev/pool": "p"}: the ResourceFlavor CRD (v0.17.0) requires at least one
    # nodeLabel when topologyName is set ("at least one nodeLabel is required when topology is set")
    node_labels: Mapping[str, str] = field(default_factory=dict)
    name: str = "clique-tas"  # Topology / ResourceFlavor / ClusterQueue name
    local_queue: str = "tas"

    def __post_init__(self) -> None:
        if not self.node_labels:
            raise ValueError(f"TasQueues {self.name!r}: give node_labels (a label every node of the flavor has); "
                             "Kueue refuses a ResourceFlavor with a topology but no nodeLabels")
        if not self.quotas:
            raise ValueError(f"TasQueues {self.name!r}: give at least one resource quota, e.g. nvidia.com/gpu")

    def manifests(self) -> list[dict[str, Any]]:
        api = f"{GROUP}/{VERSION}"
        topology = {"apiVersion": api, "kind": "Topology", "metadata": {"name": self.name},
                    "spec": {"levels": [{"nodeLabel": k} for k in topology_levels(self.level_labels)]}}
        flavor_spec: dict[str, Any] = {"topologyName": self.name, "nodeLabels": dict(self.node_labels)}
        flavor = {"apiVersion": api, "kind": "ResourceFlavor", "metadata": {"name": self.name}, "spec": flavor_spec}
        resources = sorted(self.quotas)
        cq = {"apiVersion": api, "kind": "ClusterQueue", "metadata": {"name": self.name},
              "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}},
                       "resourceGroups": [{"coveredResources": resources, "flavors": [{
                           "name": self.name,
                           "resources": [{"name": r, "nominalQuota": str(self.quotas[r])} for r in resources]}]}]}}
        lq = {"apiVersion": api, "kind": "LocalQueue",
              "metadata": {"name": self.local_queue, "namespace": self.namespace}, "spec": {"clusterQueue": self.name}}
        return [topology, flavor, cq, lq]


def pod_group_meta(group: str, total: int, queue: str, required: str | None = None,
                   preferred: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) that make a pod a member of a Kueue plain pod group of `total` pods in LocalQueue
    `queue`, with an optional required or preferred topology level (a node label key of the Topology)."""
    if total < 1:
        raise ValueError(f"pod group {group!r}: total must be >= 1 (got {total})")
    if required and preferred:
        raise ValueError(f"pod group {group!r}: give a required or a preferred topology level, not both")
    labels = {QUEUE_LABEL: queue, POD_GROUP_NAME_LABEL: group}
    annotations = {POD_GROUP_TOTAL_COUNT_ANNOTATION: str(total)}
    if required:
        annotations[REQUIRED_TOPOLOGY_ANNOTATION] = required
    elif preferred:
        annotations[PREFERRED_TOPOLOGY_ANNOTATION] = preferred
    return labels, annotations


# ----------------------------------------------------------------------------------------- /etc/kueue
class MetricsCertSlot:
    """The metrics certificate v0.17.0's main.go insists on, at its fixed path, counted per owner."""

    def __init__(self, owner: str, cert_dir: Path = METRICS_CERT_DIR) -> None:
        self.cert_dir = cert_dir
        self.owners = cert_dir.parent / "clique-owners"
        self.marker = cert_dir / ".written-by-clique"
        self.owner = hashlib.sha256(owner.encode()).hexdigest()[:16]

    def acquire(self, source_dir: Path) -> None:
        """Make tls.crt/tls.key exist (copied from `source_dir` unless a pair is there) and count us as a user."""
        try:
            self.owners.mkdir(parents=True, exist_ok=True)
            (self.owners / self.owner).write_text("")
            if not ((self.cert_dir / "tls.crt").exists() and (self.cert_dir / "tls.key").exists()):
                self.cert_dir.mkdir(parents=True, exist_ok=True)
                for name in ("tls.crt", "tls.key"):
                    shutil.copyfile(source_dir / name, self.cert_dir / name)
                self.marker.write_text("written by the Clique harness (simulations/controlplane/kueue.py)\n")
        except OSError as exc:
            raise P.ControlPlaneError(
                f"cannot write Kueue's metrics certificate to {self.cert_dir} ({exc}): sigs.k8s.io/kueue "
                f"{KUEUE.version} cmd/kueue/main.go reads it from that fixed path when internal cert management is "
                "off. Run with write access to /etc/kueue, or do not start Kueue (ControlPlaneOptions(kueue=False))."
            ) from exc

    def release(self) -> None:
        """Uncount us; the last user removes what the harness wrote (a pair someone else put there stays)."""
        (self.owners / self.owner).unlink(missing_ok=True)
        if self.owners.is_dir() and not any(self.owners.iterdir()):
            self.owners.rmdir()
            if self.marker.exists():
                shutil.rmtree(self.cert_dir, ignore_errors=True)
            for d in (self.cert_dir.parent, self.cert_dir.parent.parent):  # /etc/kueue/metrics, /etc/kueue
                try:
                    d.rmdir()  # only when empty
                except OSError:
                    break


# ----------------------------------------------------------------------------------------- lifecycle
def install_crds(cp: "ControlPlane") -> None:
    """Create Kueue's CRDs (kept if they exist) and wait until each is Established and discoverable. ControlPlane
    calls this before kube-controller-manager starts, so its garbage collector knows them from the start."""
    api = cp.api_client()
    try:
        crds = crd_manifests()
        _create_or_keep_crds(api, crds)
        _wait_crds_established(api, [c["metadata"]["name"] for c in crds], cp.options.ready_timeout_s)
    finally:
        api.close()


def start(cp: "ControlPlane") -> P.Proc:
    """Install the CRDs (if not yet), start the manager, install the webhooks, and wait until they answer."""
    binary = ensure_optional("kueue")["kueue"]
    install_crds(cp)
    api = cp.api_client()
    try:
        _ensure_namespace(api, KUEUE_NAMESPACE)
        work = cp.workdir / "kueue"
        cert_dir = work / "certs"
        ca_pem = create_serving_certs(cert_dir, common_name="kueue-webhook")
        slot = MetricsCertSlot(str(cp.workdir.resolve()))
        slot.acquire(cert_dir)
        cp.on_stop(slot.release)  # after every process is stopped
        proc, webhook_port = start_manager(cp, PROCESS_NAME, binary, cert_dir, manager_config, "kueue-webhook")
        create_or_replace_webhooks(api, webhook_manifests(webhook_port, ca_pem))
        _wait_webhooks_answer(api, proc, cp.options.ready_timeout_s)
        return proc
    finally:
        api.close()


def stop(cp: "ControlPlane", remove_webhooks: bool = True) -> None:
    """Stop the manager of a control plane that keeps running; its webhooks go too (failurePolicy Fail would
    reject Kueue objects and queue-labelled pods). The CRDs and Kueue objects stay."""
    stop_manager(cp, PROCESS_NAME, NAME_PREFIX, remove_webhooks)

def setup_tas_queues(api: Any, queues: TasQueues, timeout_s: float = 60.0) -> None:
    """Create (or keep) the Topology, ResourceFlavor, ClusterQueue and LocalQueue; wait until both queues are
    Active (the ClusterQueue is not until its flavor and topology are known to Kueue's cache)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api)
    plural = {"Topology": "topologies", "ResourceFlavor": "resourceflavors", "ClusterQueue": "clusterqueues",
              "LocalQueue": "localqueues"}
    for obj in queues.manifests():
        try:
            if obj["kind"] == "LocalQueue":
                custom.create_namespaced_custom_object(GROUP, VERSION, queues.namespace, "localqueues", obj)
            else:
                custom.create_cluster_custom_object(GROUP, VERSION, plural[obj["kind"]], obj)
        except ApiException as exc:
            if exc.status != 409:
                raise P.ControlPlaneError(f"creating Kueue {obj['kind']} {obj['metadata']['name']} failed: "
                                          f"{exc.status} {exc.reason}: {exc.body}") from exc

    def active() -> bool:
        cq = custom.get_cluster_custom_object(GROUP, VERSION, "clusterqueues", queues.name)
        lq = custom.get_namespaced_custom_object(GROUP, VERSION, queues.namespace, "localqueues", queues.local_queue)
        return all(any(c.get("type") == "Active" and c.get("status") == "True"
                       for c in (o.get("status") or {}).get("conditions") or []) for o in (cq, lq))

    P.wait_for(active, timeout_s, f"Kueue ClusterQueue {queues.name} and LocalQueue "
                                  f"{queues.namespace}/{queues.local_queue} Active")


def delete_tas_queues(api: Any, queues: TasQueues) -> None:
    """Remove the objects `setup_tas_queues` made (LocalQueue first), ignoring those already gone."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api)
    steps = [lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, queues.namespace, "localqueues",
                                                            queues.local_queue)]
    steps += [lambda p=p: custom.delete_cluster_custom_object(GROUP, VERSION, p, queues.name)
              for p in ("clusterqueues", "resourceflavors", "topologies")]
    for step in steps:
        try:
            step()
        except ApiException as exc:
            if exc.status != 404:
                raise


def _ensure_namespace(api: Any, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def _create_or_keep_crds(api: Any, crds: list[dict[str, Any]]) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ext = client.ApiextensionsV1Api(api)
    for crd in crds:
        try:  # _preload_content=False: large responses need not become Python model objects
            ext.create_custom_resource_definition(crd, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise P.ControlPlaneError(f"creating the CRD {crd['metadata']['name']} failed: {exc.status} "
                                          f"{exc.reason}: {exc.body}") from exc


def _wait_crds_established(api: Any, names: list[str], timeout_s: float) -> None:
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            crd = json.loads(ext.read_custom_resource_definition(name, _preload_content=False).data)
            if any(c["type"] == "Established" and c["status"] == "True"
                   for c in (crd.get("status") or {}).get("conditions") or []):
                pending.discard(name)
        if pending:
            time.sleep(0.2)
    if pending:
        raise P.ControlPlaneError(f"Kueue CRDs not Established within {timeout_s:.0f}s: {sorted(pending)}")
    # Established comes a moment before discovery serves the group; the manager's REST mapper needs it.
    P.wait_for(lambda: any(r.name == "workloads" for r in
                           client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION).resources),
               timeout_s, f"discovery of {GROUP}/{VERSION}")


def _probe_pod() -> dict[str, Any]:
    labels, annotations = pod_group_meta("clique-kueue-probe", 1, "clique-kueue-probe")
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "clique-kueue-probe", "labels": labels, "annotations": annotations},
            "spec": {"automountServiceAccountToken": False, "containers": [{"name": "probe", "image": IMAGE}]}}


def _wait_webhooks_answer(api: Any, proc: P.Proc, timeout_s: float) -> None:
    """Server-side dry runs until the API server calls the pod webhook and gets its patch back (the admission
    gate added, pkg/controller/jobs/pod/pod_webhook.go), and the ResourceFlavor webhooks accept an object."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)

    def probe() -> str:
        custom.create_cluster_custom_object(GROUP, VERSION, "resourceflavors", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceFlavor",
            "metadata": {"name": "clique-kueue-probe"}}, dry_run="All")
        pod = core.create_namespaced_pod("default", _probe_pod(), dry_run="All")
        gates = [g.name for g in pod.spec.scheduling_gates or []]
        return "" if ADMISSION_GATE in gates else f"dry-run pod not gated yet (gates: {gates})"

    wait_webhooks_answer(proc, probe, "Kueue", timeout_s, interval_s=0.3)
