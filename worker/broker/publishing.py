"""Confirmed publishing: outcomes, replies and dead letters, each until the broker confirms."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from worker import tracing
from worker.messages import REPLY_TYPE, Outcome, Reply
from worker.metrics import Metrics
from worker.outcomes import OUTCOME_TYPE, OUTCOMES_TYPE, OutcomeBatch
from worker.settings import Settings
from worker.wirenames import ORIGIN_HEADER, REASON_HEADER, priority_name, unrouted_name

log = logging.getLogger("bulkops.broker")

ROUTING_KEY_HEADER = "x-bulkops-routing-key"  # a parked outcome's original routing key
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


class Publisher:
    """Publishes outcomes with confirms and ``mandatory``; a nack is retried, a returned
    outcome (no binding matched) is parked."""

    def __init__(
        self,
        raw: aiormq.abc.AbstractChannel,
        channel: AbstractChannel,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self._raw = raw  # the confirming channel's aiormq channel: outcomes and replies
        self.default = channel.default_exchange
        self.results = settings.results_exchange
        self.parking = unrouted_name(settings)
        self.settings = settings
        self.metrics = metrics

    @classmethod
    async def open(
        cls, channel: AbstractChannel, settings: Settings, metrics: Metrics
    ) -> Publisher:
        """The publisher on a confirming channel (``publisher_confirms``, ``on_return_raises``)
        on which the results exchange exists."""
        await channel.get_exchange(settings.results_exchange)
        return cls(await channel.get_underlay_channel(), channel, settings, metrics)

    async def outcome(
        self, outcome: Outcome, correlation_id: str | None, trace: Any = None
    ) -> None:
        # Straight to the aiormq channel: aio-pika's Message and Exchange.publish cost more
        # per outcome than the frames themselves (same frames, confirms and returns).
        body = outcome.body()
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=2,  # persistent
            message_id=outcome.message_id,
            correlation_id=correlation_id or outcome.request_id,
            message_type=OUTCOME_TYPE,
            headers=tracing.headers(trace),
        )
        await self._routed(body, properties, outcome.routing_key)

    async def outcomes(self, batch: OutcomeBatch, trace: Any = None) -> None:
        """One message of the batch format (BULKOPS_OUTCOME_FORMAT=batch), confirmed or
        parked like an item's outcome."""
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=2,
            message_id=batch.message_id,
            correlation_id=batch.correlation_id,
            message_type=OUTCOMES_TYPE,
            headers=tracing.headers(trace),
        )
        await self._routed(batch.body(), properties, batch.routing_key)

    async def _routed(
        self, body: bytes, properties: aiormq.spec.Basic.Properties, routing_key: str
    ) -> None:
        channel = self._raw
        delay = 0.2
        while True:  # until it is routed, or parked
            try:
                await confirmed(
                    lambda: channel.basic_publish(
                        body,
                        exchange=self.results,
                        routing_key=routing_key,
                        properties=properties,
                        mandatory=True,
                    ),
                    f"outcome {routing_key}",
                    returned_is_final=True,
                )
                return
            except aiormq.exceptions.PublishError:
                if await self.park(body, properties, routing_key):
                    return
            log.warning(
                "outcome %s matched no binding and the parking queue %s is gone; "
                "retrying in %.1fs", routing_key, self.parking, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def park(
        self, body: bytes, properties: aiormq.spec.Basic.Properties, routing_key: str
    ) -> bool:
        """An outcome that matched no binding (returned): into the parking queue
        ``<results exchange>.unrouted``, with the routing key it was published with, so it
        neither holds its request nor is lost silently. False when the parking queue is gone
        (deleted by hand): the outcome is then retried from the start."""
        headers = dict(properties.headers or {})
        headers[ROUTING_KEY_HEADER] = routing_key
        headers[REASON_HEADER] = f"no binding of {self.results} matched {routing_key}"
        parked = aiormq.spec.Basic.Properties(
            content_type=properties.content_type,
            delivery_mode=2,
            message_id=properties.message_id,
            correlation_id=properties.correlation_id,
            message_type=properties.message_type,
            headers=headers,
        )
        channel, queue = self._raw, self.parking
        try:
            await confirmed(
                lambda: channel.basic_publish(
                    body, exchange="", routing_key=queue, properties=parked, mandatory=True
                ),
                f"parked outcome {routing_key}",
                returned_is_final=True,
            )
        except aiormq.exceptions.PublishError:
            return False
        self.metrics.outcomes_parked.inc()
        return True

    async def reply(
        self, reply: Reply, reply_to: str, correlation_id: str | None, trace: Any = None
    ) -> bool:
        """Publish a request's reply to the default exchange with routing key ``reply_to``;
        True once confirmed, False when it was dropped: its queue is gone.

        A named queue: published ``mandatory``, so a queue that is gone comes back as a
        basic.return (NO_ROUTE): dropped, not retried. Direct reply-to
        (``amq.rabbitmq.reply-to.<encoded>``): RabbitMQ 3.x returns every mandatory
        publish to it as NO_ROUTE, even one it delivered, so it is published without
        ``mandatory``; a requester whose channel is gone is then dropped by the broker
        itself (and cannot be counted here). Either way the request is never held by it.
        """
        channel = self._raw
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=2,
            message_id=reply.message_id,
            correlation_id=correlation_id or reply.request_id,
            message_type=REPLY_TYPE,
            headers=tracing.headers(trace),
        )
        body = reply.body()
        mandatory = not reply_to.startswith(DIRECT_REPLY_TO)
        try:
            await confirmed(
                lambda: channel.basic_publish(
                    body, exchange="", routing_key=reply_to, properties=properties,
                    mandatory=mandatory,
                ),
                "reply",
                returned_is_final=True,
            )  # fmt: skip
        except aiormq.exceptions.PublishError:
            log.info("reply %s dropped: no queue %s", reply.message_id, reply_to[:64])
            self.metrics.replies_dropped.inc()
            return False
        self.metrics.replies_published.inc()
        return True

    async def dead_letter(
        self, message: AbstractIncomingMessage, reason: str, priority: bool = False
    ) -> None:
        """Park a refused message in the DLQ with its reason and the lane it came from
        (``bulkops dlq replay`` sends it back there)."""
        headers: dict[str, Any] = dict(message.headers or {})
        headers[REASON_HEADER] = reason[:1000]
        lane = priority_name(self.settings) if priority else self.settings.request_queue
        headers[ORIGIN_HEADER] = lane
        copy = copy_of(message, headers, message.message_id)
        await confirmed(
            lambda: self.default.publish(copy, self.settings.dead_letter_queue, mandatory=True),
            "dead letter",
        )


