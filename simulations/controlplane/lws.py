"""The real LeaderWorkerSet controller (sigs.k8s.io/lws, `versions.LWS_VERSION`) in the local control plane.

Side effects: builds the `lws` manager once (cached, like the other components), writes its config and webhook
certificates under <workdir>/lws/, creates the LeaderWorkerSet CRD and LWS's webhook configurations in the
cluster, starts the manager process on 127.0.0.1.

    with ControlPlane(ControlPlaneOptions(lws=True)) as cp:      # or `clique cluster up --with lws`
        create_lws(cp.api_client(), lws_manifest("demo", size=2, replicas=1, gpus=8))

What comes from the lws module (copied into the binary cache by build.py, so it is the same version as the binary):
- the CRD: `config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml`, applied as is (its only version is
  v1, so the conversion-webhook patch of `config/crd/patches/` is not needed and not applied);
- the webhooks: `config/webhook/manifests.yaml` with the JSON-6902 patches that `config/webhook/kustomization.yaml`
  lists (`mutating-patch.yaml`, `validating-patch.yaml`: the pod webhooks only see pods labelled
  `leaderworkerset.sigs.k8s.io/name`), named with the `lws-` prefix of `config/default/kustomization.yaml`;
  each `clientConfig.service` becomes `clientConfig.url: https://127.0.0.1:<port><path>` plus our `caBundle`.

The manager runs with a `config.lws.x-k8s.io/v1alpha1` Configuration (`api/config/v1alpha1`): internal cert
management off (we give it `tls.crt`/`tls.key` signed by a CA of our own: the harness's PKI keeps no CA key),
leader election off, webhook on 127.0.0.1, health probes on 127.0.0.1, metrics off ("0"), so it binds no
0.0.0.0 port. It talks to the API server as the harness admin. It is ready when its /readyz answers, the CRD
is Established and a server-side dry run shows both the LWS and the pod mutating webhooks answering through
the API server.
"""

from __future__ import annotations

import base64
import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from simulations.controlplane import processes as P
from simulations.controlplane.build import asset_path, ensure_optional
from simulations.controlplane.managers import start_manager, stop_manager, wait_webhooks_answer
from simulations.controlplane.pki import create_serving_certs
from simulations.controlplane.webhook import create_or_replace as create_or_replace_webhooks
from simulations.controlplane.versions import LWS

if TYPE_CHECKING:
    from simulations.controlplane.cluster import ControlPlane

GROUP = "leaderworkerset.x-k8s.io"
VERSION = "v1"
PLURAL = "leaderworkersets"
CRD_NAME = f"{PLURAL}.{GROUP}"
NAME_PREFIX = "lws-"  # config/default/kustomization.yaml namePrefix

# Label and annotation keys of api/leaderworkerset/v1/leaderworkerset_types.go.
SET_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
GROUP_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/group-index"
WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
GROUP_KEY_LABEL = "leaderworkerset.sigs.k8s.io/group-key"
SIZE_ANNOTATION = "leaderworkerset.sigs.k8s.io/size"
EXCLUSIVE_TOPOLOGY_ANNOTATION = "leaderworkerset.sigs.k8s.io/exclusive-topology"

PROCESS_NAME = "lws-controller-manager"
IMAGE = "registry.example/vllm:test"  # never pulled: KWOK runs no containers


# ----------------------------------------------------------------------------------------- manifests for tests
def lws_manifest(name: str, size: int = 2, replicas: int = 1, gpus: int = 8,
                 scheduler_name: str = "default-scheduler", startup_policy: str | None = None,
                 annotations: dict[str, str] | None = None, node_selector: dict[str, str] | None = None,
                 pod_annotations: dict[str, str] | None = None, pod_labels: dict[str, str] | None = None,
                 namespace: str | None = None) -> dict[str, Any]:
    """A LeaderWorkerSet of `replicas` groups of `size` pods (1 leader + size-1 workers), each pod asking for
    `gpus` nvidia.com/gpu (limits), scheduled by `scheduler_name`.

    `startup_policy`: None (LWS default LeaderCreated) or "LeaderReady". `annotations` go on the LeaderWorkerSet
    (e.g. EXCLUSIVE_TOPOLOGY_ANNOTATION); `pod_annotations` / `pod_labels` on every pod (leader and workers share
    one template); `node_selector` on every pod.
    """
    if size < 1 or replicas < 0 or gpus < 0:
        raise ValueError(f"size must be >= 1, replicas and gpus >= 0 "
                         f"(got size={size}, replicas={replicas}, gpus={gpus})")
    pod_spec: dict[str, Any] = {
        "schedulerName": scheduler_name,
        "automountServiceAccountToken": False,
        "containers": [{
            "name": "worker", "image": IMAGE,
            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"cpu": "1", "memory": "1Gi"}},
        }],
    }
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    template: dict[str, Any] = {"spec": pod_spec}
    if pod_annotations or pod_labels:
        template["metadata"] = {k: dict(v) for k, v in (("annotations", pod_annotations), ("labels", pod_labels)) if v}
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: dict[str, Any] = {"replicas": replicas, "leaderWorkerTemplate": {"size": size, "workerTemplate": template}}
    if startup_policy:
        spec["startupPolicy"] = startup_policy
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LeaderWorkerSet", "metadata": metadata, "spec": spec}


