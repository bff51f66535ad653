"""`clique bench extender --memory`: resident memory (RSS) of the extender process holding 5,000 nodes and 50,000
pods in its state. Side effects: a local HTTP server (a thread of this process), the extender as its own process.

The extender fills its state exactly as in a cluster: its own list+watch code (kubernetes_asyncio, state.py) reads
a NodeList and a PodList and then a stream of watch events (pods added, then pending pods bound). They are served
by a replay server in this process, not an API server: the objects are written as kube-apiserver v1.37 serves
them (managedFields, defaulted spec fields, kubelet status with container statuses; node status with images,
nodeInfo and GPU Feature Discovery labels), so each pod costs what a real one does. The mix per node: five
DaemonSet pods (CNI, kube-proxy, device plugin, dcgm-exporter, node agent) and two CPU-only Deployment pods; 4,000
nodes run 1,000 StatefulSet gangs of 4 x 8 GPUs, 1,000 nodes 8 single 1-GPU pods each; the rest are gang pods
waiting for room. The last gang's pods come last in the watch: once a filter call plans that gang, every event
has been applied, and the extender's RSS (VmRSS of /proc/PID/status, and its peak VmHWM) is read. The same is done
with no nodes and no pods, so the state's share is the difference.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

GANG = 4
TS = "2026-11-30T08:15:42Z"
DAEMONSETS = [("kube-system", "kube-proxy", "registry.k8s.io/kube-proxy:v1.37.2", "100m", "128Mi"),
              ("kube-system", "cilium", "quay.io/cilium/cilium:v1.18.3", "200m", "512Mi"),
              ("gpu-operator", "nvidia-device-plugin-daemonset", "nvcr.io/nvidia/k8s-device-plugin:v0.18.0", "50m", "64Mi"),
              ("gpu-operator", "nvidia-dcgm-exporter", "nvcr.io/nvidia/k8s/dcgm-exporter:4.4.1-4.6.0-ubuntu22.04",
               "100m", "512Mi"),
              ("clique-system", "clique-agent", "ghcr.io/clique/clique:0.9.0", "50m", "128Mi")]


def _uid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _fields(*paths: str) -> dict:
    """A managedFields fieldsV1 tree for the dotted field paths given (f:a.f:b -> {"f:a": {"f:b": {}}})."""
    out: dict = {}
    for p in paths:
        node = out
        for part in p.split("|"):
            node = node.setdefault(part, {})
        node.setdefault(".", {})
    return out


def node(i: int, rng: random.Random) -> dict:
    """A GPU node as the kubelet and GPU Feature Discovery leave it (labels, annotations, status)."""
    name = f"gpu-{i:05d}"
    leaf, spine = i // 16, i // 128
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
              "node.kubernetes.io/instance-type": "dgx-h100", "topology.kubernetes.io/zone": f"zone-{spine // 8}",
              "topology.kubernetes.io/region": "dc-1", "clique.dev/spine": f"spine-{spine}",
              "clique.dev/leaf": f"leaf-{leaf}", "nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": "8",
              "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.memory": "81559",
              "nvidia.com/gpu.family": "hopper", "nvidia.com/gpu.machine": "DGXH100", "nvidia.com/gpu.compute.major": "9",
              "nvidia.com/gpu.compute.minor": "0", "nvidia.com/cuda.driver-version.full": "580.95.05",
              "nvidia.com/cuda.driver.major": "580", "nvidia.com/cuda.runtime-version.full": "13.0",
              "nvidia.com/gpu.replicas": "1", "nvidia.com/gpu.sharing-strategy": "none", "nvidia.com/mig.capable": "false",
              "nvidia.com/gfd.timestamp": "1764490542", "nvidia.com/gpu.deploy.device-plugin": "true",
              "nvidia.com/gpu.deploy.dcgm-exporter": "true", "nvidia.com/gpu.deploy.gpu-feature-discovery": "true",
              "feature.node.kubernetes.io/cpu-model.vendor_id": "Intel",
              "feature.node.kubernetes.io/kernel-version.full": "6.8.0-87-generic",
              "feature.node.kubernetes.io/pci-10de.present": "true", "feature.node.kubernetes.io/rdma.available": "true",
              "feature.node.kubernetes.io/system-os_release.ID": "ubuntu",
              "feature.node.kubernetes.io/system-os_release.VERSION_ID": "24.04", "clique.dev/pool": "h100"}
    annotations = {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                   "nfd.node.kubernetes.io/feature-labels": ",".join(k.split("/", 1)[1] for k in labels
                                                                      if k.startswith("feature.node")),
                   "clique.dev/nvlink-matrix": ";".join("".join("X" if a == b else "N" for b in range(8)) for a in range(8)),
                   "csi.volume.kubernetes.io/nodeid": json.dumps({"csi.tigera.io": name})}
    cap = {"cpu": "224", "memory": "2113451412Ki", "pods": "110", "ephemeral-storage": "3750157048Ki",
           "hugepages-1Gi": "0", "hugepages-2Mi": "0", "nvidia.com/gpu": "8", "rdma/ib": "8"}
    conds = [{"type": t, "status": s, "lastHeartbeatTime": TS, "lastTransitionTime": TS, "reason": r, "message": m}
             for t, s, r, m in [("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                                ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                                ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                                ("Ready", "True", "KubeletReady", "kubelet is posting ready status")]]
    images = [{"names": [f"registry.example.com/team/image-{k}@sha256:{rng.getrandbits(256):064x}",
                         f"registry.example.com/team/image-{k}:v1.{k}"], "sizeBytes": rng.randrange(10**8, 2 * 10**10)}
              for k in range(30)]
    return {"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "uid": _uid(rng), "resourceVersion": str(1000 + i), "creationTimestamp": TS,
                         "labels": labels, "annotations": annotations,
                         "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": TS,
                                            "fieldsType": "FieldsV1", "fieldsV1": _fields(
                                                *(f"f:metadata|f:labels|f:{k}" for k in list(labels)[:8]))},
                                           {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": TS,
                                            "fieldsType": "FieldsV1", "subresource": "status", "fieldsV1": _fields(
                                                "f:status|f:allocatable|f:nvidia.com/gpu", "f:status|f:capacity|f:nvidia.com/gpu",
                                                "f:status|f:conditions", "f:status|f:images", "f:status|f:nodeInfo")},
                                           {"manager": "nfd-master", "operation": "Update", "apiVersion": "v1", "time": TS,
                                            "fieldsType": "FieldsV1", "fieldsV1": _fields(
                                                *(f"f:metadata|f:labels|f:{k}" for k in list(labels)[8:]))}]},
            "spec": {"podCIDR": f"10.{i // 256}.{i % 256}.0/24", "podCIDRs": [f"10.{i // 256}.{i % 256}.0/24"]},
            "status": {"capacity": cap, "allocatable": {**cap, "cpu": "222", "memory": "2092479892Ki"},
                       "conditions": conds,
                       "addresses": [{"type": "InternalIP", "address": f"172.16.{i // 256}.{i % 256}"},
                                     {"type": "Hostname", "address": name}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                       "nodeInfo": {"machineID": f"{rng.getrandbits(128):032x}", "systemUUID": _uid(rng),
                                    "bootID": _uid(rng), "kernelVersion": "6.8.0-87-generic",
                                    "osImage": "Ubuntu 24.04.3 LTS", "containerRuntimeVersion": "containerd://2.1.4",
                                    "kubeletVersion": "v1.37.2", "kubeProxyVersion": "", "operatingSystem": "linux",
                                    "architecture": "amd64"},
                       "images": images}}


def _stamp(rng: random.Random, after: int = 0) -> tuple[str, int]:
    """An RFC 3339 time (second resolution, as the API server writes) within the week before TS, or `after`
    plus a few seconds."""
    t = after + rng.randrange(1, 6) if after else 1764490542 - rng.randrange(7 * 86400)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)), t


def _pod_status(node_name: str | None, i: int, containers: list[dict], rng: random.Random, created: int) -> dict:
    scheduled = _stamp(rng, created)[0]
    if node_name is None:
        return {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "lastProbeTime": None, "lastTransitionTime": scheduled,
             "reason": "Unschedulable", "message": "0/5000 nodes are available: 5000 Insufficient nvidia.com/gpu."}],
            "qosClass": "Guaranteed"}
    ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    return {"phase": "Running", "conditions": [
        {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": scheduled, "observedGeneration": 1}
        for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")],
        "hostIP": f"172.16.{i % 20}.{i % 250}", "hostIPs": [{"ip": f"172.16.{i % 20}.{i % 250}"}], "podIP": ip,
        "podIPs": [{"ip": ip}], "startTime": scheduled, "qosClass": "Burstable", "observedGeneration": 1,
        "containerStatuses": [{"name": c["name"], "state": {"running": {"startedAt": TS}}, "lastState": {},
                               "ready": True, "restartCount": 0, "image": c["image"],
                               "imageID": f"{c['image'].split(':')[0]}@sha256:{rng.getrandbits(256):064x}",
                               "containerID": f"containerd://{rng.getrandbits(256):064x}", "started": True,
                               "resources": c["resources"], "user": {"linux": {"uid": 0, "gid": 0, "supplementalGroups": [0]}},
                               "volumeMounts": [{"name": m["name"], "mountPath": m["mountPath"], "readOnly": True,
                                                 "recursiveReadOnly": "Disabled"} for m in c["volumeMounts"]]}
                              for c in containers]}


def pod(kind: str, name: str, ns: str, owner: str, node_name: str | None, i: int, rng: random.Random,
        gpus: int = 0, image: str = "vllm/vllm-openai:v0.11.0", cpu: str = "500m", memory: str = "1Gi",
        annotations: dict | None = None, extra_labels: dict | None = None) -> dict:
    """A pod of a controller (`kind`: StatefulSet, DaemonSet, ReplicaSet) as kube-apiserver serves it."""
    created_at, created = _stamp(rng)
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    mounts = [{"name": "kube-api-access-" + f"{rng.getrandbits(20):05x}", "readOnly": True,
               "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    if gpus:
        mounts += [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "model-cache", "mountPath": "/models"}]
    container = {
        "name": "main", "image": image,
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"] if gpus else ["/usr/bin/entrypoint"],
        "args": (["--model", "/models/Llama-3.1-405B-Instruct-FP8", "--tensor-parallel-size", str(gpus),
                  "--pipeline-parallel-size", str(GANG), "--port", "8000", "--max-model-len", "32768"] if gpus
                 else ["--v=2", "--metrics-port=9400"]),
        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}},
                {"name": "NCCL_IB_HCA", "value": "mlx5_0,mlx5_1,mlx5_2,mlx5_3,mlx5_4,mlx5_5,mlx5_6,mlx5_7"},
                {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"}, {"name": "HF_HOME", "value": "/models/.cache"}],
        "resources": {"limits": limits, "requests": dict(limits)},
        "volumeMounts": mounts,
        "readinessProbe": {"httpGet": {"path": "/health", "port": 8000, "scheme": "HTTP"}, "timeoutSeconds": 1,
                           "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"}
    labels = {"app.kubernetes.io/name": owner, "app.kubernetes.io/part-of": "inference", **(extra_labels or {})}
    if kind == "StatefulSet":
        labels.update({"apps.kubernetes.io/pod-index": name.rsplit("-", 1)[1],
                       "controller-revision-hash": f"{owner}-7c9d5b8f4d", "statefulset.kubernetes.io/pod-name": name})
    elif kind == "ReplicaSet":
        labels["pod-template-hash"] = "6b7f9c8d5"
    else:
        labels.update({"controller-revision-hash": "5d8f7b6c9", "pod-template-generation": "1"})
    spec: dict[str, Any] = {
        "volumes": [{"name": mounts[0]["name"], "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                          "fieldPath": "metadata.namespace"}}]}}]}}]
        + ([{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}},
            {"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}}] if gpus else []),
        "containers": [container], "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst", "serviceAccountName": "default", "serviceAccount": "default",
        "securityContext": {}, "schedulerName": "clique-scheduler" if gpus else "default-scheduler",
        "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300}] + ([{"key": "nvidia.com/gpu", "operator": "Exists",
                                                          "effect": "NoSchedule"}] if gpus else []),
        "priority": 0, "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority"}
    if node_name:
        spec["nodeName"] = node_name
    if kind == "StatefulSet":
        spec.update({"hostname": name, "subdomain": owner})
    if kind == "DaemonSet" and node_name:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}}}
    managed = [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": TS,
                "fieldsType": "FieldsV1", "fieldsV1": _fields(
                    "f:metadata|f:generateName", *(f"f:metadata|f:labels|f:{k}" for k in labels),
                    *(f"f:metadata|f:annotations|f:{k}" for k in (annotations or {})),
                    "f:metadata|f:ownerReferences", "f:spec|f:containers|k:{\"name\":\"main\"}|f:args",
                    "f:spec|f:containers|k:{\"name\":\"main\"}|f:env", "f:spec|f:containers|k:{\"name\":\"main\"}|f:image",
                    "f:spec|f:containers|k:{\"name\":\"main\"}|f:resources", "f:spec|f:dnsPolicy", "f:spec|f:volumes",
                    "f:spec|f:tolerations", "f:spec|f:schedulerName", "f:spec|f:restartPolicy")}]
    if node_name:
        managed.append({"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": TS,
                        "fieldsType": "FieldsV1", "subresource": "status", "fieldsV1": _fields(
                            "f:status|f:conditions", "f:status|f:containerStatuses", "f:status|f:hostIP",
                            "f:status|f:podIP", "f:status|f:podIPs", "f:status|f:startTime")})
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "generateName": name.rsplit("-", 1)[0] + "-", "namespace": ns, "uid": _uid(rng),
                         "resourceVersion": str(10_000 + i), "creationTimestamp": created_at, "labels": labels,
                         "annotations": annotations or {},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": owner,
                                              "uid": _uid(random.Random(f"{ns}/{owner}")),
                                              "controller": True, "blockOwnerDeletion": True}],
                         "managedFields": managed},
            "spec": spec, "status": _pod_status(node_name, i, [container], rng, created)}


def cluster(nodes: int = 5000, pods: int = 50_000, seed: int = 1) -> tuple[list[dict], list[dict], list[dict]]:
    """Nodes, pending gang pods (to be bound by watch events) and every other pod, as described above."""
    rng = random.Random(seed)
    node_objs = [node(i, rng) for i in range(nodes)]
    names = [n["metadata"]["name"] for n in node_objs]
    out: list[dict] = []
    i = 0
    for n in names:
        for ns, ds, image, cpu, mem in DAEMONSETS:
            out.append(pod("DaemonSet", f"{ds}-{rng.getrandbits(25):07x}", ns, ds, n, i, rng, image=image, cpu=cpu,
                           memory=mem))
            i += 1
        for k in range(2):
            out.append(pod("ReplicaSet", f"router-6b7f9c8d5-{rng.getrandbits(25):07x}", "llm", "router-6b7f9c8d5", n,
                           i, rng, image="ghcr.io/example/router:1.4", cpu="2", memory="4Gi"))
            i += 1
    gang_nodes = min(len(names), (len(names) * 4 // 5) // GANG * GANG)
    for g in range(gang_nodes // GANG):
        sts, base = f"llama-405b-{g // 2:04d}", (g % 2) * GANG
        for m in range(GANG):
            out.append(pod("StatefulSet", f"{sts}-{base + m}", "llm", sts, names[g * GANG + m], i, rng, gpus=8,
                           cpu="96", memory="1536Gi", annotations={"clique.dev/gang-size": str(GANG),
                                                                  "clique.dev/topology-required": "clique.dev/leaf"}))
            i += 1
    for n in names[gang_nodes:]:
        for k in range(8):
            out.append(pod("ReplicaSet", f"embed-5c8d7f9b6-{rng.getrandbits(25):07x}", "llm", "embed-5c8d7f9b6", n, i,
                           rng, gpus=1, cpu="8", memory="64Gi"))
            i += 1
    pending: list[dict] = []
    g = 0
    while len(out) + len(pending) < pods:
        for m in range(GANG):
            pending.append(pod("ReplicaSet", f"wait-{g:05d}-{m}", "batch", f"wait-{g:05d}", None, i, rng, gpus=8,
                               cpu="96", memory="1536Gi", annotations={"clique.dev/gang": f"wait-{g:05d}",
                                                                      "clique.dev/gang-size": str(GANG)}))
            i += 1
        g += 1
    return node_objs, pending, out


# ------------------------------------------------------------------------------------------------ replay server
class Replay:
    """Serves GET /api/v1/nodes and /api/v1/pods: a list (in pages when asked with limit), then (watch=true)
    the queued events, then keeps the watch open; every other path is a 404 Status. A thread of this process with its own event loop."""

    def __init__(self, nodes: list[dict], pods: list[dict], pod_events: list[dict]) -> None:
        self.items = {"nodes": nodes, "pods": pods}
        self.lists = {"nodes": self._list("NodeList", nodes), "pods": self._list("PodList", pods)}
        self.events = {"nodes": b"", "pods": b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n"
                                                       for e in pod_events)}
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @staticmethod
    def _list(kind: str, items: list[dict], token: str | None = None) -> bytes:
        meta = {"resourceVersion": "100000", **({"continue": token} if token else {})}
        return json.dumps({"kind": kind, "apiVersion": "v1", "metadata": meta, "items": items},
                          separators=(",", ":")).encode()

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        kind = request.match_info["kind"]
        if request.query.get("watch") not in ("true", "1", "True"):
            limit = int(request.query.get("limit") or 0)
            if not limit:
                return web.Response(body=self.lists[kind], content_type="application/json")
            start = int(request.query.get("continue") or 0)  # the token is an offset here (opaque to clients)
            items = self.items[kind][start:start + limit]
            more = start + limit < len(self.items[kind])
            return web.Response(body=self._list("NodeList" if kind == "nodes" else "PodList", items,
                                                str(start + limit) if more else None),
                                content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        if self.events[kind]:
            await resp.write(self.events[kind])
            self.events[kind] = b""  # a second watch (after a reconnect) sees no event twice
        assert self._stop is not None
        await self._stop.wait()
        return resp

    async def _other(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                  "code": 404, "message": f"{request.path} is not replayed"}, status=404)

    def _serve(self) -> None:
        from aiohttp import web

        async def main() -> None:
            self._stop = asyncio.Event()
            app = web.Application()
            app.router.add_get("/api/v1/{kind:nodes|pods}", self._handle)
            app.router.add_route("*", "/{tail:.*}", self._other)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(main())

    def __enter__(self) -> "Replay":
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "current-context": "replay",
                                    "clusters": [{"name": "replay", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                                    "contexts": [{"name": "replay", "context": {"cluster": "replay", "user": "replay"}}],
                                    "users": [{"name": "replay", "user": {}}]}))
        return path


def _rss_kib(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _post(port: int, path: str, body: dict, timeout: float = 120.0) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def measure(nodes: int, pods: int, workdir: Path, say=print) -> dict:
    """RSS of an extender process whose state holds `nodes` nodes and `pods` pods (see the module docstring)."""
    from scheduler.extender.process import start_extender, stop_extender

    t = time.perf_counter()
    node_objs, pending, bound = cluster(nodes, pods) if nodes else ([], [], [])
    # The list holds every pod but the pending gangs; the watch adds those (the probe gang last) and sends a
    # MODIFIED event for a tenth of the running pods (status updates, as the kubelet sends them).
    events = [{"type": "ADDED", "object": p} for p in pending]
    events += [{"type": "MODIFIED", "object": p} for p in bound[: len(bound) // 10]]
    probe = pending[-1] if pending else None
    if probe is not None:  # the probe gang's pods are the watch's last ADDED events
        events = [e for e in events if e["object"]["metadata"]["name"].rsplit("-", 1)[0]
                  != probe["metadata"]["name"].rsplit("-", 1)[0]] + [
            {"type": "ADDED", "object": p} for p in pending[-GANG:]]
    say(f"[bench extender --memory] {len(node_objs)} nodes, {len(bound)} pods listed, {len(events)} watch events "
        f"built in {time.perf_counter() - t:.1f}s")
    with Replay(node_objs, bound, events) as replay:
        kubeconfig = replay.kubeconfig(workdir / f"replay-{nodes}.kubeconfig")
        size = {"nodes": len(replay.lists["nodes"]), "pods": len(replay.lists["pods"]),
                "events": len(replay.events["pods"])}
        ext, port = start_extender(kubeconfig, workdir / f"extender-memory-{nodes}.log", preset="generic",
                                   ready_timeout_s=600)
        try:
            planned, waited = False, time.perf_counter()
            names = [n["metadata"]["name"] for n in node_objs]
            while probe is not None and not planned:
                # free room for the probe gang: kube-scheduler would send the nodes its filters pass; an empty
                # cluster has none, so ask about the gang against every node (the plan fails for lack of room,
                # but only once the gang is complete: before that the answer says it waits for its pods)
                answer = _post(port, "/filter", {"Pod": probe, "NodeNames": names})
                reason = answer.get("Error") or next(iter({**(answer.get("FailedNodes") or {}),
                                                           **(answer.get("FailedAndUnresolvableNodes") or {})}.values()), "")
                planned = "waits for its pods" not in reason
                if not planned:
                    if time.perf_counter() - waited > 600:
                        raise RuntimeError(f"the extender did not apply the watch events within 600 s: {reason}")
                    time.sleep(0.5)
            settle = time.perf_counter()
            last = _rss_kib(ext.pid)[0]
            while time.perf_counter() - settle < 30:  # the watch's tail and the first plan's caches, then steady
                time.sleep(1.0)
                now = _rss_kib(ext.pid)[0]
                if abs(now - last) < 512:
                    break
                last = now
            rss, hwm = _rss_kib(ext.pid)
            with open(f"/proc/{ext.pid}/status") as fh:
                threads = next(int(line.split()[1]) for line in fh if line.startswith("Threads:"))
            say(f"[bench extender --memory] {nodes} nodes, {pods if nodes else 0} pods: RSS {rss / 1024:.0f} MiB "
                f"(peak {hwm / 1024:.0f} MiB), synced and probed in {time.perf_counter() - waited:.1f}s")
        finally:
            stop_extender(ext)
    return {"nodes": len(node_objs), "pods": len(bound) + len(pending), "rss_mib": round(rss / 1024, 1),
            "peak_rss_mib": round(hwm / 1024, 1), "threads": threads,
            "served_mib": {k: round(v / 2**20, 1) for k, v in size.items()}}


def iter_rows(nodes: int, pods: int, workdir: Path, say=print) -> Iterator[dict]:
    yield measure(0, 0, workdir, say)
    yield measure(nodes, pods, workdir, say)
