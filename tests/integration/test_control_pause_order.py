"""Per-id order through the hold queues (CONTRACT "Control", issue 23) when pauses and
resumes cross: a scope paused again while its hold queue is being drained, and a target
pause with a pause of one of its scopes, resumed in either order. Each case holds a
``publish`` then an ``unpublish`` of the same DatoCMS records: run in their order, every
record ends unpublished; run the other way round, published.

The drain is caught at the right moment by its state, not by time: a prefetch of 1 lets the
drain take one message at a time (the hold queue's ready count drops by one when it does),
and a long linger keeps what it took unsent meanwhile (nothing reaches the emulator)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from tests.integration.harness import Rig, ids, in_force
from tests.integration.harness import probe_depth as depth
from worker.broker.hold import hold_name
from worker.client.control import ControlClient

pytestmark = pytest.mark.integration

PRIMARY: dict[str, str | None] = {"environment": None}  # the scope of the records below


def op(operation: str, record_ids: list[str]) -> dict[str, Any]:
    return {"operation": f"datocms.items.{operation}", "target": "main", "ids": record_ids}


async def until_depth(r: Rig, name: str, expected: int | None, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while await depth(r, name) != expected:
            await asyncio.sleep(0.05)


async def cleanup(r: Rig, *names: str) -> None:
    for name in names:
        if await depth(r, name) is not None:
            await r.channel.queue_delete(name)


def check(r: Rig, outcomes: list[dict[str, Any]], records: list[str]) -> None:
    """Each operation answered once and succeeded, the records unpublished (the unpublish
    ran last), no rate limit breached."""
    by_op = collections.Counter((o["operation"], o["id"]) for o in outcomes)
    assert len(outcomes) == 2 * len(records) and set(by_op.values()) == {1}
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert {r.emulator.datocms.record_status(i) for i in records} == {"draft"}
    assert r.emulator.breaches() == []


async def test_paused_again_while_draining_keeps_per_id_order(r: Rig) -> None:
    """publish X, unpublish X held; on resume the drain takes the publish (not yet sent)
    and the target is paused again: the publish goes back to the head of the hold queue,
    not behind the unpublish; after the second resume X ends unpublished."""
    settings = r.settings(prefetch=1, linger_seconds=3.0)
    url = settings.amqp_url.get_secret_value()
    hold = hold_name(settings, ("main", None))
    records = ids("again", 5)
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        await control.pause("main", reason="first")
        await r.publish(op("publish", records))
        await r.publish(op("unpublish", records))
        try:
            async with r.worker(settings):
                await until_depth(r, hold, 2)
                await control.resume("main")
                await until_depth(r, hold, 1)  # the drain took the publish (prefetch 1)
                assert r.emulator.requests(api="datocms") == []  # lingering, unsent
                await control.pause("main", reason="again")
                await until_depth(r, hold, 2)  # both held again
                assert r.emulator.requests(api="datocms") == []
                await control.resume("main")
                outcomes = await r.results.wait_for(2 * len(records), timeout=30)
                await until_depth(r, hold, 0)
                assert await r.queue_depth(r.request_queue) == 0
        finally:
            await cleanup(r, hold)
    check(r, outcomes, records)


async def test_target_then_scope_pause_resumed_target_first_keeps_per_id_order(r: Rig) -> None:
    """The target paused (publish X held), then its scope too (unpublish X held); the target
    resumed while the scope stays paused: the publish must not land behind the unpublish;
    after the scope's resume X ends unpublished."""
    settings = r.settings(prefetch=1, linger_seconds=0.2)
    url = settings.amqp_url.get_secret_value()
    wide = hold_name(settings, ("main", None))
    narrow = hold_name(settings, ("main", ("environment", None)))
    records = ids("wide", 5)
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):
                await control.pause("main", reason="target")
                await r.publish(op("publish", records))
                await until_depth(r, wide, 1)
                await control.pause("main", reason="scope", **PRIMARY)
                await r.publish(op("unpublish", records))
                await until_held(r, [wide, narrow], 2)
                await control.resume("main")
                await until_depth(r, narrow, 2)  # the scope is still paused: all held there
                await until_depth(r, wide, 0)
                assert r.emulator.requests(api="datocms") == []
                await control.resume("main", **PRIMARY)
                outcomes = await r.results.wait_for(2 * len(records), timeout=30)
                await until_depth(r, narrow, 0)
                await until_depth(r, wide, 0)
                assert await r.queue_depth(r.request_queue) == 0
        finally:
            await cleanup(r, wide, narrow)
    check(r, outcomes, records)


