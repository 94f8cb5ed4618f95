"""The priority lane (CONTRACT "Priority lane") against the real RabbitMQ and the emulator's
real limits: urgent requests behind a backlog are answered ahead of it, every id once, no
breach; per-id order across the lanes, for an id the worker holds and for one still queued.
Order and completeness are asserted, never seconds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.integration.harness import Rig, ids

pytestmark = pytest.mark.integration

PRIORITY = ".priority"


def dato(operation: str, *item_ids: str) -> dict[str, Any]:
    return {"operation": f"datocms.items.{operation}", "target": "main", "ids": list(item_ids)}


def limited(r: Rig, per_second: int, **overrides: Any) -> dict[str, str]:
    """A worker env with DatoCMS limited to ``per_second`` (emulator and worker agree)."""
    r.emulator.config.datocms_rate = (per_second, 1.0)
    targets = dict(r.settings().targets)
    targets["main"] = targets["main"].model_copy(update={"rate_limit": f"{per_second}/1s"})
    return r.env(targets=targets, **overrides)


async def until(check: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_urgent_requests_behind_a_backlog_are_answered_ahead_of_it(r: Rig) -> None:
    """3,000 single-id publishes (15 full requests at 6 requests/s, polls counted) are being
    worked off when 5 urgent publishes come on the priority lane: each urgent id goes out in the
    scope's next request and is answered while the backlog is still waiting, every id exactly once, no breach."""
    backlog = ids("b", 3000)
    urgent = ids("u", 5)
    await r.publish_many([dato("publish", i) for i in backlog])
    async with r.worker_process(limited(r, 6, linger_seconds=0.5)):
        await r.results.wait_for(1, timeout=60)  # the backlog is under way
        published = time.monotonic()  # the emulator runs in this process: the same clock
        await asyncio.gather(*(r.publish(dato("publish", u), lane=PRIORITY) for u in urgent))
        await until(lambda: set(urgent) <= {b["id"] for b in r.results.bodies}, 60)
        backlog_done = sum(1 for b in r.results.bodies if b["id"].startswith("b"))
        outcomes = await r.results.wait_for(len(backlog) + len(urgent), timeout=120)
    # Ahead of the backlog in the scope's next request: between the urgent publish and the
    # bulk request that carried the urgent ids, at most the one backlog request that was being
    # sent and what the scope's 6 requests/s let out while a loaded machine takes the
    # urgent message in (3 seen in CI, 0 on a quiet machine); counted in requests, not
    # seconds. Without the lane they would come after all 15. Jobs already in flight finish
    # meanwhile (never overtaken), so answered backlog ids are only bounded loosely.
    jobs = {o["job_id"] for o in outcomes if o["id"] in urgent}
    bulk = [e for e in r.emulator.requests("datocms") if e.method == "POST" and e.items > 0]
    carried = min(e.t for e in bulk if e.job_id in jobs)
    sent_first = [e for e in bulk if published < e.t < carried]
    assert len(sent_first) <= 6, f"{len(sent_first)} backlog requests sent ahead of the urgent ids"
    assert backlog_done <= 2400, f"urgent ids answered only after {backlog_done} backlog ids"
    assert sorted(o["id"] for o in outcomes) == sorted(backlog + urgent)  # each exactly once
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert r.emulator.breaches() == []
    assert await r.queue_depth(r.request_queue + PRIORITY) == 0


async def _order_case(
    r: Rig, first: tuple[str, str], second: tuple[str, str], *, held: bool
) -> str:
    """``first`` then ``second``, each (operation, lane), on the id ``x`` behind a backlog of
    600 ids in 30 messages. ``held``: the worker holds the first (consumed, waiting or in
    flight) when the second comes; otherwise the first is still in its queue (the main
    prefetch full of backlog). Returns the operations on ``x`` in the order answered, and
    checks the record's final state against the last of them."""
    backlog = ids("b", 600)
    await r.publish_many([dato("publish", *backlog[n : n + 20]) for n in range(0, 600, 20)])
    prefetch = 1000 if held else 3
    async with r.worker_process(limited(r, 4, prefetch=prefetch, linger_seconds=0.5)):
        await r.results.wait_for(1, timeout=60)
        await r.publish(dato(first[0], "x"), lane=first[1])
        if held:  # consumed by the worker: nothing ready in either queue
            for queue in (r.request_queue, r.request_queue + PRIORITY):
                await _drained(r, queue)
        else:
            assert await r.queue_depth(r.request_queue + first[1]) > 0
        await r.publish(dato(second[0], "x"), lane=second[1])
        outcomes = await r.results.wait_for(len(backlog) + 2, timeout=120)
    on_x = [o for o in outcomes if o["id"] == "x"]
    assert [o["status"] for o in on_x] == ["succeeded", "succeeded"]
    assert sorted(o["id"] for o in outcomes) == sorted([*backlog, "x", "x"])
    assert r.emulator.breaches() == []
    order = [o["operation"].rsplit(".", 1)[1] for o in on_x]
    final = r.emulator.datocms.record_status("x")
    assert final == ("published" if order[-1] == "publish" else "draft")
    return ",".join(order)


async def _drained(r: Rig, queue: str) -> None:
    async with asyncio.timeout(30):
        while await r.queue_depth(queue):
            await asyncio.sleep(0.02)


async def test_held_main_lane_publish_is_not_overtaken_by_a_priority_unpublish(r: Rig) -> None:
    order = await _order_case(r, ("publish", ""), ("unpublish", PRIORITY), held=True)
    assert order == "publish,unpublish"


async def test_priority_publish_is_not_overtaken_by_a_later_main_lane_unpublish(r: Rig) -> None:
    order = await _order_case(r, ("publish", PRIORITY), ("unpublish", ""), held=True)
    assert order == "publish,unpublish"


async def test_held_main_lane_unpublish_moves_ahead_with_a_priority_publish(r: Rig) -> None:
    order = await _order_case(r, ("unpublish", ""), ("publish", PRIORITY), held=True)
    assert order == "unpublish,publish"


async def test_a_main_lane_publish_still_queued_counts_as_later(r: Rig) -> None:
    """The main lane's message is still in its queue (the prefetch is full of backlog) when
    the priority unpublish comes: the unpublish is consumed first, so it goes first."""
    order = await _order_case(r, ("publish", ""), ("unpublish", PRIORITY), held=False)
    assert order == "unpublish,publish"


async def test_a_main_lane_unpublish_still_queued_counts_as_later(r: Rig) -> None:
    order = await _order_case(r, ("unpublish", ""), ("publish", PRIORITY), held=False)
    assert order == "publish,unpublish"
