"""Moving requests out to hold queues (``worker.broker.hold``, whose docstring has the rules):
the order of the moves, a pause's move-out running in the background, and what stops it.

A pause decides what leaves and takes its place in the move order synchronously, inside the
control record's handling; the moves themselves (a continuation among them may wait minutes
for its sent items' answers) run in a task of their own, so the control records after it
(status, resume, cancel) are not held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from worker.broker.acker import Acker, AmqpDelivery
from worker.broker.drains import Slot, log
from worker.control.state import PauseKey
from worker.pipeline import continuation
from worker.pipeline.requests import Tracked

Move = tuple[Tracked, PauseKey, Slot]  # a request, the hold queue it goes to, and its slot
STEP_SECONDS = 10.0  # at most this long for a move under way to end (a copy's confirm)


class Turn:
    """One place in a ``Turns`` order, taken synchronously; ``async with turn`` waits for
    the places before it. Released once (its ``async with`` ends, or ``release``): a turn
    never entered (its task cancelled before it started) must be released all the same."""

    __slots__ = ("_before", "_done")

    def __init__(self, before: asyncio.Future[None] | None, done: asyncio.Future[None]) -> None:
        self._before = before
        self._done = done

    async def __aenter__(self) -> None:
        before = self._before
        if before is not None and not before.done():
            try:
                await asyncio.shield(before)
            except asyncio.CancelledError:
                self.release()  # the turns behind it wait for the one before it only
                raise

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """The turns behind this one may go once the ones before it are over."""
        done, before = self._done, self._before
        if done.done():
            return
        if before is None or before.done():
            done.set_result(None)
        else:
            before.add_done_callback(lambda _: _finished(done))


def _finished(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


class Turns:
    """First come, first served, the place in line taken without awaiting anything (an
    ``asyncio.Lock`` is fair too, but its place is taken only when ``acquire`` runs)."""

    def __init__(self) -> None:
        self._last: asyncio.Future[None] | None = None

    def take(self) -> Turn:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        turn = Turn(self._last, done)
        self._last = done
        return turn


class _Moves:
    """The move-out side of ``Holds``: the pauses' background moves, and when they stop."""

    session: Any
    moving: dict[Slot, int]
    moved: int
    held: dict[PauseKey, int]
    closed: bool
    _order: Turns
    pausing: set[asyncio.Task[int]]
    halting: bool
    given_back: set[Acker]
    handed: set[int]

    if TYPE_CHECKING:  # ``Holds``' (not defined here: they would hide the real ones)

        async def _copy_to(self, tracked: Tracked, dest: PauseKey, slot: Slot) -> None: ...

        async def _continue(self, tracked: Tracked, name: str, ids: list[str]) -> bool: ...

        def _hold_name(self, dest: PauseKey, partition: int | None) -> str: ...

    def _background(
        self,
        key: PauseKey,
        work: Callable[[], Coroutine[Any, Any, int]],
        moves: list[Move],
        started: list[tuple[Tracked, list[str]]],
        turn: Turn,
    ) -> asyncio.Task[int]:
        """Run a pause's moves (``work``, which enters ``turn``) as a task of this session,
        tracked in ``pausing``; when it ends, however it ends, its destinations are no longer
        counted as being moved into and its continued requests no longer as continuing."""
        task = asyncio.get_running_loop().create_task(work(), name=f"pause of {key}")
        self.pausing.add(task)

        def over(done: asyncio.Task[int]) -> None:
            self.pausing.discard(done)
            turn.release()
            for _, _, slot in moves:
                self.moving[slot] -= 1
            self.session.settlement.continuing.difference_update(t for t, _ in started)
            if not done.cancelled() and done.exception() is not None:
                exc = done.exception()
                log.error("pause of %s: moving out failed (%s: %s); what was not moved goes "
                          "back with its channel", key, type(exc).__name__, exc)  # fmt: skip

        task.add_done_callback(over)
        return task

    def _skipped(self, acker: Acker | None, partition: int | None) -> bool:
        """Whether a move from ``acker``'s channel must not be made: the session stops past
        its drain timeout (``halting``), an earlier continuation from that channel was given
        back (a later request must not reach a hold queue ahead of it), the partition was
        handed on, or the channel is closed (the broker took its messages back). What is not
        moved stays unacked and goes back with its channel, in delivery order."""
        if self.halting or self.closed or acker in self.given_back or partition in self.handed:
            return True
        channel = getattr(acker, "channel", None)
        return bool(getattr(channel, "is_closed", False))

    async def _move_out(self, moves: list[Move], withdrawn: dict[Tracked, list[str]]) -> int:
        """Make the ``moves`` (in ``_order``'s turn): whole requests as they are, continued
        ones (``withdrawn``: the ids withdrawn from them) as continuations; how many were
        made. After a continuation given back, nothing more from its channel is moved."""
        moved = 0
        for tracked, dest, slot in moves:
            acker = _acker_of(tracked)
            if self._skipped(acker, tracked.partition):
                continue
            ids = withdrawn.get(tracked)
            if ids is None:
                delivery = tracked.delivery
                assert isinstance(delivery, AmqpDelivery)
                await self._copy_to(tracked, dest, slot)
                await delivery.ack()
                count = len(tracked.pending_ids)
            elif await self._continue(tracked, self._hold_name(dest, slot[1]), ids):
                count = len(ids)
            else:
                if acker is not None:
                    self.given_back.add(acker)
                continue
            moved += 1
            self.moved += 1
            self.held[dest] = self.held.get(dest, 0) + count
        return moved

    def moving_of(self, partition: int | None) -> int:
        """Moves under way or waiting, of ``partition`` (None: of all)."""
        return sum(n for (_, p), n in self.moving.items() if partition is None or p == partition)

    @property
    def quiet(self) -> bool:
        """No pause is moving out and no message is being moved in."""
        return not self.pausing and not self.moving_of(None)

    async def halt(self, timeout: float = STEP_SECONDS) -> None:
        """A graceful stop past its drain timeout: no further move; wait (at most
        ``timeout``) for the moves under way to end. A continuation still waiting for its
        sent items gives up: its original stays unacked, whole, for its channel's close."""
        self.halting = True
        await self._settled(None, timeout)
        for task in list(self.pausing):  # stuck on a confirm: give up on it
            task.cancel()
        if self.pausing:
            await asyncio.wait(list(self.pausing))

    async def _settled(self, partition: int | None, timeout: float) -> None:
        """Wait (at most ``timeout``) until nothing is moved (of ``partition``, or at all)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.moving_of(partition) and (partition is not None or not self.pausing):
                return
            await asyncio.sleep(0.05)

    async def end(self) -> None:
        """The session is over: continuations still waiting give up, moves still running
        are cancelled (their channels are gone: the broker took their messages back)."""
        self.closed = True
        for task in list(self.pausing):
            task.cancel()
        if self.pausing:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(self.pausing))


def _acker_of(tracked: Tracked) -> Acker | None:
    delivery = tracked.delivery
    if isinstance(delivery, continuation.Continuing):
        delivery = delivery.original
    return delivery.acker if isinstance(delivery, AmqpDelivery) else None
