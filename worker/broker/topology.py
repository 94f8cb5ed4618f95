"""The broker's topology: the request queue, its dead-letter queue, the results exchange with
its alternate exchange and parking queue, and the gauge of what is parked there."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractQueue

from worker.metrics import Metrics
from worker.settings import Settings

log = logging.getLogger("bulkops.broker")

UNROUTED_MAX_LENGTH = 100_000  # outcomes parked at most; the oldest are dropped beyond


def unrouted_name(settings: Settings) -> str:
    """The results exchange's alternate exchange, and the parking queue bound to it."""
    return f"{settings.results_exchange}.unrouted"


async def declare_topology(
    channel: AbstractChannel, settings: Settings, alternate: bool = True
) -> AbstractQueue:
    """The request queue (quorum, dead-lettering to the DLQ), the DLQ, the results exchange
    with its alternate exchange and parking queue.

    An outcome that matches no binding of the results exchange goes to its alternate
    exchange (a fanout) and from there to ``<results exchange>.unrouted``, a queue bounded
    to UNROUTED_MAX_LENGTH (the oldest dropped beyond): every outcome is routable by
    construction, so none holds its request, and none is silently lost either. With
    ``alternate`` False (an exchange declared earlier without the argument: RabbitMQ
    refuses to redeclare it with another one) the exchange is declared as it was.
    """
    await channel.declare_queue(
        settings.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await _declare_results(channel, settings, alternate)
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": settings.dead_letter_queue,
    }
    if settings.partitions:  # one router at a time keeps the consumption order
        arguments["x-single-active-consumer"] = True
    return await channel.declare_queue(settings.request_queue, durable=True, arguments=arguments)


async def _declare_results(channel: AbstractChannel, settings: Settings, alternate: bool) -> None:
    unrouted = unrouted_name(settings)
    parking = await channel.declare_exchange(unrouted, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(
        unrouted,
        durable=True,
        arguments={"x-max-length": UNROUTED_MAX_LENGTH, "x-overflow": "drop-head"},
    )
    await queue.bind(parking, "")
    arguments: dict[str, Any] | None = {"alternate-exchange": unrouted} if alternate else None
    await channel.declare_exchange(
        settings.results_exchange, aio_pika.ExchangeType.TOPIC, durable=True, arguments=arguments
    )


async def results_alternate(
    connection: aio_pika.abc.AbstractConnection, settings: Settings
) -> bool:
    """Whether the results exchange has (or can be given) its alternate exchange.

    Tried on a channel of its own: RabbitMQ answers a redeclaration with other arguments
    with PRECONDITION_FAILED and closes the channel. That is an exchange declared before
    alternate exchanges (an upgrade): it keeps working as before (outcomes are published
    ``mandatory``, an unroutable one is retried and holds its request), and the log says
    how to give it the alternate exchange.
    """
    channel = await connection.channel()
    try:
        await _declare_results(channel, settings, alternate=True)
    except aiormq.exceptions.ChannelPreconditionFailed:
        log.warning(
            "results exchange %s exists without alternate-exchange %s: outcomes that match "
            "no binding will be retried and hold their requests. Give it one with a policy "
            '(rabbitmqctl set_policy ... \'{"alternate-exchange": "%s"}\' --apply-to '
            "exchanges) or delete the exchange so the worker declares it anew",
            settings.results_exchange,
            unrouted_name(settings),
            unrouted_name(settings),
        )
        return False
    await channel.close()
    return True


async def sample_unrouted(
    connection: aio_pika.abc.AbstractConnection, settings: Settings, metrics: Metrics
) -> None:
    """Keep the gauge of parked (unrouted) outcomes: the parking queue's depth, read with a
    passive declare every ``unrouted_sample_seconds`` on a channel of its own (a queue
    deleted by hand closes that channel, not the session's)."""
    name = unrouted_name(settings)
    channel = await connection.channel()
    while True:
        try:
            queue = await channel.declare_queue(name, passive=True)
            metrics.unrouted_outcomes.set(queue.declaration_result.message_count or 0)
        except aiormq.exceptions.ChannelNotFoundEntity:
            channel = await connection.channel()
        await asyncio.sleep(settings.unrouted_sample_seconds)
