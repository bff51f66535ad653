"""The controller-runtime managers the harness runs beside the control plane (LWS, Kueue): each gets a config file,
a webhook port and a health port on loopback, and is ready when its /readyz answers. Side effects: files, a
process, and the webhook configurations removed on stop."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import time

import yaml

from simulations.controlplane import processes as P

if TYPE_CHECKING:
    from simulations.controlplane.cluster import ControlPlane


def start_manager(cp: "ControlPlane", name: str, binary: Path, cert_dir: Path,
                  config: Callable[[int, int, Path], dict[str, Any]], webhook_key: str) -> tuple[P.Proc, int]:
    """Write `config(webhook_port, health_port, cert_dir)` next to `cert_dir`, start `binary` with it under `name`
    (ports recorded in cp.ports as `name` and `webhook_key`), wait for its /readyz. Returns the process and the
    webhook port."""
    webhook_port, health_port = P.free_port(), P.free_port()
    cp.ports[webhook_key], cp.ports[name] = webhook_port, health_port
    cfg_path = cert_dir.parent / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config(webhook_port, health_port, cert_dir), sort_keys=False))
    proc = cp._start(name, [str(binary), f"--config={cfg_path}", f"--kubeconfig={cp.kubeconfig}",
                            "--zap-log-level=info"],
                     lambda: P.http_ok(f"http://127.0.0.1:{health_port}/readyz"), f"{name} /readyz")
    return proc, webhook_port


def stop_manager(cp: "ControlPlane", name: str, webhook_prefix: str, remove_webhooks: bool = True) -> None:
    """Stop the manager `name` of a control plane that keeps running and, unless told not to, remove its
    `<prefix>mutating-webhook-configuration` / `<prefix>validating-webhook-configuration` (with failurePolicy Fail
    they would reject every object they cover while no manager answers)."""
    cp.stop_component(name)
    if not remove_webhooks:
        return
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = cp.api_client()
    try:
        adm = client.AdmissionregistrationV1Api(api)
        for delete, suffix in ((adm.delete_mutating_webhook_configuration, "mutating-webhook-configuration"),
                               (adm.delete_validating_webhook_configuration, "validating-webhook-configuration")):
            try:
                delete(webhook_prefix + suffix)
            except ApiException as exc:
                if exc.status != 404:
                    raise
    finally:
        api.close()


def wait_webhooks_answer(proc: P.Proc, probe: Callable[[], str], what: str, timeout_s: float,
                         interval_s: float = 0.2) -> None:
    """Call `probe` (server-side dry runs through the API server) until it returns "" (the manager's webhooks
    answered as expected), or else what it saw; an API error is what it saw too. Fails at once if the manager
    exits, and after `timeout_s` with the last thing seen and the manager's log tail. This also covers the API
    server's own delay in picking up new webhook configurations."""
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise P.ControlPlaneError(f"{proc.name} exited; last lines of {proc.log}:\n{proc.log_tail()}")
        try:
            last = probe()
            if not last:
                return
        except ApiException as exc:
            last = f"{exc.status} {exc.reason}: {(exc.body or '')[:300]}"
        time.sleep(interval_s)
    raise P.ControlPlaneError(f"the {what} webhooks did not answer through the API server within {timeout_s:.0f}s "
                              f"({last}); last lines of {proc.log}:\n{proc.log_tail()}")
