"""The priority lane in partitioned mode: the router forwards urgent requests to their
partition's priority queue, and the partition's owner takes them ahead of its backlog. Two
replicas, the emulator as its own process (see test_scale_out), real limits."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from tests.integration.harness import Proc, Rig, emulator_process, ids
from tests.integration.test_scale_out import BLOOM_RATE, DATO_RATE, partitioned_env, replica

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CAT0 = {"operation": "bloomreach.catalog_items.delete", "target": "shop", "catalog_id": "cat-0"}
DATO = {"operation": "datocms.items.publish", "target": "main"}


async def test_partitioned_replicas_answer_urgent_requests_ahead_of_the_backlog(r: Rig) -> None:
    """2 replicas, 4 partitions. 3,000 Bloomreach ids on one catalog (12 full requests at
    4 per 4 s) and 1,000 DatoCMS ids are under way when 3 urgent deletes on that catalog
    and 3 urgent publishes come on the priority lane: every urgent id is answered while
    most of the catalog's backlog still waits; every id once, no breach, nothing left."""
    backlog: list[dict[str, Any]] = [{**CAT0, "ids": ids(f"b{n}x", 25)} for n in range(120)]
    backlog += [{**DATO, "ids": ids(f"d{n}x", 25)} for n in range(40)]
    urgent = [{**CAT0, "ids": [f"ub{n}"]} for n in range(3)]
    urgent += [{**DATO, "ids": [f"ud{n}"]} for n in range(3)]
    urgent_ids = {i for m in urgent for i in m["ids"]}
    expected = sum(len(m["ids"]) for m in backlog + urgent)
    async with emulator_process() as emulator:
        await emulator.configure(
            datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE, datocms_job_seconds=0.2
        )
        env = await partitioned_env(r, emulator, partitions=4)
        procs: list[Proc] = [await replica(env) for _ in range(2)]
        try:
            await r.publish_many(backlog)
            await r.results.wait_for(300, timeout=90)  # under way (a window's takeover wait)
            for message in urgent:
                await r.publish(message, lane=".priority")
            async with asyncio.timeout(90):
                while not urgent_ids <= {b["id"] for b in r.results.bodies}:
                    await asyncio.sleep(0.05)
            cat0_done = sum(1 for b in r.results.bodies if b["id"].startswith("b"))
            outcomes = await r.results.wait_for(expected, timeout=120, distinct=True)
        finally:
            codes = await asyncio.gather(*(p.terminate() for p in procs))
        assert codes == [0, 0], [p.stderr_tail() for p in procs]
        log = await emulator.entries()
        assert [e for e in log if e["breach"]] == []
    assert cat0_done <= 2000, f"urgent answered only after {cat0_done} of 3,000 backlog ids"
    counts = collections.Counter(m.message_id for m in r.results.messages)
    assert len(counts) == expected, "every (request, id) answered"
    assert {o["status"] for o in outcomes} == {"succeeded"}
    for index in range(4):
        assert await r.queue_depth(f"{r.request_queue}.p{index}.priority") == 0
        for lane in ("", ".priority"):  # the partition queues: not the rig's to delete
            await r.channel.queue_delete(f"{r.request_queue}.p{index}{lane}")
