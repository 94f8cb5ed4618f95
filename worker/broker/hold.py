"""Hold queues of paused scopes (CONTRACT "Control" and "Topology", issue 23).

RabbitMQ 3.10 has only the global consumer timeout (30 min by default) and a message handed
back again and again runs into the delivery limit, so a paused scope's request messages do
not stay unacked in the worker: each is moved (a confirmed persistent copy, then the ack of
the original) to the scope's durable quorum hold queue ``<request queue>.held.<target>[.
<scope field>.<value>]`` and comes back from it on resume, through the same intake.

- At intake, a message of a paused scope is moved at once; while a resumed scope's hold
  queue is being drained, new messages of that scope are moved to its tail too (the held
  work is earlier: per-id order holds).
- When a pause arrives, every request of that scope the worker holds and has not answered
  leaves it, in consumption order (``Handover.let_go``, under ``_order``): one none of whose
  ids was sent is moved whole; a started one is continued (``worker.pipeline.continuation``:
  its unsent items withdrawn at once, its sent ones answered, then a ``bulkops.continuation``
  message moved and the original acked; the moves after it wait for it). Left in the worker,
  unacked, with every earlier operation on their ids: a started request taken from a hold
  queue's drain (a re-pause while draining: its continuation would belong at the hold
  queue's head, which AMQP cannot do) and one whose continuation would exceed 4 MiB.
- On resume (or at a session's start, for every scope the stream saw resumed) the hold queue
  is consumed; once it is empty and everything taken from it is answered, the drain stops
  and the scope runs as usual. The hold queue is NOT deleted: another replica that has not
  read the resume yet may still move a message into it (RabbitMQ 3.10 refuses ``if-empty``
  deletes of quorum queues, so a delete could take that message with it). A drained hold
  queue is watched (``IDLE_CHECK_SECONDS``): a message found in it while its scope is not
  paused is drained again; a session's start drains every hold queue of a resumed scope.
  An empty hold queue costs nothing but its place; the operator may delete it by hand when
  no pause of its scope is in force.

Partitioned mode: one hold queue per pause and partition (``....p<i>``): the partition's
owner is the single consumer of its scopes, so it alone moves into that hold queue and it
alone drains it (a new owner drains the hold queues of the resumed scopes when it takes the
partition, before anything of them from the partition queue runs: ``adopt``; the old one
stops draining when it hands the partition on: ``release``).
Nothing is lost if the worker dies between the copy's confirm and the ack: the original is
redelivered and moved again; the duplicate is answered like any redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from worker.broker.acker import Acker, AmqpDelivery
from worker.broker.publishing import confirmed, copy_of
from worker.broker.topology import declare_queue
from worker.control.state import PauseKey
from worker.messages import Request
from worker.pipeline import continuation
from worker.pipeline.control import request_scope
from worker.pipeline.requests import Tracked
from worker.settings import Settings
from worker.wirenames import CONTINUATION_TYPE

log = logging.getLogger("bulkops.control")

LANE_HEADER = "x-bulkops-lane"
DRAIN_CHECK_SECONDS = 1.0
IDLE_CHECK_SECONDS = 5.0
CONTINUE_CHECK_SECONDS = 0.5


Slot = tuple[PauseKey, int | None]  # a pause key and a partition (None: not partitioned)


def hold_name(settings: Settings, key: PauseKey, partition: int | None = None) -> str:
    """``<request queue>.held.<target>[.<field>.<value>][.p<partition>]`` (the primary:
    ``~primary``), percent-encoded; past 255 bytes, cut with a hash of the whole."""
    target, scope = key
    parts = [settings.request_queue, "held", quote(target, safe="")]
    if scope is not None:
        parts += [scope[0], "~primary" if scope[1] is None else quote(scope[1], safe="")]
    if partition is not None:
        parts.append(f"p{partition}")
    name = ".".join(parts)
    if len(name.encode()) > 255:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = name.encode()[:230].decode(errors="ignore") + "." + digest
    return name


def hold_arguments(settings: Settings) -> dict[str, Any]:
    """Quorum, durable, dead-lettering to the DLQ like the request queues, no delivery limit
    (RabbitMQ 3.x: none; it is consumed only on resume)."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": settings.dead_letter_queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@dataclass(eq=False)
class _Drain:
    channel: AbstractChannel
    queue: AbstractQueue
    acker: Acker
    tag: str


