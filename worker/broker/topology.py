"""The broker's topology: the request queue, its dead-letter queue, the results exchange and
the parking queue of unroutable outcomes, and the gauge of what is parked there.

Every durable queue is a quorum queue (replicated: no queue lives on one node). A queue or
exchange that already exists with other arguments is used as it is (declared passively), and
the log says what the operator should change; the worker keeps consuming meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractQueue

from worker.metrics import Metrics
from worker.settings import Settings
from worker.wirenames import PRIORITY_SUFFIX, UNROUTED_MAX_LENGTH, priority_name, unrouted_name

log = logging.getLogger("bulkops.broker")


async def broker_major(channel: AbstractChannel) -> int:
    """The broker's major version, from the server properties of the channel's connection."""
    underlay = await channel.get_underlay_channel()
    return version_major(underlay.connection.server_properties or {})


def version_major(server_properties: Mapping[str, Any]) -> int:
    """The major version in a connection's server properties (3 when they do not say)."""
    version = server_properties.get("version", b"3")
    text = version.decode() if isinstance(version, bytes) else str(version)
    head = text.split(".", 1)[0]
    return int(head) if head.isdigit() else 3


def request_arguments(settings: Settings, single_active: bool) -> dict[str, Any]:
    """A request queue's: quorum, dead-lettering to the DLQ past BULKOPS_DELIVERY_LIMIT (and
    for the worker's own rejections). Quorum queues dead-letter at most once by default: a
    message dead-lettered while the DLQ has no leader (a node just died) would be dropped.
    ``at-least-once`` keeps it until the DLQ confirms it (RabbitMQ 3.10+; it needs
    ``x-overflow: reject-publish``, which with no length limit refuses nothing)."""
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": settings.dead_letter_queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if single_active:
        arguments["x-single-active-consumer"] = True
    return arguments


def holding_arguments(major: int, **extra: Any) -> dict[str, Any]:
    """A queue with nowhere to dead-letter to (DLQ, parking queue): it must never drop a
    message for its redeliveries. 3.x: no limit (there ``-1`` drops at the first return);
    4.x: ``-1``, unlimited (without it 4.x applies its default of 20)."""
    arguments: dict[str, Any] = {"x-queue-type": "quorum", **extra}
    if major >= 4:
        arguments["x-delivery-limit"] = -1
    return arguments