def create_lws(api_client: Any, manifest: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """Create a LeaderWorkerSet (namespace: the argument, else the manifest's, else "default")."""
    from kubernetes import client

    ns = namespace or manifest.get("metadata", {}).get("namespace") or "default"
    return client.CustomObjectsApi(api_client).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)


def delete_lws(api_client: Any, name: str, namespace: str = "default") -> None:
    """Delete a LeaderWorkerSet (its StatefulSets, Services and pods go with it by garbage collection)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground")
    except ApiException as exc:
        if exc.status != 404:
            raise


# ----------------------------------------------------------------------------------------- upstream manifests
def crd_manifest() -> dict[str, Any]:
    """The LeaderWorkerSet CRD of the built module version."""
    path = asset_path(LWS, f"config/crd/bases/{GROUP}_{PLURAL}.yaml")
    return yaml.safe_load(path.read_text())


def _json_pointer_apply(doc: Any, op: dict[str, Any]) -> None:
    """Apply one JSON-6902 operation (add / replace / remove), enough for LWS's kustomize patches."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    last = parts[-1]
    kind = op["op"]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, op["value"])
        elif kind == "replace":
            parent[index] = op["value"]
        elif kind == "remove":
            del parent[index]
        else:
            raise ValueError(f"unsupported JSON patch op {kind!r}")
    elif kind in ("add", "replace"):
        parent[last] = op["value"]
    elif kind == "remove":
        del parent[last]
    else:
        raise ValueError(f"unsupported JSON patch op {kind!r}")


def webhook_manifests(port: int, ca_pem: bytes, host: str = "127.0.0.1") -> list[dict[str, Any]]:
    """LWS's Mutating/ValidatingWebhookConfigurations as its kustomize build makes them, but calling
    https://host:port<path> (the manager on loopback) and trusting `ca_pem`."""
    webhook_dir = asset_path(LWS, "config/webhook")
    docs = [d for d in yaml.safe_load_all((webhook_dir / "manifests.yaml").read_text()) if d]
    kustomization = yaml.safe_load((webhook_dir / "kustomization.yaml").read_text())
    for patch in kustomization.get("patches", []):
        target = patch.get("target", {})
        ops = yaml.safe_load((webhook_dir / patch["path"]).read_text())
        for doc in docs:
            if doc["kind"] == target.get("kind") and doc["metadata"]["name"] == target.get("name"):
                for op in ops:
                    _json_pointer_apply(doc, op)
    ca_bundle = base64.b64encode(ca_pem).decode()
    out = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        doc["metadata"]["name"] = NAME_PREFIX + doc["metadata"]["name"]
        doc["metadata"].setdefault("labels", {})["app.kubernetes.io/name"] = "lws"
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"].get("path", "/")
            hook["clientConfig"] = {"url": f"https://{host}:{port}{path}", "caBundle": ca_bundle}
        out.append(doc)
    return out




def manager_config(webhook_port: int, health_port: int, cert_dir: Path, host: str = "127.0.0.1") -> dict[str, Any]:
    """The manager's --config (config.lws.x-k8s.io/v1alpha1 Configuration; fields of api/config/v1alpha1)."""
    return {
        "apiVersion": "config.lws.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": host, "port": webhook_port, "certDir": str(cert_dir)},
        "metrics": {"bindAddress": "0"},  # "0" disables metrics serving (default ":8443", all interfaces)
        "health": {"healthProbeBindAddress": f"{host}:{health_port}"},  # default ":8081"
        "clientConnection": {"qps": 500, "burst": 500},
    }


