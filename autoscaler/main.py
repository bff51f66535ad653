"""The autoscaler daemon: API client, cluster-state watches for the capacity what-if, leader election, the
reconcile loop and an HTTP server for /metrics, /healthz and /readyz. Side effects: network, API reads/writes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import generate_latest

from autoscaler.leader import LeaderElector
from autoscaler.reconciler import Autoscaler
from topology.levels import Level

log = logging.getLogger("clique.autoscaler")


@dataclass
class DaemonOptions:
    kubeconfig: str | None
    prometheus_url: str | None
    namespace: str | None = None  # watch policies only here (None: all namespaces)
    levels: tuple[Level, ...] = ()
    capacity: bool = True
    dry_run: bool = False
    tick_s: float = 0.5
    listen: tuple[str, int] | None = ("0.0.0.0", 9091)
    leader_elect: bool = True
    lease_namespace: str = "clique-system"
    lease_name: str = "clique-autoscaler"


async def run(opts: DaemonOptions, stop: asyncio.Event | None = None) -> None:
    from clique.kubeclient import api_client

    api = await api_client(opts.kubeconfig)  # KubeConfigError: the CLI says what to pass
    state = None
    tasks: list[asyncio.Task] = []
    if opts.capacity:
        from scheduler.extender.state import ClusterState

        state = ClusterState(opts.levels)
        tasks.append(asyncio.create_task(state.run(api)))
    scaler = Autoscaler(api, opts.prometheus_url, opts.namespace, state, dry_run=opts.dry_run)
    elector = None
    if opts.leader_elect:
        identity = f"{socket.gethostname()}-{os.getpid()}"
        elector = LeaderElector(api, opts.lease_namespace, opts.lease_name, identity)
        tasks.append(asyncio.create_task(elector.run()))

    # healthy while the loop keeps completing ticks; a leader whose ticks all fail (API unreachable) for
    # `stall_s` reports 500 so that its probe restarts it and a standby takes the Lease
    stall_s = max(60.0, 20 * opts.tick_s)
    last_ok = {"t": asyncio.get_running_loop().time()}

    async def metrics(_: web.Request) -> web.Response:
        scaler.metrics.leader.set(1 if elector is None or elector.is_leader.is_set() else 0)
        return web.Response(body=generate_latest(scaler.metrics.registry), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        leading = elector is None or elector.is_leader.is_set()
        stalled = leading and asyncio.get_running_loop().time() - last_ok["t"] > stall_s
        return web.Response(text=f"no successful evaluation for {stall_s:.0f}s" if stalled else "ok",
                            status=500 if stalled else 200)

    async def readyz(_: web.Request) -> web.Response:
        ready = state is None or all(e.is_set() for e in state.synced.values())
        return web.Response(text="ok" if ready else "cluster state not synced", status=200 if ready else 503)

    runner = None
    if opts.listen:
        app = web.Application()
        app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, *opts.listen).start()
    log.info("autoscaler running (prometheus %s, namespace %s, capacity %s, dry run %s%s)", opts.prometheus_url,
             opts.namespace or "all", "on" if opts.capacity else "off", opts.dry_run,
             f", http on {opts.listen[0]}:{opts.listen[1]}" if opts.listen else "")
    stop = stop or asyncio.Event()
    try:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    except (NotImplementedError, RuntimeError):
        pass
    try:
        while not stop.is_set():
            if elector is None or elector.is_leader.is_set():
                try:
                    await scaler.tick()
                    last_ok["t"] = asyncio.get_running_loop().time()
                except Exception as exc:  # e.g. the API server unreachable while listing policies: retry
                    log.warning("tick failed: %s", exc)
            else:
                last_ok["t"] = asyncio.get_running_loop().time()  # a standby has nothing to evaluate
            try:
                await asyncio.wait_for(stop.wait(), opts.tick_s)
            except asyncio.TimeoutError:
                pass
    finally:
        log.info("stopping")
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await scaler.close()
        if runner is not None:
            await runner.cleanup()
        await api.close()
