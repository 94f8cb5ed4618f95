"""Publishing a continuation (``worker.pipeline.continuation``) at a pause: the part of
``worker.broker.hold.Holds`` that waits for a continued request's sent items and then moves
what is left of it to a hold queue."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage

from worker.broker.acker import Acker, AmqpDelivery
from worker.broker.drains import LANE_HEADER, log
from worker.broker.publishing import confirmed, copy_of
from worker.pipeline import continuation
from worker.pipeline.requests import Tracked
from worker.wirenames import CONSUMED_AT_HEADER, CONTINUATION_TYPE

CONTINUE_CHECK_SECONDS = 0.5


def held_headers(
    message: AbstractIncomingMessage, priority: bool, consumed_at: float | None
) -> dict[str, Any]:
    """The headers of a consumed request's copy (or continuation) in a hold queue: its own,
    the lane it came from and, without an AMQP timestamp, when the worker first consumed it
    (``CONSUMED_AT_HEADER``: what a scope cancel compares with once it is back)."""
    headers = dict(message.headers or {})
    headers[LANE_HEADER] = "priority" if priority else "main"
    headers.pop(CONSUMED_AT_HEADER, None)
    if message.timestamp is None and consumed_at is not None:
        # Whole seconds, as an integer: AMQP timestamps have that resolution, and a float in
        # a header table goes out as a 32-bit float (pamqp), which is off by up to a minute
        # for epoch seconds.
        headers[CONSUMED_AT_HEADER] = int(consumed_at)
    return headers


class _Continuations:
    """The continuation side of ``Holds``."""

    session: Any

    declared: set[str]

    async def _declare(self, name: str) -> None:
        raise NotImplementedError

    if TYPE_CHECKING:  # ``Holds``' (``worker.broker.moving``)

        def _skipped(self, acker: Acker | None, partition: int | None) -> bool: ...

    async def _publish_held(self, copy: aio_pika.Message, name: str, what: str) -> None:
        """Publish ``copy`` to the hold queue ``name`` (declared before), confirmed. Returned
        as unroutable: the queue was deleted by hand since this session declared it (the
        README allows it once it is empty): declared again, and published again."""
        default = self.session.publisher.default
        try:
            await confirmed(
                lambda: default.publish(copy, name, mandatory=True), what, returned_is_final=True
            )
        except aiormq.exceptions.PublishError:
            log.warning("%s returned by %s: declaring the hold queue again", what, name)
            self.declared.discard(name)
            await self._declare(name)
            await confirmed(lambda: default.publish(copy, name, mandatory=True), what)

    async def _continue(self, tracked: Tracked, name: str, ids: list[str]) -> bool:
        """Once its sent items are answered, publish ``tracked``'s continuation (confirmed)
        to the hold queue ``name``, then ack the original. False when it was given back
        meanwhile (a drain out of time nacked it, a hand-over or the session's end took it),
        or when the moves from its channel stop (``Holds._skipped``: a graceful stop past its
        drain timeout, the partition handed on): then the original goes back to the broker
        as it is (nacked, or unacked for its channel's close)."""
        delivery = tracked.delivery
        assert isinstance(delivery, continuation.Continuing)
        settlement = self.session.settlement
        source = delivery.original
        acker = source.acker if isinstance(source, AmqpDelivery) else None
        while not delivery.ready.is_set():
            if tracked not in settlement.tracked or self._skipped(acker, tracked.partition):
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(delivery.ready.wait(), CONTINUE_CHECK_SECONDS)
        original = delivery.original
        if delivery.given_back or not isinstance(original, AmqpDelivery):
            return False
        message = original.message
        body = continuation.body_of(tracked, message.body, ids)
        await self._declare(name)
        headers = held_headers(message, tracked.priority, tracked.consumed_at)
        copy = copy_of(message, headers, message.message_id, body, CONTINUATION_TYPE)
        await self._publish_held(copy, name, "continuation")
        await original.ack()
        return True