def copy_of(
    message: AbstractIncomingMessage,
    headers: dict[str, Any],
    message_id: str | None,
    body: bytes | None = None,
    type_: str | None = None,
) -> aio_pika.Message:
    """A persistent copy of a consumed message with its body and properties, for moving it
    to another queue (a partition, the dead-letter queue). Left out: ``expiration`` (the
    copy's time in its new queue starts again, and a dead letter must not expire) and
    ``user_id`` (the broker refuses one that is not the publishing connection's user).
    ``body`` and ``type_``: another body and AMQP type (a continuation of it)."""
    return aio_pika.Message(
        message.body if body is None else body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message_id,
        timestamp=message.timestamp,
        type=message.type if type_ is None else type_,
        app_id=message.app_id,
    )


async def confirmed(
    publish: Callable[[], Awaitable[Any]], what: str, returned_is_final: bool = False
) -> None:
    """Publish until the broker confirms (a nack is retried with backoff). A return is
    retried too, unless ``returned_is_final``: then its PublishError is raised."""
    delay = 0.2
    while True:
        try:
            confirmation = await publish()
        except aiormq.exceptions.PublishError as exc:
            if returned_is_final:
                raise
            log.warning("%s returned as unroutable (%s); retrying in %.1fs", what, exc, delay)
        else:
            if isinstance(confirmation, aiormq.spec.Basic.Ack):
                return
            log.warning("%s not confirmed (%r); retrying in %.1fs", what, confirmation, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
