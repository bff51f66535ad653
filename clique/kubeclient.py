"""The daemons' Kubernetes API client, found the way kubectl finds one: `--kubeconfig`, else `$KUBECONFIG` (a
list of files, merged; missing ones skipped), else `~/.kube/config`, else the in-cluster service account.
Side effects: reads those files and the service-account token; no network until the client is used."""

from __future__ import annotations

import os

HOW = "pass --kubeconfig PATH or set $KUBECONFIG"


class KubeConfigError(Exception):
    """No usable cluster configuration. str() is one line that says what was tried and what to pass."""


def kubeconfig_path(kubeconfig: str | None) -> tuple[str, str] | None:
    """(where it came from, the path(s) to load) by kubectl's precedence, or None for in-cluster. An explicit
    --kubeconfig that does not exist is an error, as in kubectl."""
    if kubeconfig:
        path = os.path.expanduser(kubeconfig)
        if not os.path.isfile(path):
            raise KubeConfigError(f"--kubeconfig {kubeconfig}: no such file")
        return "--kubeconfig", path
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        found = [p for p in (os.path.expanduser(x) for x in listed.split(os.pathsep) if x) if os.path.isfile(p)]
        return ("$KUBECONFIG", os.pathsep.join(found)) if found else None
    home = os.path.expanduser(os.path.join("~", ".kube", "config"))
    return ("~/.kube/config", home) if os.path.isfile(home) else None


def _tried() -> str:
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        return f"no --kubeconfig, none of $KUBECONFIG ({listed}) exists"
    return f"no --kubeconfig, $KUBECONFIG unset, no {os.path.expanduser(os.path.join('~', '.kube', 'config'))}"


def _environment_read_once(api) -> None:
    """kubernetes_asyncio opens its aiohttp session with trust_env=True (kubernetes_asyncio 36.1.0
    client/rest.py), so aiohttp looks up ~/.netrc and the proxy variables in a worker thread on every request
    (aiohttp 3.14 client.py `_request`): two thread hand-offs per API call, which on a busy event loop (the
    extender's Bindings) cost more than the request. The proxy for the API server is read from the environment
    once, here, as aiohttp would (get_env_proxy_for_url: HTTPS_PROXY, NO_PROXY), and the per-request lookups are
    switched off. A kubeconfig's proxy-url still wins; .netrc is not read (Kubernetes credentials come from the
    kubeconfig or the service account)."""
    from aiohttp.helpers import BasicAuth, get_env_proxy_for_url
    from yarl import URL

    rest = api.rest_client
    if not rest.proxy:
        try:
            proxy, auth = get_env_proxy_for_url(URL(api.configuration.host))
        except LookupError:  # none set, or NO_PROXY covers the API server
            pass
        else:
            rest.proxy = str(proxy)
            if isinstance(auth, BasicAuth):
                rest.proxy_headers = {**(rest.proxy_headers or {}), "Proxy-Authorization": auth.encode()}
    rest.pool_manager._trust_env = False  # an attribute aiohttp lists in ClientSession.ATTRS


async def api_client(kubeconfig: str | None = None):
    """A kubernetes_asyncio ApiClient of its own Configuration (the library's default is left alone). Raises
    KubeConfigError when no configuration applies or the one found cannot be loaded."""
    api = await _api_client(kubeconfig)
    _environment_read_once(api)
    return api


async def _api_client(kubeconfig: str | None):
    from kubernetes_asyncio import config
    from kubernetes_asyncio.client import ApiClient, Configuration

    found = kubeconfig_path(kubeconfig)
    if found is not None:
        source, path = found
        try:
            return await config.new_client_from_config(config_file=path)
        except Exception as exc:  # noqa: BLE001 - YAML, missing context or user, exec plugin: all one message
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise KubeConfigError(f"cannot use the kubeconfig {path} (from {source}): {detail}") from exc
    cfg = Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException as exc:
        raise KubeConfigError(f"no cluster configuration: {_tried()}, and not in a pod ({exc}); {HOW}") from exc
    return ApiClient(configuration=cfg)
