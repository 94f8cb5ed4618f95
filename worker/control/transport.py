"""The control topology over AMQP 0-9-1: declaring it, publishing, reading properties, status
replies. The reader that keeps a worker's ``ControlState`` is ``worker.control.reader``."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from pamqp.commands import Basic

from worker.control.config import max_age_seconds, stream_name
from worker.control.messages import (
    CONTROL_TYPE,
    STATUS_REPLY_TYPE,
    Control,
    ControlProps,
    ControlRefused,
    check,
)
from worker.control.state import ControlState

log = logging.getLogger("bulkops.control")

REWRITE_HEADER = "x-bulkops-rewrite-of"
SINCE_HEADER = "x-bulkops-since"
USER_HEADER = "x-bulkops-user-id"
APP_HEADER = "x-bulkops-app-id"


class ControlPublishError(RuntimeError):
    """The broker did not confirm a control message (refused, returned, or the channel
    closed before it answered)."""


def stream_arguments(cancel_ttl_seconds: float) -> dict[str, Any]:
    return {"x-queue-type": "stream", "x-max-age": f"{max_age_seconds(cancel_ttl_seconds)}s"}


async def declare_control(
    channel: AbstractChannel, exchange_name: str, cancel_ttl_seconds: float
) -> tuple[AbstractExchange, AbstractQueue]:
    """The durable fanout exchange and its durable stream ``<exchange>.state``, bound."""
    exchange = await channel.declare_exchange(
        exchange_name, aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await _declare_stream(
        channel, stream_name(exchange_name), stream_arguments(cancel_ttl_seconds)
    )
    await queue.bind(exchange)
    return exchange, queue


async def _declare_stream(
    channel: AbstractChannel, name: str, arguments: dict[str, Any]
) -> AbstractQueue:
    """Declare the stream; one that exists with other arguments (another cancel TTL: a
    PRECONDITION_FAILED, which closes the channel it is tried on, so a fresh one is used for
    the attempt) is used as it is, with a warning. Like ``broker.topology.declare_queue``,
    without importing the worker's topology (the client library reaches this module)."""
    underlay = await channel.get_underlay_channel()
    probe = await underlay.connection.channel()
    try:
        await probe.queue_declare(name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        log.warning(
            "stream %s exists with other arguments (%s): using it as it is. Wanted %s: delete "
            "it while no worker runs (the control state in it is lost) or set its x-max-age "
            "to at least the cancel TTL plus a day",
            name, exc.args[0] if exc.args else exc, arguments,
        )  # fmt: skip
        return await channel.declare_queue(name, passive=True)
    await probe.close()
    return await channel.declare_queue(name, durable=True, arguments=arguments)


async def publish_control(
    channel: AbstractChannel,
    message: bytes | Mapping[str, Any],
    *,
    exchange: str = "bulkops.control",
    app_id: str | None = "bulkops",
    user_id: str | None = None,
    reply_to: str | None = None,
    correlation_id: str | None = None,
    targets: Mapping[str, str] | None = None,
    headers: Mapping[str, Any] | None = None,
    message_type: str = CONTROL_TYPE,
    declare: bool = True,
    cancel_ttl_seconds: float = 86400,
) -> str:
    """Validate ``message`` (raises ``ControlRefused``), publish it persistent on the confirm
    channel ``channel`` and return its message id once the broker confirmed it (raises
    ``ControlPublishError`` when it did not). ``declare``: declare the exchange and its
    stream first, so that a message sent before any worker started is kept."""
    body = message if isinstance(message, bytes) else orjson.dumps(dict(message))
    if message_type == CONTROL_TYPE:
        check(body, ControlProps(reply_to=reply_to), targets)
    if declare:
        target_exchange = (await declare_control(channel, exchange, cancel_ttl_seconds))[0]
    else:
        target_exchange = await channel.get_exchange(exchange, ensure=False)
    message_id = uuid.uuid4().hex
    amqp = aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        type=message_type,
        timestamp=datetime.now(UTC),
        app_id=app_id,
        user_id=user_id,
        reply_to=reply_to,
        correlation_id=correlation_id,
        headers=dict(headers or {}),
    )
    try:
        confirmation = await target_exchange.publish(amqp, routing_key="", mandatory=True)
    except Exception as exc:  # nack, return, channel closed: all say "not confirmed"
        raise ControlPublishError(
            f"the broker did not confirm the control message ({type(exc).__name__}: {exc})"
        ) from exc
    if confirmation is None:
        raise ControlPublishError("open the channel with publisher_confirms=True")
    if not isinstance(confirmation, Basic.Ack):  # e.g. Basic.Return: unroutable
        raise ControlPublishError(
            f"the broker did not confirm the control message ({type(confirmation).__name__})"
        )
    return message_id


