"""The worker process: health server, HTTP client, and broker sessions until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import aio_pika.exceptions
import aiormq.exceptions
import httpx
from prometheus_client import CollectorRegistry

from worker.addresses import Addresses
from worker.broker import ConnectionLost, run_session
from worker.broker.control import ControlLink
from worker.health import Health
from worker.limiter import Limiters
from worker.metrics import Metrics
from worker.settings import Settings

log = logging.getLogger("bulkops")

BROKER_ERRORS = (
    ConnectionLost,
    ConnectionError,
    OSError,
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,  # a publish on a channel the broker closed
    aio_pika.exceptions.AMQPException,
)


async def run(
    settings: Settings,
    stopping: asyncio.Event | None = None,
    registry: CollectorRegistry | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stopping``); reconnect whenever the broker goes away."""
    stopping = stopping or asyncio.Event()
    registry = registry or CollectorRegistry()
    metrics = Metrics(registry)
    health = Health(registry, metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stopping.set)
    # Made as the process starts: the limiters outlive sessions, and a scope's first request
    # waits for one window after this moment (an earlier process may still count in it).
    limiters = Limiters(settings.rate_limit_margin_seconds)
    addresses = Addresses.parse(settings.amqp_url.get_secret_value(), metrics.broker_failovers.inc)
    await health.start(settings.http_host, settings.http_port)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
    timeout = httpx.Timeout(settings.http_timeout_seconds, connect=10.0)
    # The control state first: no request is consumed before the control stream was read
    # to its end (a cancel or pause sent before this worker started holds for it too).
    link = ControlLink(settings, metrics)
    try:
        if await link.start(stopping):
            sampling = asyncio.create_task(link.sampling())
            try:
                async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
                    await _sessions(
                        settings, metrics, http, stopping, health, limiters, addresses, link
                    )
            finally:
                sampling.cancel()
    finally:
        await link.close()
        await health.stop()
    log.info("stopped cleanly")
    return 0


async def _sessions(
    settings: Settings,
    metrics: Metrics,
    http: httpx.AsyncClient,
    stopping: asyncio.Event,
    health: Health,
    limiters: Limiters,
    addresses: Addresses,
    link: ControlLink,
) -> None:
    delay = 0.5
    while not stopping.is_set():
        ready_before = health.times_ready
        try:
            if not await run_session(
                settings, metrics, http, stopping, health, limiters, addresses, link
            ):
                return
            delay = 0.5
            continue  # renewed on purpose: reconnect at once
        except* BROKER_ERRORS as group:
            addresses.failed()  # the next session starts from the address after this one
            if health.times_ready > ready_before:
                delay = 0.5  # that session was up: back off from the start again
            log.error(
                "broker session ended: %s; reconnecting in %.1fs",
                "; ".join(str(e) for e in group.exceptions)[:500],
                delay,
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stopping.wait()
        delay = min(delay * 2, 30.0)
