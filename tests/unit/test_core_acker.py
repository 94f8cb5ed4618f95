"""Settling deliveries (worker/broker/acker.py): which frames go out, in which order. A
recording stand-in for the aiormq channel: the frames are what is tested."""

from __future__ import annotations

import asyncio

import aiormq

from worker.broker.acker import Acker


class Frames:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bool]] = []

    async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
        assert not wait
        self.sent.append(("ack", tag, multiple))

    async def basic_nack(self, tag: int, requeue: bool = True, wait: bool = True) -> None:
        assert not wait
        self.sent.append(("nack", tag, requeue))


async def settle(acker: Acker, *requests: tuple[str, int]) -> None:
    task = asyncio.create_task(acker.run())
    for kind, tag in requests:
        if kind == "ack":
            acker.ack(tag)
        else:
            acker.nack(tag, requeue=True)
    await acker.flush()
    task.cancel()


def acker(delivered: range) -> tuple[Acker, Frames]:
    frames = Frames()
    a = Acker(frames)  # type: ignore[arg-type]
    for tag in delivered:
        a.delivered(tag)
    return a, frames


async def test_a_run_at_the_head_goes_in_one_multiple_ack() -> None:
    a, frames = acker(range(1, 6))
    await settle(a, ("ack", 1), ("ack", 2), ("ack", 3))
    assert frames.sent == [("ack", 3, True)]


async def test_acks_behind_an_unsettled_delivery_go_one_by_one() -> None:
    a, frames = acker(range(1, 6))
    await settle(a, ("ack", 3), ("ack", 2))
    assert frames.sent == [("ack", 2, False), ("ack", 3, False)]
    await settle(a, ("ack", 1))  # the head: 2 and 3 are settled already, not acked again
    assert frames.sent[2:] == [("ack", 1, True)]
    await settle(a, ("ack", 4))
    assert frames.sent[3:] == [("ack", 4, True)]


async def test_a_nack_is_written_before_any_multiple_ack_that_covers_it() -> None:
    a, frames = acker(range(1, 5))
    await settle(a, ("ack", 2), ("nack", 1), ("ack", 3))
    assert frames.sent == [("nack", 1, True), ("ack", 3, True)]


async def test_a_held_delivery_is_never_covered() -> None:
    """Delivery 1 is held (a partition being handed on): nothing may ack it."""
    a, frames = acker(range(1, 5))
    await settle(a, ("ack", 2), ("ack", 3), ("ack", 4))
    assert frames.sent == [("ack", 2, False), ("ack", 3, False), ("ack", 4, False)]


async def test_runs_across_batches_and_a_nack_without_requeue() -> None:
    """What was settled in earlier batches joins a later run at the head; a dead-letter nack
    (requeue=False) counts as settled like a requeue."""
    frames = Frames()
    a = Acker(frames)  # type: ignore[arg-type]
    for tag in range(1, 7):
        a.delivered(tag)
    task = asyncio.create_task(a.run())
    a.ack(3)
    await a.flush()
    a.nack(2, requeue=False)
    await a.flush()
    a.ack(1)
    a.ack(4)
    await a.flush()
    a.ack(6)
    await a.flush()
    task.cancel()
    assert frames.sent == [
        ("ack", 3, False),
        ("nack", 2, False),
        ("ack", 4, True),  # 1 to 4: 2 and 3 settled before, 1 and 4 now
        ("ack", 6, False),  # 5 is still out
    ]


async def test_a_closed_channel_fails_the_batch_not_the_acker() -> None:
    class ClosedOnce(Frames):
        closed = True

        async def basic_ack(self, tag: int, multiple: bool = False, wait: bool = True) -> None:
            if self.closed:
                self.closed = False
                raise aiormq.exceptions.ChannelInvalidStateError("closed")
            await super().basic_ack(tag, multiple, wait)

    frames = ClosedOnce()
    a = Acker(frames)  # type: ignore[arg-type]
    a.delivered(1)
    a.delivered(2)
    task = asyncio.create_task(a.run())
    a.ack(1)
    await a.flush()
    assert not task.done()  # the error ended that batch only
    a.ack(2)
    await a.flush()
    task.cancel()
    assert frames.sent == [("ack", 2, True)]
