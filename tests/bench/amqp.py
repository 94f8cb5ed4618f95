"""Broker helpers for the benchmark: fresh names, a fast loader, the outcome collector."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from worker.broker import declare_topology
from worker.settings import Settings

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True)
class Names:
    requests: str
    dlq: str
    results: str

    @classmethod
    def fresh(cls, phase: str) -> Names:
        s = f"bench.{phase}.{uuid.uuid4().hex[:6]}"
        return cls(f"{s}.requests", f"{s}.dlq", f"{s}.results")


DECLARED: list[Names] = []  # deleted at the end of the run, whatever happens


async def declare(channel: AbstractChannel, names: Names, **settings: Any) -> None:
    """The worker's own topology (quorum request queue, DLQ, results exchange); with
    ``partitions``, the request queue as partitioned mode declares it."""
    DECLARED.append(names)
    await declare_topology(
        channel,
        Settings(
            _env_file=None,
            request_queue=names.requests,
            dead_letter_queue=names.dlq,
            results_exchange=names.results,
            **settings,
        ),
    )


async def delete(channel: AbstractChannel, names: Names, partitions: int = 8) -> None:
    lanes = [f"{names.requests}{lane}" for lane in ("", ".priority")]
    parts = [
        f"{names.requests}.p{i}{lane}" for i in range(partitions) for lane in ("", ".priority")
    ]
    queues = [*lanes, names.dlq, f"{names.results}.unrouted", *parts, f"{names.requests}.replicas"]
    for queue in queues:
        with contextlib.suppress(Exception):
            await channel.queue_delete(queue)
    exchanges = (
        names.results, f"{names.results}.unrouted", f"{names.requests}.partitions",
        f"{names.requests}.parts",
    )  # fmt: skip
    for exchange in exchanges:
        with contextlib.suppress(Exception):
            await channel.exchange_delete(exchange)


async def depth(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


def request_body(operation: str, ids: list[str], **scope: str) -> bytes:
    target = "shop" if operation.startswith("bloomreach.") else "bench"
    return orjson.dumps({"operation": operation, "target": target, "ids": ids, **scope})


async def load(
    connection: AbstractRobustConnection,
    queue: str,
    bodies: list[bytes],
    window: int = 2000,
    reply_to: str | None = None,
) -> float:
    """Publish ``bodies`` to ``queue`` with pipelined confirms; returns seconds taken."""
    channel = await connection.channel(publisher_confirms=True)
    raw = await channel.get_underlay_channel()
    props = aiormq.spec.Basic.Properties(
        content_type="application/json", delivery_mode=2, reply_to=reply_to
    )
    started = time.monotonic()
    for start in range(0, len(bodies), window):
        chunk = bodies[start : start + window]
        await asyncio.gather(
            *(raw.basic_publish(b, routing_key=queue, properties=props) for b in chunk)
        )
    await channel.close()
    return time.monotonic() - started


@dataclass
class Collected:
    """Outcomes seen on the results exchange: arrival time per id, and per-status counts."""

    first: float = 0.0
    last: float = 0.0
    count: int = 0
    arrivals: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def rate(self) -> float:
        span = self.last - self.first
        return (self.count - 1) / span if span > 0 else 0.0

    async def wait_for(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def collect(connection: AbstractRobustConnection, exchange: str) -> AsyncIterator[Collected]:
    """Consume every outcome published to ``exchange`` (auto-ack, so it never throttles)."""
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, "#")
    seen = Collected()

    def on(message: AbstractIncomingMessage) -> None:
        now = time.monotonic()
        body = orjson.loads(message.body)
        if seen.count == 0:
            seen.first = now
        seen.last = now
        seen.count += 1
        seen.arrivals.setdefault(body["id"], now)
        seen.statuses[body["status"]] = seen.statuses.get(body["status"], 0) + 1
        seen.changed.set()

    async def callback(message: AbstractIncomingMessage) -> None:
        on(message)

    tag = await queue.consume(callback, no_ack=True)
    try:
        yield seen
    finally:
        with contextlib.suppress(Exception):
            await queue.cancel(tag)
        await channel.close()


async def broker_hop(connection: AbstractRobustConnection, count: int = 50) -> list[float]:
    """Publish-to-consume times through RabbitMQ for ``count`` messages sent 20 ms apart."""
    channel = await connection.channel(publisher_confirms=False)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    got: asyncio.Queue[float] = asyncio.Queue()

    async def callback(message: AbstractIncomingMessage) -> None:
        await got.put(time.monotonic() - float(message.body))

    await queue.consume(callback, no_ack=True)
    hops = []
    for _ in range(count):
        await channel.default_exchange.publish(
            aio_pika.Message(str(time.monotonic()).encode()), queue.name
        )
        hops.append(await asyncio.wait_for(got.get(), 5))
        await asyncio.sleep(0.02)
    await channel.close()
    return hops


@dataclass
class Replies:
    """Replies seen on a reply queue: how many, items answered, arrival of the last one."""

    count: int = 0
    items: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    first: float = 0.0
    last: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def replies(connection: AbstractRobustConnection, name: str) -> AsyncIterator[Replies]:
    """Consume the replies sent to the exclusive queue ``name`` (auto-ack)."""
    channel = await connection.channel()
    queue = await channel.declare_queue(name, exclusive=True)
    seen = Replies()

    async def callback(message: AbstractIncomingMessage) -> None:
        now = time.monotonic()
        body = orjson.loads(message.body)
        seen.first = seen.first or now
        seen.last = now
        seen.count += 1
        seen.items += len(body["items"])
        for status, n in body["counts"].items():
            seen.statuses[status] = seen.statuses.get(status, 0) + n
        seen.changed.set()

    tag = await queue.consume(callback, no_ack=True)
    try:
        yield seen
    finally:
        with contextlib.suppress(Exception):
            await queue.cancel(tag)
        await channel.close()
