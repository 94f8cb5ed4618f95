"""Partitioned mode: hold queues of a resumed scope that no replica knows it must drain
(issue 23, review finding 5). A replica learns that it owns a partition only from a delivery
of the partition queue; when a pause moved everything of a scope into its hold queue, that
queue is empty, and after a session renewal nobody knows. A resume (and every replica's
sweep) leaves a marker in the partition queue, so that its owner takes the partition and
drains the hold queue. Replicas are processes of their own, the emulator too (see
test_scale_out)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from tests.integration.harness import Proc, Rig, emulator_process, ids
from tests.integration.harness import probe_depth as depth
from tests.integration.test_scale_out import (
    BLOOM_RATE,
    DATO_RATE,
    partition,
    partitioned_env,
    replica,
)
from worker.broker.hold import hold_arguments, hold_name
from worker.client.control import ControlClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 3
DATO = {"target": "main"}
OPS = ("publish", "unpublish", "publish")


def dato(operation: str, item_ids: list[str]) -> dict[str, Any]:
    return {"operation": f"datocms.items.{operation}", "target": "main", "ids": item_ids}


async def until_depth(r: Rig, name: str, expected: int, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while await depth(r, name) != expected:
            await asyncio.sleep(0.2)


async def applied(control: ControlClient, replicas: int) -> None:
    """Every replica applied the control records sent so far (a status comes after them)."""
    reports = await control.status(timeout=10, expect=replicas)
    assert len(reports) == replicas, reports


def in_order(outcomes: list[dict[str, Any]], targets: list[str]) -> None:
    """Each operation answered once per id, and in the order published."""
    for item in targets:
        ops = [o["operation"][14:] for o in outcomes if o["id"] == item]
        assert ops == list(OPS), (item, ops)
    assert {o["status"] for o in outcomes} == {"succeeded"}


async def drop_partition_queues(r: Rig) -> None:
    for index in range(PARTITIONS):
        for lane in ("", ".priority"):  # the partition queues: not the rig's to delete
            await r.channel.queue_delete(f"{r.request_queue}.p{index}{lane}")


async def test_a_resume_after_new_sessions_drains_what_a_pause_held_entirely(r: Rig) -> None:
    """2 replicas, 3 partitions: the DatoCMS target paused; publish, unpublish, publish of 20
    ids (6 requests) all move to the partition's hold queue. Both replicas stop and two new
    ones start (new sessions): nothing is left in the partition queue, so no replica has a
    delivery of that partition, and nothing else is published. After resume every operation
    is answered within 30 s, once, in per-id order (without the marker the resume left,
    nothing was drained: nobody knew it owned the partition)."""
    targets = ids("w", 20)
    bodies = [dato(op, targets[n : n + 10]) for op in OPS for n in (0, 10)]
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE)
        env = await partitioned_env(r, emulator, partitions=PARTITIONS)
        settings = r.settings(partitions=PARTITIONS)
        index = partition({**DATO, "operation": "datocms.items.publish"}, PARTITIONS)
        hold = hold_name(settings, ("main", None), index)
        procs: list[Proc] = []
        url = env["BULKOPS_AMQP_URL"]
        try:
            async with ControlClient.connect(url, exchange=env["BULKOPS_CONTROL_EXCHANGE"]) as (
                control
            ):
                procs = [await replica(env) for _ in range(2)]
                await control.pause("main", reason="held entirely, then new sessions")
                await applied(control, 2)
                for body in bodies:
                    await r.publish(body)
                await until_depth(r, hold, len(bodies))
                codes = [await p.terminate() for p in procs]
                assert codes == [0, 0], [p.stderr_tail() for p in procs]
                procs = [await replica(env) for _ in range(2)]  # new sessions, still paused
                await applied(control, 2)
                assert await depth(r, f"{r.request_queue}.p{index}") == 0
                assert await depth(r, hold) == len(bodies)
                assert [e for e in await emulator.entries() if e["api"] == "datocms"] == []
                await control.resume("main")
                outcomes = await r.results.wait_for(60, timeout=30)
                await until_depth(r, hold, 0)
                await asyncio.sleep(0.5)  # nothing answered twice
        finally:
            codes = [await p.terminate() for p in procs]
            if await depth(r, hold) is not None:
                await r.channel.queue_delete(hold)
        assert codes == [0, 0], [p.stderr_tail() for p in procs]
        statuses = {await emulator.record_status(i) for i in targets}
    print("ORDER", [(o["id"], o["operation"][14:]) for o in outcomes])
    assert len(r.results.bodies) == 60
    in_order(outcomes, targets)
    assert statuses == {"published"}
    await drop_partition_queues(r)


async def test_a_sweep_finds_a_held_queue_of_a_resumed_scope_without_a_consumer(
    r: Rig,
) -> None:
    """The DatoCMS target paused and resumed before the replica starts. Then its hold queue
    of the partition gets messages with no consumer, as a replica that died draining it
    leaves it (the resume was read long before: nothing else will come). The replica's
    sweep leaves a marker in the partition queue, takes the partition and drains them, in
    order (without the sweep they waited for some unrelated request of that partition)."""
    targets = ids("s", 10)
    bodies = [dato(op, targets) for op in OPS]
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE)
        env = await partitioned_env(r, emulator, partitions=PARTITIONS)
        settings = r.settings(partitions=PARTITIONS)
        index = partition({**DATO, "operation": "datocms.items.publish"}, PARTITIONS)
        hold = hold_name(settings, ("main", None), index)
        proc: Proc | None = None
        url = env["BULKOPS_AMQP_URL"]
        try:
            async with ControlClient.connect(url, exchange=env["BULKOPS_CONTROL_EXCHANGE"]) as (
                control
            ):
                await control.pause("main", reason="then resumed")
                await control.resume("main")
                proc = await replica(env)
                await applied(control, 1)
                # What a dead replica's drain leaves: the hold queue, messages, no consumer.
                channel = await r.channel.get_underlay_channel()
                await channel.queue_declare(hold, durable=True, arguments=hold_arguments(settings))
                for body in bodies:
                    await r.publish(body, lane=hold[len(r.request_queue) :])
                outcomes = await r.results.wait_for(30, timeout=30)
                await until_depth(r, hold, 0)
                await asyncio.sleep(0.5)  # nothing answered twice
        finally:
            code = None if proc is None else await proc.terminate()
            if await depth(r, hold) is not None:
                await r.channel.queue_delete(hold)
        assert code == 0, None if proc is None else proc.stderr_tail()
        statuses = {await emulator.record_status(i) for i in targets}
    assert len(r.results.bodies) == 30
    in_order(outcomes, targets)
    assert statuses == {"published"}
    assert collections.Counter(o["id"] for o in outcomes) == dict.fromkeys(targets, 3)
    await drop_partition_queues(r)
