"""The priority lane in the pure core: urgent items in the coalescer (ahead of the backlog, per-id
order across lanes), the dispatcher's decision (urgent first, past the in-flight cap, the
backlog's share), and the limiter serving an urgent waiter first."""

from __future__ import annotations

import asyncio
import dataclasses

from worker.batching import BatchKey, Coalescer, Item
from worker.limiter import Limiter, Rate
from worker.pipeline.decisions import Pace, Step, decide
from worker.registry import OPERATIONS

OP = dataclasses.replace(OPERATIONS["datocms.items.publish"], max_items=3)
UNOP = dataclasses.replace(OPERATIONS["datocms.items.unpublish"], max_items=3)
KEY = BatchKey(OP.name, "main", None)
UNKEY = BatchKey(UNOP.name, "main", None)
PACE = Pace(linger=0.3, scarce=False, max_inflight=1, backlog_every=2)


def room() -> float:
    return 0.0


def add(c: Coalescer, item_id: str, *, urgent: bool = False, key: BatchKey = KEY) -> Item:
    op = OP if key == KEY else UNOP
    return c.add(op, key, item_id, object(), 1.0, urgent=urgent)


def ids(batch: list[Item]) -> list[str]:
    return [item.id for item in batch]


def test_urgent_items_lead_the_next_batch_and_the_backlog_fills_it() -> None:
    c = Coalescer()
    for n in range(5):
        add(c, f"b{n}")
    add(c, "u1", urgent=True)
    add(c, "u2", urgent=True)
    assert ids(c.take(KEY)) == ["u1", "u2", "b0"]
    assert ids(c.take(KEY)) == ["b1", "b2", "b3"]


def test_backlog_first_take_puts_the_backlog_ahead() -> None:
    c = Coalescer()
    add(c, "u1", urgent=True)
    add(c, "b0")
    assert ids(c.take(KEY, backlog_first=True)) == ["b0", "u1"]


def test_an_urgent_operation_on_a_waiting_id_moves_ahead_with_it_in_order() -> None:
    """Publish x (main lane, waiting) then unpublish x (priority lane): the publish becomes
    urgent and goes first; the unpublish follows it, never before."""
    c = Coalescer()
    for n in range(5):
        add(c, f"b{n}")
    publish = add(c, "x")  # waiting behind 5 backlog ids
    unpublish = add(c, "x", urgent=True, key=UNKEY)
    assert publish.urgent and unpublish.urgent
    assert c.due_in(UNKEY, 1.0, 0.3) is None  # not ready: behind the publish on its id
    assert ids(c.take(KEY)) == ["x", "b0", "b1"]
    assert c.done(publish, 2.0) is unpublish
    assert ids(c.take(UNKEY)) == ["x"]


def test_an_urgent_operation_waits_for_the_one_in_flight_on_its_id() -> None:
    c = Coalescer()
    publish = add(c, "x")
    assert ids(c.take(KEY)) == ["x"]  # in flight
    unpublish = add(c, "x", urgent=True, key=UNKEY)
    assert c.size(UNKEY) == 0
    assert c.done(publish, 2.0) is unpublish
    assert c.urgent_since(UNKEY) is not None


def test_an_urgent_request_joining_a_waiting_equal_item_makes_it_urgent() -> None:
    c = Coalescer()
    add(c, "b0")
    add(c, "b1")
    add(c, "b2")
    joined = add(c, "b2", urgent=True)
    assert joined.urgent and len(joined.waiters) == 2
    assert ids(c.take(KEY))[0] == "b2"


def test_a_backlog_operation_after_an_urgent_one_stays_behind_it() -> None:
    c = Coalescer()
    unpublish = add(c, "x", urgent=True, key=UNKEY)
    publish = add(c, "x")
    assert not publish.urgent
    assert c.size(KEY) == 0
    assert ids(c.take(UNKEY)) == ["x"]
    assert c.done(unpublish, 2.0) is publish


def test_urgent_is_due_at_once_and_passes_the_inflight_cap() -> None:
    c = Coalescer()
    add(c, "b0")
    assert decide(c, {KEY}, 2.0, PACE, 1, room) == Step(None)  # due, but capped
    add(c, "u", urgent=True, key=UNKEY)
    assert decide(c, {KEY, UNKEY}, 1.0, PACE, 1, room) == Step(UNKEY, urgent=True)


def test_urgent_waits_for_room_like_any_request() -> None:
    c = Coalescer()
    add(c, "u", urgent=True)
    assert decide(c, {KEY}, 1.0, PACE, 0, lambda: 2.5) == Step(None, 2.5)


def test_the_backlog_keeps_its_share() -> None:
    c = Coalescer()
    add(c, "b0", key=UNKEY)
    add(c, "u", urgent=True)
    assert decide(c, {KEY, UNKEY}, 1.0, PACE, 0, room, backlog_turn=False).key == KEY
    turn = decide(c, {KEY, UNKEY}, 1.0, PACE, 0, room, backlog_turn=True)
    assert turn == Step(UNKEY, backlog_first=True)
    # Its turn passes the cap on batches in flight, as urgent batches do: a flood of urgent
    # jobs that keeps the cap full cannot starve the backlog for good (review of issue 22).
    at_cap = decide(c, {KEY, UNKEY}, 1.0, PACE, PACE.max_inflight, room, backlog_turn=True)
    assert at_cap == Step(UNKEY, backlog_first=True)


def test_discarding_keeps_both_sides_consistent() -> None:
    c = Coalescer()
    add(c, "b0")
    add(c, "u", urgent=True)
    dropped = c.discard_unsent(lambda item: item.urgent)
    assert ids(dropped) == ["u"]
    assert c.size(KEY) == 1 and c.urgent_since(KEY) is None


async def test_the_limiter_serves_an_urgent_waiter_before_earlier_ones() -> None:
    now = [0.0]
    limiter = Limiter(Rate(1, 1), clock=lambda: now[0])
    first = await limiter.hold()
    first.spend()
    order: list[str] = []

    async def wait(name: str, urgent: bool) -> None:
        hold = await limiter.hold(urgent)
        hold.spend()
        order.append(name)

    backlog = asyncio.create_task(wait("backlog", False))
    await asyncio.sleep(0)
    urgent = asyncio.create_task(wait("urgent", True))
    await asyncio.sleep(0)
    now[0] = 1.5  # one slot frees
    await asyncio.wait_for(urgent, 5)
    assert order == ["urgent"]
    now[0] = 3.0
    await asyncio.wait_for(backlog, 5)
    assert order == ["urgent", "backlog"]


async def test_the_limiter_keeps_the_backlogs_share_under_a_flood_of_urgent_waiters() -> None:
    """Polls of backlog jobs are not starved by a flood of urgent requests and polls: after
    ``backlog_every`` urgent slots in a row while one waits, it gets the next slot."""
    limiter = Limiter(Rate(1, 0.02))  # the real clock, one slot every 20 ms
    limiter.backlog_every = 3
    (await limiter.hold()).spend()
    order: list[str] = []

    async def wait(name: str, urgent: bool) -> None:
        hold = await limiter.hold(urgent)
        hold.spend()
        order.append(name)

    backlog = asyncio.create_task(wait("backlog", False))
    await asyncio.sleep(0)
    urgent = [asyncio.create_task(wait(f"u{n}", True)) for n in range(6)]
    await asyncio.wait_for(asyncio.gather(backlog, *urgent), 5)
    assert order == ["u0", "u1", "u2", "backlog", "u3", "u4", "u5"]
