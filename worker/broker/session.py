"""One broker session's intake and settlement: consumed messages become engine work, and
answered items become confirmed outcomes, replies and acks.

Acks and nacks go only on the channel a message came from; when the connection is lost the
whole session ends, its in-memory state is dropped, and the unacked messages come back from
the broker to a fresh session: no stale delivery tag is ever used.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from aio_pika.abc import AbstractIncomingMessage

from worker import tracing
from worker.apis.adapters import ItemResult
from worker.broker.acker import Acker, Ackers, AmqpDelivery
from worker.broker.publishing import Publisher, chunks
from worker.limiter import Limiters
from worker.messages import (
    Invalid,
    Request,
    parse_request,
    published,
    routing_operation,
    utc_now,
)
from worker.metrics import Metrics
from worker.pipeline.engine import Engine
from worker.pipeline.requests import Answer, Tracked
from worker.registry import code_label
from worker.settings import Settings

log = logging.getLogger("bulkops.broker")


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
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.publisher = publisher
        self.kinds = {name: t.kind for name, t in settings.targets.items()}
        self.ackers = Ackers(tasks)
        self.engine = Engine(settings, metrics, http, self.publish_outcomes, tasks, limiters)
        self.last_delivery = time.monotonic()
        # Invalid messages being dead-lettered and answered: work in flight the engine does
        # not see (100,000 rejections take minutes on a slow broker), so not idle.
        self.answering = 0

    async def publish_outcomes(self, answers: list[Answer]) -> None:
        """Publish the outcomes this mode publishes (``item_outcomes``) and wait for their
        confirms, count every answer, then reply to and ack each request now answered.

        An outcome the mode does not publish counts at once; a published one only once the
        broker has confirmed it: a request is settled only after every outcome it publishes
        is confirmed, and acked only after its reply is confirmed (or dropped).
        """
        engine = self.engine
        mode = self.settings.item_outcomes
        if mode == "all":
            loud = answers
        else:
            loud = [a for a in answers if published(mode, a.result.status)]
            quiet = [a for a in answers if not published(mode, a.result.status)]
            await self._settle(engine.record_outcomes(quiet))
        publisher = self.publisher
        # In chunks: confirms stay pipelined, yet deliveries get the loop between chunks, so a
        # batch of 10,000 outcomes does not stall intake (and with it the next batch's fill).
        for chunk in chunks(loud):
            await asyncio.gather(*(publisher.outcome(a.outcome(), a.tracked.correlation_id,
                                                     a.tracked.trace) for a in chunk))  # fmt: skip
            await self._settle(engine.record_outcomes(chunk))

    async def _settle(self, done: list[Tracked]) -> None:
        """Reply to the answered requests that asked for it (pipelined; each confirmed, or
        dropped when its queue is gone), then queue the ack of each, then forget it."""
        replying = [(t, t.reply_to) for t in done if t.reply_to is not None]
        for chunk in chunks(replying):
            await asyncio.gather(
                *(self.publisher.reply(t.reply(), to, t.correlation_id, t.trace) for t, to in chunk)
            )
        for tracked in done:
            await tracked.delivery.ack()  # queued: the Acker writes it
            self.engine.forget(tracked)

    async def on_message(self, message: AbstractIncomingMessage, acker: Acker) -> None:
        """The consumer of the request queue (one replica, not partitioned)."""
        acker.delivered(message.delivery_tag)  # type: ignore[arg-type]
        await self.handle(message, acker, None)

    async def screen(self, message: AbstractIncomingMessage, acker: Acker) -> Request | None:
        """The message's request; None for an invalid one, which is dead-lettered (and
        answered, and acked) here."""
        self.last_delivery = time.monotonic()
        parsed = parse_request(message.body, message.message_id, self.kinds)
        if isinstance(parsed, Invalid):
            self.answering += 1
            try:
                await self._invalid(message, AmqpDelivery(message, acker), parsed)
            finally:
                self.answering -= 1
            return None
        return parsed

    async def handle(
        self, message: AbstractIncomingMessage, acker: Acker, partition: int | None
    ) -> None:
        """Take a delivered message in: its valid ids to the engine, its rejected ones
        answered at once."""
        parsed = await self.screen(message, acker)
        if parsed is None:
            return
        self.metrics.messages_consumed.labels(parsed.operation.name, parsed.target).inc()
        stamp = message.timestamp.timestamp() if message.timestamp else None
        tracked = Tracked(
            AmqpDelivery(message, acker),
            parsed,
            message.correlation_id,
            stamp,
            remaining=len(parsed.ids) + len(parsed.rejected),
            partition=partition,
            reply_to=message.reply_to or None,
            trace=tracing.current(),
        )
        if parsed.ids:
            self.engine.accept(tracked)
        if parsed.rejected:
            await self.publish_outcomes(
                [
                    Answer(tracked, r.id, ItemResult("rejected", r.error(), 0), None)
                    for r in parsed.rejected
                ]
            )

    async def _invalid(
        self, message: AbstractIncomingMessage, delivery: AmqpDelivery, invalid: Invalid
    ) -> None:
        op_label = routing_operation(invalid.operation)
        target_label = invalid.target if invalid.target in self.kinds else "unknown"
        labels = (op_label, target_label)
        self.metrics.messages_consumed.labels(*labels).inc()
        self.metrics.dead_lettered.labels(invalid.code).inc()
        log.warning("dead-lettering message %s: %s", invalid.request_id, invalid.reason)
        await self.publisher.dead_letter(message, invalid.reason)
        published_ = published(self.settings.item_outcomes, "rejected")
        outcomes = invalid.outcomes(utc_now()) if published_ else []
        # In chunks, as publish_outcomes does: a message of 100,000 readable ids must not put
        # 100,000 publishes in flight at once (the loop stalls past the broker's send timeout,
        # the connection is dropped, the message comes back and stalls the next session too).
        correlation_id, context = message.correlation_id, tracing.current()
        for chunk in chunks(outcomes):
            await asyncio.gather(
                *(self.publisher.outcome(o, correlation_id, context) for o in chunk)
            )
        readable = len(invalid.readable_ids)
        self.metrics.item_outcomes.labels(*labels, "rejected").inc(readable)
        self.metrics.item_failures.labels(*labels, code_label(invalid.code)).inc(readable)
        if message.reply_to:  # dead-lettered, and still answered
            reply = invalid.reply(utc_now())
            await self.publisher.reply(reply, message.reply_to, correlation_id, context)
        await delivery.ack()
