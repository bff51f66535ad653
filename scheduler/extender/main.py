"""Runs the extender: API client, cluster-state watches, HTTP server. Side effects: network, API reads/writes."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from topology.levels import Level

log = logging.getLogger("clique.extender")


async def serve(kubeconfig: str | None, host: str, port: int, levels: tuple[Level, ...], bind_timeout_s: float,
                scheduler_name: str) -> None:
    from kubernetes_asyncio import config

    if kubeconfig:
        api = await config.new_client_from_config(config_file=kubeconfig)
    else:
        config.load_incluster_config()
        from kubernetes_asyncio.client import ApiClient

        api = ApiClient()
    state = ClusterState(levels)
    extender = Extender(state, api, bind_timeout_s=bind_timeout_s, scheduler_name=scheduler_name)
    watches = asyncio.create_task(state.run(api))
    runner = web.AppRunner(extender.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("extender listening on http://%s:%d (levels: %s)", host, port, ", ".join(lv.label for lv in levels))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    watches.cancel()
    await runner.cleanup()
    await api.close()
