"""Order per item, and a worker that stops without losing anything."""

from __future__ import annotations

import asyncio
import collections

import pytest

from tests.integration.harness import Rig, ids

pytestmark = pytest.mark.integration


async def test_publish_then_unpublish_of_one_record_ends_unpublished(r: Rig) -> None:
    """Operations on one id take effect in consumption order even across batches: the
    unpublish waits for the publish's job, and the final state is draft."""
    others = ids("other", 50)
    await r.publish(
        {"operation": "datocms.items.publish", "target": "main", "ids": ["rec-1", *others]}
    )
    await r.publish({"operation": "datocms.items.unpublish", "target": "main", "ids": ["rec-1"]})
    await r.publish({"operation": "datocms.items.publish", "target": "main", "ids": ["rec-2"]})
    await r.publish({"operation": "datocms.items.unpublish", "target": "main", "ids": ["rec-2"]})
    await r.publish({"operation": "datocms.items.publish", "target": "main", "ids": ["rec-2"]})
    async with r.worker():
        outcomes = await r.results.wait_for(55)
    assert r.emulator.datocms.record_status("rec-1") == "draft"
    assert r.emulator.datocms.record_status("rec-2") == "published"
    assert all(r.emulator.datocms.record_status(i) == "published" for i in others)
    seen = [(e.path.rsplit("/", 1)[-1]) for e in r.emulator.requests(path_contains="/bulk/")]
    assert seen.count("publish") >= 2 and seen.count("unpublish") >= 1
    answered = collections.Counter(o["id"] for o in outcomes)
    assert answered["rec-1"] == 2 and answered["rec-2"] == 3
    assert {o["status"] for o in outcomes} == {"succeeded"}


async def test_sigterm_mid_batch_loses_nothing(r: Rig) -> None:
    """SIGTERM while jobs run: the worker finishes what it started, gives back what it had
    not, and exits 0; a second worker answers the rest; every id is answered exactly once."""
    r.emulator.config.datocms_job_seconds = 1.0
    wanted = ids("s", 1200)
    await r.publish_many(
        [
            {"operation": "datocms.items.publish", "target": "main", "ids": [i], "request_id": i}
            for i in wanted
        ]
    )
    env = r.env(prefetch=1200, max_inflight_batches=2)
    async with r.worker_process(env) as first:
        async with asyncio.timeout(20):
            while not r.emulator.requests(path_contains="/items/bulk/publish"):
                await asyncio.sleep(0.02)
        code = await first.terminate()
    assert code == 0
    answered_by_first = len(r.results.messages)
    assert 0 < answered_by_first < 1200, "stopped mid-stream"
    async with r.worker_process(env):
        outcomes = await r.results.wait_for(1200, timeout=60)
        await asyncio.sleep(0.5)  # room for a duplicate to show up, if there were one
    counts = collections.Counter(m.message_id for m in r.results.messages)
    assert set(o["id"] for o in outcomes) == set(wanted)
    assert max(counts.values()) == 1, "no outcome published twice"
    assert await r.queue_depth(r.request_queue) == 0
    assert r.emulator.breaches() == []
