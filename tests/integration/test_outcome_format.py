"""The batch outcome format (BULKOPS_OUTCOME_FORMAT=batch, CONTRACT "The batch format"):
one message per dispatch batch and status, per-item truth inside, same guarantees."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.integration.harness import AMQP_URL, Rig, collect_queue, ids
from worker.cli.tail import outcome_lines
from worker.client import Client, outcome_items

pytestmark = pytest.mark.integration

OP = "datocms.items.publish"


def flatten(r: Rig) -> dict[str, dict[str, Any]]:
    """Per-item outcomes out of the batch messages received: id -> item, plus the message's
    status, routing key and message id."""
    table: dict[str, dict[str, Any]] = {}
    for message in r.results.messages:
        assert message.type == "bulkops.outcomes"
        body = orjson.loads(message.body)
        operation = body["operation"] if body["operation"] == OP else "invalid"
        assert message.routing_key == f"{operation}.{body['status']}"
        for item in body["items"]:
            assert item["id"] not in table, "one outcome per id"
            table[item["id"]] = {**item, "status": body["status"], "message": message, "body": body}
    return table


async def test_mixed_statuses_in_one_batch_and_intake_rejections(r: Rig) -> None:
    """200 ids (one locked) and an invalid id in one message, and a message with an unknown
    operation: a succeeded and a failed message for the one dispatch batch, a rejected one per
    request message rejected at intake; every item once, with its own error."""
    good, locked = ids("ok", 199), ["lk1"]
    r.emulator.datocms.set_failure(locked, "publish", "ITEM_LOCKED")
    await r.publish(
        {"operation": OP, "target": "main", "request_id": "b-1",
         "ids": [*good[:100], "lk1", "bad id", *good[100:]]},
        correlation_id="corr-1",
    )  # fmt: skip
    await r.publish({"operation": "no.such.op", "target": "main", "request_id": "b-2",
                     "ids": ["x1", "x2"]})  # fmt: skip
    async with r.worker(r.settings(outcome_format="batch")):
        await r.results.wait_for(4)
    assert len(r.results.messages) == 4
    items = flatten(r)
    assert set(items) == {*good, "lk1", "bad id", "x1", "x2"}
    for i in good:
        assert items[i]["status"] == "succeeded"
        assert items[i]["request_id"] == "b-1"
        assert items[i]["error"] is None
        assert items[i]["job_id"] is not None
    assert items["lk1"]["status"] == "failed"
    assert items["lk1"]["error"]["code"] == "ITEM_LOCKED"
    assert items["bad id"]["status"] == "rejected"
    assert items["x1"]["status"] == items["x2"]["status"] == "rejected"
    ok, failed = items[good[0]]["message"], items["lk1"]["message"]
    batch_id = ok.correlation_id
    assert failed.correlation_id == batch_id
    assert items[good[0]]["body"]["batch_id"] == batch_id
    assert ok.message_id == f"{batch_id}:succeeded:0"
    assert failed.message_id == f"{batch_id}:failed:0"
    assert ok.routing_key == f"{OP}.succeeded"
    assert failed.routing_key == f"{OP}.failed"
    rejected = items["bad id"]["message"]
    assert rejected.message_id == f"b-1:{OP}:rejected"
    assert rejected.routing_key == f"{OP}.rejected"
    assert rejected.correlation_id == "corr-1"
    assert items["bad id"]["body"]["batch_id"] is None
    unknown = items["x1"]["message"]
    assert unknown.routing_key == "invalid.rejected"
    assert unknown.message_id == "b-2:no.such.op:rejected"  # as the item format names it
    assert items[good[0]]["body"]["target"] == "main"
    assert set(items[good[0]]["body"]) == {
        "operation", "target", "environment", "catalog_id", "status", "batch_id", "part",
        "finished_at", "items",
    }  # fmt: skip
    count = "bulkops_item_outcomes_total"
    assert r.metric(count, operation=OP, target="main", status="succeeded") == 199
    assert r.metric(count, operation=OP, target="main", status="failed") == 1
    assert await r.queue_depth(r.request_queue) == 0


async def test_item_outcomes_filter_applies_to_the_batch_format(r: Rig) -> None:
    """BULKOPS_ITEM_OUTCOMES=failures: no succeeded message; the failed and rejected ones."""
    good = ids("ok", 50)
    r.emulator.datocms.set_failure(["lk1"], "publish", "ITEM_LOCKED")
    await r.publish({"operation": OP, "target": "main", "request_id": "f-1",
                     "ids": [*good, "lk1", "bad id"]})  # fmt: skip
    async with r.worker(r.settings(outcome_format="batch", item_outcomes="failures")):
        await r.results.wait_for(2)
    items = flatten(r)
    assert set(items) == {"lk1", "bad id"}
    assert {m.routing_key for m in r.results.messages} == {f"{OP}.failed", f"{OP}.rejected"}
    count = "bulkops_item_outcomes_total"
    assert r.metric(count, operation=OP, target="main", status="succeeded") == 50
    assert await r.queue_depth(r.request_queue) == 0


@pytest.mark.parametrize("fmt", ["item", "batch"])
async def test_client_iterator_and_tail_give_one_item_at_a_time_in_either_format(
    r: Rig, fmt: str
) -> None:
    """The client's ``outcomes()`` and ``bulkops tail``'s lines: the same per-item outcomes
    (request_id, operation, id, status, error), whichever format the worker publishes."""
    good = ids("ok", 30)
    r.emulator.datocms.set_failure(["lk1"], "publish", "ITEM_LOCKED")
    await r.publish({"operation": OP, "target": "main", "request_id": "c-1",
                     "ids": [*good, "lk1", "bad id"]})  # fmt: skip
    seen: list[dict[str, Any]] = []
    async with Client.connect(AMQP_URL, r.request_queue) as client:
        ready = asyncio.Event()

        async def read() -> None:
            async for item in client.outcomes(r.exchange, ready=ready):
                seen.append(item)
                if len(seen) == 32:
                    return

        reader = asyncio.create_task(read())
        await ready.wait()
        async with r.worker(r.settings(outcome_format=fmt)):
            await asyncio.wait_for(reader, 30)
    assert {(o["request_id"], o["operation"], o["id"], o["status"]) for o in seen} == {
        *(("c-1", OP, i, "succeeded") for i in good),
        ("c-1", OP, "lk1", "failed"),
        ("c-1", OP, "bad id", "rejected"),
    }
    locked = next(o for o in seen if o["id"] == "lk1")
    assert locked["error"]["code"] == "ITEM_LOCKED" and locked["target"] == "main"
    lines = [line for m in r.results.messages for line in outcome_lines(m.body)]
    assert len(lines) == 32
    assert sum("ITEM_LOCKED" in line for line in lines) == 1
    kinds = {m.type for m in r.results.messages}
    assert kinds == {"bulkops.outcome" if fmt == "item" else "bulkops.outcomes"}


async def test_a_returned_batch_message_is_parked_and_does_not_hold_its_request(r: Rig) -> None:
    """Only a `*.*.*.failed` binding: the batch's failed message is routed, its succeeded
    message comes back to the mandatory publish and is parked (its routing key in a
    header), the request is answered and acked; the parked message is the batch message."""
    rig_queue = f"t.{r.request_queue.split('.')[1]}.outcomes"
    await (await r.channel.declare_queue(rig_queue, passive=True)).unbind(r.exchange, "#")
    failures = await r.channel.declare_queue(exclusive=True)
    await failures.bind(r.exchange, "*.*.*.failed")
    name, replies = await collect_queue(r.channel)
    r.emulator.datocms.set_failure(["lk1"], "publish", "ITEM_LOCKED")
    await r.publish({"operation": OP, "target": "main", "ids": [*ids("p", 4), "lk1"]},
                    reply_to=name)  # fmt: skip
    parked = f"{r.exchange}.unrouted"
    async with r.worker(r.settings(outcome_format="batch")):
        await replies.wait_for(1)
    assert await r.queue_depth(r.request_queue) == 0
    letter = await (await r.channel.declare_queue(parked, passive=True)).get(timeout=5)
    assert letter.type == "bulkops.outcomes"
    assert letter.headers["x-bulkops-routing-key"] == f"{OP}.succeeded"
    assert [i["id"] for i in outcome_items(letter.body)] == ids("p", 4)
    assert letter.message_id == f"{letter.correlation_id}:succeeded:0"
    routed = await failures.get(timeout=5)
    assert [i["id"] for i in outcome_items(routed.body)] == ["lk1"]
    assert r.results.messages == []