async def test_scope_then_target_pause_resumed_scope_first_keeps_per_id_order(r: Rig) -> None:
    """The scope paused (publish X held), then the whole target (unpublish X held); the scope
    resumed while the target stays paused, then the target: X ends unpublished. A second
    batch published right after the scope's resume (while the target is paused) must come
    after what the scope's hold queue had."""
    settings = r.settings(prefetch=1, linger_seconds=0.2)
    url = settings.amqp_url.get_secret_value()
    wide = hold_name(settings, ("main", None))
    narrow = hold_name(settings, ("main", ("environment", None)))
    records, filler = ids("narrow", 5), ids("fill", 40)
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):
                await control.pause("main", reason="scope", **PRIMARY)
                for n in range(0, 40, 2):  # ahead of the publish in the scope's hold queue
                    await r.publish(op("publish", filler[n : n + 2]))
                await r.publish(op("publish", records))
                await until_depth(r, narrow, 21)
                await control.pause("main", reason="target")
                await control.resume("main", **PRIMARY)
                await r.publish(op("unpublish", records))
                await until_held(r, [wide, narrow], 22)
                assert r.emulator.requests(api="datocms") == []
                await control.resume("main")
                outcomes = await r.results.wait_for(2 * len(records) + 40, timeout=60)
                await until_depth(r, narrow, 0)
                await until_depth(r, wide, 0)
                assert await r.queue_depth(r.request_queue) == 0
        finally:
            await cleanup(r, wide, narrow)
    mine = [o for o in outcomes if o["id"] in records]
    check(r, mine, records)
    assert sorted(o["id"] for o in outcomes if o["id"] not in records) == sorted(filler)


async def until_held(r: Rig, names: list[str], expected: int, timeout: float = 20.0) -> None:
    """Until the hold queues together have ``expected`` ready messages."""
    async with asyncio.timeout(timeout):
        while sum([await depth(r, n) or 0 for n in names]) != expected:
            await asyncio.sleep(0.05)


async def test_a_wider_pause_leaves_what_a_kept_drain_took_in_the_worker(r: Rig) -> None:
    """Review finding (8). The scope's hold queue holds P1 (publish of 200 records A), P2
    (publish of B) and P3 (unpublish of B). On the scope's resume its drain takes P1 and P2
    (prefetch 2); P1 goes out at once (a full batch, its job slow), P2 lingers. The scope is
    paused again: P1 is started, so the drain keeps what it took in the worker (P2 unsent).
    Then the whole target is paused: P2 must stay in the worker, not go to the tail of the
    target's hold queue, whence it would come back behind P3 (B would end published)."""
    r.emulator.config.datocms_job_seconds_by_action = {"publish": 3.0}
    settings = r.settings(prefetch=2, linger_seconds=3.0)
    url = settings.amqp_url.get_secret_value()
    wide = hold_name(settings, ("main", None))
    narrow = hold_name(settings, ("main", ("environment", None)))
    first, records = ids("kept-a", 200), ids("kept-b", 3)
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):
                await control.pause("main", reason="scope", **PRIMARY)
                await r.publish(op("publish", first))
                await r.publish(op("publish", records))
                await r.publish(op("unpublish", records))
                await until_depth(r, narrow, 3)
                await control.resume("main", **PRIMARY)
                await until_depth(r, narrow, 1)  # the drain took P1 and P2
                async with asyncio.timeout(20):
                    while not r.emulator.requests(path_contains="/items/bulk/publish"):
                        await asyncio.sleep(0.05)
                await control.pause("main", reason="scope again", **PRIMARY)
                await in_force(control)
                await control.pause("main", reason="target")
                await in_force(control)
                await asyncio.sleep(1.0)  # a wrong move would be confirmed by now
                assert await depth(r, wide) in (None, 0), "P2 went to the target's hold queue"
                assert await depth(r, narrow) == 1  # P3 only
                await control.resume("main")
                await control.resume("main", **PRIMARY)
                outcomes = await r.results.wait_for(200 + 2 * len(records), timeout=60)
                await until_depth(r, narrow, 0)
                assert await r.queue_depth(r.request_queue) == 0
        finally:
            await cleanup(r, wide, narrow)
    seen = collections.Counter((o["operation"], o["id"]) for o in outcomes)
    assert len(outcomes) == 200 + 2 * len(records) and set(seen.values()) == {1}
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert {r.emulator.datocms.record_status(i) for i in first} == {"published"}
    assert {r.emulator.datocms.record_status(i) for i in records} == {"draft"}
    assert r.emulator.breaches() == []
