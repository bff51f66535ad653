"""Kubeconfigs of ServiceAccounts on the local control plane: a token from the TokenRequest API
(POST serviceaccounts/<name>/token, k8s.io/api v0.37.2 authentication/v1 TokenRequest) written into a kubeconfig
as pki.kubeconfig_text writes the harness's own. Side effects: API calls as the harness admin, a file (0600).

    path = service_account_kubeconfig(cp, "clique-system", "clique-scheduler", cp.workdir / "sa.kubeconfig")

A token bound to a pod (`bound_pod`) carries the pod's node as user extra
authentication.kubernetes.io/node-name, which the agent's own-node admission policy reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulations.controlplane.pki import kubeconfig_text


def request_token(api: Any, namespace: str, name: str, expiration_s: int = 3600,
                  bound_pod: tuple[str, str] | None = None) -> str:
    """A token of ServiceAccount namespace/name; `bound_pod` (name, uid) binds it to that pod (same namespace)."""
    from kubernetes import client

    spec: dict[str, Any] = {"expirationSeconds": expiration_s}
    if bound_pod:
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": bound_pod[0], "uid": bound_pod[1]}
    try:
        return client.CoreV1Api(api).create_namespaced_service_account_token(
            name, namespace, {"spec": spec}).status.token
    except client.exceptions.ApiException as exc:
        raise RuntimeError(f"TokenRequest for ServiceAccount {namespace}/{name} refused: {exc.status} {exc.reason} "
                           f"({(exc.body or '')[:300]}); is the ServiceAccount applied?") from exc


def service_account_kubeconfig(cp: Any, namespace: str, name: str, path: Path, expiration_s: int = 3600,
                               bound_pod: tuple[str, str] | None = None) -> Path:
    """Write a kubeconfig for system:serviceaccount:<namespace>:<name> on control plane `cp` to `path`."""
    api = cp.api_client()
    try:
        token = request_token(api, namespace, name, expiration_s, bound_pod)
    finally:
        api.close()
    path.write_text(kubeconfig_text(cp.server, cp.workdir / "pki" / "ca.crt",
                                    f"system:serviceaccount:{namespace}:{name}", token))
    path.chmod(0o600)
    return path
