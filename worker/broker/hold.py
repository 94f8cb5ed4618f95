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
  paused or that queue is being drained (or moved into: a resume while a pause's moves
  into it are still under way); else to its scope's while the scope is paused or that
  queue is being drained (or moved into); else it runs.
- From the target's hold queue (drained once the target is resumed), a message goes to its
  scope's hold queue while the scope is paused or that queue is being drained; else it runs.
- A scope's hold queue is drained only while no pause covers the scope (its own, its
  target's): resuming a scope whose target is paused drains nothing; resuming the target
  drains its resumed scopes' hold queues first, then its own.
- A pause takes out of the worker every request of the scope(s) it covers that the worker
  holds and has not answered, except what must stay (below), in consumption order, to the
  tail of the hold queue the rules above name (they are later than what it holds): one none
  of whose ids was sent is moved whole (a confirmed copy, then the ack); a started one from
  a request queue is continued (``worker.pipeline.continuation``: its unsent items withdrawn
  at once, its sent ones answered as usual, then a ``bulkops.continuation`` message
  published, confirmed, and the original acked; the moves after it wait for it). A started
  one with nothing left unsent finishes and replies as usual.
- The moves into hold queues are made one at a time, in the order their places were taken
  (``worker.broker.moving.Turns``, a FIFO whose place is taken without awaiting): an
  intake move takes it when its message is handled, a pause when its control record is.
  A pause decides everything before any await (the drains it stops, what is let go, where
  each goes, its place in the order) and its moves run in a background task of the
  session (``Holds.pausing``): a continuation waiting for its sent items (up to a job's
  deadline) holds up the moves behind it, never the control records after it (status,
  resume, cancel). A resume meanwhile drains nothing into the running before those moves
  are made: the hold queue counts as being filled while moves into it are pending.
- A continuation given back while it waits (its partition handed on, the session over, a
  graceful stop past its drain timeout) goes back to its queue as it is; nothing more from
  its channel is moved after it (the pause's later requests, later intake moves), or it
  would come back behind them: they stay unacked and the channel's close puts them back
  at the queue's head, in delivery order, behind it. A graceful stop waits (within its
  drain timeout) for the moves to be made before its channels close (a move between its
  copy's confirm and the original's ack would leave a second copy); past the timeout no
  further move is made (the one under way ends first, bounded) and what was not moved goes
  back with its channel. A partition's hand-over waits for the moves of its requests the
  same way, up to its deadline.
- A pause also stops the drains it covers (a target's: its own and its scopes'). What a
  stopped drain took is earlier than what is left in its queue, so it must go back to that
  queue's HEAD, and a continuation, which can only go to a tail, is never made of it. If
  nothing it took must stay, its channel is closed (its acks written first), and the broker
  puts its unacked messages back at the head in delivery order (a nack with requeue would
  put each at the TAIL of a quorum queue without a delivery limit on RabbitMQ 3.10:
  measured). If some request it took is started (an id of it sent), the channel cannot be
  closed: everything that drain took, and what it is handed before its consumer is
  cancelled, waits in the worker unsent until the resume, like any request under way; a
  later pause, a wider one too, leaves it there (moved to a tail, it would come back
  behind what its hold queue still holds).