class _Drains:
    """Draining hold queues (the out side of ``Holds``)."""

    session: Any
    settings: Settings
    connection: AbstractConnection
    owned: Callable[[], Collection[int]] | None
    adopting: set[int]
    draining: dict[Slot, _Drain]
    moving: dict[Slot, int]
    idle: set[Slot]
    _declaring: AbstractChannel | None

    # -- out --------------------------------------------------------------------------------

    async def resume(self, key: PauseKey) -> None:
        """Consume ``key``'s hold queue(s), if any, through the usual intake (partitioned:
        those of the partitions owned)."""
        partitions: Collection[int | None] = [None] if self.owned is None else self.owned()
        for partition in sorted(partitions, key=str):
            await self._drain((key, partition))

    async def adopt(self, partition: int) -> None:
        """A partition just taken: drain its hold queues of the resumed scopes first (until
        their drains start, messages of those scopes go to the hold queues' tails)."""
        state = self.session.control
        if state is None or not state.resumed:
            return
        self.adopting.add(partition)  # before any await: the partition's next deliveries
        try:
            for key in sorted(state.resumed, key=str):
                await self._drain((key, partition))
        finally:
            self.adopting.discard(partition)

    async def release(self, partition: int) -> None:
        """A partition handed on: stop draining its hold queues (what was taken from them
        and not started is given back to them with the partition's)."""
        for slot in [s for s in self.draining if s[1] == partition]:
            drain = self.draining.pop(slot)
            with contextlib.suppress(Exception):
                await drain.queue.cancel(drain.tag)
        self.idle = {s for s in self.idle if s[1] != partition}

    async def _drain(self, slot: Slot) -> None:
        key, partition = slot
        if slot in self.draining:
            return
        name = hold_name(self.settings, key, partition)
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return  # nothing was held (the failed declaration closed that channel)
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        underlay = await channel.get_underlay_channel()
        acker = self.session.ackers.start(underlay)

        async def take(message: AbstractIncomingMessage) -> None:
            acker.delivered(message.delivery_tag)
            lane = (message.headers or {}).get(LANE_HEADER)
            priority = lane in ("priority", b"priority")
            await self.session.handle(message, acker, partition, priority, held=True)

        tag = await queue.consume(take)
        self.draining[slot] = _Drain(channel, queue, acker, tag)
        log.info("resume: draining %s", name)

    async def stop(self) -> None:
        """No more deliveries from hold queues (shutting down)."""
        for drain in self.draining.values():
            with contextlib.suppress(Exception):
                await drain.queue.cancel(drain.tag)

    async def watch(self) -> None:
        """Finish the drains whose hold queue is empty and whose messages are answered; every
        ``IDLE_CHECK_SECONDS``, drain again a drained hold queue that got messages (a late
        move by a replica that had not read the resume yet)."""
        rounds = 0
        while True:
            await asyncio.sleep(DRAIN_CHECK_SECONDS)
            for slot, drain in list(self.draining.items()):
                if self.moving.get(slot, 0) or drain.acker.outstanding:
                    continue
                ok = await drain.channel.declare_queue(drain.queue.name, passive=True)
                result = ok.declaration_result
                if result.message_count or (result.consumer_count or 0) > 1:
                    continue  # messages left, or another replica drains it too
                await self._finish(slot, drain)
            rounds += 1
            if rounds * DRAIN_CHECK_SECONDS >= IDLE_CHECK_SECONDS:
                rounds = 0
                await self.recheck()

    async def recheck(self) -> None:
        """Drain again each drained hold queue holding messages while its scope is not
        paused; forget one that is gone (deleted by hand)."""
        state = self.session.control
        owned = None if self.owned is None else self.owned()
        for slot in sorted(self.idle - set(self.draining), key=str):
            key, partition = slot
            if state is not None and state.paused(*key) is not None:
                continue  # paused (again): it is drained on the next resume
            if owned is not None and partition not in owned:
                self.idle.discard(slot)  # its owner watches it
                continue
            name = hold_name(self.settings, key, partition)
            count = await self._depth(name)
            if count is None:
                self.idle.discard(slot)
            elif count:
                log.warning("hold queue %s holds %d messages: draining it", name, count)
                self.idle.discard(slot)
                await self._drain(slot)

    async def _depth(self, name: str) -> int | None:
        """Messages ready in a queue; None when it does not exist (the failed passive
        declaration closes the probing channel: a new one next time)."""
        if self._declaring is None or self._declaring.is_closed:
            self._declaring = await self.connection.channel()
        try:
            ok = await self._declaring.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        return int(ok.declaration_result.message_count or 0)

    async def _finish(self, slot: Slot, drain: _Drain) -> None:
        """Stop draining: nothing ready, nothing of ours unanswered, no other consumer, and
        nothing being moved in by this worker (``draining`` no longer names the key, so
        nothing new starts). The queue stays (see the module's docstring): a late move
        into it is found by ``recheck``."""
        del self.draining[slot]  # from here on, new messages of the scope run as usual
        with contextlib.suppress(Exception):
            await drain.queue.cancel(drain.tag)
        if self.moving.get(slot, 0):
            await self._drain(slot)  # a move started meanwhile: drain on
            return
        with contextlib.suppress(Exception):
            await drain.channel.close()
        self.idle.add(slot)
        log.info("resume: %s drained (left in place, watched)", drain.queue.name)


