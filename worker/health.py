"""The HTTP side for operators: ``/metrics``, ``/healthz`` (alive), ``/readyz`` (consuming)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.metrics import Metrics


class Health:
    """Readiness as the broker session reports it, and the server that shows it."""

    def __init__(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics
        self.ready = False
        self.times_ready = 0  # sessions that reached consuming
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.times_ready += ready
        self.metrics.ready.set(1 if ready else 0)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.ready:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
