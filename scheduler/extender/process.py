"""The extender as a separate process next to a local control plane (benchmarks, tests, demos), and the
KubeSchedulerConfiguration of a kube-scheduler that calls it. Side effects: starts a process."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from simulations.controlplane.processes import free_port, start_service, stop_service


def start_extender(kubeconfig: Path, log: Path, preset: str = "generic-nvlink", bind_timeout_s: float = 10.0,
                   port: int | None = None, ready_timeout_s: float = 60.0,
                   levels: list[str] | None = None, env: dict[str, str] | None = None,
                   webhook_port: int | None = None,
                   webhook_cert_dir: Path | None = None, gate_gangs: bool = True,
                   pin_at_creation: bool = True, follow_lease: str | None = None,
                   identity: str | None = None) -> tuple[subprocess.Popen, int]:
    """Start `clique scheduler extender` and wait until /readyz answers (its watches have synced). `levels`
    (node label keys, outermost first) overrides the preset; `env` adds environment variables (test hooks);
    `webhook_port` with `webhook_cert_dir` (tls.crt, tls.key) also serves the admission webhook on 127.0.0.1;
    `follow_lease` ("namespace/name") with `identity`: it acts only while that kube-scheduler leads (leadership.py)."""
    port = port or free_port()
    how = ["--levels", ",".join(levels)] if levels else ["--preset", preset]
    webhook = (["--webhook-listen", f"127.0.0.1:{webhook_port}", "--webhook-cert-dir", str(webhook_cert_dir),
                "--gate-gangs", "on" if gate_gangs else "off", "--pin-at-creation", "on" if pin_at_creation else "off"]
               if webhook_port else [])
    follow = (["--follow-lease", follow_lease] + (["--identity", identity] if identity else [])) if follow_lease else []
    proc = start_service(["scheduler", "extender", "--kubeconfig", str(kubeconfig), "--listen", f"127.0.0.1:{port}",
                          *how, "--bind-timeout", str(bind_timeout_s), *webhook, *follow], log, port, "extender",
                         ready_timeout_s, env)
    return proc, port


stop_extender = stop_service
# pkg/scheduler/framework/plugins/names/names.go (k8s.io/kubernetes v1.37.2)
IN_TREE_GANG_PLUGINS = ("GangScheduling", "TopologyPlacementGenerator", "PodGroupPodsCount")


def clique_scheduler_config(extender_port: int, scheduler_name: str = "clique-scheduler") -> dict[str, Any]:
    """A second kube-scheduler with one profile that calls the extender for GPU pods (as manifests/ ships)."""
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "percentageOfNodesToScore": 100,
        # Clique's extender owns gang placement in this profile: Kubernetes' own gang and topology plugins (on by
        # default once the GenericWorkload / TopologyAwareWorkloadScheduling gates are, k8s.io/kubernetes v1.37.2
        # pkg/scheduler/apis/config/v1/default_plugins.go) would hold the same pods at Permit a second time.
        "profiles": [{"schedulerName": scheduler_name, "plugins": {"multiPoint": {"disabled": [
            {"name": n} for n in IN_TREE_GANG_PLUGINS]}}}],
        "extenders": [{"urlPrefix": f"http://127.0.0.1:{extender_port}", "filterVerb": "filter",
                       "prioritizeVerb": "prioritize", "bindVerb": "bind", "preemptVerb": "preempt", "weight": 1,
                       "nodeCacheCapable": True,
                       # every pod of this profile, GPU or not (see manifests/scheduler/config.yaml)
                       "httpTimeout": "30s", "ignorable": False}],
    }
