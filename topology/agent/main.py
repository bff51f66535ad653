"""The agent daemon: read NVML every interval, patch the own Node when something changed, serve /metrics and
/healthz. Side effects: NVML (in a worker thread: its calls block), API reads/patches, an HTTP server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from topology.agent.metrics import AgentCollector
from topology.agent.nvml_backend import NvmlBackend, NvmlUnavailable
from topology.agent.reading import node_patch, read_host

log = logging.getLogger("clique.agent")


async def publish(api, node_name: str, reading) -> bool:
    """Patch the Node if the reading changes what it says. Returns whether a patch was sent."""
    from kubernetes_asyncio import client

    core = client.CoreV1Api(api)
    node = await core.read_node(node_name)
    patch = node_patch(reading, node.metadata.labels or {}, node.metadata.annotations or {})
    if patch is None:
        return False
    await core.patch_node(node_name, patch)
    log.info("patched node %s: %s", node_name, sorted({**patch["metadata"].get("labels", {}),
                                                       **patch["metadata"].get("annotations", {})}))
    return True


async def run_agent(nvml: NvmlBackend, node_name: str | None, kubeconfig: str | None, host: str, port: int,
                    interval_s: float, allow_no_gpu: bool, once: bool = False) -> int:
    collector = AgentCollector(node_name or os.uname().nodename)
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        await asyncio.to_thread(nvml.init)
    except NvmlUnavailable as exc:
        if not allow_no_gpu:
            print(f"clique agent: {exc}", file=sys.stderr)
            return 1
        log.warning("%s; serving empty metrics (--allow-no-gpu)", exc)
        collector.nvml_available = False
    api = None
    if node_name and not once:
        from clique.kubeclient import KubeConfigError, api_client

        try:
            api = await api_client(kubeconfig)
        except KubeConfigError as exc:
            await asyncio.to_thread(nvml.shutdown)
            print(f"clique agent: {exc}", file=sys.stderr)
            return 2

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if not once:
        await web.TCPSite(runner, host, port).start()
        if node_name:
            log.info("agent serving http://%s:%d/metrics; patching Node %s with the GPU topology it reads", host,
                     port, node_name)
        else:
            log.warning("agent serving http://%s:%d/metrics (Hostname label %s); no --node-name / $NODE_NAME "
                        "given: serving metrics only, not patching any Node", host, port, collector.hostname)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            if collector.nvml_available:
                reading = await asyncio.to_thread(read_host, nvml)
                collector.reading = reading
                problems = reading.errors + [f"GPU {g.index} {e}" for g in reading.gpus for e in g.errors]
                collector.errors_total += len(problems)
                for p in problems:
                    log.warning("NVML: %s", p)
                if once:
                    print(generate_latest(registry).decode())
                    print(f"# nvlink-matrix {reading.matrix()}  clique {reading.clique}  driver {reading.driver}")
                    return 0
                if api is not None:
                    try:
                        await publish(api, node_name, reading)
                    except Exception as exc:  # noqa: BLE001 - keep serving metrics; retry next interval
                        log.warning("publishing to node %s failed: %s", node_name, exc)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
    finally:
        await runner.cleanup()
        if api is not None:
            await api.close()
        await asyncio.to_thread(nvml.shutdown)
    return 0
