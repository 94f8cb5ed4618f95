"""Hold queues of paused scopes (CONTRACT "Control" and "Topology", issue 23).

RabbitMQ 3.10 has only the global consumer timeout (30 min by default) and a message handed
back again and again runs into the delivery limit, so a paused scope's request messages do
not stay unacked in the worker: each is moved (a confirmed persistent copy, then the ack of
the original) to a durable quorum hold queue, the target's ``<request queue>.held.<target>``
or a scope's ``<request queue>.held.<target>.<scope field>.<value>``, and comes back from it
on resume, through the same intake.

Which hold queue (``Holds.key_for``), so that per-id order holds whatever the order of the
pauses and resumes of a target and of its scopes: work only ever moves INWARD, from the
request queue to the target's hold queue, to the scope's hold queue, to the API, and always
to the tail of the next queue, which holds only earlier work of the scope.

- From the request queue, a message goes to the target's hold queue while the target is
  paused or that queue is being drained; else to its scope's while the scope is paused or
  that queue is being drained; else it runs.
- From the target's hold queue (drained once the target is resumed), a message goes to its
  scope's hold queue while the scope is paused or that queue is being drained; else it runs.
- A scope's hold queue is drained only while no pause covers the scope (its own, its
  target's): resuming a scope whose target is paused drains nothing; resuming the target
  drains its resumed scopes' hold queues first, then its own.
- A pause stops the drains it covers (a target's: its own and its scopes'). What a stopped
  drain took and has not sent is earlier than what is left in its queue, so it goes back to
  that queue's HEAD: the drain's channel is closed (its acks written first), and the broker
  puts its unacked messages back at the head in delivery order (a nack with requeue would
  put each at the TAIL of a quorum queue on RabbitMQ 3.10: measured). If some request it
  took must stay (an id of it sent), the channel cannot be closed: everything that drain
  took, and what it is handed before its consumer is cancelled, waits in the worker unsent
  until the resume, like any request under way (past the consumer timeout, the broker
  closes the channel and the duplicates are answered like any redelivery).
- The other requests a pause lets go of (none of their ids sent, none an earlier operation
  of one that stays: ``Engine.give_back``) go, in consumption order, to the tail of the hold
  queue the rules above name; the others finish their sent items and their unsent ones wait
  (the dispatcher takes nothing of a paused scope).
- On resume (or at a session's start, for every scope the stream saw resumed and no pause
  covers) the hold queue is consumed; once it is empty, nothing is being moved into it and
  everything taken from it is answered, the drain stops and the scope runs as usual. The
  hold queue is NOT deleted: another replica that has not read the resume yet may still
  move a message into it (RabbitMQ 3.10 refuses ``if-empty`` deletes of quorum queues, so a
  delete could take that message with it). A drained hold queue is watched
  (``IDLE_CHECK_SECONDS``): a message found in it while no pause covers its key is drained
  again. An empty hold queue costs nothing but its place; the operator may delete it by
  hand when no pause of its scope is in force.

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
from collections.abc import Callable, Collection
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from worker.broker.acker import Acker, AmqpDelivery
from worker.broker.drains import (
    DRAIN_CHECK_SECONDS,
    IDLE_CHECK_SECONDS,
    LANE_HEADER,
    Slot,
    _Drain,
    _Drains,
    hold_arguments,
    hold_name,
    log,
)
from worker.broker.publishing import confirmed, copy_of
from worker.broker.topology import declare_queue
from worker.control.state import PauseKey
from worker.messages import Request
from worker.pipeline.control import request_scope
from worker.pipeline.requests import Tracked

__all__ = [
    "DRAIN_CHECK_SECONDS",
    "IDLE_CHECK_SECONDS",
    "LANE_HEADER",
    "Holds",
    "hold_arguments",
    "hold_name",
]


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
        self.stopped: list[_Drain] = []  # stopped by a pause, their channels still open
        self.moving: dict[Slot, int] = {}
        self.declared: set[str] = set()
        self.idle: set[Slot] = set()  # hold queues moved into or drained, watched
        self.moved = 0
        self.held: dict[PauseKey, int] = {}  # ids moved to hold by this worker, not yet back
        self._declaring: AbstractChannel | None = None
        self._order = asyncio.Lock()

    # -- in ---------------------------------------------------------------------------------

    def key_for(
        self, req: Request, held: PauseKey | None = None, partition: int | None = None
    ) -> PauseKey | None:
        """The hold queue a consumed request goes to now, if any (``held``: the hold queue it
        was taken from; the same key back: to that queue's head). The rule is the module's:
        the widest hold queue in use for its scope, never a wider one than it came from."""
        state = self.session.control
        if state is None:
            return None
        scope = request_scope(req)
        wide, narrow = (req.target, None), (req.target, scope)
        if held == wide:
            if state.pause_of(*wide) is not None:
                return wide  # the target paused again: back to the head
        elif held == narrow:
            return narrow if state.paused(*narrow) is not None else None
        elif state.pause_of(*wide) is not None or self._filling(wide, partition):
            return wide
        if state.pause_of(*narrow) is not None or self._filling(narrow, partition):
            return narrow
        return None

    def _filling(self, key: PauseKey, partition: int | None) -> bool:
        """``key``'s hold queue is being drained (or its drain is starting): what comes
        from a queue further out goes to its tail, behind the earlier work it holds."""
        state = self.session.control
        if (key, partition) in self.draining:
            return True
        return partition in self.adopting and state is not None and key in state.resumed

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

    def came_back(self, key: PauseKey, items: int) -> None:
        """A request taken in from ``key``'s hold queue: its ids are no longer held there."""
        if self.held.get(key):
            self.held[key] = max(0, self.held[key] - items)

    async def pause(self, key: PauseKey) -> int:
        """Stop the drains ``key`` covers and let go of the requests of its scope(s) the
        worker holds and may let go of (none of their ids sent, none an earlier operation of
        one that stays); how many.

        A stopped drain's requests are earlier than what its hold queue still has, so they
        must go back to its head. RabbitMQ 3.10 puts a nacked message of a quorum queue at
        its TAIL (measured), but a closed channel's unacked messages at its head, in the
        order they were delivered: a stopped drain none of whose requests must stay has its
        channel closed (its acks written first); one with a request that must stay (some id
        sent) keeps all it took in the worker, unsent until the resume, like any request
        under way (what it is handed meanwhile is taken in too). The other requests go to
        the tail of the hold queue ``key_for`` names: they are later than what it holds."""
        target, scope = key
        # Before any await: no delivery of a stopped drain is taken in as usual from here on.
        stopped = [d for s, d in self.draining.items() if s[0] == key or (
            scope is None and s[0][0] == target)]  # fmt: skip
        for drain in stopped:
            del self.draining[drain.slot]  # paused again while draining: it stays held
            drain.stopped = True
            self.idle.add(drain.slot)

        def covered(tracked: Tracked) -> bool:
            req = tracked.request
            return req.target == target and (scope is None or request_scope(req) == scope)

        kept = {_acker_of(t) for t in self.session.engine.kept(covered)}
        closing = [d for d in stopped if d.acker not in kept]
        staying = {d.acker for d in stopped if d.acker in kept}
        for drain in stopped:
            drain.keeping = drain.acker in staying
        let_go = self.session.engine.give_back(lambda t: covered(t) and _acker_of(t) not in staying)
        shut = {d.acker for d in closing}
        back = [t for t in let_go if _acker_of(t) in shut]
        for drain in closing:
            await self._close(drain)
        for drain in stopped:
            if drain.keeping:
                self.stopped.append(drain)
                with contextlib.suppress(Exception):
                    await drain.queue.cancel(drain.tag)
        sources = {d.acker: d for d in [*stopped, *self.draining.values()]}
        for tracked in back:
            source = self._source(tracked, sources)
            assert source is not None
            src = source.slot[0]
            self.held[src] = self.held.get(src, 0) + len(tracked.request.ids)
        await self._move_out([t for t in let_go if t not in back], sources)
        if let_go:
            log.info("pause of %s: %d requests given back to hold queues", key, len(let_go))
        return len(let_go)

    async def _close(self, drain: _Drain) -> None:
        """Close a stopped drain's channel once its acks are written: the broker puts what
        it still has unacked back at the hold queue's head, in delivery order."""
        await self.session.ackers.flush(drain.acker, timeout=10.0)
        with contextlib.suppress(Exception):
            await drain.channel.close()
        self.session.ackers.stop(drain.acker)

    @staticmethod
    def _source(tracked: Tracked, sources: dict[Acker, _Drain]) -> _Drain | None:
        acker = _acker_of(tracked)
        return None if acker is None else sources.get(acker)

    async def _move_out(self, let_go: list[Tracked], sources: dict[Acker, _Drain]) -> None:
        """Move requests given back to the tails of the hold queues ``key_for`` names."""
        moves = []
        for tracked in let_go:  # consumption order
            drain = self._source(tracked, sources)
            held = None if drain is None else drain.slot[0]
            dest = self.key_for(tracked.request, held, tracked.partition)
            assert dest is not None and dest != held  # the pause covers it
            moves.append((tracked, dest, (dest, tracked.partition)))
        slots = {slot for _, _, slot in moves}
        self.idle |= slots
        for slot in slots:
            self.moving[slot] = self.moving.get(slot, 0) + 1
        try:
            async with self._order:  # all of them before any message consumed meanwhile
                for tracked, dest, slot in moves:
                    delivery = tracked.delivery
                    assert isinstance(delivery, AmqpDelivery)
                    name = hold_name(self.settings, dest, slot[1])
                    await self._copy(delivery.message, dest, name, tracked.priority)
                    await delivery.ack()
                    self.moved += 1
                    self.held[dest] = self.held.get(dest, 0) + len(tracked.request.ids)
        finally:
            for slot in slots:
                self.moving[slot] -= 1


def _acker_of(tracked: Tracked) -> Acker | None:
    delivery = tracked.delivery
    return delivery.acker if isinstance(delivery, AmqpDelivery) else None


_ADVICE = "delete it by hand when no pause of its scope is in force"
