"""Scaling out: partition requests by rate scope so each scope has exactly one owner.

With ``partitions`` > 0 the request queue becomes a single-active-consumer queue: one replica
at a time reads it, in order, and forwards each valid message (unchanged, or bundled with
others: worker/broker/bundles.py) to one of N partition queues (a direct exchange, routing
key ``p<i>``), chosen by a stable hash of the message's
rate scope: the DatoCMS target (its token's limit covers every environment), or the
Bloomreach target and catalog. Each partition queue is single-active-consumer too, and every
replica subscribes to all of them: RabbitMQ gives each partition to one replica, and hands it
to another when that one goes away. So one process sends for a rate scope at any time (its
local limiter is the whole truth), and operations on one id pass through one queue and one
consumer in order. Nothing here is home-made protocol: ordering and failover are RabbitMQ's.

Handing a queue on is closing its channel, never a plain cancel. On a cancel, RabbitMQ makes
the next consumer active at once and returns the cancelled one's unacked messages after
whatever it has already delivered to that consumer, so an operation given back would reach
the next owner after a later one on the same id. On a channel close (or a dead connection)
it returns every unacked message to the queue's head first, in order, and only then
activates the next consumer. So the router and each partition have a channel of their own,
and a replica hands one on like this: leave new deliveries unacked, give back (forget) what
was not started, finish what was, then close the channel.

Spreading: RabbitMQ makes the first subscriber the active consumer of every queue. Each
replica also consumes a presence queue (nothing is ever published to it), whose consumer
count is the number of replicas; one that owns more than partitions / replicas (rounded up)
hands one on every ``partition_rebalance_seconds``, and subscribes again behind the others.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from collections.abc import Sized
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
)

from worker.broker import bundles
from worker.broker.acker import Acker, AmqpDelivery
from worker.broker.partition_topology import (  # the names, re-exported
    LANES,
    MARKER_HEADER,
    declare_partitions,
    lane_queue,
    partition_of,
    presence_queue,
    queue_name,
    scope_key,
    stranded,
)
from worker.broker.router import Intake, Router
from worker.broker.strays import Strays
from worker.broker.topology import declare_if_reachable
from worker.wirenames import BUNDLE_TYPE, PRIORITY_SUFFIX

log = logging.getLogger("bulkops.partitions")

__all__ = [
    "Owner", "Router", "declare_partitions", "partition_of", "presence_queue", "queue_name",
    "scope_key",
]  # fmt: skip


class Pipeline(Protocol):
    """What handing a partition on needs of the pipeline (see worker/pipeline/handover.py)."""

    def hand_over(self, partition: int) -> Sized: ...

    def busy(self, partition: int) -> bool: ...

    async def retire(self, partition: int) -> Sized: ...


@dataclass(eq=False)
class _Member:
    """One queue (the router's or a partition's) as this replica consumes it."""

    index: int | None  # None: the request queue (or its priority lane), as router
    lane: str = ""  # "": the main lane's queue; ".priority": the priority lane's
    channel: AbstractChannel | None = None
    acker: Acker | None = None
    closing: bool = False


@dataclass(eq=False)
class _Held:
    """What this replica owns of the partitions, and what it is handing on."""

    owned: dict[int, float] = field(default_factory=dict)  # partition -> its first delivery
    holding: set[int] = field(default_factory=set)  # being handed on: deliveries left unacked
    handling: collections.Counter[int] = field(default_factory=collections.Counter)


class Owner:
    """This replica's part in partitioned mode: the router, its partitions, rebalancing."""

    def __init__(
        self,
        connection: AbstractConnection,
        intake: Intake,
        pipeline: Pipeline,
        router: Router,
        lost: asyncio.Event,
    ) -> None:
        self.connection = connection
        self.intake = intake
        self.pipeline = pipeline
        self.settings = intake.settings
        self.metrics = intake.metrics
        self.lost = lost
        self.router = router
        self.held = _Held()
        self._routers = [_Member(None, lane) for lane in LANES]
        self.members = [_Member(i) for i in range(self.settings.partitions)]
        self.urgent = [_Member(i, PRIORITY_SUFFIX) for i in range(self.settings.partitions)]
        self._taking = [asyncio.Lock() for _ in range(self.settings.partitions)]
        self._presence: AbstractChannel | None = None
        self._counted = False  # whether the presence queue is there to count replicas
        # Hold queues of resumed scopes nobody drains (at a resume, and in the sweep).
        self.strays = Strays(connection, intake, self.held, router.mark, lost)

    async def start(self) -> None:
        settings = self.settings
        self.metrics.partitions_owned.set(0)
        presence = self._presence = await self._channel(None)
        queue = await declare_if_reachable(
            presence,
            presence_queue(settings),
            {"x-queue-type": "quorum", "x-expires": 24 * 3600 * 1000},
            "delete it: it only counts the replicas' consumers, the worker declares it anew",
        )
        self._counted = queue is not None  # else: no count of replicas, no rebalancing
        if queue is not None:
            await queue.consume(_ignore, no_ack=True)  # counted, never fed
        for router in self._routers:
            await self._subscribe(router)
        for member in self.members:
            await self._subscribe(member)

    async def _channel(self, member: _Member | None) -> AbstractChannel:
        channel = await self.connection.channel()

        def closed(*_: Any) -> None:  # closed by the broker, not handed on: session over
            if member is None or not member.closing:
                self.lost.set()

        channel.close_callbacks.add(closed)
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(lambda *_: self.lost.set())
        return channel

    async def _subscribe(self, member: _Member) -> None:
        channel = member.channel = await self._channel(member)
        member.closing = False
        settings = self.settings
        await channel.set_qos(prefetch_count=bundles.qos(settings, member.index, member.lane))
        acker = member.acker = self.intake.ackers.start(await channel.get_underlay_channel())
        if member.index is None:
            queue = await channel.get_queue(settings.request_queue + member.lane)
            route = functools.partial(self.router.route, acker=acker, lane=member.lane)
            await queue.consume(route)
        elif member.lane:
            queue = await channel.get_queue(lane_queue(settings, member.index, member.lane))
            await queue.consume(functools.partial(self._deliver_urgent, acker, member.index))
        else:
            queue = await channel.get_queue(queue_name(settings, member.index))
            await queue.consume(functools.partial(self._deliver, acker, member.index))

    async def _deliver(self, acker: Acker, index: int, message: AbstractIncomingMessage) -> None:
        """A partition queue's consumer."""
        acker.delivered(message.delivery_tag)  # type: ignore[arg-type]
        held = self.held
        if index in held.holding:
            return  # left unacked: the next owner gets it when the channel closes
        held.handling[index] += 1  # a hand-over waits for this (outcomes, dead letters)
        try:
            # One delivery of a partition at a time, in delivery order (per-id order).
            async with self._taking[index]:
                first = index not in held.owned
                if first:
                    held.owned[index] = time.monotonic()
                    self.metrics.partitions_owned.set(len(held.owned))
                    log.info("owning partition %d", index)
                    await _holds(self.intake, "adopt", index)  # its held work first
                if (message.headers or {}).get(MARKER_HEADER):
                    await AmqpDelivery(message, acker).ack()  # it has done its work
                elif message.type == BUNDLE_TYPE:  # requests forwarded together
                    await bundles.take(self.intake, message, acker, index)
                else:
                    await self.intake.handle(message, acker, index)
                if first:
                    await self._subscribe(self.urgent[index])  # its priority queue: ours too
        finally:
            held.handling[index] -= 1

    async def _deliver_urgent(
        self, acker: Acker, index: int, message: AbstractIncomingMessage
    ) -> None:
        """A partition's priority queue's consumer (subscribed while owning the partition)."""
        acker.delivered(message.delivery_tag)  # type: ignore[arg-type]
        held = self.held
        if index in held.holding or index not in held.owned:
            return  # left unacked: the next owner gets it when the channel closes
        held.handling[index] += 1
        try:
            await self.intake.handle(message, acker, index, priority=True)
        finally:
            held.handling[index] -= 1

    async def _close(self, member: _Member, deadline: float | None = None) -> None:
        """Close the member's channel once its acks are queued: the CloseOk comes after
        them, so they reach the broker. Then stop its Acker."""
        member.closing = True
        if member.channel is not None and not member.channel.is_closed:
            if member.acker is not None and not self.lost.is_set():
                left = 10.0 if deadline is None else deadline - time.monotonic()
                await self.intake.ackers.flush(member.acker, timeout=left)
            await member.channel.close()
        if member.acker is not None:
            self.intake.ackers.stop(member.acker)
            member.acker = None

    async def hand_on(
        self, member: _Member, reason: str, again: bool, deadline: float | None = None
    ) -> None:
        """Hand one partition on: hold new deliveries, give back what was not started,
        finish what was, close its channel; ``again``: subscribe anew, behind the other
        replicas. Without a ``deadline`` (rebalancing) the started work is always finished
        (it is bounded by the retry budget and the job deadline): an abandoned DatoCMS job
        could complete after a later operation the next owner sends for the same id."""
        index = member.index
        assert index is not None
        if member.channel is None or member.channel.is_closed:
            return
        self.held.holding.add(index)
        await _holds(self.intake, "release", index)  # its hold queues: the next owner's
        given_back = self.pipeline.hand_over(index)
        await self._finish(index, deadline)
        unfinished = await self.pipeline.retire(index)
        await _holds(self.intake, "let_go", index)  # what its drains took: to their heads
        if unfinished:
            log.warning(
                "partition %d: %d requests not finished in time, handed on unanswered",
                index,
                len(unfinished),
            )
        urgent = self.urgent[index]
        if urgent.channel is not None and not urgent.channel.is_closed:
            await self._close(urgent, deadline)
            # Only when urgent messages wait there without a consumer (a clean stop leaves no
            # marker behind); ones the count misses (returned after the close) the sweep finds.
            if not self.lost.is_set() and await stranded(self.connection, self.settings, index):
                await self.router.mark(index)  # the next owner hears of what waits there
        await self._close(member, deadline)
        self.held.holding.discard(index)
        if self.held.owned.pop(index, None) is not None:
            self.metrics.partition_handovers.labels(reason).inc()
            self.metrics.partitions_owned.set(len(self.held.owned))
            log.info(
                "handed partition %d on (%s): %d requests given back",
                index,
                reason,
                len(given_back) + len(unfinished),
            )
        if again and not self.lost.is_set():
            await self._subscribe(member)

    async def sweep(self) -> None:
        """Forever, every ``SWEEP_SECONDS``: a partition's priority queue that holds messages
        and has no consumer (its owner died or lost its connection with urgent messages
        unacked, and no marker was left) gets a marker, so that whoever owns the partition
        now subscribes to it; so does a partition with a hold queue nobody drains
        (``worker.broker.strays``). Every replica sweeps; a needless marker costs nothing."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            marked = set()
            for index in range(self.settings.partitions):
                if await stranded(self.connection, self.settings, index):
                    log.info("partition %d: priority messages without a consumer", index)
                    await self.router.mark(index)
                    marked.add(index)
            await self.strays.beckon(None, marked)

    async def _finish(self, index: int, deadline: float | None) -> None:
        """Wait until the partition's started work is answered (or the deadline passes)."""

        holds = getattr(self.intake, "holds", None)

        def working() -> bool:  # moves of its requests to hold queues (a pause) included
            moving = holds is not None and holds.moving_of(index) > 0
            return self.pipeline.busy(index) or self.held.handling[index] > 0 or moving

        while working() and not self.lost.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """SIGTERM: hand the router on once its forwards are through, then every partition
        at once, all within one drain timeout."""
        router = self.router
        router.routing = False
        deadline = time.monotonic() + self.settings.drain_timeout_seconds
        while router.forwarding and time.monotonic() < deadline and not self.lost.is_set():
            await asyncio.sleep(0.01)
        for member in self._routers:
            await self._close(member, deadline)
        results = await asyncio.gather(
            *(self.hand_on(m, "stopping", False, deadline) for m in self.members),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def replicas(self) -> int:
        assert self._presence is not None
        if not self._counted:
            return 1  # unknown: every partition is then a fair share, nothing handed on
        queue = await self._presence.declare_queue(presence_queue(self.settings), passive=True)
        return max(1, queue.declaration_result.consumer_count or 1)

    async def rebalance(self) -> None:
        """Forever: hand on the newest partition while owning more than a fair share."""
        interval = self.settings.partition_rebalance_seconds
        if not interval:
            await asyncio.Event().wait()
        total = len(self.members)
        while True:
            await asyncio.sleep(interval)
            owned = self.held.owned
            share = -(-total // await self.replicas())
            if len(owned) > share:
                newest = max(owned, key=owned.__getitem__)
                log.info(
                    "owning %d of %d partitions, %d each is fair: handing partition %d on",
                    len(owned),
                    total,
                    share,
                    newest,
                )
                await self.hand_on(self.members[newest], "rebalance", again=True)


SWEEP_SECONDS = 3.0  # how often each replica looks for stranded priority messages


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    return None


async def _holds(intake: Intake, action: str, index: int) -> None:
    """The session's hold queues (``worker.broker.hold``) take (``adopt``: drains them
    first, and nothing is awaited before it decides) or let go of (``release``, then
    ``let_go``) a partition."""
    holds = getattr(intake, "holds", None)
    if holds is not None:
        await getattr(holds, action)(index)
