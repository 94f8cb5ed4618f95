"""Hold queues of resumed scopes nobody drains, partitioned (finding 5 of issue 23's review;
``worker.broker.strays``): which are found, and what a replica does about each: drains those
of partitions it owns, leaves one marker for another partition, none while the hold queue
has a consumer, the partition queue holds messages, the partition is being handed on, or a
marker went there in this sweep; paused keys are not probed, and a missing hold queue is
probed again by a sweep only later (a failed passive declare closes the probing channel)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiormq
import pytest

from worker.broker.drains import hold_name
from worker.broker.strays import Strays
from worker.control.state import PauseKey

WIDE: PauseKey = ("main", None)
NARROW: PauseKey = ("shop", ("catalog_id", "cat-0"))
PAUSED: PauseKey = ("shop", ("catalog_id", "cat-9"))
SETTINGS = SimpleNamespace(request_queue="q", partitions=3)


class State:
    resumed = {WIDE, NARROW, PAUSED}

    def paused(self, target: str, scope: Any) -> object | None:
        return object() if (target, scope) == PAUSED else None


class Channel:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.is_closed = False

    async def declare_queue(self, name: str, passive: bool = False) -> Any:
        assert passive
        self.broker.probed.append(name)
        if name not in self.broker.queues:
            self.is_closed = True  # as the broker does after a 404
            raise aiormq.exceptions.ChannelNotFoundEntity(name)
        messages, consumers = self.broker.queues[name]
        result = SimpleNamespace(message_count=messages, consumer_count=consumers)
        return SimpleNamespace(declaration_result=result)


class Broker:
    """The queues (name -> (ready messages, consumers)), what was probed, channels opened."""

    def __init__(self, queues: dict[str, tuple[int, int]]) -> None:
        self.queues = queues
        self.probed: list[str] = []
        self.channels = 0

    async def channel(self) -> Channel:
        self.channels += 1
        return Channel(self)


class FakeHolds:
    def __init__(self) -> None:
        self.adopting: set[int] = set()
        self.drained: list[tuple[PauseKey, int]] = []

    async def _drain(self, slot: tuple[PauseKey, int]) -> None:
        self.drained.append(slot)


def strays(
    queues: dict[str, tuple[int, int]], owned: tuple[int, ...] = (), holding: tuple[int, ...] = ()
) -> tuple[Strays, Broker, FakeHolds, list[int]]:
    broker = Broker(queues)
    holds = FakeHolds()
    intake = SimpleNamespace(settings=SETTINGS, control=State(), holds=holds)
    held = SimpleNamespace(owned=dict.fromkeys(owned, 0.0), holding=set(holding))
    marks: list[int] = []

    async def mark(index: int) -> None:
        marks.append(index)

    return Strays(broker, intake, held, mark, asyncio.Event()), broker, holds, marks  # type: ignore[arg-type]


def held(key: PauseKey, index: int) -> str:
    return hold_name(SETTINGS, key, index)  # type: ignore[arg-type]


def partition_queues(**ready: int) -> dict[str, tuple[int, int]]:
    return {f"q.p{i}": (ready.get(f"p{i}", 0), 1) for i in range(3)}


async def test_a_marker_for_a_partition_not_owned_a_drain_for_one_owned() -> None:
    queues = {
        held(WIDE, 0): (2, 0), held(NARROW, 0): (1, 0),  # partition 0: owned, both stray
        held(WIDE, 1): (3, 0),  # partition 1: not owned
        held(WIDE, 2): (0, 0), held(NARROW, 2): (4, 1),  # empty; drained already
        held(PAUSED, 1): (5, 0),  # paused: not ours to touch
        **partition_queues(),
    }  # fmt: skip
    finder, broker, holds, marks = strays(queues, owned=(0,))
    await finder.beckon()
    assert holds.drained == [(NARROW, 0), (WIDE, 0)]  # inner ones first
    assert marks == [1]
    assert not any(name == held(PAUSED, 1) for name in broker.probed)


async def test_no_marker_while_the_partition_queue_holds_messages_or_is_handed_on() -> None:
    queues = {held(WIDE, 0): (2, 0), held(WIDE, 1): (2, 0), **partition_queues(p0=7)}
    finder, _, holds, marks = strays(queues, holding=(1,))
    await finder.beckon()
    assert (marks, holds.drained) == ([], [])


async def test_one_marker_per_partition_per_sweep() -> None:
    queues = {held(WIDE, 2): (2, 0), held(NARROW, 2): (2, 0), **partition_queues()}
    finder, _, _, marks = strays(queues)
    await finder.beckon(None, marked={2})  # the priority sweep left one there already
    assert marks == []
    await finder.beckon()
    assert marks == [2]  # one for both hold queues


@pytest.mark.parametrize("fresh", [False, True])
async def test_a_missing_hold_queue_is_probed_again_by_a_sweep_only_later(fresh: bool) -> None:
    finder, broker, _, marks = strays(partition_queues())
    await finder.beckon()
    first = len(broker.probed)
    assert first == 6 and broker.channels == 6  # 2 keys x 3 partitions, each a 404
    broker.queues[held(WIDE, 1)] = (1, 0)  # a late move made it
    await finder.beckon([WIDE] if fresh else None)  # a resume probes afresh, a sweep not
    assert marks == ([1] if fresh else [])
