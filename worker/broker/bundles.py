"""Bundled forwards in partitioned mode: the router's side (``Bundler``) and the owner's
(``take``). The wire form is ``worker/bundles.py``.

Router: a screened main-lane request joins its partition's pending bundle; the bundle is
published when it holds ``partition_bundle_max`` requests or ``MAX_BUNDLE_BYTES`` of parts,
or ``LINGER_SECONDS`` after its first request (the router had nothing more to take right
then). Bundles of a partition are published in the order they close, parts in consumption
order; a bundle of one goes as a plain copy, as does a request too large to bundle (after
the pending bundle of its partition). Each original is acked once its bundle is confirmed.

Owner: a bundle from a partition queue is unpacked into part messages, each taken in as a
plain request is, with a delivery of its own (``BundlePart``): pause moves, continuations,
cancels and dead letters work per part. The bundle's own delivery is acked once every part
is, or nacked with requeue once every part is settled and one was given back with requeue
(its parts already answered are answered again on redelivery: at-least-once). A hand-over
treats a bundle as one unit (``bound``): some part answered or started, or the bundle still
being taken in, and all its parts are finished; otherwise all are forgotten together and the
channel close returns the bundle to the queue's head.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from worker import tracing
from worker.broker.acker import Acker, AmqpDelivery
from worker.broker.publishing import copy_of
from worker.bundles import MAX_BUNDLE_BYTES, Part, decode, encode, encode_part
from worker.messages import derive_request_id
from worker.metrics import Metrics
from worker.settings import Settings
from worker.wirenames import BUNDLE_TYPE

LINGER_SECONDS = 0.003  # a partly filled bundle waits this long for more requests
# A partition queue's prefetch counts bundles: with bundling on, at most this many of them
# (fewer with a smaller BULKOPS_PREFETCH), so that an owner holds at most 200 x 200
# requests of a backlog of single-id requests (not 4,000 x 200), and still 200 requests
# (a full batch of ids) when they come one to a bundle.
BUNDLES_PREFETCH = 200

Publish = Callable[[aio_pika.Message, str], Awaitable[None]]


@dataclass(eq=False)
class _Pending:
    key: str  # the partition queue's routing key
    parts: list[bytes] = field(default_factory=list)
    messages: list[AbstractIncomingMessage] = field(default_factory=list)
    size: int = 0
    sent: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Bundler:
    """The router's pending bundles, one per partition, and their confirmed publishes."""

    def __init__(self, publish: Publish, metrics: Metrics, most: int) -> None:
        self.publish = publish  # confirmed: returns once the broker confirmed
        self.metrics = metrics
        self.most = most
        self.pending: dict[int, _Pending] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._publishing: set[asyncio.Task[None]] = set()

    async def forward(self, index: int, key: str, message: AbstractIncomingMessage) -> None:
        """Forward ``message`` to partition ``index`` (routing key ``key``) in a bundle;
        returns once the broker confirmed what carries it."""
        message_id = derive_request_id(message.body, message.message_id)
        part = encode_part(part_of(message, message_id))
        if part is None or len(part) > MAX_BUNDLE_BYTES:  # alone, behind the pending ones
            self.close(index)
            single = _Pending(key, [], [message])
            self._send(single)
            return await asyncio.shield(single.sent)
        pending = self.pending.get(index)
        if pending is not None and pending.size + len(part) > MAX_BUNDLE_BYTES:
            self.close(index)
            pending = None
        if pending is None:
            pending = self.pending[index] = _Pending(key)
        pending.parts.append(part)
        pending.messages.append(message)
        pending.size += len(part)
        sent = pending.sent
        if len(pending.parts) >= self.most:
            self.close(index)
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, self.close_all)
        await asyncio.shield(sent)

    def close_all(self) -> None:
        self._timer = None
        for index in list(self.pending):
            self.close(index)

    def close(self, index: int) -> None:
        """Publish partition ``index``'s pending bundle (before anything else of it)."""
        pending = self.pending.pop(index, None)
        if pending is not None:
            self._send(pending)

    def _send(self, pending: _Pending) -> None:
        # Tasks start in the order they are made, and each reaches the channel's publish
        # lock before it yields: publishes go out in this order.
        task = asyncio.create_task(self._publish(pending))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, pending: _Pending) -> None:
        try:
            if len(pending.messages) == 1:
                message = pending.messages[0]
                message_id = derive_request_id(message.body, message.message_id)
                await self.publish(copy_of(message, dict(message.headers or {}), message_id),
                                   pending.key)  # fmt: skip
            else:
                bundle = aio_pika.Message(
                    encode(pending.parts),
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    type=BUNDLE_TYPE,
                )
                await self.publish(bundle, pending.key)
                self.metrics.partition_bundles.inc()
                self.metrics.partition_bundled.inc(len(pending.messages))
        except BaseException as exc:
            if not pending.sent.done():
                pending.sent.set_exception(exc)
                pending.sent.exception()  # retrieved: every waiter may be gone
            raise
        pending.sent.set_result(None)


