"""Scaling out: partition requests by rate scope so each scope has exactly one owner.

With ``partitions`` > 0 the request queue becomes a single-active-consumer queue: one replica
at a time reads it, in order, and forwards each valid message unchanged to one of N partition
queues (a direct exchange, routing key ``p<i>``), chosen by a stable hash of the message's
rate scope: the DatoCMS target (its token's limit covers every environment), or the
Bloomreach target and catalog. Each partition queue is single-active-consumer too, and every
replica subscribes to all of them: RabbitMQ gives each partition to one replica, and hands it
to another when that one goes away. So one process sends for a rate scope at any time (its
local limiter is the whole truth), and operations on one id pass through one queue and one
consumer in order. Nothing here is home-made protocol: ordering and failover are RabbitMQ's.
"""

from __future__ import annotations

import hashlib

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from worker.messages import Request
from worker.settings import Settings


def scope_key(request: Request) -> str:
    """The rate scope a request belongs to: what must have a single owner."""
    if request.operation.api == "datocms":
        return f"datocms\x00{request.target}"
    return f"bloomreach\x00{request.target}\x00{request.scope}"


def partition_of(request: Request, partitions: int) -> int:
    digest = hashlib.sha256(scope_key(request).encode()).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def queue_name(settings: Settings, index: int) -> str:
    return f"{settings.request_queue}.p{index}"


def routing_key(index: int) -> str:
    return f"p{index}"


async def declare_partitions(channel: AbstractChannel, settings: Settings) -> list[AbstractQueue]:
    """The partition exchange and its N single-active-consumer quorum queues."""
    exchange = await channel.declare_exchange(
        settings.partition_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    queues = []
    for index in range(settings.partitions):
        queue = await channel.declare_queue(
            queue_name(settings, index),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-single-active-consumer": True,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": settings.dead_letter_queue,
            },
        )
        await queue.bind(exchange, routing_key(index))
        queues.append(queue)
    return queues
