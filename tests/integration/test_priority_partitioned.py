"""The priority lane in partitioned mode: the router forwards urgent requests to their
partition's priority queue, and the partition's owner takes them ahead of its backlog. Two
replicas, the emulator as its own process (see test_scale_out), real limits."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from tests.integration.harness import Proc, Rig, emulator_process, ids
from tests.integration.test_scale_out import (
    BLOOM_RATE,
    DATO_RATE,
    partition,
    partitioned_env,
    replica,
    spread,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

CAT0 = {"operation": "bloomreach.catalog_items.delete", "target": "shop", "catalog_id": "cat-0"}
DATO = {"operation": "datocms.items.publish", "target": "main"}


async def test_partitioned_replicas_answer_urgent_requests_ahead_of_the_backlog(r: Rig) -> None:
    """2 replicas, 4 partitions, spread over them. 5,000 Bloomreach ids on one catalog (20
    full requests at 4 per 4 s) and 1,000 DatoCMS ids are under way when 3 urgent deletes
    on that catalog and 3 urgent publishes come on the priority lane: every urgent id is
    answered while at least the catalog's last window of backlog still waits; every id
    once, no breach, nothing left in the partitions' priority queues."""
    backlog: list[dict[str, Any]] = [{**CAT0, "ids": ids(f"b{n}x", 25)} for n in range(200)]
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
            # Partitions spread first: a hand-over while the urgent ones run would make them
            # wait out its takeover window, like any other work (see docs/benchmark.md (9)).
            _, warm = await spread(r, procs, [CAT0, DATO], partitions=4)
            expected += warm
            await r.results.wait_for(warm, timeout=60, distinct=True)
            await r.publish_many(backlog)
            await r.results.wait_for(warm + 300, timeout=90)  # the backlog is under way
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
    # The catalog's requests go 4 at a time as each 4 s window opens (1,000 ids): the urgent
    # ids go in the next window's burst, so at least the last window's ids still wait.
    assert cat0_done <= 4000, f"urgent answered only after {cat0_done} of 5,000 backlog ids"
    counts = collections.Counter(m.message_id for m in r.results.messages)
    assert len(counts) == expected, "every (request, id) answered"
    assert {o["status"] for o in outcomes} == {"succeeded"}
    for index in range(4):
        assert await r.queue_depth(f"{r.request_queue}.p{index}.priority") == 0
        for lane in ("", ".priority"):  # the partition queues: not the rig's to delete
            await r.channel.queue_delete(f"{r.request_queue}.p{index}{lane}")


async def test_a_stranded_priority_message_is_found_by_the_sweep(r: Rig) -> None:
    """A partition's priority queue holding a message with no consumer and no marker in the
    partition's main queue (its owner died with urgent messages unacked): a replica's sweep
    leaves a marker, the partition's owner subscribes and answers it (review of issue 22;
    without the sweep it waited for some unrelated request of that partition)."""
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE)
        env = await partitioned_env(r, emulator, partitions=2)
        proc = await replica(env)
        try:
            index = partition(DATO, 2)
            # Straight into the partition's priority queue, as a dead owner leaves it.
            await r.publish({**DATO, "ids": ["stranded"]}, lane=f".p{index}.priority")
            outcomes = await r.results.wait_for(1, timeout=30)
        finally:
            code = await proc.terminate()
        assert code == 0, proc.stderr_tail()
    assert [(o["id"], o["status"]) for o in outcomes] == [("stranded", "succeeded")]
    for index in range(2):
        for lane in ("", ".priority"):  # the partition queues: not the rig's to delete
            await r.channel.queue_delete(f"{r.request_queue}.p{index}{lane}")