class Holds(_Drains):
    """One broker session's hold queues: moves in, drains out."""

    def __init__(self, session: Any, connection: AbstractConnection) -> None:
        """``session``: the ``worker.broker.session.Session`` (not imported: it imports
        this module)."""
        self.session = session
        self.settings = session.settings
        self.connection = connection
        self.owned: Callable[[], Collection[int]] | None = None  # partitioned: owned now
        self.adopting: set[int] = set()  # partitions taken, their drains not started yet
        self.draining: dict[Slot, _Drain] = {}
        self.moving: dict[Slot, int] = {}
        self.declared: set[str] = set()
        self.idle: set[Slot] = set()  # hold queues moved into or drained, watched
        self.moved = 0
        self.held: dict[PauseKey, int] = {}  # ids moved to hold by this worker, not yet back
        self._declaring: AbstractChannel | None = None
        self._order = asyncio.Lock()
        self.closed = False  # the session is over: a continuation still waiting gives up

    # -- in ---------------------------------------------------------------------------------

    def key_for(self, req: Request, held: bool, partition: int | None = None) -> PauseKey | None:
        """The hold queue a consumed request goes to now, if any: its scope's pause's (own,
        else its target's), or, for a message from a request queue, the hold queue of its
        scope still being drained."""
        state = self.session.control
        if state is None:
            return None
        scope = request_scope(req)
        pause = state.paused(req.target, scope)
        if pause is not None:
            return (pause.target, pause.scope)
        if not held:
            for key in ((req.target, scope), (req.target, None)):
                if (key, partition) in self.draining:
                    return key
                if partition in self.adopting and key in state.resumed:
                    return key  # its drain is starting: held work is earlier
        return None

    async def move(self, message: AbstractIncomingMessage, delivery: AmqpDelivery,
                   key: PauseKey, priority: bool, items: int,
                   partition: int | None = None) -> None:  # fmt: skip
        """A confirmed copy to the hold queue, then the original's ack (``items``: its ids,
        counted as held until they come back)."""
        slot = (key, partition)
        name = hold_name(self.settings, key, partition)
        if slot not in self.draining:
            self.idle.add(slot)  # watched: drained once its scope is not paused
        self.moving[slot] = self.moving.get(slot, 0) + 1
        try:
            # One move at a time, in the order they came (the lock is fair, and consumer
            # callbacks reach it in delivery order): concurrent moves would reach the hold
            # queue in any order, and per-id order with them.
            async with self._order:
                await self._copy(message, key, name, priority)
            await delivery.ack()
        finally:
            self.moving[slot] -= 1
        self.moved += 1
        self.held[key] = self.held.get(key, 0) + items

    async def _copy(
        self, message: AbstractIncomingMessage, key: PauseKey, name: str, priority: bool
    ) -> None:
        await self._declare(name)
        headers = dict(message.headers or {})
        headers[LANE_HEADER] = "priority" if priority else "main"
        copy = copy_of(message, headers, message.message_id)
        default = self.session.publisher.default
        await confirmed(lambda: default.publish(copy, name, mandatory=True), "held request")

    async def _declare(self, name: str) -> None:
        if name not in self.declared:
            if self._declaring is None or self._declaring.is_closed:
                self._declaring = await self.connection.channel()
            await declare_queue(self._declaring, name, hold_arguments(self.settings), _ADVICE)
            self.declared.add(name)

    def came_back(self, req: Request, count: int | None = None) -> None:
        """A request taken in from a hold queue: its ids are no longer held."""
        scope = request_scope(req)
        for key in ((req.target, scope), (req.target, None)):
            if self.held.get(key):
                left = len(req.ids) if count is None else count
                self.held[key] = max(0, self.held[key] - left)
                return

    async def pause(self, key: PauseKey) -> int:
        """Move every request of ``key``'s scope(s) the worker holds and has not answered, in
        consumption order (``Handover.let_go``): one none of whose ids was sent is moved
        whole; a started one is continued (its unsent items withdrawn at once, its sent ones
        answered, then its continuation moved and the original acked). A started request
        taken from a hold queue's drain (a re-pause while draining) stays, with every earlier
        operation on its ids: its continuation would belong at the hold queue's head. How
        many were moved."""
        target, scope = key
        for slot in [s for s in self.draining if s[0] == key]:
            drain = self.draining.pop(slot)  # paused again while draining: it stays held
            self.idle.add(slot)
            with contextlib.suppress(Exception):
                await drain.queue.cancel(drain.tag)

        def covered(tracked: Tracked) -> bool:
            req = tracked.request
            return req.target == target and (scope is None or request_scope(req) == scope)

        def stays(tracked: Tracked) -> bool:
            delivery = tracked.delivery
            return (
                tracked.held
                or not isinstance(delivery, AmqpDelivery)
                or not continuation.fits(tracked, delivery.message.body)
            )

        whole, started = self.session.engine.handover.let_go(covered, stays)
        withdrawn = {id(tracked): ids for tracked, ids in started}
        moves = sorted([*whole, *(t for t, _ in started)], key=lambda t: t.seq)
        slots = {(key, tracked.partition) for tracked in moves}
        self.idle |= slots
        for slot in slots:
            self.moving[slot] = self.moving.get(slot, 0) + 1
        moved = 0
        try:
            # All of them in consumption order, before any message consumed meanwhile (an
            # intake move waits for this lock): a continuation waits for its sent items'
            # answers (a batch or a job in flight), and the moves after it wait with it.
            async with self._order:
                for tracked in moves:
                    name = hold_name(self.settings, key, tracked.partition)
                    ids = withdrawn.get(id(tracked))
                    if ids is None:
                        delivery = tracked.delivery
                        assert isinstance(delivery, AmqpDelivery)
                        await self._copy(delivery.message, key, name, tracked.priority)
                        await delivery.ack()
                        count = len(tracked.pending_ids)
                    elif await self._continue(tracked, key, name, ids):
                        count = len(ids)
                    else:
                        continue
                    moved += 1
                    self.moved += 1
                    self.held[key] = self.held.get(key, 0) + count
        finally:
            for slot in slots:
                self.moving[slot] -= 1
            self.session.settlement.continuing.difference_update(t for t, _ in started)
        if moves:
            log.info(
                "pause: %d requests moved to %s (%d of them continued)",
                moved, hold_name(self.settings, key), len(started),
            )  # fmt: skip
        return moved

    async def _continue(self, tracked: Tracked, key: PauseKey, name: str, ids: list[str]) -> bool:
        """Once its sent items are answered, publish ``tracked``'s continuation (confirmed)
        to the hold queue ``name``, then ack the original. False when it was given back
        meanwhile (a drain out of time nacked it, a hand-over or the session's end took it):
        then the original goes back to the broker as it is."""
        delivery = tracked.delivery
        assert isinstance(delivery, continuation.Continuing)
        settlement = self.session.settlement
        while not delivery.ready.is_set():
            if self.closed or tracked not in settlement.tracked:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(delivery.ready.wait(), CONTINUE_CHECK_SECONDS)
        original = delivery.original
        if delivery.given_back or not isinstance(original, AmqpDelivery):
            return False
        message = original.message
        body = continuation.body_of(tracked, message.body, ids)
        await self._declare(name)
        headers = dict(message.headers or {})
        headers[LANE_HEADER] = "priority" if tracked.priority else "main"
        copy = copy_of(message, headers, message.message_id, body, CONTINUATION_TYPE)
        default = self.session.publisher.default
        await confirmed(lambda: default.publish(copy, name, mandatory=True), "continuation")
        await original.ack()
        return True


_ADVICE = "delete it by hand when no pause of its scope is in force"