- What stays in the worker, unacked, its unsent items waiting (the dispatcher takes nothing
  of a paused scope): a started request taken from any hold queue's drain, one whose
  continuation might exceed 4 MiB (``continuation.fits``), and every request with an earlier
  operation on one of their ids (``Handover.let_go``). Past the consumer timeout, the broker
  closes the channel and the duplicates are answered like any redelivery.
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
stops draining when it hands the partition on: ``release``). A replica knows it owns a
partition only once the partition queue delivered to it, and none may come: after a
session renewal (or a restart) during a pause that held everything of a scope, that queue
holds nothing of it; nor when the replica draining a hold queue died. So a resume, and
every replica's sweep (``Owner.sweep``, every 3 s, for replicas that start later or missed
it), look for the hold queues of the resumed keys no pause covers that hold messages and
have no consumer (``worker.broker.strays``: passive declares on one probing channel; a
missing one is probed again by a sweep only after 30 s). Of a partition it knows it owns,
a replica drains them (as ``recheck`` does); of another, it leaves a marker in the
partition queue (the priority lane's, ``MARKER_HEADER``: at most one per partition per
sweep, none while that queue holds messages, a delivery being due anyway). Its receiver,
the partition's owner whoever it is, takes the partition: ``adopt`` drains them before
anything else of the partition runs; an owner that knew already acks it and does nothing
else (its own sweep drains them).
Nothing is lost if the worker dies between the copy's (or continuation's) confirm and the
ack: the original is redelivered and moved again whole; the duplicate is answered like any
redelivery (a continued one's sent items are sent again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from worker.broker.acker import Acker, AmqpDelivery
from worker.broker.continuing import _Continuations, held_headers
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
from worker.broker.moving import Move, Turns, _acker_of, _Moves
from worker.broker.publishing import copy_of
from worker.broker.topology import declare_queue
from worker.control.state import PauseKey
from worker.messages import Request
from worker.pipeline import continuation
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


class Holds(_Drains, _Continuations, _Moves):
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
        self.starting: set[Slot] = set()  # drains being set up (resume, adopt, recheck)
        self.stopped: list[_Drain] = []  # stopped by a pause, their channels still open
        self.released: list[_Drain] = []  # stopped at a hand-over, channels still open
        self.moving: dict[Slot, int] = {}
        self.declared: set[str] = set()
        self.idle: set[Slot] = set()  # hold queues moved into or drained, watched
        self.moved = 0
        self.held: dict[PauseKey, int] = {}  # ids moved to hold by this worker, not yet back
        self._declaring: AbstractChannel | None = None
        self.beckon = None  # partitioned: set by the session (``worker.broker.strays``)
        self._order = Turns()  # the moves into hold queues, one at a time, in order
        self.pausing: set[asyncio.Task[int]] = set()  # pauses' move-outs running
        self.halting = False  # a graceful stop past its drain timeout: no further move
        self.given_back: set[Acker] = set()  # channels a continuation was given back from
        self.handed: set[int] = set()  # partitions handed on: nothing more moved of them
        self.closed = False  # the session is over: a continuation still waiting gives up

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
        """``key``'s hold queue is being drained (or its drain is starting), or moved
        into: what comes from a queue further out goes to its tail, behind the earlier work
        it holds or is being given."""
        state = self.session.control
        slot = (key, partition)
        if slot in self.draining or slot in self.starting or self.moving.get(slot):
            return True  # moves into it still under way (a resume during a move-out): behind
        return partition in self.adopting and state is not None and key in state.resumed

    async def move(self, message: AbstractIncomingMessage, delivery: AmqpDelivery,
                   key: PauseKey, priority: bool, items: int,
                   partition: int | None = None, consumed_at: float | None = None,
                   ) -> None:  # fmt: skip
        """A confirmed copy to the hold queue, then the original's ack (``items``: its ids,
        counted as held until they come back; ``consumed_at``: when it was first consumed,
        carried by a copy without an AMQP timestamp)."""
        slot = (key, partition)
        name = hold_name(self.settings, key, partition)
        if slot not in self.draining:
            self.idle.add(slot)  # watched: drained once its scope is not paused
        self.moving[slot] = self.moving.get(slot, 0) + 1
        # One move at a time, in the order they came: the place in line is taken here,
        # before any await (consumer callbacks reach it in delivery order), behind a pause
        # whose record came before; concurrent moves would reach the hold queue in any
        # order, and per-id order with them.
        turn = self._order.take()
        try:
            async with turn:
                if self._skipped(delivery.acker, partition):
                    return  # unacked: it goes back with its channel, in delivery order
                await self._copy(message, key, name, priority, consumed_at)
            await delivery.ack()
        finally:
            self.moving[slot] -= 1
        self.moved += 1
        self.held[key] = self.held.get(key, 0) + items

    async def _copy(self, message: AbstractIncomingMessage, key: PauseKey, name: str,
                    priority: bool, consumed_at: float | None) -> None:  # fmt: skip
        await self._declare(name)
        headers = held_headers(message, priority, consumed_at)
        copy = copy_of(message, headers, message.message_id)
        await self._publish_held(copy, name, "held request")

    async def _declare(self, name: str) -> None:
        if name not in self.declared:
            if self._declaring is None or self._declaring.is_closed:
                self._declaring = await self.connection.channel()
            await declare_queue(self._declaring, name, hold_arguments(self.settings), _ADVICE)
            self.declared.add(name)

    def came_back(self, key: PauseKey, items: int) -> None:
        """A request taken in from ``key``'s hold queue: its ids are no longer held there."""
        if self.held.get(key):
            self.held[key] = max(0, self.held[key] - items)

    def pause(self, key: PauseKey) -> asyncio.Task[int]:
        """Stop the drains ``key`` covers and take out of the worker the requests of its
        scope(s) that need not stay (the module's rules); returns the task making the moves
        (its result: how many left).

        Everything is decided here, before any await (the control record's handling calls
        it, and the records after it must not wait for the moves): the drains stopped, the
        requests let go, where each goes, and the pause's place in the move order, ahead of
        every intake move of a message consumed from here on. The task then closes the
        stopped drains none of whose requests must stay (what they took goes back to their
        hold queues' heads); one with a request that must stay (some id sent) keeps all it
        took in the worker, unsent until the resume (what it is handed meanwhile is taken
        in too). The other requests go, in consumption order, to the tail of the hold queue
        ``key_for`` names: moved whole, or continued when started (from a request queue
        only)."""
        target, scope = key
        stopped = self._stop_drains(key)

        def covered(tracked: Tracked) -> bool:
            req = tracked.request
            return req.target == target and (scope is None or request_scope(req) == scope)

        def stays(tracked: Tracked) -> bool:  # started, and cannot be continued
            delivery = tracked.delivery
            return (
                tracked.held
                or not isinstance(delivery, AmqpDelivery)
                or not continuation.fits(tracked, delivery.message.body)
            )

        def select(tracked: Tracked) -> bool:
            return covered(tracked) and _acker_of(tracked) not in staying

        # The stopped drains that keep what they took: those an earlier pause left keeping
        # (it waits in the worker, never for a tail), and those holding a request that
        # stays (until nothing changes: what such a drain keeps may pull in another's).
        handover = self.session.engine.handover
        staying: set[Acker | None] = {d.acker for d in self.stopped}
        ackers = {d.acker for d in stopped}
        while more := ackers & {_acker_of(t) for t in handover.staying(select, stays)} - staying:
            staying |= more
        for drain in stopped:
            drain.keeping = drain.acker in staying
        whole, started = handover.let_go(select, stays)
        shut = {d.acker: d for d in stopped if not d.keeping}
        back = [t for t in whole if _acker_of(t) in shut]
        sources = {d.acker: d for d in [*stopped, *self.draining.values()]}
        moves = self._plan([t for t in whole if t not in back], started, sources)
        # The place in the move order, taken before any await: ahead of every intake move
        # of a message consumed meanwhile, behind the moves already in line.
        turn = self._order.take()

        async def work() -> int:
            # The moves in consumption order; a continuation waits for its sent items'
            # answers (a batch or a job in flight), and the moves after it wait with it.
            async with turn:
                await self._to_heads(stopped, back, shut)
                moved = await self._move_out(moves, dict(started))
            if back or moves:
                log.info(
                    "pause of %s: %d requests back to their hold queues' heads, %d moved to "
                    "tails (%d continued)", key, len(back), moved, len(started),
                )  # fmt: skip
            return len(back) + moved

        return self._background(key, work, moves, started, turn)

    def _stop_drains(self, key: PauseKey) -> list[_Drain]:
        """No delivery of a drain ``key`` covers (a target's: its own and its scopes') is
        taken in as usual from here on (called before any await of the pause)."""
        target, scope = key
        stopped = [d for s, d in self.draining.items() if s[0] == key or (
            scope is None and s[0][0] == target)]  # fmt: skip
        for drain in stopped:
            del self.draining[drain.slot]  # paused again while draining: it stays held
            drain.stopped = True
            self.idle.add(drain.slot)
        return stopped

    async def _to_heads(
        self, stopped: list[_Drain], back: list[Tracked], shut: dict[Acker, _Drain]
    ) -> None:
        """Close the stopped drains that keep nothing (``shut``: what they took, ``back``,
        goes back to their hold queues' heads) and cancel the consumers of those that keep
        what they took (their channels close once it is settled)."""
        for drain in shut.values():
            await self._close(drain)
        for drain in stopped:
            if drain.keeping:
                self.stopped.append(drain)
                with contextlib.suppress(Exception):
                    await drain.queue.cancel(drain.tag)
        for tracked in back:
            acker = _acker_of(tracked)
            assert acker is not None
            src = shut[acker].slot[0]
            self.held[src] = self.held.get(src, 0) + len(tracked.pending_ids)

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

    def _plan(
        self,
        whole: list[Tracked],
        started: list[tuple[Tracked, list[str]]],
        sources: dict[Acker, _Drain],
    ) -> list[Move]:
        """Where each request let go of goes (the tail of the hold queue ``key_for`` names),
        in consumption order; each destination counted as being moved into."""
        moves = []
        for tracked in sorted([*whole, *(t for t, _ in started)], key=lambda t: t.seq):
            drain = self._source(tracked, sources)
            held = None if drain is None else drain.slot[0]
            dest = self.key_for(tracked.request, held, tracked.partition)
            assert dest is not None and dest != held  # the pause covers it
            slot = (dest, tracked.partition)
            moves.append((tracked, dest, slot))
            self.idle.add(slot)
            self.moving[slot] = self.moving.get(slot, 0) + 1
        return moves

    async def _copy_to(self, tracked: Tracked, dest: PauseKey, slot: Slot) -> None:
        """A pause's move of a request none of whose ids was sent: its confirmed copy."""
        delivery = tracked.delivery
        assert isinstance(delivery, AmqpDelivery)
        name = self._hold_name(dest, slot[1])
        await self._copy(delivery.message, dest, name, tracked.priority, tracked.consumed_at)

    def _hold_name(self, dest: PauseKey, partition: int | None) -> str:
        return hold_name(self.settings, dest, partition)


_ADVICE = "delete it by hand when no pause of its scope is in force"