# ----------------------------------------------------------------------------------------- lifecycle
def install_crd(cp: "ControlPlane") -> None:
    """Create the LeaderWorkerSet CRD (kept if it exists) and wait until it is Established and discoverable.

    ControlPlane calls this before it starts kube-controller-manager: the garbage collector then knows the
    resource from its first discovery, instead of after its 30 s rediscovery, so deleting a LeaderWorkerSet
    takes its StatefulSets and pods with it at once right after start."""
    api = cp.api_client()
    try:
        _create_or_keep_crd(api)
        _wait_crd_established(api, cp.options.ready_timeout_s)
    finally:
        api.close()


def start(cp: "ControlPlane") -> P.Proc:
    """Install the CRD (if not yet), start the manager, install the webhooks, and wait until all of it answers."""
    binary = ensure_optional("lws")["lws"]
    timeout = cp.options.ready_timeout_s
    install_crd(cp)
    api = cp.api_client()
    try:
        work = cp.workdir / "lws"
        cert_dir = work / "certs"
        ca_pem = create_serving_certs(cert_dir, common_name="lws-webhook")
        proc, webhook_port = start_manager(cp, PROCESS_NAME, binary, cert_dir, manager_config, "lws-webhook")
        create_or_replace_webhooks(api, webhook_manifests(webhook_port, ca_pem))
        _wait_webhooks_answer(api, proc, timeout)
        return proc
    finally:
        api.close()


def stop(cp: "ControlPlane", remove_webhooks: bool = True) -> None:
    """Stop the manager of a control plane that keeps running; its webhooks are removed too (with failurePolicy
    Fail they would reject every LeaderWorkerSet and LWS pod). The CRD and LWS objects stay."""
    stop_manager(cp, PROCESS_NAME, NAME_PREFIX, remove_webhooks)

def _create_or_keep_crd(api: Any) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    ext = client.ApiextensionsV1Api(api)
    try:  # _preload_content=False: the ~1 MB response need not be turned into Python model objects
        ext.create_custom_resource_definition(crd_manifest(), _preload_content=False)
    except ApiException as exc:
        if exc.status != 409:  # a kept work directory (etcd data) already has it
            raise P.ControlPlaneError(f"creating the LeaderWorkerSet CRD failed: {exc.status} {exc.reason}: "
                                      f"{exc.body}") from exc


def _wait_crd_established(api: Any, timeout_s: float) -> None:
    import json

    from kubernetes import client

    ext = client.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout_s
    conds: dict[str, str] = {}
    while time.monotonic() < deadline:
        raw = ext.read_custom_resource_definition(CRD_NAME, _preload_content=False)
        crd = json.loads(raw.data)
        conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
        if conds.get("Established") == "True":
            # Established is set a moment before discovery serves the group; the manager's REST mapper needs it.
            try:
                resources = client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION)
                if any(r.name == PLURAL for r in resources.resources):
                    return
            except Exception:  # noqa: BLE001 - 404 until discovery has it
                pass
        time.sleep(0.2)
    raise P.ControlPlaneError(f"CRD {CRD_NAME} not Established within {timeout_s:.0f}s (conditions: {conds})")


def _probe_pod() -> dict[str, Any]:
    # The pod webhook's objectSelector matches the name label; a leader (worker-index 0) gets group-index and
    # group-key labels from the webhook (pkg/webhooks/pod_webhook.go). Dry run: nothing is stored.
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "clique-lws-probe-0",
                         "labels": {SET_NAME_LABEL: "clique-lws-probe", WORKER_INDEX_LABEL: "0"},
                         "annotations": {SIZE_ANNOTATION: "1"}},
            "spec": {"automountServiceAccountToken": False,
                     "containers": [{"name": "probe", "image": IMAGE}]}}


def _wait_webhooks_answer(api: Any, proc: P.Proc, timeout_s: float) -> None:
    """Server-side dry runs until the API server calls both mutating webhooks and gets their patches back."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)

    def probe() -> str:
        lws = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL,
                                                     lws_manifest("clique-lws-probe"), dry_run="All")
        # networkConfig has no CRD default; the LWS defaulting webhook sets subdomainPolicy=Shared.
        lws_ok = (lws.get("spec", {}).get("networkConfig") or {}).get("subdomainPolicy") == "Shared"
        pod = core.create_namespaced_pod("default", _probe_pod(), dry_run="All")
        pod_ok = GROUP_KEY_LABEL in (pod.metadata.labels or {})
        return "" if lws_ok and pod_ok else \
            f"dry runs not mutated yet (LeaderWorkerSet webhook: {lws_ok}, pod webhook: {pod_ok})"

    wait_webhooks_answer(proc, probe, "LWS", timeout_s)
