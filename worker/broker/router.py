"""The request queue's consumer in partitioned mode (``worker.broker.partitions``): it checks
each message and moves it to its rate scope's partition queue, main-lane requests bundled
(``worker.broker.bundles``), priority ones alone with a marker."""

from __future__ import annotations

from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from worker.broker.acker import Acker, Ackers, AmqpDelivery
from worker.broker.bundles import Bundler
from worker.broker.partition_topology import MARKER_HEADER, partition_of, routing_key
from worker.broker.publishing import confirmed, copy_of
from worker.messages import Request, derive_request_id
from worker.metrics import Metrics
from worker.settings import Settings


class Intake(Protocol):
    """What partitioned mode needs of the broker session: its settings and metrics, the
    Ackers of its channels, and its intake of a message (checked only, or taken in)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def ackers(self) -> Ackers: ...

    async def screen(
        self, message: AbstractIncomingMessage, acker: Acker, priority: bool = False
    ) -> Request | None: ...

    async def handle(
        self,
        message: AbstractIncomingMessage,
        acker: Acker,
        partition: int | None,
        priority: bool = False,
    ) -> None: ...

    async def refuse(
        self, message: AbstractIncomingMessage, acker: Acker, reason: str, priority: bool = False
    ) -> None: ...


class Router:
    """The request queue's consumer in partitioned mode: checks each message, then moves it
    to its scope's partition, main-lane ones in bundles (forwards keep the consumption
    order: one router, one channel)."""

    def __init__(self, intake: Intake, exchange: AbstractExchange) -> None:
        self.intake = intake
        self.exchange = exchange  # the partition exchange, on the confirming channel
        self.routing = True  # False: the router is being handed on
        self.forwarding = 0  # messages being forwarded right now
        most = intake.settings.partition_bundle_max  # main-lane requests per forward
        self.bundler = None if most == 1 else Bundler(self._publish, intake.metrics, most)

    async def route(self, message: AbstractIncomingMessage, acker: Acker, lane: str = "") -> None:
        """Forward a request of one lane (``lane``: "" or ".priority") to its partition's
        queue of that lane."""
        acker.delivered(message.delivery_tag)  # type: ignore[arg-type]
        if not self.routing:
            return  # left unacked: it goes back to the queue's head when the channel closes
        self.forwarding += 1
        try:
            parsed = await self.intake.screen(message, acker, bool(lane))
            if parsed is None:
                return
            index = partition_of(parsed, self.intake.settings.partitions)
            if lane or self.bundler is None:
                await self.forward(message, routing_key(index, lane))
            else:  # with others bound for the same partition (worker/broker/bundles.py)
                await self.bundler.forward(index, routing_key(index), message)
            if lane:
                await self.mark(index)
            await AmqpDelivery(message, acker).ack()
        finally:
            self.forwarding -= 1

    async def mark(self, index: int) -> None:
        """Tell partition ``index``'s owner (whoever it is) that its priority queue has work."""
        marker = aio_pika.Message(
            b"{}", headers={MARKER_HEADER: 1}, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        exchange = self.exchange
        await confirmed(
            lambda: exchange.publish(marker, routing_key(index), mandatory=True), "marker"
        )

    async def forward(self, message: AbstractIncomingMessage, key: str) -> None:
        """Move a consumed request to a partition queue, body and properties unchanged (the
        partition's owner answers its reply_to)."""
        # The request id must not change on the way (it names the outcomes).
        message_id = derive_request_id(message.body, message.message_id)
        await self._publish(copy_of(message, dict(message.headers or {}), message_id), key)

    async def _publish(self, message: aio_pika.Message, key: str) -> None:
        await confirmed(lambda: self.exchange.publish(message, key, mandatory=True), "forward")
