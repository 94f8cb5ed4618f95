"""One broker session's intake: consumed messages become engine work (or, refused, are
dead-lettered), and the settlement (``worker.pipeline.settlement``) answers each.

Acks and nacks go only on the channel a message came from; when the connection is lost the
whole session ends, its in-memory state is dropped, and the unacked messages come back from
the broker to a fresh session: no stale delivery tag is ever used.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

import httpx
from aio_pika.abc import AbstractIncomingMessage

from worker import tracing
from worker.apis.adapters import ItemResult
from worker.broker.acker import Acker, Ackers, AmqpDelivery, delivery_of
from worker.broker.hold import Holds
from worker.broker.publishing import Publisher
from worker.control.state import ControlState, PauseKey
from worker.errors import ErrorCode
from worker.limiter import Limiters
from worker.messages import (
    Invalid,
    Rejection,
    Request,
    derive_request_id,
    parse_request,
    routing_operation,
)
from worker.metrics import Metrics
from worker.pipeline import continuation, control
from worker.pipeline.engine import Engine
from worker.pipeline.requests import Answer, Tracked
from worker.pipeline.settlement import Settlement
from worker.settings import Settings
from worker.wirenames import BUNDLE_TYPE, CONSUMED_AT_HEADER, CONTINUATION_TYPE

log = logging.getLogger("bulkops.broker")

NOT_HELD = "a continuation is only read from a hold queue"
NOT_PARTITION = "a bundle is only read from a partition queue"


class Session:
    """Turns consumed messages into engine work and confirmed outcomes into acks."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        publisher: Publisher,
        http: httpx.AsyncClient,
        tasks: asyncio.TaskGroup,
        limiters: Limiters,
        control_state: ControlState | None = None,
    ) -> None:
        self.settings = settings
        self.control = control_state  # the process's control state (cancels, pauses)
        self.holds: Holds | None = None  # hold queues of paused scopes
        self.metrics = metrics
        self.publisher = publisher
        self.kinds = {name: t.kind for name, t in settings.targets.items()}
        self.ackers = Ackers(tasks)
        self.settlement = Settlement(
            settings.item_outcomes, metrics, publisher, settings.outcome_format
        )
        self.engine = Engine(settings, metrics, http, self.settlement, tasks, limiters)
        if control_state is not None:
            self.engine.dispatcher.paused = control.key_paused(control_state)
        self.last_delivery = time.monotonic()
        # Invalid messages being dead-lettered and answered: work in flight the engine does
        # not see (100,000 rejections take minutes on a slow broker), so not idle.
        self.answering = 0

    async def on_message(
        self, message: AbstractIncomingMessage, acker: Acker, priority: bool = False
    ) -> None:
        """The consumer of a request queue (one replica, not partitioned): the main one, or
        the priority lane (``priority``)."""
        acker.delivered(message.delivery_tag)  # type: ignore[arg-type]
        await self.handle(message, acker, None, priority)

    async def screen(
        self,
        message: AbstractIncomingMessage,
        acker: Acker,
        priority: bool = False,
        body: bytes | None = None,
    ) -> Request | None:
        """The message's request; None for an invalid one, which is dead-lettered (and
        answered, and acked) here. ``priority``: it came from the priority lane; ``body``:
        the request's body when it is not the message's (a continuation's request)."""
        if message.type == BUNDLE_TYPE:  # a partition queue's owner unpacks it before
            await self.refuse(message, acker, NOT_PARTITION, priority)
            return None
        self.last_delivery = time.monotonic()
        body = message.body if body is None else body
        parsed = parse_request(body, message.message_id, self.kinds)
        if isinstance(parsed, Invalid):
            await self._invalid(message, delivery_of(message, acker), parsed, priority)
            return None
        return parsed

    async def refuse(
        self, message: AbstractIncomingMessage, acker: Acker, reason: str, priority: bool = False
    ) -> None:
        """Dead-letter (and answer, and ack) a message refused as a whole for ``reason``."""
        invalid = Invalid(reason, ErrorCode.INVALID_MESSAGE,
                          derive_request_id(message.body, message.message_id))  # fmt: skip
        self.last_delivery = time.monotonic()
        self.answering += 1
        try:
            await self._invalid(message, delivery_of(message, acker), invalid, priority)
        finally:
            self.answering -= 1

    async def handle(
        self,
        message: AbstractIncomingMessage,
        acker: Acker,
        partition: int | None,
        priority: bool = False,
        held: PauseKey | None = None,
        stay: bool = False,
    ) -> None:
        """Take a delivered message in: its valid ids to the engine, its rejected ones
        answered at once (``held``: the key of the hold queue it comes from). A cancel in
        force answers it at once; a pause moves it to a hold queue (``worker.broker.hold``),
        unless it must ``stay`` (or its own hold queue is paused again: it cannot go back to
        that queue's head), in the worker, unsent while its scope is paused. A continuation
        (``worker.pipeline.continuation``) is taken only from a hold queue: its ids answered
        before are neither sent nor answered again."""
        taken = await self._read(message, acker, priority, held is not None)
        if taken is None:
            return
        parsed, cont = taken
        self.metrics.messages_consumed.labels(parsed.operation.name, parsed.target).inc()
        tracked, rejected = self._track(message, acker, parsed, cont, partition, priority)
        taken_back(tracked, message, held is not None)
        pending = tracked.pending_ids
        cancel = None
        if self.control is not None and pending:
            now = time.time()
            cancel = control.cancel_of(self.control, parsed, tracked.published_at, now)
        hold = None if self.holds is None else self.holds.key_for(parsed, held, partition)
        if stay or (hold is not None and hold == held):
            hold = None
        if held is not None and self.holds is not None:
            self.holds.came_back(held, len(pending))
        if cancel is not None:  # an operator's cancel in force: nothing of it is sent
            await self.settlement.answer(control.intake_answers(tracked, cancel))
        elif hold is not None:  # its scope is paused: to a hold queue, answered later
            assert self.holds is not None
            delivery = delivery_of(message, acker)
            await self.holds.move(
                message, delivery, hold, priority, len(pending), partition, tracked.consumed_at
            )
            return
        elif pending:
            self.engine.accept(tracked)
        if rejected:
            answers = [Answer(tracked, r.id, ItemResult("rejected", r.error(), 0), None)
                       for r in rejected]  # fmt: skip
            await self.settlement.answer(answers)
        elif cont is not None and tracked.remaining == 0:  # a continuation: all done before
            await self.settlement.finish(tracked)

    async def _read(
        self, message: AbstractIncomingMessage, acker: Acker, priority: bool, held: bool
    ) -> tuple[Request, continuation.Continuation | None] | None:
        """The request (and, for a continuation, what was done of it); None when the message
        was refused (dead-lettered and answered here)."""
        cont = None
        if message.type == CONTINUATION_TYPE:
            cont = await self._continuation(message, acker, priority, held)
            if cont is None:
                return None
        parsed = await self.screen(message, acker, priority, None if cont is None else cont.request)
        return None if parsed is None else (parsed, cont)

    def _track(
        self,
        message: AbstractIncomingMessage,
        acker: Acker,
        parsed: Request,
        cont: continuation.Continuation | None,
        partition: int | None,
        priority: bool,
    ) -> tuple[Tracked, list[Rejection]]:
        """The record of a request taken in, and its rejected ids to answer (a continuation:
        its ``done`` ids are neither sent nor answered again, its earlier results kept for
        the reply)."""
        stamp = message.timestamp.timestamp() if message.timestamp else None
        done: frozenset[str] = frozenset() if cont is None else cont.done
        rejected = [r for r in parsed.rejected if r.id not in done]
        delivery = delivery_of(message, acker)
        tracked = Tracked(
            delivery,
            parsed,
            message.correlation_id,
            stamp,
            remaining=len(rejected),
            partition=partition,
            reply_to=message.reply_to or None,
            trace=tracing.current(),
            priority=priority,
            done=done,
            source=None if cont is None else cont.request,
            unit=getattr(delivery, "bundle", None),
        )
        tracked.remaining += len(tracked.pending_ids)
        if cont is not None and tracked.reply_to is not None:
            tracked.answers.update(cont.results)
        return tracked, rejected

    async def _continuation(
        self, message: AbstractIncomingMessage, acker: Acker, priority: bool, held: bool
    ) -> continuation.Continuation | None:
        """A continuation's body; None when it is refused (dead-lettered and answered as an
        invalid message is): read anywhere but a hold queue, or malformed."""
        cont = continuation.decode(message.body)
        if held and not isinstance(cont, str):
            return cont
        reason = NOT_HELD if not held else cont
        assert isinstance(reason, str)
        invalid = Invalid(reason, ErrorCode.INVALID_MESSAGE,
                          derive_request_id(message.body, message.message_id))  # fmt: skip
        if not isinstance(cont, str):  # well formed: answered under its request's name
            inner = parse_request(cont.request, message.message_id, self.kinds)
            if isinstance(inner, Request):
                scope = () if inner.scope is None else ((inner.operation.scope_field, inner.scope),)
                ids = tuple(i for i in inner.distinct_ids if i not in cont.done)
                invalid = Invalid(reason, ErrorCode.INVALID_MESSAGE, inner.request_id,
                                  inner.operation.name, inner.target, scope, ids)  # fmt: skip
        self.last_delivery = time.monotonic()
        await self._invalid(message, delivery_of(message, acker), invalid, priority)
        return None

    async def _invalid(
        self,
        message: AbstractIncomingMessage,
        delivery: AmqpDelivery,
        invalid: Invalid,
        priority: bool = False,
    ) -> None:
        """Dead-letter a message refused as a whole; the settlement answers it (counted in
        ``answering`` meanwhile: the session is not idle)."""
        self.answering += 1
        try:
            await self._dead_letter(message, delivery, invalid, priority)
        finally:
            self.answering -= 1

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        delivery: AmqpDelivery,
        invalid: Invalid,
        priority: bool,
    ) -> None:
        target_label = invalid.target if invalid.target in self.kinds else "unknown"
        labels = (routing_operation(invalid.operation), target_label)
        self.metrics.messages_consumed.labels(*labels).inc()
        self.metrics.dead_lettered.labels(invalid.code).inc()
        log.warning("dead-lettering message %s: %s", invalid.request_id, invalid.reason)
        await self.publisher.dead_letter(message, invalid.reason, priority)
        await self.settlement.refuse(
            invalid,
            delivery,
            message.correlation_id,
            message.reply_to or None,
            tracing.current(),
            target_label,
        )


def taken_back(tracked: Tracked, message: AbstractIncomingMessage, held: bool) -> None:
    """``held``: ``tracked`` was taken in from a hold queue; without an AMQP timestamp, it
    was first consumed when the ``CONSUMED_AT_HEADER`` its move carried says (read only
    then: on a request queue, a publisher could backdate its message with it)."""
    tracked.held = held
    if held and tracked.timestamp is None:
        tracked.consumed_at = first_consumed(message, tracked.consumed_at)


def first_consumed(message: AbstractIncomingMessage, now: float) -> float:
    """The message's ``CONSUMED_AT_HEADER`` if valid (a finite number, not in the future),
    else ``now``."""
    value = (message.headers or {}).get(CONSUMED_AT_HEADER)
    if isinstance(value, bool) or not isinstance(value, (int, float, str, bytes)):
        return now
    try:
        at = float(value)
    except ValueError:
        return now
    return at if math.isfinite(at) and 0 < at <= now else now
