"""Hold queues of paused scopes (CONTRACT "Control" and "Topology", issue 23).

RabbitMQ 3.10 has only the global consumer timeout (30 min by default) and a message handed
back again and again runs into the delivery limit, so a paused scope's request messages do
not stay unacked in the worker: each is moved (a confirmed persistent copy, then the ack of
the original) to the scope's durable quorum hold queue ``<request queue>.held.<target>[.
<scope field>.<value>]`` and comes back from it on resume, through the same intake.

- At intake, a message of a paused scope is moved at once; while a resumed scope's hold
  queue is being drained, new messages of that scope are moved to its tail too (the held
  work is earlier: per-id order holds).
- When a pause arrives, the requests of that scope the worker holds none of whose ids was
  sent (and none that must stay for per-id order: ``Engine.give_back``) are moved, in
  consumption order; the others finish their sent items and their unsent ones wait (the
  dispatcher takes nothing of a paused scope).
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
from worker.pipeline.control import request_scope
from worker.pipeline.requests import Tracked
from worker.settings import Settings

log = logging.getLogger("bulkops.control")

LANE_HEADER = "x-bulkops-lane"
DRAIN_CHECK_SECONDS = 1.0
IDLE_CHECK_SECONDS = 5.0


Slot = tuple[PauseKey, int | None]  # a pause key and a partition (None: not partitioned)


def hold_name(settings: Settings, key: PauseKey, partition: int | None = None) -> str:
    """``<request queue>.held.<target>[.<field>.<value>][.p<partition>]`` (the primary:
    ``@primary``), percent-encoded with ``+`` for ``%`` (AMQP clients refuse ``%`` and ``~``
    in queue names); past 255 bytes, cut with a hash of the whole."""
    target, scope = key
    parts = [settings.request_queue, "held", _encoded(target)]
    if scope is not None:
        parts += [scope[0], "@primary" if scope[1] is None else _encoded(scope[1])]
    if partition is not None:
        parts.append(f"p{partition}")
    name = ".".join(parts)
    if len(name.encode()) > 255:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        name = name.encode()[:230].decode(errors="ignore") + "." + digest
    return name


def _encoded(value: str) -> str:
    """Only letters, digits, ``_``, ``-`` and ``.`` stay; ``+XX`` for the rest."""
    return quote(value, safe="").replace("~", "%7E").replace("%", "+")


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
        if name not in self.declared:
            if self._declaring is None or self._declaring.is_closed:
                self._declaring = await self.connection.channel()
            await declare_queue(self._declaring, name, hold_arguments(self.settings), _ADVICE)
            self.declared.add(name)
        headers = dict(message.headers or {})
        headers[LANE_HEADER] = "priority" if priority else "main"
        copy = copy_of(message, headers, message.message_id)
        default = self.session.publisher.default
        await confirmed(lambda: default.publish(copy, name, mandatory=True), "held request")

    def came_back(self, req: Request) -> None:
        """A request taken in from a hold queue: its ids are no longer held."""
        scope = request_scope(req)
        for key in ((req.target, scope), (req.target, None)):
            if self.held.get(key):
                self.held[key] = max(0, self.held[key] - len(req.ids))
                return

    async def pause(self, key: PauseKey) -> int:
        """Move the requests of ``key``'s scope(s) the worker holds and may let go of (none
        of their ids sent, none an earlier operation of one that stays); how many."""
        target, scope = key
        for slot in [s for s in self.draining if s[0] == key]:
            drain = self.draining.pop(slot)  # paused again while draining: it stays held
            self.idle.add(slot)
            with contextlib.suppress(Exception):
                await drain.queue.cancel(drain.tag)

        def covered(tracked: Tracked) -> bool:
            req = tracked.request
            return req.target == target and (scope is None or request_scope(req) == scope)

        let_go = self.session.engine.give_back(covered)
        slots = {(key, tracked.partition) for tracked in let_go}
        self.idle |= slots
        for slot in slots:
            self.moving[slot] = self.moving.get(slot, 0) + 1
        try:
            async with self._order:  # all of them before any message consumed meanwhile
                for tracked in let_go:  # consumption order
                    delivery = tracked.delivery
                    assert isinstance(delivery, AmqpDelivery)
                    name = hold_name(self.settings, key, tracked.partition)
                    await self._copy(delivery.message, key, name, tracked.priority)
                    await delivery.ack()
                    self.moved += 1
                    self.held[key] = self.held.get(key, 0) + len(tracked.request.ids)
        finally:
            for slot in slots:
                self.moving[slot] -= 1
        if let_go:
            log.info("pause: %d requests moved to %s", len(let_go), hold_name(self.settings, key))
        return len(let_go)


_ADVICE = "delete it by hand when no pause of its scope is in force"
