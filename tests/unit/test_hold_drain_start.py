"""The start of a hold queue's drain (finding 3 of issue 23's review): from the moment a
resume begins, before its drains' channels are set up, what comes from a queue further out
goes to the tail of the hold queue, not ahead of the held work; and one slot is not
drained twice by racing starts."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from worker.broker.hold import Holds
from worker.control.state import PauseKey

TARGET: PauseKey = ("main", None)


class State:
    """A control state with nothing paused, ``main`` resumed."""

    resumed = {TARGET}

    def pause_of(self, *key: Any) -> None:
        return None

    def paused(self, *key: Any) -> None:
        return None


class Queue:
    def __init__(self, name: str) -> None:
        self.name = name
        self.consumed = 0
        self.declaration_result = SimpleNamespace(message_count=3)

    async def consume(self, callback: Any) -> str:
        self.consumed += 1
        return f"tag-{self.consumed}"

    async def cancel(self, tag: str) -> None:
        return None


class Channel:
    def __init__(self) -> None:
        self.queues: list[Queue] = []
        self.is_closed = False

    async def declare_queue(self, name: str, passive: bool = False) -> Queue:
        self.queues.append(Queue(name))
        return self.queues[-1]

    async def set_qos(self, prefetch_count: int) -> None:
        return None

    async def get_underlay_channel(self) -> Any:
        return object()

    async def close(self) -> None:
        self.is_closed = True


class Connection:
    """``channel()`` waits for ``opened``: the resume is stuck at its first await."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.channels: list[Channel] = []

    async def channel(self) -> Channel:
        await self.opened.wait()
        self.channels.append(Channel())
        return self.channels[-1]


def holds() -> tuple[Holds, Connection]:
    settings = SimpleNamespace(request_queue="bulkops.requests", prefetch=10)
    ackers = SimpleNamespace(start=lambda underlay: SimpleNamespace(outstanding=0))
    session = SimpleNamespace(settings=settings, control=State(), ackers=ackers)
    connection = Connection()
    return Holds(session, connection), connection  # type: ignore[arg-type]


def request() -> Any:
    return SimpleNamespace(
        target="main", scope=None, operation=SimpleNamespace(scope_field="environment")
    )


async def test_a_message_consumed_while_a_resume_sets_up_its_drain_goes_to_the_hold_queue() -> None:
    held, connection = holds()
    resume = asyncio.create_task(held.resume(TARGET))
    await asyncio.sleep(0)  # the resume waits for its channel
    assert held.key_for(request()) == TARGET  # moved to the tail, not accepted ahead
    connection.opened.set()
    await resume
    assert held.key_for(request()) == TARGET  # draining
    assert list(held.draining) == [(TARGET, None)] and not held.starting


async def test_racing_starts_of_one_drain_consume_once() -> None:
    held, connection = holds()
    starts = [
        asyncio.create_task(held.resume(TARGET)),
        asyncio.create_task(held.recheck()),
        asyncio.create_task(held._drain((TARGET, None))),
        asyncio.create_task(held.resume(TARGET)),
    ]
    held.idle.add((TARGET, None))
    await asyncio.sleep(0)
    connection.opened.set()
    await asyncio.gather(*starts)
    consumed = [q.consumed for c in connection.channels for q in c.queues if q.consumed]
    assert consumed == [1]
    assert list(held.draining) == [(TARGET, None)]


async def test_a_hold_queue_that_does_not_exist_is_not_left_filling() -> None:
    import aiormq

    held, connection = holds()

    async def missing(name: str, passive: bool = False) -> Queue:
        raise aiormq.exceptions.ChannelNotFoundEntity("no queue")

    connection.opened.set()
    original = connection.channel

    async def channel() -> Channel:
        made = await original()
        made.declare_queue = missing  # type: ignore[method-assign]
        return made

    connection.channel = channel  # type: ignore[method-assign]
    await held.resume(TARGET)
    assert not held.starting and not held.draining
    assert held.key_for(request()) is None  # runs as usual


async def test_a_hand_over_gives_back_what_its_drains_took_by_closing_their_channels() -> None:
    """Finding 1: ``release`` at a partition's hand-over only cancelled the drain's consumer;
    the unstarted requests it took were forgotten, unacked, until the consumer timeout.
    ``let_go``, once the partition's started work is settled, closes the drain's channel
    (acks flushed first): the broker puts them back at the hold queue's head."""
    from worker.broker.drains import _Drain

    held, _ = holds()
    flushed: list[Any] = []
    stopped: list[Any] = []

    async def flush(acker: Any, timeout: float) -> None:
        flushed.append(acker)

    held.session.ackers = SimpleNamespace(flush=flush, stop=stopped.append)
    drains = {}
    for partition in (1, 2):
        channel, acker = Channel(), SimpleNamespace(outstanding=2)
        queue = await channel.declare_queue(f"held.p{partition}")
        drains[partition] = _Drain((TARGET, partition), channel, queue, acker, "tag")  # type: ignore[arg-type]
        held.draining[(TARGET, partition)] = drains[partition]
    await held.release(2)
    assert list(held.draining) == [(TARGET, 1)]
    assert not drains[2].channel.is_closed  # started work may still ack on it
    await held.let_go(2)
    assert drains[2].channel.is_closed and flushed == stopped == [drains[2].acker]
    assert not drains[1].channel.is_closed
