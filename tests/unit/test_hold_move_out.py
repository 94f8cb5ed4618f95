"""A pause's move-out (issue 23's review, findings 4 and 7): its place in the move order is
taken synchronously (``Turns``), and after a continuation is given back nothing more from
its channel reaches a hold queue (the original comes back later: a later request moved to
the hold queue's tail meanwhile would be ahead of it, per-id order broken)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from worker.broker import continuing
from worker.broker.acker import AmqpDelivery
from worker.broker.hold import Holds
from worker.broker.moving import Turns
from worker.control.state import PauseKey
from worker.pipeline.continuation import Continuing

TARGET: PauseKey = ("main", None)


class Acker:
    """An Acker that records what it is asked (one per channel)."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.nacked: list[int] = []
        self.channel = SimpleNamespace(is_closed=False)

    def ack(self, tag: int) -> None:
        self.acked.append(tag)

    def nack(self, tag: int, requeue: bool) -> None:
        self.nacked.append(tag)


@dataclass(eq=False)
class Request:
    tag: int
    target: str = "main"
    scope: str | None = None
    operation: Any = field(default_factory=lambda: SimpleNamespace(scope_field="environment"))


@dataclass(eq=False)
class Tracked:
    delivery: Any
    request: Request
    seq: int
    partition: int | None = None
    priority: bool = False
    consumed_at: float = 0.0
    held: bool = False
    pending_ids: tuple[str, ...] = ("x",)


class State:
    """The whole target ``main`` paused."""

    resumed: set[PauseKey] = set()

    def pause_of(self, target: str, scope: Any) -> object | None:
        return object() if (target, scope) == TARGET else None

    def paused(self, target: str, scope: Any) -> object | None:
        return self.pause_of(target, None)


def message(tag: int) -> Any:
    return SimpleNamespace(delivery_tag=tag, body=b"{}", headers={}, timestamp=None)


def rig(
    whole: list[Tracked], started: list[tuple[Tracked, list[str]]]
) -> tuple[Holds, list[int], Any]:
    """Holds over a fake session whose ``let_go`` lets go of ``whole`` and ``started``; the
    tags of the copies made go to the returned list."""
    handover = SimpleNamespace(
        staying=lambda select, stays: set(),
        let_go=lambda select, stays: (whole, started),
    )
    settlement = SimpleNamespace(
        tracked={t for t, _ in started}, continuing={t for t, _ in started}
    )
    session = SimpleNamespace(
        settings=SimpleNamespace(request_queue="bulkops.requests", prefetch=10),
        control=State(),
        engine=SimpleNamespace(handover=handover),
        settlement=settlement,
    )
    holds = Holds(session, connection=None)  # type: ignore[arg-type]
    copies: list[int] = []

    async def copy(msg: Any, key: Any, name: str, priority: bool, at: Any) -> None:
        copies.append(msg.delivery_tag)

    async def publish(copy: Any, name: str, what: str) -> None:
        copies.append(-1)  # a continuation

    async def declare(name: str) -> None:
        return None

    holds._copy = copy  # type: ignore[method-assign,assignment]
    holds._publish_held = publish  # type: ignore[method-assign]
    holds._declare = declare  # type: ignore[method-assign]
    return holds, copies, settlement


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(continuing, "CONTINUE_CHECK_SECONDS", 0.01)


async def test_nothing_from_its_channel_is_moved_after_a_continuation_given_back() -> None:
    """A (started, continued) then B (whole), both from one channel: A is given back while
    it waits for its sent items (a partition handed on took it): B must not be copied to the
    hold queue's tail (A would come back behind it); it stays unacked for the channel's
    close, which puts both back in delivery order. C, from another channel, still moves."""
    acker, other = Acker(), Acker()
    a = Tracked(Continuing(AmqpDelivery(message(1), acker)), Request(1), seq=1)  # type: ignore[arg-type]
    b = Tracked(AmqpDelivery(message(2), acker), Request(2), seq=2)  # type: ignore[arg-type]
    c = Tracked(AmqpDelivery(message(3), other), Request(3), seq=3)  # type: ignore[arg-type]
    holds, copies, settlement = rig([b, c], [(a, ["x"])])
    task = holds.pause(TARGET)
    await asyncio.sleep(0.05)  # A waits for its sent items
    assert copies == [] and not task.done()
    settlement.tracked.discard(a)  # given back (a hand-over's retire)
    moved = await asyncio.wait_for(task, 5)
    assert copies == [3]  # only C
    assert acker.acked == [] and acker.nacked == []  # A and B: for the channel's close
    assert other.acked == [3]
    assert moved == 1
    await asyncio.sleep(0)  # the task's end is recorded
    assert not holds.pausing and not any(holds.moving.values())
    assert not settlement.continuing


async def test_an_intake_move_from_that_channel_after_it_is_not_made_either() -> None:
    """A message consumed from the same channel after the pause waits for the move-out (its
    turn comes after it) and, A given back, is not moved ahead of A either."""
    acker = Acker()
    a = Tracked(Continuing(AmqpDelivery(message(1), acker)), Request(1), seq=1)  # type: ignore[arg-type]
    holds, copies, settlement = rig([], [(a, ["x"])])
    task = holds.pause(TARGET)
    later = AmqpDelivery(message(9), acker)  # type: ignore[arg-type]
    intake = asyncio.create_task(holds.move(later.message, later, TARGET, False, 1))
    await asyncio.sleep(0.05)
    assert copies == [] and not intake.done()  # behind the pause's move-out
    settlement.tracked.discard(a)
    await asyncio.wait_for(asyncio.gather(task, intake), 5)
    assert copies == [] and acker.acked == []


async def test_a_pause_takes_its_place_in_the_move_order_before_any_await() -> None:
    """The pause returns at once (its moves in a task); an intake move started right after
    it is made after the pause's moves, in order, though the pause has not run yet."""
    acker = Acker()
    b = Tracked(AmqpDelivery(message(2), acker), Request(2), seq=2)  # type: ignore[arg-type]
    holds, copies, _ = rig([b], [])
    task = holds.pause(TARGET)  # not awaited: the control record's handling goes on
    later = AmqpDelivery(message(5), acker)  # type: ignore[arg-type]
    await holds.move(later.message, later, TARGET, False, 1)
    assert await task == 1
    assert copies == [2, 5]
    assert acker.acked == [2, 5]


async def test_turns_are_served_in_the_order_taken_even_when_one_is_cancelled() -> None:
    turns = Turns()
    order: list[str] = []
    first, second, third = turns.take(), turns.take(), turns.take()

    async def run(name: str, turn: Any, hold: asyncio.Event | None = None) -> None:
        async with turn:
            order.append(name)
            if hold is not None:
                await hold.wait()

    release = asyncio.Event()
    c = asyncio.create_task(run("third", third))
    b = asyncio.create_task(run("second", second))
    a = asyncio.create_task(run("first", first, release))
    await asyncio.sleep(0.01)
    assert order == ["first"]
    b.cancel()  # waiting: its place is given up, the one behind it still waits for "first"
    await asyncio.sleep(0.01)
    assert order == ["first"]
    release.set()
    await asyncio.gather(a, c)
    assert order == ["first", "third"]
    never = Turns()
    skipped = never.take()
    skipped.release()  # taken, never entered (its task cancelled before it started)
    async with asyncio.timeout(1):
        async with never.take():
            pass
