"""The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on 127.0.0.1.

Side effects: starts processes, writes a work directory (PKI, kubeconfigs, logs, state.json).

    with ControlPlane() as cp:                  # builds binaries on first use (cached), starts, waits ready
        api = cp.api_client()                   # kubernetes.client.ApiClient as cluster-admin
        create_nodes(api, load_cluster_spec("spec.yaml").hosts())

Everything listens on loopback with ports the kernel picks; the API server serves TLS with our own CA,
authenticates bearer tokens and authorizes with RBAC (+ Node). `stop()` (or leaving the `with`) stops every
process, and checks that none of them and none of their ports remain.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simulations.controlplane import processes as P
from simulations.controlplane.build import Binaries, cache_dir, ensure_binaries, ensure_optional
from simulations.controlplane.pki import create_pki, kubeconfig_text
from simulations.controlplane.versions import KUBERNETES_VERSION

STAGES_FILE = Path(__file__).with_name("kwok-stages.yaml")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

# What kwok needs: manage nodes and pods (status included), renew node leases, write events.
_KWOK_RBAC = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "clique:kwok"},
     "rules": [
         {"apiGroups": [""], "resources": ["nodes", "pods"], "verbs": ["get", "list", "watch", "update", "patch", "delete"]},
         {"apiGroups": [""], "resources": ["nodes/status", "pods/status"], "verbs": ["update", "patch"]},
         {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
         {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
     ]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "clique:kwok"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "clique:kwok"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "clique:kwok"}]},
]


def default_scheduler_config() -> dict[str, Any]:
    return {"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
            "profiles": [{"schedulerName": "default-scheduler"}]}


@dataclass
class ControlPlaneOptions:
    """How to start the control plane. Defaults suit tests on a 2-core machine."""

    workdir: Path | None = None  # None: a fresh temporary directory, removed on stop
    detached: bool = False  # True: processes outlive this Python process (CLI `cluster up`)
    scheduler_config: dict[str, Any] | None = None  # KubeSchedulerConfiguration; None = stock profile only
    start_controller_manager: bool = True  # False: no controllers (benchmarks of our own service on static nodes)
    start_scheduler: bool = True
    start_kwok: bool = True
    feature_gates: dict[str, bool] = field(default_factory=dict)  # passed to every Kubernetes component
    runtime_config: dict[str, bool] = field(default_factory=dict)  # kube-apiserver --runtime-config (alpha APIs)
    lws: bool = False  # True: the real LeaderWorkerSet controller (CRD, webhooks, manager); see lws.py
    kueue: bool = False  # True: the real Kueue manager with TAS (CRDs, webhooks, manager); see kueue.py
    # kube-apiserver audit log (level Metadata, JSON lines at <workdir>/audit.log) of requests by users in these
    # groups only, e.g. ("system:serviceaccounts:clique-system",); empty: no audit log. See audit.py.
    audit_user_groups: tuple[str, ...] = ()
    ready_timeout_s: float = 120.0
    # kwok's node lease duration (it renews every quarter of it) and, with it, kube-controller-manager's
    # --node-monitor-grace-period (1.25x, the ratio of the defaults: 40 s and 50 s, k8s.io/kubernetes v1.37.2
    # pkg/controller/nodelifecycle/config/v1alpha1/defaults.go). Benchmarks with thousands of KWOK nodes raise it
    # (node_lease_for): on two shared cores kwok cannot renew 5,000 leases every 10 s, the nodes go NotReady and
    # the node lifecycle controller's taints and status writes swamp the run.
    node_lease_s: int = 40


class ControlPlane:
    """A running local control plane. Use as a context manager, or start()/stop()."""

    def __init__(self, options: ControlPlaneOptions | None = None, binaries: Binaries | None = None) -> None:
        self.options = options or ControlPlaneOptions()
        self._binaries = binaries
        self._owns_workdir = self.options.workdir is None
        self.workdir = Path(self.options.workdir or tempfile.mkdtemp(prefix="clique-cp-"))
        self.procs: dict[str, P.Proc] = {}
        self._probes: dict[str, tuple[Any, str]] = {}  # name -> (readiness probe, what it waits for): restarts
        self.ports: dict[str, int] = {}
        self.tokens: dict[str, str] = {}
        self.kubeconfig = self.workdir / "kubeconfig"
        self.server = ""
        self._on_stop: list[Any] = []  # callables run once after every process has stopped (see on_stop)
        self.audit_log: Path | None = None  # set when options.audit_user_groups turns the audit log on

    # ----------------------------------------------------------------- lifecycle
    def __enter__(self) -> "ControlPlane":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "ControlPlane":
        started = time.monotonic()
        binaries = self._binaries or ensure_binaries()
        if self.options.lws:  # build (once, cached) before anything starts
            ensure_optional("lws")
        if self.options.kueue:
            ensure_optional("kueue")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_all(binaries)
        except BaseException:
            self.stop()
            raise
        self._write_state()
        self.startup_seconds = time.monotonic() - started
        return self

    def _start_all(self, b: Binaries) -> None:
        o = self.options
        pki = create_pki(self.workdir / "pki")
        self.tokens = pki.tokens
        gates = ",".join(f"{k}={str(v).lower()}" for k, v in sorted(o.feature_gates.items()))
        gate_args = [f"--feature-gates={gates}"] if gates else []

        # etcd: in-memory-speed settings (no fsync): this data is thrown away with the cluster.
        self.ports["etcd"], self.ports["etcd-peer"] = P.free_port(), P.free_port()
        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        peer_url = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._start("etcd", [
            str(b.etcd), "--name=clique", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=clique={peer_url}", "--unsafe-no-fsync", "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ], lambda: P.http_ok(f"{etcd_url}/health"), "etcd /health")

        self.ports["apiserver"] = P.free_port()
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"
        runtime = ",".join(f"{k}={str(v).lower()}" for k, v in sorted(o.runtime_config.items()))
        admin_token = self.tokens["clique-admin"]
        self._start("kube-apiserver", [
            str(b.kube_apiserver), f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={self.ports['apiserver']}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}", f"--token-auth-file={pki.token_file}",
            "--authorization-mode=Node,RBAC", "--anonymous-auth=false",
            f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-account-issuer={self.server}", "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true", "--endpoint-reconciler-type=none", "--profiling=false",
            f"--cert-dir={self.workdir / 'apiserver-certs'}", *self._audit_args(),
            *([f"--runtime-config={runtime}"] if runtime else []), *gate_args,
            # Without the controller-manager nothing would lift the not-ready taint this plugin puts on new nodes.
            *([] if o.start_controller_manager else ["--disable-admission-plugins=TaintNodesByCondition"]),
        ], lambda: P.http_ok(f"{self.server}/readyz", admin_token, str(pki.ca_cert)), "kube-apiserver /readyz")

        kubeconfigs = {}
        for user, file_name in (("clique-admin", "kubeconfig"), ("system:kube-controller-manager", "kcm.kubeconfig"),
                                ("system:kube-scheduler", "scheduler.kubeconfig"), ("clique:kwok", "kwok.kubeconfig")):
            path = self.workdir / file_name
            path.write_text(kubeconfig_text(self.server, pki.ca_cert, user, self.tokens[user]))
            path.chmod(0o600)
            kubeconfigs[user] = path
        self._apply(_KWOK_RBAC)
        if o.lws:  # the CRD before the controller-manager, whose garbage collector then watches it from the start
            from simulations.controlplane import lws

            lws.install_crd(self)
        if o.kueue:  # likewise Kueue's CRDs (workloads are owned by their pods)
            from simulations.controlplane import kueue

            kueue.install_crds(self)

        if o.start_controller_manager:
            self._start_controller_manager(b, pki, kubeconfigs, gate_args)
        if o.start_scheduler:
            self.start_scheduler(o.scheduler_config, b.kube_scheduler, kubeconfigs["system:kube-scheduler"])
        if o.start_kwok:
            self._start_kwok(b, kubeconfigs)
        if o.start_controller_manager:
            self._wait_default_service_account()
        else:  # nothing creates it without the controller-manager; pods need it (ServiceAccount admission)
            self._apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": "default"}}])
        if o.lws:  # last: its readiness check dry-runs a pod, which needs the default ServiceAccount
            lws.start(self)  # the manager joins self.procs, so stop() (and `cluster down`) stops it first
        if o.kueue:  # last, for the same reason
            kueue.start(self)

    def _audit_args(self) -> list[str]:
        """kube-apiserver audit flags (k8s.io/apiserver v0.37.2 pkg/server/options/audit.go: --audit-policy-file,
        --audit-log-path, --audit-log-format; the log backend's default mode is blocking, so an event is in the
        file by the time its response is complete)."""
        if not self.options.audit_user_groups:
            return []
        from simulations.controlplane.audit import audit_policy

        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(audit_policy(self.options.audit_user_groups)))
        self.audit_log = self.workdir / "audit.log"
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}", "--audit-log-format=json"]

    def _start_controller_manager(self, b: Binaries, pki, kubeconfigs, gate_args) -> None:
        self.ports["kube-controller-manager"] = P.free_port()
        self._start("kube-controller-manager", [
            str(b.kube_controller_manager), f"--kubeconfig={kubeconfigs['system:kube-controller-manager']}",
            f"--authentication-kubeconfig={kubeconfigs['system:kube-controller-manager']}",
            f"--authorization-kubeconfig={kubeconfigs['system:kube-controller-manager']}",
            "--bind-address=127.0.0.1", f"--secure-port={self.ports['kube-controller-manager']}",
            f"--cert-dir={self.workdir / 'kcm-certs'}", "--leader-elect=false",
            # Each controller acts under its own service account, as in kubeadm clusters (RBAC is on).
            "--use-service-account-credentials=true", f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}", "--kube-api-qps=200", "--kube-api-burst=400",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            *([f"--node-monitor-grace-period={self.options.node_lease_s * 5 // 4}s"]
              if self.options.node_lease_s != 40 else []),
            *gate_args,
        ], lambda: P.http_ok(f"https://127.0.0.1:{self.ports['kube-controller-manager']}/healthz", insecure=True),
            "kube-controller-manager /healthz")

    def _start_kwok(self, b: Binaries, kubeconfigs) -> None:
        self.ports["kwok"] = P.free_port()
        self._start("kwok", [
            str(b.kwok), f"--kubeconfig={kubeconfigs['clique:kwok']}", f"--config={STAGES_FILE}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--node-lease-duration-seconds={self.options.node_lease_s}", "--cidr=10.244.0.0/16", "--node-ip=10.96.0.1",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
        ], lambda: P.http_ok(f"http://127.0.0.1:{self.ports['kwok']}/healthz"), "kwok /healthz")

    def start_scheduler(self, config: dict[str, Any] | None = None, binary: Path | None = None,
                        kubeconfig: Path | None = None, name: str = "kube-scheduler") -> P.Proc:
        """Start (another) kube-scheduler with a KubeSchedulerConfiguration; connection fields are filled in."""
        cfg = json.loads(json.dumps(config or default_scheduler_config()))
        cfg.setdefault("clientConnection", {})
        cfg["clientConnection"].setdefault("kubeconfig", str(kubeconfig or self.workdir / "scheduler.kubeconfig"))
        cfg["clientConnection"].setdefault("qps", 500)
        cfg["clientConnection"].setdefault("burst", 1000)
        cfg.setdefault("leaderElection", {"leaderElect": False})
        cfg_path = self.workdir / f"{name}.config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        port = self.ports[name] = P.free_port()
        gates = ",".join(f"{k}={str(v).lower()}" for k, v in sorted(self.options.feature_gates.items()))
        kubeconfig_path = cfg["clientConnection"]["kubeconfig"]
        return self._start(name, [
            str(binary or (self._binaries or ensure_binaries()).kube_scheduler), f"--config={cfg_path}",
            f"--authentication-kubeconfig={kubeconfig_path}", f"--authorization-kubeconfig={kubeconfig_path}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={self.workdir / (name + '-certs')}",
            # a local harness: benchmarks read /metrics without a token (the default list has only the health paths,
            # k8s.io/apiserver v0.37.2 pkg/server/options/authorization.go)
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            *([f"--feature-gates={gates}"] if gates else []),
        ], lambda: P.http_ok(f"https://127.0.0.1:{port}/healthz", insecure=True), f"{name} /healthz")

    def restart_component(self, name: str, kill: bool = False) -> float:
        """Stop one component (SIGTERM, or SIGKILL with `kill`) and start it again with the same command line
        (same port, data and certificates), waiting until it is ready as at start-up. Returns the seconds taken."""
        import os
        import signal

        started = time.monotonic()
        proc = self.procs[name]
        if kill and proc.alive():
            os.kill(proc.pid, signal.SIGKILL)
        P.stop(proc)
        probe, what = self._probes[name]
        self._start(name, proc.argv, probe, what)
        self._write_state()
        return time.monotonic() - started

    def on_stop(self, cleanup: Any) -> None:
        """Run `cleanup()` once when stop() has stopped every process (e.g. kueue.py's /etc/kueue certificate)."""
        self._on_stop.append(cleanup)

    def stop_component(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc:
            P.stop(proc)

    def stop(self) -> None:
        """Stop every process (reverse start order) and check that nothing is left behind."""
        for name in reversed(list(self.procs)):
            P.stop(self.procs[name])
        leftovers = [f"{p.name} (pid {p.pid})" for p in self.procs.values() if p.alive()]
        self.procs.clear()
        while self._on_stop:
            self._on_stop.pop()()
        if leftovers:
            raise P.ControlPlaneError(f"processes still running after stop: {', '.join(leftovers)}")
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            (self.workdir / "state.json").unlink(missing_ok=True)

    # ----------------------------------------------------------------- helpers
    def _start(self, name: str, argv: list[str], probe: Any, what: str) -> P.Proc:
        proc = P.start(name, argv, self.workdir / "logs", detached=self.options.detached)
        self.procs[name] = proc
        self._probes[name] = (probe, what)
        P.wait_until(proc, probe, what, self.options.ready_timeout_s)
        return proc

    def api_client(self):  # -> kubernetes.client.ApiClient
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 32  # parallel node and pod creation; must be set before the pool exists
        return client.ApiClient(cfg)

    def _apply(self, objects: list[dict[str, Any]]) -> None:
        from kubernetes import utils

        api = self.api_client()
        try:
            utils.create_from_dict(api, {"apiVersion": "v1", "kind": "List", "items": objects})
        finally:
            api.close()

    def create_namespace(self, name: str) -> None:
        """A namespace that pods can be created in (its `default` ServiceAccount exists)."""
        from kubernetes import client

        api = self.api_client()
        try:
            client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
        finally:
            api.close()
        self._wait_default_service_account(name)

    def _wait_default_service_account(self, namespace: str = "default") -> None:
        """Pods are rejected until the controller-manager has made the namespace's `default` ServiceAccount."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api = self.api_client()
        try:
            core = client.CoreV1Api(api)
            deadline = time.monotonic() + self.options.ready_timeout_s
            while True:
                try:
                    core.read_namespaced_service_account("default", namespace)
                    return
                except ApiException as exc:
                    if exc.status != 404 or time.monotonic() > deadline:
                        raise P.ControlPlaneError(
                            "the 'default' ServiceAccount never appeared; is kube-controller-manager healthy? "
                            f"last lines of its log:\n{self.procs['kube-controller-manager'].log_tail()}") from exc
                time.sleep(0.2)
        finally:
            api.close()

    def state(self) -> dict[str, Any]:
        return {
            "version": KUBERNETES_VERSION, "server": self.server, "kubeconfig": str(self.kubeconfig),
            "workdir": str(self.workdir), "ports": self.ports,
            "processes": {n: {"pid": p.pid, "argv": p.argv, "log": str(p.log)} for n, p in self.procs.items()},
        }

    def _write_state(self) -> None:
        (self.workdir / "state.json").write_text(json.dumps(self.state(), indent=1))


def node_lease_for(nodes: int, renewals_per_s: int = 100) -> int:
    """A node lease duration (ControlPlaneOptions.node_lease_s) that keeps kwok's renewals of `nodes` leases, one
    every quarter of it, at most `renewals_per_s`: what 1,000 nodes cost at the default of 40 s."""
    return max(40, -(-4 * nodes // renewals_per_s))


def default_cluster_dir(name: str = "default") -> Path:
    return cache_dir() / "clusters" / name


def load_state(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((workdir / "state.json").read_text())
    except (OSError, ValueError):
        return None


def stop_detached(workdir: Path) -> list[str]:
    """Stop the processes a detached `cluster up` recorded in workdir/state.json. Returns what was stopped."""
    state = load_state(workdir)
    if state is None:
        return []
    stopped = []
    for name in reversed(list(state["processes"])):
        info = state["processes"][name]
        proc = P.Proc(name=name, argv=info["argv"], log=Path(info["log"]), pid=info["pid"])
        if proc.alive():  # alive() checks the PID still runs the recorded binary
            P.stop(proc)
            stopped.append(name)
    if "kueue-controller-manager" in state["processes"]:  # its /etc/kueue metrics certificate (kueue.py)
        from simulations.controlplane.kueue import MetricsCertSlot

        MetricsCertSlot(str(Path(state["workdir"]).resolve())).release()
    (workdir / "state.json").unlink(missing_ok=True)
    return stopped
