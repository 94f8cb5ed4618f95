"""Settling deliveries (worker/broker.py Acker): which frames go out, in which order. A
recording stand-in for the aiormq channel: the frames are what is tested."""

from __future__ import annotations

import asyncio
from typing import Any

import aiormq

from worker.broker import Acker


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
    assert all(tag != 1 for _, tag, _ in frames.sent)
    assert all(not multiple for kind, _, multiple in frames.sent if kind == "ack")


async def test_a_closed_channel_ends_nothing_but_the_batch() -> None:
    class Closed(Frames):
        async def basic_ack(self, *args: Any, **kwargs: Any) -> None:
            raise aiormq.exceptions.ChannelInvalidStateError("closed")

    a = Acker(Closed())  # type: ignore[arg-type]
    a.delivered(1)
    await settle(a, ("ack", 1))  # flush returns: the failed batch counts as done