def props_of(message: aio_pika.abc.AbstractIncomingMessage, offset: int | None) -> ControlProps:
    """What a control message's properties say; a reader's rewrite of a pause stands for the
    pause as first sent (its time and sender, from its headers)."""
    headers = message.headers or {}
    rewrite = _text(headers.get(REWRITE_HEADER))
    stamp = message.timestamp
    user_id, app_id = message.user_id, message.app_id
    if rewrite is not None:
        since = headers.get(SINCE_HEADER)
        if isinstance(since, int | float) and not isinstance(since, bool):
            stamp = datetime.fromtimestamp(float(since), UTC)
        user_id, app_id = _text(headers.get(USER_HEADER)), _text(headers.get(APP_HEADER))
    if stamp is not None and stamp.tzinfo is None:  # AMQP timestamps are UTC
        stamp = stamp.replace(tzinfo=UTC)
    fallback = None if offset is None else f"offset-{offset}"
    return ControlProps(
        message_id=message.message_id or fallback,
        user_id=user_id,
        app_id=app_id,
        timestamp=stamp,
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
        type=message.type,
        rewrite_of=rewrite,
    )


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return value[:256] if isinstance(value, str) and value else None


def rewrite_headers(state: ControlState) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(body, headers) of each pause in force, to write again (see ``ControlReader``)."""
    out = []
    for pause in state.pauses():
        body: dict[str, Any] = {"command": "pause", "target": pause.target}
        if pause.scope is not None:
            body[pause.scope[0]] = pause.scope[1]
        if pause.reason is not None:
            body["reason"] = pause.reason
        # Whole seconds as an integer: pamqp sends a float header as a 32-bit float (off by
        # up to a minute for epoch seconds).
        since = int(pause.at)
        headers: dict[str, Any] = {REWRITE_HEADER: pause.origin or "", SINCE_HEADER: since}
        if pause.user_id:
            headers[USER_HEADER] = pause.user_id
        if pause.app_id:
            headers[APP_HEADER] = pause.app_id
        out.append((body, headers))
    return out


@dataclass(frozen=True, slots=True)
class ScopeCounts:
    """What a worker holds of one scope (``scope``: None for a target-wide count)."""

    target: str
    scope: tuple[str, str | None] | None
    pending: int = 0
    in_flight: int = 0
    paused: bool = False
    held: int = 0


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """What the pipeline tells a ``status`` reply: its scopes and its partitions."""

    worker: str
    scopes: tuple[ScopeCounts, ...] = ()
    partitions: tuple[int, ...] | None = None  # None: not partitioned
    extra: Mapping[str, Any] = field(default_factory=dict)


def status_body(snapshot: WorkerSnapshot, state: ControlState, now: float | None = None) -> bytes:
    """The body of a worker's reply to ``status``."""
    now = time.time() if now is None else now
    scopes = [
        {
            "target": s.target,
            "scope": None if s.scope is None else {s.scope[0]: s.scope[1]},
            "pending": s.pending,
            "in_flight": s.in_flight,
            "paused": s.paused or state.paused(s.target, s.scope) is not None,
            "held": s.held,
        }
        for s in snapshot.scopes
    ]
    return orjson.dumps(
        {
            "worker": snapshot.worker,
            "at": now,
            "scopes": scopes,
            "pauses": [p.describe() for p in state.pauses()],
            "cancels": [c.describe() for c in state.cancels(now)],
            "partitions": None if snapshot.partitions is None else list(snapshot.partitions),
            **dict(snapshot.extra),
        }
    )


async def answer_status(channel: AbstractChannel, control: Control, body: bytes) -> None:
    """Send a status reply to the request's ``reply_to`` with its ``correlation_id``."""
    if not control.reply_to:
        raise ControlRefused("no_reply_to", "status needs an AMQP reply_to to answer to")
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            content_type="application/json",
            type=STATUS_REPLY_TYPE,
            correlation_id=control.correlation_id,
            timestamp=datetime.now(UTC),
        ),
        routing_key=control.reply_to,
    )
