"""Broker I/O: topology, the consumer, confirmed outcome publishing, dead-lettering, acks.

One ``Session`` is one connection's life. Acks and nacks go only on the channel a message
came from; when the connection is lost the whole session ends, its in-memory state is
dropped, and the unacked messages come back from the broker to a fresh session: no stale
delivery tag is ever used.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import aio_pika
import aiormq
import httpx
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from worker.apis.base import ItemResult
from worker.engine import Answer, Engine, Tracked
from worker.health import Health
from worker.limiter import Limiters
from worker.messages import (
    REPLY_TYPE,
    Invalid,
    Outcome,
    Reply,
    derive_request_id,
    parse_request,
    published,
    routing_operation,
    utc_now,
)
from worker.metrics import Metrics
from worker.partitions import Owner, declare_partitions, partition_of
from worker.partitions import routing_key as partition_key
from worker.registry import code_label
from worker.settings import Settings

log = logging.getLogger("bulkops.broker")

T = TypeVar("T")
REASON_HEADER = "x-bulkops-reason"
PUBLISH_CHUNK = 64
UNROUTED_MAX_LENGTH = 100_000  # outcomes parked at most; the oldest are dropped beyond
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


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


class Acker:
    """Settles the deliveries of one channel, in order, from one task, acking a run of them in
    one frame where that is safe.

    ``basic.ack`` with ``multiple`` settles every outstanding delivery up to a tag. It is sent
    only for a run of settled deliveries at the head of the channel's unsettled ones: every
    delivery is registered when its callback starts (aio-pika starts them in delivery
    order), so all tags below the run's last are registered, and all of them are settled.
    Deliveries held back (partition hand-over) or given back stay unsettled and cut runs
    short; the acks behind them go one by one. One task sends every ack and nack of the
    channel, so no frame overtakes another: a multiple ack never reaches the broker before
    a nack it covers. Frames are written without waiting for each to drain.
    """

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self._unsettled: collections.deque[int] = collections.deque()
        self._settled: set[int] = set()  # sent, still behind an unsettled one
        self._requests: asyncio.Queue[tuple[int, bool | None]] = asyncio.Queue()

    def delivered(self, tag: int) -> None:
        self._unsettled.append(tag)

    def ack(self, tag: int) -> None:
        self._requests.put_nowait((tag, None))

    def nack(self, tag: int, requeue: bool) -> None:
        self._requests.put_nowait((tag, requeue))

    async def flush(self) -> None:
        """Return once every ack and nack asked for so far is written."""
        await self._requests.join()

    async def run(self) -> None:
        while True:
            batch = [await self._requests.get()]
            while not self._requests.empty():
                batch.append(self._requests.get_nowait())
            try:
                await self._send(batch)
            except aiormq.exceptions.ChannelInvalidStateError:
                pass  # closed: the broker puts these deliveries back for the next consumer
            finally:
                for _ in batch:
                    self._requests.task_done()

    async def _send(self, batch: list[tuple[int, bool | None]]) -> None:
        channel = self.channel
        acks: set[int] = set()
        for tag, requeue in batch:
            if requeue is None:
                acks.add(tag)
            else:
                await channel.basic_nack(tag, requeue=requeue, wait=False)
                self._settled.add(tag)
        upto = None
        unsettled, settled = self._unsettled, self._settled
        while unsettled and (unsettled[0] in acks or unsettled[0] in settled):
            tag = unsettled.popleft()
            if tag in acks:
                acks.discard(tag)
                upto = tag
            else:
                settled.discard(tag)
        if upto is not None:
            await channel.basic_ack(upto, multiple=True, wait=False)
        for tag in sorted(acks):
            await channel.basic_ack(tag, wait=False)
            settled.add(tag)


class AmqpDelivery:
    """Ack/nack for one consumed message, exactly once, through its channel's Acker."""

    __slots__ = ("_acker", "_done", "message")

    def __init__(self, message: AbstractIncomingMessage, acker: Acker) -> None:
        self.message = message
        self._acker = acker
        self._done = False

    async def ack(self) -> None:
        if not self._done:
            self._done = True
            self._acker.ack(self.message.delivery_tag)  # type: ignore[arg-type]

    async def nack(self, requeue: bool) -> None:
        if not self._done:
            self._done = True
            self._acker.nack(self.message.delivery_tag, requeue)  # type: ignore[arg-type]


