"""One broker session's life: connections, channels, topology, consumers, and the drain.

Partitioned mode (worker/broker/partitions.py) is composed here, on top of the session: the
session knows nothing of partitions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable
from typing import Any

import httpx
from aio_pika.abc import AbstractQueue
from pamqp.commands import Basic

from worker.addresses import Addresses
from worker.broker.acker import Acker
from worker.broker.control import ControlLink
from worker.broker.hold import Holds
from worker.broker.partitions import Owner, Router, declare_partitions
from worker.broker.publishing import Publisher
from worker.broker.session import Session
from worker.broker.topology import declare_topology, sample_unrouted
from worker.health import Health
from worker.limiter import Limiters
from worker.metrics import Metrics
from worker.pipeline.engine import Engine
from worker.settings import Settings
from worker.wirenames import priority_name

log = logging.getLogger("bulkops.broker")


class ConnectionLost(Exception):
    pass


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


async def _connect(addresses: Addresses, role: str, lost: asyncio.Event) -> Any:
    connection = await addresses.connect(client_properties={"connection_name": f"bulkops-{role}"})
    connection.close_callbacks.add(lambda *_: lost.set())
    return connection


async def run_session(
    settings: Settings,
    metrics: Metrics,
    http: httpx.AsyncClient,
    stopping: asyncio.Event,
    health: Health,
    limiters: Limiters,
    addresses: Addresses,
    link: ControlLink,
) -> bool:
    """One broker session (on the first of ``addresses`` that answers). Returns False after
    a clean drain, True when the session ended on purpose to be renewed (see ``_idle``);
    raises ConnectionLost otherwise.

    Outcomes go out on a connection of their own, as RabbitMQ advises: a busy publisher
    then never holds up deliveries to the consumer (nor is held up by flow control on it).
    """
    lost = asyncio.Event()
    consuming = await _connect(addresses, "consume", lost)
    async with consuming, await _connect(addresses, "publish", lost) as publishing:
        channel = await consuming.channel()
        channel.close_callbacks.add(lambda *_: lost.set())
        # The broker cancels a consumer (queue deleted) without closing the channel: end the
        # session all the same, so the next one declares the queue and consumes again.
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(lambda *_: lost.set())
        await channel.set_qos(prefetch_count=settings.prefetch)
        queue = await declare_topology(channel, settings)
        out = await publishing.channel(publisher_confirms=True, on_return_raises=True)
        out.close_callbacks.add(lambda *_: lost.set())
        publisher = await Publisher.open(out, settings, metrics)
        async with asyncio.TaskGroup() as tasks:
            session = Session(settings, metrics, publisher, http, tasks, limiters, link.state)
            # Attached before anything is consumed: a cancel read live from here on withdraws from
            # this session; one read before was applied to the state that the intake consults.
            link.attach(session)
            try:
                engine = session.engine
                watcher = await _holds(session, consuming, link, tasks)
                owner: Owner | None = None
                consumers: list[tuple[AbstractQueue, str, Acker, int]] = []
                if settings.partitions:
                    await declare_partitions(channel, settings)
                    router = Router(session, await out.get_exchange(settings.partition_exchange))
                    owner = Owner(consuming, session, engine, router, lost)
                    assert session.holds is not None
                    owned = owner.held.owned
                    session.holds.owned = lambda: tuple(owned)
                    session.holds.beckon = owner.strays.beckon
                    link.attach(session, owned)
                    await owner.start()
                    rebalancing: list[Awaitable[Any]] = [owner.rebalance(), owner.sweep()]
                else:
                    acker = session.ackers.start(underlay)
                    consume = functools.partial(session.on_message, acker=acker)
                    tag = await queue.consume(consume)
                    consumers.append((queue, tag, acker, settings.prefetch))
                    consumers.append(await _consume_priority(consuming, session, settings, lost))
                    rebalancing = []
                sampler = tasks.create_task(sample_unrouted(publishing, settings, metrics))
                health.set_ready(True)
                log.info("consuming %s with prefetch %d", settings.request_queue, settings.prefetch)
                try:
                    await _first(
                        stopping.wait(), lost.wait(), _idle(session, engine, settings), *rebalancing
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
                        for consumer, tag, _, _ in consumers:
                            await consumer.cancel(tag)
                        bounced = [
                            (acker, await _take_bounced(consumer.name, acker, prefetch))
                            for consumer, _, acker, prefetch in consumers
                        ]
                        if session.holds is not None:
                            await session.holds.stop()
                        await _drain(engine, settings, lost, bounced, session.holds)
                        if not lost.is_set():
                            await _close_consumers(session, [c for c, *_ in consumers])
                finally:
                    health.set_ready(False)
                    metrics.partitions_owned.set(0)
                    sampler.cancel()
                    watcher.cancel()
                    engine.cancel()
                    if session.holds is not None:
                        await session.holds.end()  # continuations still waiting give up
                    session.ackers.stop()
            finally:
                link.detach(session)
    return False


async def _close_consumers(session: Session, consumers: list[AbstractQueue]) -> None:
    """After the drain: close the consuming channels (request queues' and hold queues'
    drains) once their acks are written (their CloseOk comes after them)."""
    await session.ackers.flush(None, timeout=10.0)
    if session.holds is not None:
        await session.holds.close()  # what its drains gave back: to their heads
    for consumer in consumers:
        await consumer.channel.close()


async def _holds(
    session: Session, connection: Any, link: ControlLink, tasks: asyncio.TaskGroup
) -> asyncio.Task[None]:
    """Hold queues of paused scopes: drain those the stream saw resumed (a restart after a
    resume; partitioned: none owned yet, each partition's when it is taken), and watch the
    drains; returns the watcher."""
    holds = session.holds = Holds(session, connection)
    for key in sorted(link.state.resumed, key=str):
        await holds.resume(key)
    return tasks.create_task(holds.watch())


async def _consume_priority(
    connection: Any, session: Session, settings: Settings, lost: asyncio.Event
) -> tuple[AbstractQueue, str, Acker, int]:
    """Consume the priority lane on a channel of its own, with a prefetch of its own: its
    messages are taken while the main queue's prefetch is full of backlog."""
    channel = await connection.channel()
    channel.close_callbacks.add(lambda *_: lost.set())
    underlay = await channel.get_underlay_channel()
    underlay.on_consumer_cancel_callbacks.add(lambda *_: lost.set())
    await channel.set_qos(prefetch_count=settings.priority_prefetch)
    queue = await channel.declare_queue(priority_name(settings), passive=True)
    acker = session.ackers.start(underlay)
    consume = functools.partial(session.on_message, acker=acker, priority=True)
    log.info("consuming %s with prefetch %d", priority_name(settings), settings.priority_prefetch)
    return queue, await queue.consume(consume), acker, settings.priority_prefetch


async def _idle(session: Session, engine: Engine, settings: Settings) -> None:
    """Return once nothing was delivered for ``consumer_idle_renew_seconds`` and nothing is in
    flight. A consumer the broker dropped without a word looks just like that (RabbitMQ sends
    no Basic.Cancel when a quorum queue is deleted and at once declared again, and keeps
    handing new messages to the dead consumer): a fresh session consumes for real."""
    limit = settings.consumer_idle_renew_seconds
    while True:
        await asyncio.sleep(min(limit / 4, 5.0))
        quiet = time.monotonic() - session.last_delivery >= limit
        if quiet and engine.idle and not session.answering:
            return


async def _take_bounced(queue: str, acker: Acker, prefetch: int) -> list[int]:
    """After ``basic.cancel`` of the consumer of ``queue`` (on ``acker``'s channel): take back
    with ``basic.get`` what RabbitMQ returned to the queue's head on its own; the delivery tags.

    A message the quorum queue hands to the consumer just before the cancel (an ack sent
    just before frees a prefetch slot) reaches the broker's channel process after it and is
    returned at once, to the head of the queue (RabbitMQ 3.10 rabbit_fifo_client, issue
    rabbitmq-server#3729): the worker never sees it, and the requests it gives back after
    the cancel-ok would come back BEHIND it, a later operation on their ids ahead of them
    (measured: .investigation/requeue-race.py). At most ``prefetch`` minus the deliveries
    seen and not settled can be in that case; ``basic.get`` (processed after the broker's
    own return) takes that many from the head, fewer when the queue runs empty. They are
    given back after the worker's own: what was not returned is the head of what follows
    anyway, so the order is kept either way."""
    tags: list[int] = []
    for _ in range(max(0, prefetch - acker.outstanding)):
        got = await acker.channel.basic_get(queue, no_ack=False)
        if not isinstance(got.delivery, Basic.GetOk):
            break  # empty
        tag = got.delivery.delivery_tag
        assert tag is not None
        acker.delivered(tag)  # unsettled: no multiple ack covers it
        tags.append(tag)
    return tags


async def _drain(
    engine: Engine,
    settings: Settings,
    lost: asyncio.Event,
    bounced: list[tuple[Acker, list[int]]],
    holds: Holds | None = None,
) -> None:
    """Send what was started, give back what was not (then ``bounced``, taken back by
    ``_take_bounced``), wait within the drain timeout, for the pauses' moves to hold queues
    too (the channels close after it: a move between its copy's confirm and the original's
    ack would leave a second copy). What was taken from a hold queue's drain is not nacked
    (a nack with requeue puts it at the TAIL of a quorum queue without a delivery limit on
    RabbitMQ 3.10): ``Holds.close`` closes its channel afterwards and the broker puts it
    back at the head, in delivery order. Past the timeout, no further move is made (the
    one under way ends first): what a pause let go of and did not move, a request being
    continued among it, stays unacked, and the channel's close puts it back at its queue's
    head in delivery order, behind what is nacked here (earlier on any id it shares)."""
    give_back = engine.begin_drain()
    for tracked in give_back:  # one by one, in consumption order
        if not tracked.held:  # a hold queue's: its drain's channel close gives it back
            await tracked.delivery.nack(requeue=True)
    for acker, tags in bounced:  # behind them (one Acker per channel: nacks go in order)
        for tag in tags:
            acker.nack(tag, requeue=True)
    log.info("draining: %d requests given back, %d to finish", len(give_back), len(engine.tracked))
    deadline = time.monotonic() + settings.drain_timeout_seconds

    def busy() -> bool:
        return not engine.idle or (holds is not None and not holds.quiet)

    while busy() and time.monotonic() < deadline and not lost.is_set():
        await asyncio.sleep(0.05)
    if holds is not None and not holds.quiet:
        log.warning("drain timeout: moves to hold queues stop (what is left goes back)")
        await holds.halt()
    await _requeue(engine, lost)


async def _requeue(engine: Engine, lost: asyncio.Event) -> None:
    """The drain ran out of time: give back what is still unfinished."""
    unfinished = engine.unsettled()
    if unfinished:
        log.warning("drain timeout: requeueing %d unfinished requests", len(unfinished))
        engine.settlement.abandon(unfinished)
        if not lost.is_set():
            for tracked in unfinished:
                # a hold queue's: see ``_drain``; a continued one: with what followed it
                if not tracked.held and not tracked.continued:
                    await tracked.delivery.nack(requeue=True)