async def declare_queue(
    channel: AbstractChannel, name: str, arguments: dict[str, Any], advice: str
) -> AbstractQueue:
    """Declare ``name`` with ``arguments`` on ``channel``; when it exists with others
    (PRECONDITION_FAILED, which closes the channel it is tried on: a fresh one is used for
    the attempt) use it as it is and log ``advice``."""
    probe = await _probe(channel)
    try:
        await probe.queue_declare(name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        log.warning(
            "queue %s exists with other arguments (%s): using it as it is. Wanted %s: %s",
            name, exc.args[0] if exc.args else exc, _shown(arguments), advice,
        )  # fmt: skip
        return await channel.declare_queue(name, passive=True)
    await probe.close()
    return await channel.declare_queue(name, durable=True, arguments=arguments)


async def declare_if_reachable(
    channel: AbstractChannel, name: str, arguments: dict[str, Any], advice: str
) -> AbstractQueue | None:
    """``declare_queue`` for a queue a session can do without (the parking queue, the
    partitions' presence queue): one that an older deployment declared as a classic queue,
    whose home node is down, answers NOT_FOUND; that is logged and the session goes on
    without it (None) instead of failing, and failing again, until that node is back."""
    try:
        return await declare_queue(channel, name, arguments, advice)
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        log.warning(
            "queue %s cannot be reached (%s): going on without it this session. It is a "
            "queue of an older deployment on one node; once that node is back, %s",
            name, exc.args[0] if exc.args else exc, advice,
        )  # fmt: skip
        return None


async def _probe(channel: AbstractChannel) -> aiormq.abc.AbstractChannel:
    """A fresh channel on ``channel``'s connection, to try a declaration that may fail."""
    underlay = await channel.get_underlay_channel()
    return await underlay.connection.channel()


def _shown(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in arguments.items())


RECREATE = (
    "delete it (once empty) so the worker declares it anew, or set a policy for "
    "what a policy can set (x-delivery-limit, x-max-length, x-overflow, dead-lettering)"
)


async def declare_topology(channel: AbstractChannel, settings: Settings) -> AbstractQueue:
    """The DLQ, the results exchange and its parking queue, the priority lane and the
    request queue (returned).

    The results exchange is a plain durable topic exchange, as any consumer would declare
    it. Outcomes are published ``mandatory``: one that matches no binding comes back and is
    parked in ``<results exchange>.unrouted`` (see worker/broker/publishing.py), a quorum
    queue bounded to UNROUTED_MAX_LENGTH (the oldest dropped beyond).
    """
    major = await broker_major(channel)
    await declare_queue(channel, settings.dead_letter_queue, holding_arguments(major), RECREATE)
    await _declare_results(channel, settings, major)
    arguments = request_arguments(settings, single_active=bool(settings.partitions))
    # The priority lane: the same arguments (dead-lettering, delivery limit) as the main one.
    await declare_queue(channel, priority_name(settings), arguments, RECREATE)
    return await declare_queue(channel, settings.request_queue, arguments, RECREATE)


async def _declare_results(channel: AbstractChannel, settings: Settings, major: int) -> None:
    unrouted = unrouted_name(settings)
    parking = await channel.declare_exchange(unrouted, aio_pika.ExchangeType.FANOUT, durable=True)
    bounded = {"x-max-length": UNROUTED_MAX_LENGTH, "x-overflow": "drop-head"}
    queue = await declare_if_reachable(
        channel, unrouted, holding_arguments(major, **bounded), RECREATE
    )
    if queue is not None:
        await queue.bind(parking, "")
    probe = await _probe(channel)
    try:
        await probe.exchange_declare(settings.results_exchange, exchange_type="topic", durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        log.warning(
            "results exchange %s exists with other arguments (%s): using it as it is. A "
            "consumer's plain declare of it fails until it is deleted (the worker declares "
            "it anew); unroutable outcomes are parked in %s either way. For an alternate "
            "exchange, set a policy instead of a declare argument",
            settings.results_exchange, exc.args[0] if exc.args else exc, unrouted,
        )  # fmt: skip
    else:
        await probe.close()
    await channel.declare_exchange(settings.results_exchange, passive=True)


async def sample_unrouted(
    connection: aio_pika.abc.AbstractConnection, settings: Settings, metrics: Metrics
) -> None:
    """Keep the gauge of parked (unrouted) outcomes (the parking queue's depth) and the
    lanes' depths, read with a passive declare every ``unrouted_sample_seconds`` on a
    channel of its own (a queue deleted by hand closes that channel, not the session's)."""
    # Partitioned mode: a lane's depth is its router queue's and its partition queues'
    # (``<request queue>.p<i>[.priority]``, worker/broker/partition_topology.py) together.
    parts = range(settings.partitions)
    gauges = [
        (metrics.unrouted_outcomes, [unrouted_name(settings)]),
        (
            metrics.lane_depth.labels("main"),
            [settings.request_queue] + [f"{settings.request_queue}.p{i}" for i in parts],
        ),
        (
            metrics.lane_depth.labels("priority"),
            [priority_name(settings)]
            + [f"{settings.request_queue}.p{i}{PRIORITY_SUFFIX}" for i in parts],
        ),
    ]
    channel = await connection.channel()
    while True:
        for gauge, names in gauges:
            depth = 0
            for name in names:
                try:
                    queue = await channel.declare_queue(name, passive=True)
                    depth += queue.declaration_result.message_count or 0
                except aiormq.exceptions.ChannelNotFoundEntity:
                    channel = await connection.channel()
            gauge.set(depth)
        await asyncio.sleep(settings.unrouted_sample_seconds)