class Publisher:
    """Publishes outcomes with confirms and ``mandatory``; a return or nack is retried."""

    def __init__(
        self,
        exchange: AbstractExchange,
        dlq_channel: AbstractChannel,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self.exchange = exchange
        self.default = dlq_channel.default_exchange
        self.partitions: AbstractExchange | None = None
        self._channel = dlq_channel  # the confirming publish channel (outcomes too)
        self._raw: aiormq.abc.AbstractChannel | None = None
        self.settings = settings
        self.metrics = metrics

    async def outcome(self, outcome: Outcome, correlation_id: str | None) -> None:
        # Straight to the aiormq channel: aio-pika's Message and Exchange.publish cost more
        # per outcome than the frames themselves (same frames, confirms and returns).
        channel = self._raw or await self._underlay()
        body = outcome.body()
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=2,  # persistent
            message_id=outcome.message_id,
            correlation_id=correlation_id or outcome.request_id,
            message_type="bulkops.outcome",
        )
        routing_key = outcome.routing_key
        await self._confirmed(
            lambda: channel.basic_publish(
                body,
                exchange=self.exchange.name,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
            ),
            f"outcome {routing_key}",
        )

    async def reply(self, reply: Reply, reply_to: str, correlation_id: str | None) -> bool:
        """Publish a request's reply to the default exchange with routing key ``reply_to``;
        True once confirmed, False when it was dropped: its queue is gone.

        A named queue: published ``mandatory``, so a queue that is gone comes back as a
        basic.return (NO_ROUTE): dropped, not retried. Direct reply-to
        (``amq.rabbitmq.reply-to.<encoded>``): RabbitMQ 3.x returns every mandatory
        publish to it as NO_ROUTE, even one it delivered, so it is published without
        ``mandatory``; a requester whose channel is gone is then dropped by the broker
        itself (and cannot be counted here). Either way the request is never held by it.
        """
        channel = self._raw or await self._underlay()
        properties = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=2,
            message_id=reply.message_id,
            correlation_id=correlation_id or reply.request_id,
            message_type=REPLY_TYPE,
        )
        body = reply.body()
        mandatory = not reply_to.startswith(DIRECT_REPLY_TO)
        try:
            await self._confirmed(
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

    async def _underlay(self) -> aiormq.abc.AbstractChannel:
        self._raw = await self._channel.get_underlay_channel()
        return self._raw

    async def forward(self, message: AbstractIncomingMessage, routing_key: str) -> None:
        """Move a consumed request to a partition queue, body and properties unchanged."""
        assert self.partitions is not None
        copy = aio_pika.Message(
            message.body,
            headers=dict(message.headers or {}),
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            # The request id must not change on the way (it names the outcomes).
            message_id=derive_request_id(message.body, message.message_id),
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,  # the partition's owner answers it
            timestamp=message.timestamp,
        )
        exchange = self.partitions
        await self._confirmed(
            lambda: exchange.publish(copy, routing_key, mandatory=True), "forward"
        )

    async def dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        headers: dict[str, Any] = dict(message.headers or {})
        headers[REASON_HEADER] = reason[:1000]
        headers["x-bulkops-original-queue"] = self.settings.request_queue
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            timestamp=message.timestamp,
        )
        await self._confirmed(
            lambda: self.default.publish(copy, self.settings.dead_letter_queue, mandatory=True),
            "dead letter",
        )

    async def _confirmed(
        self, publish: Callable[[], Awaitable[Any]], what: str, returned_is_final: bool = False
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


class Session:
    """Turns consumed messages into engine work and confirmed outcomes into acks."""

    def __init__(self, settings: Settings, metrics: Metrics, publisher: Publisher) -> None:
        self.settings = settings
        self.metrics = metrics
        self.publisher = publisher
        self.kinds = {name: t.kind for name, t in settings.targets.items()}
        self.engine: Engine | None = None
        self.last_delivery = time.monotonic()
        # Partitioned mode (see worker/partitions.py): what this replica owns and hands on.
        self.owned: dict[int, float] = {}  # partition -> when its first delivery came
        self.holding: set[int] = set()  # partitions being handed on: deliveries left unacked
        self.handling: collections.Counter[int] = collections.Counter()  # callbacks running
        self.routing = True  # False: the router is being handed on
        self.forwarding = 0  # router messages being forwarded right now
        self.tasks: asyncio.TaskGroup | None = None
        self._ackers: dict[Acker, asyncio.Task[None]] = {}

    def acker(self, channel: aiormq.abc.AbstractChannel) -> Acker:
        """The Acker of a consuming channel, its task running in the session."""
        assert self.tasks is not None
        acker = Acker(channel)
        self._ackers[acker] = self.tasks.create_task(acker.run())
        return acker

    async def flush(self, acker: Acker | None, timeout: float) -> None:
        """Wait, at most ``timeout``, until what was acked so far (on one channel, or all) is
        queued for the socket. Closing the channel after it (its CloseOk comes after
        every frame before it) is what makes sure it went out."""
        ackers = [acker] if acker is not None else list(self._ackers)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await asyncio.gather(*(a.flush() for a in ackers))

    def stop_acker(self, acker: Acker | None = None) -> None:
        """Stop one channel's Acker (or all): its channel is closed."""
        for a in [acker] if acker is not None else list(self._ackers):
            task = self._ackers.pop(a, None)
            if task is not None:
                task.cancel()

    async def publish_outcomes(self, answers: list[Answer]) -> None:
        """Publish the outcomes this mode publishes (``item_outcomes``) and wait for their
        confirms, count every answer, then reply to and ack each request now answered.

        An outcome the mode does not publish counts at once; a published one only once the
        broker has confirmed it: a request is settled only after every outcome it publishes
        is confirmed, and acked only after its reply is confirmed (or dropped).
        """
        engine = self.engine
        assert engine is not None
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
        for chunk in _chunks(loud):
            await asyncio.gather(*(publisher.outcome(a.outcome(), a.tracked.correlation_id)
                                   for a in chunk))  # fmt: skip
            await self._settle(engine.record_outcomes(chunk))

    async def _settle(self, done: list[Tracked]) -> None:
        """Reply to the answered requests that asked for it (pipelined; each confirmed, or
        dropped when its queue is gone), then queue the ack of each, then forget it."""
        assert self.engine is not None
        replying = [(t, t.reply_to) for t in done if t.reply_to is not None]
        for chunk in _chunks(replying):
            await asyncio.gather(
                *(self.publisher.reply(t.reply(), to, t.correlation_id) for t, to in chunk)
            )
        for tracked in done:
            await tracked.delivery.ack()  # queued: the Acker writes it
            self.engine.forget(tracked)

    async def route(self, message: AbstractIncomingMessage, acker: Acker) -> None:
        """Partitioned mode: check the message, then move it unchanged to its scope's
        partition (forwards keep the consumption order: one router, one channel)."""
        acker.delivered(message.delivery_tag)  # type: ignore[arg-type]
        self.last_delivery = time.monotonic()
        if not self.routing:
            return  # left unacked: it goes back to the queue's head when the channel closes
        self.forwarding += 1
        try:
            parsed = parse_request(message.body, message.message_id, self.kinds)
            if isinstance(parsed, Invalid):
                await self._invalid(message, AmqpDelivery(message, acker), parsed)
                return
            index = partition_of(parsed, self.settings.partitions)
            await self.publisher.forward(message, partition_key(index))
            await AmqpDelivery(message, acker).ack()
        finally:
            self.forwarding -= 1

    async def on_message(
        self, message: AbstractIncomingMessage, acker: Acker, partition: int | None = None
    ) -> None:
        acker.delivered(message.delivery_tag)  # type: ignore[arg-type]
        if partition is None:
            await self._handle(message, acker, None)
            return
        if partition in self.holding:
            return  # left unacked: the next owner gets it when the channel closes
        if partition not in self.owned:
            self.owned[partition] = time.monotonic()
            self.metrics.partitions_owned.set(len(self.owned))
            log.info("owning partition %d", partition)
        self.handling[partition] += 1  # a hand-over waits for this (outcomes, dead letters)
        try:
            await self._handle(message, acker, partition)
        finally:
            self.handling[partition] -= 1

    async def _handle(
        self, message: AbstractIncomingMessage, acker: Acker, partition: int | None
    ) -> None:
        assert self.engine is not None
        self.last_delivery = time.monotonic()
        parsed = parse_request(message.body, message.message_id, self.kinds)
        delivery = AmqpDelivery(message, acker)
        if isinstance(parsed, Invalid):
            await self._invalid(message, delivery, parsed)
            return
        self.metrics.messages_consumed.labels(parsed.operation.name, parsed.target).inc()
        stamp = message.timestamp.timestamp() if message.timestamp else None
        tracked = Tracked(
            delivery,
            parsed,
            message.correlation_id,
            stamp,
            remaining=len(parsed.ids) + len(parsed.rejected),
            partition=partition,
            reply_to=message.reply_to or None,
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
        correlation_id = message.correlation_id
        for chunk in _chunks(outcomes):
            await asyncio.gather(*(self.publisher.outcome(o, correlation_id) for o in chunk))
        readable = len(invalid.readable_ids)
        self.metrics.item_outcomes.labels(*labels, "rejected").inc(readable)
        self.metrics.item_failures.labels(*labels, code_label(invalid.code)).inc(readable)
        if message.reply_to:  # dead-lettered, and still answered
            reply = invalid.reply(utc_now())
            await self.publisher.reply(reply, message.reply_to, correlation_id)
        await delivery.ack()


def _chunks(items: list[T]) -> Iterator[list[T]]:
    """Slices of PUBLISH_CHUNK: confirms stay pipelined within one, and deliveries get the
    event loop between them."""
    for start in range(0, len(items), PUBLISH_CHUNK):
        yield items[start : start + PUBLISH_CHUNK]


async def _first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        # Wait for them to unwind: a partition half handed on must be settled before the
        # drain hands it on again.
        await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


class ConnectionLost(Exception):
    pass


async def _connect(settings: Settings, role: str, lost: asyncio.Event) -> Any:
    connection = await aio_pika.connect(
        settings.amqp_url.get_secret_value(),
        client_properties={"connection_name": f"bulkops-{role}"},
    )
    connection.close_callbacks.add(lambda *_: lost.set())
    return connection


async def run_session(
    settings: Settings,
    metrics: Metrics,
    http: httpx.AsyncClient,
    stopping: asyncio.Event,
    health: Health,
    limiters: Limiters | None = None,
) -> bool:
    """One broker session. Returns False after a clean drain, True when the session ended on
    purpose to be renewed (see ``_idle``); raises ConnectionLost otherwise.

    Outcomes go out on a connection of their own, as RabbitMQ advises: a busy publisher
    then never holds up deliveries to the consumer (nor is held up by flow control on it).
    """
    lost = asyncio.Event()
    consuming = await _connect(settings, "consume", lost)
    async with consuming, await _connect(settings, "publish", lost) as publishing:
        channel = await consuming.channel()
        channel.close_callbacks.add(lambda *_: lost.set())
        # The broker cancels a consumer (queue deleted) without closing the channel: end the
        # session all the same, so the next one declares the queue and consumes again.
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(lambda *_: lost.set())
        await channel.set_qos(prefetch_count=settings.prefetch)
        alternate = await results_alternate(consuming, settings)
        queue = await declare_topology(channel, settings, alternate)
        out = await publishing.channel(publisher_confirms=True, on_return_raises=True)
        out.close_callbacks.add(lambda *_: lost.set())
        exchange = await out.get_exchange(settings.results_exchange)
        session = Session(settings, metrics, Publisher(exchange, out, settings, metrics))
        async with asyncio.TaskGroup() as tasks:
            engine = session.engine = Engine(
                settings, metrics, http, session.publish_outcomes, tasks, limiters
            )
            session.tasks = tasks
            owner: Owner | None = None
            consumers: list[tuple[AbstractQueue, str]] = []
            if settings.partitions:
                await declare_partitions(channel, settings)
                session.publisher.partitions = await out.get_exchange(settings.partition_exchange)
                owner = Owner(consuming, session, lost)
                await owner.start()
                rebalancing: Awaitable[Any] = owner.rebalance()
            else:
                acker = session.acker(underlay)
                consume = functools.partial(session.on_message, acker=acker)
                consumers.append((queue, await queue.consume(consume)))
                rebalancing = asyncio.Event().wait()
            sampler = tasks.create_task(_sample_unrouted(publishing, settings, metrics))
            health.set_ready(True)
            log.info("consuming %s with prefetch %d", settings.request_queue, settings.prefetch)
            try:
                await _first(
                    stopping.wait(), lost.wait(), _idle(session, engine, settings), rebalancing
                )
                if lost.is_set():
                    raise ConnectionLost("connection or channel closed, or consumer cancelled")
                if not stopping.is_set():
                    log.info("nothing delivered for a while: renewing the broker session")
                    return True
                if owner is not None:
                    engine.flush = True
                    await owner.stop()
                else:
                    for consumer, tag in consumers:
                        await consumer.cancel(tag)
                    await _drain(engine, settings, lost)
                    if not lost.is_set():
                        await session.flush(None, timeout=10.0)
                        await channel.close()  # after the acks: they reach the broker
            finally:
                health.set_ready(False)
                metrics.partitions_owned.set(0)
                sampler.cancel()
                engine.cancel()
                session.stop_acker()
    return False


async def _sample_unrouted(
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


async def _idle(session: Session, engine: Engine, settings: Settings) -> None:
    """Return once nothing was delivered for ``consumer_idle_renew_seconds`` and nothing is in
    flight. A consumer the broker dropped without a word looks just like that (RabbitMQ sends
    no Basic.Cancel when a quorum queue is deleted and at once declared again, and keeps
    handing new messages to the dead consumer): a fresh session consumes for real."""
    limit = settings.consumer_idle_renew_seconds
    while True:
        await asyncio.sleep(min(limit / 4, 5.0))
        if engine.idle and time.monotonic() - session.last_delivery >= limit:
            return


async def _drain(engine: Engine, settings: Settings, lost: asyncio.Event) -> None:
    """Send what was started, give back what was not, wait within the drain timeout."""
    give_back = engine.begin_drain()
    for tracked in give_back:  # one by one, in consumption order
        await tracked.delivery.nack(requeue=True)
    log.info("draining: %d requests given back, %d to finish", len(give_back), len(engine.tracked))
    deadline = time.monotonic() + settings.drain_timeout_seconds
    while not engine.idle and time.monotonic() < deadline and not lost.is_set():
        await asyncio.sleep(0.05)
    unfinished = engine.unsettled()
    if unfinished:
        log.warning("drain timeout: requeueing %d unfinished requests", len(unfinished))
        for tracked in unfinished:
            tracked.settled = True
        if not lost.is_set():
            for tracked in unfinished:
                await tracked.delivery.nack(requeue=True)
