"""A pause's move-out crossing other events (issue 23's review, findings 7, 9 and 4): a
continuation waiting for a slow job does not hold up the control records after it, and a
graceful stop during a move-out neither copies a request twice nor lets a later request
reach a hold queue ahead of an earlier one that goes back."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import orjson
import pytest

from tests.integration.harness import Rig, ids
from tests.integration.harness import probe_depth as depth
from tests.integration.test_control_continuation import BULK_PUBLISH, peek, slow_dato
from tests.integration.test_control_pause import until, until_async
from worker.client.control import ControlClient
from worker.wirenames import CONTINUATION_TYPE

pytestmark = pytest.mark.integration


def op(operation: str, record_ids: list[str]) -> dict[str, Any]:
    return {"operation": f"datocms.items.{operation}", "target": "main", "ids": record_ids}


async def cleanup(r: Rig, *names: str) -> None:
    for name in names:
        if await depth(r, name) is not None:
            await r.channel.queue_delete(name)


async def test_a_status_and_a_resume_are_not_held_up_by_a_continuation_waiting_for_a_job(
    r: Rig,
) -> None:
    """A publishes 300 ids at 1 request/s, its first bulk request's job takes 8 s; B, later,
    unpublishes A's last id x. Paused right after A's first request: A is continued, and
    its continuation waits for that job. A ``status`` sent at once is answered within 3 s
    (not after the job), and a ``resume`` right after it is applied while the move-out
    still waits. In the end every item is answered once, no id is sent twice and x ends
    unpublished (B ran after A)."""
    r.emulator.config.datocms_job_seconds = 8.0
    settings = slow_dato(r)
    url = settings.amqp_url.get_secret_value()
    hold = f"{r.request_queue}.held.main"
    wanted = ids("j", 300)
    x = wanted[-1]
    await r.publish(op("publish", wanted))
    await r.publish(op("unpublish", [x]))
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):
                await until(lambda: len(r.emulator.requests(path_contains=BULK_PUBLISH)) >= 1)
                await control.pause("main", reason="slow job")
                began = time.monotonic()
                reports = await control.status(timeout=10, expect=1)
                took = time.monotonic() - began
                assert len(reports) == 1
                assert took < 3.0, f"status answered after {took:.1f}s"
                assert len(r.emulator.requests(path_contains=BULK_PUBLISH)) == 1
                await control.resume("main")
                outcomes = await r.results.wait_for(301, timeout=90)
                await until_async(lambda: depth(r, hold), 0, timeout=20)
                assert await r.queue_depth(r.request_queue) == 0
        finally:
            await cleanup(r, hold)
    seen = collections.Counter((o["operation"], o["id"]) for o in outcomes)
    assert len(seen) == 301 and set(seen.values()) == {1}
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert sum(e.items for e in r.emulator.requests(path_contains=BULK_PUBLISH)) == 300
    assert r.emulator.datocms.record_status(x) == "draft"
    assert {r.emulator.datocms.record_status(i) for i in wanted[:-1]} == {"published"}


async def test_a_graceful_stop_during_a_move_out_copies_each_request_once(r: Rig) -> None:
    """190 one-id requests held unsent (a long linger), the target paused: the stop comes
    as soon as the first copy is in the hold queue. The stop waits for the move-out (the
    channels close after it): every request is in the hold queue once, none is back in
    the request queue, none is twice anywhere."""
    count = 190
    settings = r.settings(linger_seconds=30)
    url = settings.amqp_url.get_secret_value()
    hold = f"{r.request_queue}.held.main"
    await r.publish_many([op("publish", [i]) for i in ids("g", count)])
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):

                async def pending() -> int:  # none before the worker reads the stream live
                    reports = await control.status(timeout=2, expect=1)
                    return sum(s["pending"] for rep in reports for s in rep["scopes"])

                await until_async(pending, count, timeout=20)
                await control.pause("main", reason="stop during the move-out")
                async with asyncio.timeout(20):
                    while not await depth(r, hold):
                        await asyncio.sleep(0.01)
            # stopped (as SIGTERM does)
            held = await depth(r, hold)
            back = await r.queue_depth(r.request_queue)
            assert (held, back) == (count, 0)
        finally:
            await cleanup(r, hold)
    assert r.emulator.requests(api="datocms") == []


async def test_past_the_drain_timeout_a_continuation_goes_back_with_what_followed_it(
    r: Rig,
) -> None:
    """A (300 ids, its first request's job 8 s) and B (unpublish of A's last id) are let go
    by a pause: A waits for its job, B waits behind it. A graceful stop with a 2 s drain
    timeout gives A back whole, and B must not be moved to the hold queue meanwhile (A
    would come back behind it): both go back to the request queue, A first, once each."""
    r.emulator.config.datocms_job_seconds = 8.0
    settings = slow_dato(r).model_copy(update={"drain_timeout_seconds": 2})
    url = settings.amqp_url.get_secret_value()
    hold = f"{r.request_queue}.held.main"
    wanted = ids("t", 300)
    await r.publish(op("publish", wanted))
    await r.publish(op("unpublish", [wanted[-1]]))
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):
                await until(lambda: len(r.emulator.requests(path_contains=BULK_PUBLISH)) >= 1)
                await control.pause("main", reason="stop past the drain timeout")
                await control.status(timeout=10, expect=1)  # the pause is applied
            assert await depth(r, hold) in (None, 0)
            assert await r.queue_depth(r.request_queue) == 2
            first, second = await peek(r, r.request_queue, 2)
            assert first.header.properties.message_type != CONTINUATION_TYPE
            assert orjson.loads(first.body)["operation"] == "datocms.items.publish"
            assert orjson.loads(second.body)["operation"] == "datocms.items.unpublish"
        finally:
            await cleanup(r, hold)