def qos(settings: Settings, index: int | None, lane: str) -> int:
    """The prefetch of a consuming channel of partitioned mode: a priority lane's is
    ``BULKOPS_PRIORITY_PREFETCH``, the request queue's (``index`` None) ``BULKOPS_PREFETCH``;
    a partition queue's counts bundles (``BUNDLES_PREFETCH``, at most the prefetch)."""
    if lane:
        return settings.priority_prefetch
    most = settings.partition_bundle_max
    if index is None or most == 1:
        return settings.prefetch
    return min(settings.prefetch, max(BUNDLES_PREFETCH, -(-settings.prefetch // most)))


def part_of(message: AbstractIncomingMessage, message_id: str | None) -> Part:
    """What a bundle keeps of a consumed request: what ``copy_of`` keeps of it."""
    return Part(
        message.body,
        message_id=message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        type=message.type,
        app_id=message.app_id,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        timestamp=message.timestamp,
        priority=message.priority,
        headers=dict(message.headers or {}),
    )


# -- the owner's side ---------------------------------------------------------------------


class Intake(Protocol):
    async def handle(
        self, message: AbstractIncomingMessage, acker: Acker, partition: int | None
    ) -> None: ...

    async def refuse(
        self, message: AbstractIncomingMessage, acker: Acker, reason: str, priority: bool = False
    ) -> None: ...


class Bundle:
    """One consumed bundle: its delivery, settled once every part is."""

    def __init__(self, message: AbstractIncomingMessage, acker: Acker, parts: int) -> None:
        self.delivery = AmqpDelivery(message, acker)
        self.parts = parts
        self.finished = 0  # parts acked or nacked
        self.requeue = False  # some part was nacked: the bundle goes back whole
        self.unpacking = True  # parts still being taken in

    @property
    def bound(self) -> bool:
        """A hand-over must finish every part: one is answered, or some are still to be
        taken in (the parts' own ``started`` covers the rest)."""
        return self.unpacking or self.finished > 0

    async def settle(self, requeue: bool | None) -> None:
        """A part acked (``requeue`` None) or nacked."""
        self.finished += 1
        self.requeue = self.requeue or requeue is not None
        await self.check()

    async def check(self) -> None:
        if self.unpacking or self.finished < self.parts:
            return
        if self.requeue:
            await self.delivery.nack(requeue=True)
        else:
            await self.delivery.ack()


class BundlePart(AmqpDelivery):
    """A part's delivery: its ack or nack settles one part of its bundle. A nack of a part
    (either kind: a part cannot be dead-lettered by the broker) gives the bundle back."""

    __slots__ = ("bundle",)

    def __init__(self, message: PartMessage, acker: Acker, bundle: Bundle) -> None:
        super().__init__(cast(AbstractIncomingMessage, message), acker)
        self.bundle = bundle

    async def ack(self) -> None:
        if not self._done:
            self._done = True
            await self.bundle.settle(None)

    async def nack(self, requeue: bool) -> None:
        if not self._done:
            self._done = True
            await self.bundle.settle(requeue)


class PartMessage:
    """A part of a bundle as the intake reads a consumed message."""

    def __init__(self, part: Part, bundle: AbstractIncomingMessage) -> None:
        self.body = part.body
        self.headers: dict[str, Any] = part.headers
        self.message_id = part.message_id
        self.correlation_id = part.correlation_id
        self.reply_to = part.reply_to
        self.type = part.type
        self.app_id = part.app_id
        self.content_type = part.content_type
        self.content_encoding = part.content_encoding
        self.timestamp: datetime.datetime | None = part.timestamp
        self.priority = part.priority
        self.user_id: str | None = None
        self.expiration = None
        self.redelivered = bundle.redelivered
        self.delivery_tag = bundle.delivery_tag  # the bundle's
        self.part: BundlePart | None = None


async def take(intake: Intake, message: AbstractIncomingMessage, acker: Acker, index: int) -> None:
    """Take in a bundle consumed from partition queue ``index`` (already registered with
    ``acker``): each part in order, as a plain request is; a malformed one is refused."""
    parts = decode(message.body)
    if isinstance(parts, str):
        await intake.refuse(message, acker, parts)
        return
    bundle = Bundle(message, acker, len(parts))
    try:
        for part in parts:
            part_message = PartMessage(part, message)
            part_message.part = BundlePart(part_message, acker, bundle)
            with tracing.part(part_message.headers):  # its own trace, as a plain message's
                await intake.handle(cast(AbstractIncomingMessage, part_message), acker, index)
    finally:
        bundle.unpacking = False
    await bundle.check()
