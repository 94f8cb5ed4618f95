"""Partitioned mode's names and topology: which partition a request goes to, the partition
queues of both lanes, their exchange bindings, and the marker that tells a partition's owner
its priority queue has work (see worker/broker/partitions.py)."""

from __future__ import annotations

import hashlib

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from worker.batching import BatchKey
from worker.broker.topology import RECREATE, declare_queue, request_arguments
from worker.messages import Request
from worker.registry import rate_scope
from worker.settings import Settings
from worker.wirenames import MARKER_HEADER, PRIORITY_SUFFIX

__all__ = [
    "LANES", "MARKER_HEADER", "declare_partitions", "lane_queue", "partition_of",
    "presence_queue", "queue_name", "routing_key", "scope_key", "stranded",
]  # fmt: skip


def scope_key(request: Request) -> str:
    """The rate scope a request belongs to: what must have a single owner (the registry's
    rate scope of its batches, so the partition and the limiter can never disagree)."""
    key = BatchKey(operation=request.operation.name, target=request.target, scope=request.scope)
    return "\x00".join(rate_scope(key))


def partition_of(request: Request, partitions: int) -> int:
    digest = hashlib.sha256(scope_key(request).encode()).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def queue_name(settings: Settings, index: int) -> str:
    return f"{settings.request_queue}.p{index}"


def presence_queue(settings: Settings) -> str:
    return f"{settings.request_queue}.replicas"


def routing_key(index: int, lane: str = "") -> str:
    return f"p{index}{lane}"


def lane_queue(settings: Settings, index: int, lane: str) -> str:
    """A partition's queue of one lane: ``<request queue>.p<i>`` or ``....p<i>.priority``."""
    return queue_name(settings, index) + lane


async def declare_partitions(channel: AbstractChannel, settings: Settings) -> list[AbstractQueue]:
    """The partition exchange and its N single-active-consumer quorum queues."""
    exchange = await channel.declare_exchange(
        settings.partition_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    queues = []
    for index in range(settings.partitions):
        for lane in LANES:
            queue = await declare_queue(
                channel, lane_queue(settings, index, lane), request_arguments(settings, True),
                RECREATE,
            )  # fmt: skip
            await queue.bind(exchange, routing_key(index, lane))
            queues.append(queue)
    return queues


LANES = ("", PRIORITY_SUFFIX)  # the main lane's queues, the priority lane's
# A partition's priority queue is consumed only by the replica that owns the partition (it
# subscribes once the partition's main queue delivers to it). The router puts a marker in
# the main queue with each priority message it forwards, so that an idle partition's owner
# hears of it; a replica handing a partition on leaves one there for the next owner, and
# every replica sweeps for priority queues with messages and no consumer (Owner.sweep).
# The same marker tells a partition's owner that a hold queue of a resumed scope waits for
# it (Owner.beckon, at a resume and in the sweep; see worker.broker.hold).


async def stranded(connection: AbstractConnection, settings: Settings, index: int) -> bool:
    """Whether partition ``index``'s priority queue holds messages nobody consumes, asked on
    a channel of its own (a failed passive declare closes its channel)."""
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(
                lane_queue(settings, index, PRIORITY_SUFFIX), passive=True
            )
        finally:
            if not channel.is_closed:
                await channel.close()
    except Exception:  # unknown (the connection is going): the next sweep asks again
        return False
    result = queue.declaration_result
    return (result.message_count or 0) > 0 and not result.consumer_count
