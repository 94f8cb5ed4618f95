"""Replies (CONTRACT "Replies"), outcome modes (BULKOPS_ITEM_OUTCOMES) and unrouted
outcomes parked in the parking queue, against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage

from tests.integration.harness import Results, Rig, collect_queue, ids

pytestmark = pytest.mark.integration

OP = "datocms.items.publish"


def body_of(message: AbstractIncomingMessage) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(message.body)
    return body


def statuses(reply: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [
        (i["id"], i["status"], i["error"] and i["error"]["code"]) for i in reply["items"]
    ]


async def until(check: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def test_reply_to_a_named_queue_lists_every_id_in_message_order(r: Rig) -> None:
    """One reply per request message: to its reply_to queue, with its correlation_id (else
    its request id), message_id `<request_id>:reply`, type bulkops.reply, and every distinct
    id in message order (sent, failed and rejected ones interleaved) with the right counts.
    The request is acked (nothing back in the queue after the drain)."""
    name, replies = await collect_queue(r.channel)
    r.emulator.datocms.set_failure(["lk1"], "publish", "ITEM_LOCKED")
    r.emulator.datocms.mark_missing(["gone1"])
    await r.publish(
        {"operation": OP, "target": "main", "request_id": "rq-1",
         "ids": ["ok1", "lk1", "bad id", "ok2", "ok1", "gone1", 7, "ok3"]},
        reply_to=name, correlation_id="corr-1",
    )  # fmt: skip
    await r.publish(
        {"operation": OP, "target": "main", "ids": ["solo"]}, reply_to=name, message_id="mid-2"
    )
    async with r.worker():
        await replies.wait_for(2)
        await r.results.wait_for(8)
    by_request = {body_of(m)["request_id"]: m for m in replies.messages}
    assert set(by_request) == {"rq-1", "mid-2"} and len(replies.messages) == 2
    first = by_request["rq-1"]
    assert (first.message_id, first.correlation_id, first.type) == (
        "rq-1:reply", "corr-1", "bulkops.reply"
    )  # fmt: skip
    reply = body_of(first)
    assert statuses(reply) == [
        ("ok1", "succeeded", None),
        ("lk1", "failed", "ITEM_LOCKED"),
        ("bad id", "rejected", "invalid_id"),
        ("ok2", "succeeded", None),
        ("gone1", "failed", "NOT_FOUND"),
        ("7", "rejected", "invalid_id"),
        ("ok3", "succeeded", None),
    ]
    assert reply["counts"] == {"succeeded": 3, "failed": 2, "rejected": 2}
    assert (reply["operation"], reply["target"], reply["environment"]) == (OP, "main", None)
    assert "error" not in reply
    second = by_request["mid-2"]
    assert (second.message_id, second.correlation_id) == ("mid-2:reply", "mid-2")
    assert statuses(body_of(second)) == [("solo", "succeeded", None)]
    assert await r.queue_depth(r.request_queue) == 0
    assert await r.queue_depth(name) == 0
    assert r.metric("bulkops_replies_published_total") == 2


async def test_reply_through_direct_reply_to(r: Rig) -> None:
    """A requester consuming `amq.rabbitmq.reply-to` (no-ack, on the channel it publishes
    from) gets its reply straight back, correlation id included, with Bloomreach's
    per-item errors and a rejected id in message order."""
    direct = await r.channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
    replies = Results()

    async def got(message: AbstractIncomingMessage) -> None:
        replies.messages.append(message)
        replies.changed.set()

    await direct.consume(got, no_ack=True)
    r.emulator.bloomreach.set_item_error("cat-r", ["sku-2"], "Item cannot be deleted")
    await r.publish(
        {"operation": "bloomreach.catalog_items.delete", "target": "shop",
         "catalog_id": "cat-r", "request_id": "drt-1", "ids": ["sku-1", "a/b", "sku-2"]},
        reply_to="amq.rabbitmq.reply-to", correlation_id="call-42",
    )  # fmt: skip
    async with r.worker():
        await replies.wait_for(1)
    (message,) = replies.messages
    assert (message.correlation_id, message.message_id) == ("call-42", "drt-1:reply")
    reply = body_of(message)
    assert statuses(reply) == [
        ("sku-1", "succeeded", None),
        ("a/b", "rejected", "invalid_id"),
        ("sku-2", "failed", "Item cannot be deleted"),
    ]
    assert reply["catalog_id"] == "cat-r"
    assert reply["counts"] == {"succeeded": 1, "failed": 1, "rejected": 1}


async def test_dead_lettered_messages_with_reply_to_still_get_a_reply(r: Rig) -> None:
    """A body that is not JSON gets a reply with no items and the error at the top level; a
    message with an unknown operation gets its readable ids rejected, and the error. Both
    are dead-lettered with their reply_to kept."""
    name, replies = await collect_queue(r.channel)
    await r.publish(b"{not json", message_id="m-notjson", reply_to=name)
    await r.publish(
        {"operation": "datocms.items.explode", "target": "main", "ids": ["u1", "u2", "u1"]},
        message_id="m-op", reply_to=name, correlation_id="c-op",
    )  # fmt: skip
    async with r.worker():
        await replies.wait_for(2)
    by_id = {m.message_id: m for m in replies.messages}
    not_json = body_of(by_id["m-notjson:reply"])
    assert not_json["items"] == [] and not_json["error"]["code"] == "not_json"
    assert not_json["counts"] == {"succeeded": 0, "failed": 0, "rejected": 0}
    assert by_id["m-notjson:reply"].correlation_id == "m-notjson"
    unknown = body_of(by_id["m-op:reply"])
    assert statuses(unknown) == [("u1", "rejected", "unknown_operation"),
                                 ("u2", "rejected", "unknown_operation")]  # fmt: skip
    assert unknown["error"]["code"] == "unknown_operation"
    assert by_id["m-op:reply"].correlation_id == "c-op"
    dlq = await r.channel.declare_queue(r.dlq, passive=True)
    letters = [await dlq.get(timeout=5) for _ in range(2)]
    assert {m.reply_to for m in letters} == {name}
    assert await r.queue_depth(r.request_queue) == 0


async def test_a_reply_whose_queue_is_gone_is_dropped_and_does_not_hold_its_request(
    r: Rig,
) -> None:
    """The reply_to queue is deleted before the request is answered: the reply comes back
    unroutable, is dropped and counted, and the request is acked all the same."""
    gone = f"{r.request_queue}.gone-replies"
    await r.channel.declare_queue(gone)
    await r.publish({"operation": OP, "target": "main", "ids": ids("g", 3)}, reply_to=gone)
    await r.channel.queue_delete(gone)
    async with r.worker():
        await r.results.wait_for(3)
        await until(lambda: r.metric("bulkops_replies_dropped_total") == 1)
    assert await r.queue_depth(r.request_queue) == 0  # acked: not given back by the drain
    assert r.metric("bulkops_replies_published_total") == 0


@pytest.mark.parametrize("mode", ["failures", "none"])
async def test_outcome_modes_publish_only_what_they_say_and_count_every_item(
    r: Rig, mode: str
) -> None:
    """`failures` publishes every failed and rejected outcome and no succeeded one; `none`
    publishes no outcome. In both, the reply lists every item and the metrics count every
    item by status."""
    name, replies = await collect_queue(r.channel)
    r.emulator.datocms.set_failure(["lk1", "lk2"], "publish", "ITEM_LOCKED")
    good = ids("ok", 40)
    await r.publish(
        {"operation": OP, "target": "main", "request_id": "m-1",
         "ids": [*good[:20], "lk1", "bad id", *good[20:], "lk2"]},
        reply_to=name,
    )  # fmt: skip
    async with r.worker(r.settings(item_outcomes=mode)):
        await replies.wait_for(1)
        if mode == "failures":
            await r.results.wait_for(3)
    (message,) = replies.messages
    reply = body_of(message)
    assert reply["counts"] == {"succeeded": 40, "failed": 2, "rejected": 1}
    assert [i["id"] for i in reply["items"]] == [*good[:20], "lk1", "bad id", *good[20:], "lk2"]
    outcomes = {(o["id"], o["status"]) for o in r.results.bodies}
    if mode == "failures":
        assert outcomes == {("lk1", "failed"), ("lk2", "failed"), ("bad id", "rejected")}
    else:
        assert outcomes == set()
    count = "bulkops_item_outcomes_total"
    labels = {"operation": OP, "target": "main"}
    assert r.metric(count, **labels, status="succeeded") == 40
    assert r.metric(count, **labels, status="failed") == 2
    assert r.metric(count, **labels, status="rejected") == 1
    assert await r.queue_depth(r.request_queue) == 0


async def test_outcomes_matching_no_binding_are_parked_and_do_not_hold_requests(r: Rig) -> None:
    """With only a `*.*.*.failed` binding, the failed outcome goes there and the succeeded
    ones, matching nothing, come back to the mandatory publish and go to the bounded parking queue
    (gauge bulkops_unrouted_outcomes): the request is answered and acked, nothing lost."""
    rig_queue = f"t.{r.request_queue.split('.')[1]}.outcomes"
    await (await r.channel.declare_queue(rig_queue, passive=True)).unbind(r.exchange, "#")
    failures = await r.channel.declare_queue(exclusive=True)
    await failures.bind(r.exchange, "*.*.*.failed")
    name, replies = await collect_queue(r.channel)
    r.emulator.datocms.set_failure(["lk1"], "publish", "ITEM_LOCKED")
    await r.publish({"operation": OP, "target": "main", "ids": [*ids("p", 4), "lk1"]},
                    reply_to=name)  # fmt: skip
    parked = f"{r.exchange}.unrouted"
    async with r.worker(r.settings(unrouted_sample_seconds=0.1)):
        await replies.wait_for(1)
        await until(lambda: r.metric("bulkops_unrouted_outcomes") == 4)
    assert await r.queue_depth(parked) == 4
    assert await r.queue_depth(failures.name) == 1
    assert await r.queue_depth(r.request_queue) == 0
    assert r.results.messages == []


async def test_a_reply_arrives_in_partitioned_mode(r: Rig) -> None:
    """Partitioned, the router forwards the request to a partition queue: reply_to,
    correlation_id and the request id survive, and the partition's owner replies."""
    await r.channel.queue_delete(r.request_queue)  # partitioned mode declares it anew
    name, replies = await collect_queue(r.channel)
    exchange = f"{r.request_queue}.partitions"
    settings = r.settings(partitions=2, partition_exchange=exchange)
    try:
        async with r.worker(settings):
            await until(lambda: r.metric("bulkops_ready") == 1)  # the queue is declared
            await r.publish({"operation": OP, "target": "main", "ids": ["pa", "pb"]},
                            reply_to=name, correlation_id="part-1", message_id="pm-1")  # fmt: skip
            await replies.wait_for(1, timeout=30)
    finally:
        for queue in (f"{r.request_queue}.p0", f"{r.request_queue}.p1",
                      f"{r.request_queue}.replicas"):  # fmt: skip
            with contextlib.suppress(Exception):
                await r.channel.queue_delete(queue)
        with contextlib.suppress(Exception):
            await r.channel.exchange_delete(exchange)
    (message,) = replies.messages
    assert (message.correlation_id, message.message_id) == ("part-1", "pm-1:reply")
    assert statuses(body_of(message)) == [("pa", "succeeded", None), ("pb", "succeeded", None)]
