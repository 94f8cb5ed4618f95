"""The emulator process: one aiohttp app serving both APIs, the admin endpoints and the log."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from urllib.parse import unquote

from aiohttp import web

from worker.emulator import answers
from worker.emulator.admin import PREFIX, AdminHttp
from worker.emulator.bloomreach import BloomState
from worker.emulator.bloomreach_http import BloomHttp
from worker.emulator.config import EmulatorConfig
from worker.emulator.datocms import DatoState
from worker.emulator.datocms_http import DatoHttp, header_environment
from worker.emulator.datocms_single import DatoSingleHttp
from worker.emulator.faults import Fault, FaultBook
from worker.emulator.log import ENTRY_KEY, ApiName, LogEntry, logged_headers
from worker.emulator.ratelimit import RateDecision, SlidingWindow

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLIENT_MAX_SIZE = 1024**3  # the API limits are enforced by the handlers, not by aiohttp


def classify(path: str) -> ApiName:
    if path.startswith(PREFIX + "/") or path == PREFIX:
        return "admin"
    return "bloomreach" if path.startswith("/data/") else "datocms"


def scope_label(api: ApiName, request: web.Request) -> str:
    """A non-secret name for the rate scope: a token digest, or project/catalog."""
    if api == "datocms":
        token = request.headers.get("Authorization", "").partition(" ")[2].strip()
        digest = hashlib.sha256(token.encode()).hexdigest()[:12] if token else "anonymous"
        return f"datocms:{digest}"
    if api == "bloomreach":
        parts = request.rel_url.raw_path.split("/")
        if len(parts) > 6 and parts[1:4] == ["data", "v2", "projects"] and parts[5] == "catalogs":
            return f"{unquote(parts[4])}/{unquote(parts[6])}"
        return "bloomreach:other"
    return "admin"


class Emulator:
    """DatoCMS CMA and Bloomreach catalogs on one local HTTP server; ``async with`` runs it."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._config = config if config is not None else EmulatorConfig()
        self.log: list[LogEntry] = []
        self.datocms = DatoState(self._config)
        self.bloomreach = BloomState()
        self._faults = FaultBook()
        self._limiter = SlidingWindow()
        self._random = random.Random(self._config.seed)  # dice, not secrets
        self._bloom_http = BloomHttp(self.bloomreach, self._config)
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # -- configuration and inspection -----------------------------------------------------
    @property
    def config(self) -> EmulatorConfig:
        return self._config

    @config.setter
    def config(self, value: EmulatorConfig) -> None:
        self._config = self.datocms.config = self._bloom_http.config = value

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the emulator is not running")
        return self._base_url

    def inject(self, fault: Fault) -> None:
        self._faults.add(fault)

    def faults(self) -> list[Fault]:
        """Scripted faults not yet used up."""
        return self._faults.pending()

    def breaches(self) -> list[LogEntry]:
        return [entry for entry in self.log if entry.breach]

    def requests(self, api: str | None = None, path_contains: str | None = None) -> list[LogEntry]:
        return [
            entry
            for entry in self.log
            if (api is None or entry.api == api)
            and (path_contains is None or path_contains in entry.path)
        ]

    def reset(self) -> None:
        """Forget all state, the log, faults and rate windows (the config stays)."""
        self.log.clear()
        self.datocms.reset()
        self.bloomreach.reset()
        self._faults.clear()
        self._limiter.clear()

    # -- lifecycle ----------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=CLIENT_MAX_SIZE)
        dato = DatoHttp(self.datocms, self._faults)
        single = DatoSingleHttp(dato)
        routes = [*dato.routes(), *single.routes(), *self._bloom_http.routes()]
        app.add_routes([*AdminHttp(self).routes(), *routes])
        return app

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self._config.host, self._config.port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        runner, self._runner, self._base_url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the request pipeline -----------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        entry = self._arrive(request)
        try:
            response = await self._serve(request, handler, entry)
        except Exception:
            entry.status = 500  # aiohttp answers 500 for an unexpected error
            raise
        entry.status = 0 if entry.fault == "drop" else response.status
        return response

    async def _serve(
        self, request: web.Request, handler: Handler, entry: LogEntry
    ) -> web.StreamResponse:
        if entry.api == "admin":
            return await _dispatch(request, handler, entry.api)
        raw = await request.read()
        entry.body_bytes = len(raw)
        if self._config.log_request_bodies:
            entry.body = raw.decode(errors="replace")
        decision = self._rate(entry)
        response = await self._answer(request, handler, entry, decision)
        self._decorate(response, entry, decision)
        return response

    def _arrive(self, request: web.Request) -> LogEntry:
        api = classify(request.path)
        entry = LogEntry(
            t=time.monotonic(),
            api=api,
            scope=scope_label(api, request),
            method=request.method,
            path=request.path,
            query=request.query_string,
            environment=header_environment(request) if api == "datocms" else None,
            headers=logged_headers(request),
        )
        self.log.append(entry)
        request[ENTRY_KEY] = entry
        return entry

    def _rate(self, entry: LogEntry) -> RateDecision:
        config = self._config
        limit, window = config.datocms_rate if entry.api == "datocms" else config.bloomreach_rate
        decision = self._limiter.hit(entry.scope, entry.t, limit, window)
        entry.breach = decision.breach
        return decision

    async def _answer(
        self, request: web.Request, handler: Handler, entry: LogEntry, decision: RateDecision
    ) -> web.StreamResponse:
        config = self._config
        if config.latency_seconds > 0:
            await asyncio.sleep(config.latency_seconds)
        if decision.breach and config.rate_limits_enabled:
            return answers.too_many(entry.api, decision, config)
        spurious = config.spurious_429_probability
        if spurious > 0 and self._random.random() < spurious:
            return answers.too_many(entry.api, decision, config)
        fault = self._faults.take(entry.api, entry.path)
        if fault is None:
            return await _dispatch(request, handler, entry.api)
        entry.fault = fault.kind
        return await self._apply_fault(request, handler, entry, fault)

    async def _apply_fault(
        self, request: web.Request, handler: Handler, entry: LogEntry, fault: Fault
    ) -> web.StreamResponse:
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return await _dispatch(request, handler, entry.api)
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=204)
        return answers.fault_status(entry.api, fault, self._config)

    def _decorate(
        self, response: web.StreamResponse, entry: LogEntry, decision: RateDecision
    ) -> None:
        if entry.api != "datocms" or response.prepared:
            return
        # Every CMA answer carries one; the vendor's support asks for it.
        entry.request_id = response.headers.setdefault("X-Request-Id", uuid.uuid4().hex)
        response.headers["X-RateLimit-Limit"] = str(decision.limit)
        response.headers["X-RateLimit-Remaining"] = str(decision.remaining)
        if response.status == 429 and "X-RateLimit-Reset" not in response.headers:
            response.headers["X-RateLimit-Reset"] = str(max(1, decision.reset_seconds))


async def _dispatch(request: web.Request, handler: Handler, api: ApiName) -> web.StreamResponse:
    """Run the route's handler, answering routing misses in the API's own error format."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return answers.not_found(api)
    except web.HTTPMethodNotAllowed:
        return answers.method_not_allowed(api)


async def serve(config: EmulatorConfig) -> None:
    """Run an emulator until cancelled, printing its base URL once it listens."""
    async with Emulator(config) as emulator:
        print(emulator.base_url, flush=True)
        await asyncio.Event().wait()
