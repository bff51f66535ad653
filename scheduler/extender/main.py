"""Runs the extender: API client, cluster-state watches, HTTP servers. Side effects: network, API reads/writes."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal

from aiohttp import web

from scheduler.extender import pinning, recovery
from scheduler.extender.leadership import Leadership
from scheduler.extender.service import Extender
from scheduler.extender.state import ClusterState
from topology.levels import Level

log = logging.getLogger("clique.extender")
PROFILE_ENV = "CLIQUE_PROFILE"  # a file path: the extender profiles itself with cProfile and writes it there on stop


async def serve(kubeconfig: str | None, host: str, port: int, levels: tuple[Level, ...], bind_timeout_s: float,
                scheduler_name: str, metrics_listen: tuple[str, int] | None = None,
                reservation_timeout_s: float = 60.0, webhook: tuple[str, int, str] | None = None,
                gate: bool = True, pin_at_creation: bool = True, follow_lease: tuple[str, str] | None = None,
                identity: str | None = None) -> None:
    """Serve the verbs on host:port (keep it loopback: /bind binds pods) and, if given, only /metrics and the
    health endpoints on `metrics_listen`, for Prometheus and probes, and the admission webhook over TLS on
    `webhook` (host, port, certificate directory); `gate`: the webhook adds the scheduling gate of gated gangs;
    `pin_at_creation`: it pins gangs at creation instead where one pod settles it (pinning.Pinner.admit);
    `follow_lease` (namespace, name): it releases, recovers and pins gangs only while the kube-scheduler of this
    pod (`identity`, default the hostname) holds that Lease (leadership.py)."""
    from clique.kubeclient import api_client

    api = await api_client(kubeconfig)  # KubeConfigError: the CLI says what to pass
    profiler = None
    if os.environ.get(PROFILE_ENV):  # where the extender's CPU goes (bench e2e's breakdown): cProfile until stop
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    state = ClusterState(levels)
    extender = Extender(state, api, bind_timeout_s=bind_timeout_s, scheduler_name=scheduler_name,
                        reservation_timeout_s=reservation_timeout_s)
    extender.leadership = Leadership(api, follow_lease, identity)
    following = asyncio.create_task(extender.leadership.run())
    watches = asyncio.create_task(state.run(api))
    recovering = asyncio.create_task(recovery.run(extender))  # partly bound gangs, at start-up and on changes
    pins = pinning.Pinner(extender)  # shared: the webhook's pins at creation use its domain index
    pinner = asyncio.create_task(pinning.run(extender, pinner=pins))  # gated gangs: planned once complete, pinned
    # Latency: collect the youngest generation less often (every request's JSON allocates lists and dicts), and
    # keep long-lived objects (the synced nodes and pods) out of every collection once the watches have synced.
    gc.set_threshold(50_000, 20, 20)

    async def freeze_when_synced() -> None:
        await asyncio.gather(*(e.wait() for e in state.synced.values()))
        gc.collect()
        gc.freeze()

    freezer = asyncio.create_task(freeze_when_synced())
    runners = []
    for app, (h, p) in [(extender.app(), (host, port))] + ([(extender.metrics_app(), metrics_listen)]
                                                            if metrics_listen else []):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, h, p).start()
        runners.append(runner)
    if webhook:  # TLS, once its certificate files are there (admission.WebhookServer)
        from scheduler.extender.admission import WebhookServer, webhook_app

        def pin_if_acting(pod: dict) -> list | None:  # a standby gates: the acting extender releases the gang
            return pins.admit(pod) if extender.leadership.active() else None

        pin = pin_if_acting if gate and pin_at_creation else None
        webhook_server = WebhookServer(webhook_app(scheduler_name, extender.metrics.registry, gate, pin), *webhook)
        webhook_task = asyncio.create_task(webhook_server.run())
    log.info("extender listening on http://%s:%d%s (levels: %s)", host, port,
             f", metrics on http://{metrics_listen[0]}:{metrics_listen[1]}" if metrics_listen else "",
             ", ".join(lv.label for lv in levels))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    watches.cancel()
    following.cancel()
    recovering.cancel()
    pinner.cancel()
    freezer.cancel()
    if webhook:
        webhook_task.cancel()
        await webhook_server.close()
    for runner in runners:
        await runner.cleanup()
    await api.close()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.environ[PROFILE_ENV])
        log.info("profile written to %s", os.environ[PROFILE_ENV])
