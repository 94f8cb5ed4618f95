"""A live pause continues a partly sent request (issue 23, "however long the pause lasts"):
its unsent items leave the worker at once as a ``bulkops.continuation`` message in the hold
queue (the original acked: nothing stays unacked through the pause), and after resume the
continuation sends only what was not sent and answers for the whole request."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import orjson
import pytest

from tests.integration.harness import Rig, collect_queue, ids
from tests.integration.test_control_pause import hold_depth, until, until_async
from worker.client.control import ControlClient
from worker.wirenames import CONTINUATION_TYPE, REASON_HEADER

pytestmark = pytest.mark.integration

BULK_PUBLISH = "/items/bulk/publish"


def slow_dato(r: Rig) -> Any:
    """DatoCMS at 1 request a second (emulator and worker agree), 200 ids a bulk request."""
    r.emulator.config.datocms_rate = (1, 1.0)
    targets = dict(r.settings().targets)
    targets["main"] = targets["main"].model_copy(update={"rate_limit": "1/1s"})
    return r.settings(targets=targets, linger_seconds=0.05)


async def unacked(queue: str) -> int:
    """The queue's unacknowledged messages, as the broker counts them (rabbitmqctl)."""
    proc = await asyncio.create_subprocess_exec(
        "timeout", "60", "rabbitmqctl", "-q", "list_queues", "name", "messages_unacknowledged",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    for line in out.decode().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    raise AssertionError(f"{queue} not listed: {out!r}")


async def peek(r: Rig, name: str, count: int) -> list[Any]:
    """The first ``count`` messages of a queue (aiormq's: ``.header.properties``,
    ``.body``), put back in their order."""
    underlay = await r.channel.get_underlay_channel()
    probe = await underlay.connection.channel()
    try:
        taken = []
        for _ in range(count):
            message = await probe.basic_get(name, no_ack=False)
            assert message.delivery_tag is not None, f"{name}: fewer than {count} messages"
            taken.append(message)
        for message in taken:
            await probe.basic_nack(message.delivery_tag, requeue=True)
        return taken
    finally:
        await probe.close()


async def test_a_partly_sent_request_leaves_as_a_continuation_and_is_answered_once(
    r: Rig,
) -> None:
    """One DatoCMS publish of 600 ids at 1 request/s, with a reply_to: paused live after its
    first bulk request. While paused: nothing unacked in the request queue, one
    ``bulkops.continuation`` in the hold queue, no further request. After resume: every id
    answered once, each sent once, one reply of 600 items agreeing with the outcomes."""
    settings = slow_dato(r)
    url = settings.amqp_url.get_secret_value()
    hold = f"{r.request_queue}.held.main"
    wanted = ids("c", 600)
    reply_to, replies = await collect_queue(r.channel)
    await r.publish({"operation": "datocms.items.publish", "target": "main", "ids": wanted},
                    reply_to=reply_to, correlation_id="corr-1")  # fmt: skip
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):
                await until(lambda: len(r.emulator.requests(path_contains=BULK_PUBLISH)) >= 1)
                await control.pause("main", reason="continuation test")
                await until_async(lambda: hold_depth(r, hold), 1, timeout=20)
                await r.results.wait_for(200, timeout=20)  # the sent batch answered
                sent = len(r.emulator.requests(path_contains=BULK_PUBLISH))
                assert sent == 1
                # the original was acked (the broker's count lags up to its stats interval)
                await until_async(lambda: unacked(r.request_queue), 0, timeout=15)
                (held,) = await peek(r, hold, 1)
                props = held.header.properties
                assert props.message_type == CONTINUATION_TYPE
                assert props.reply_to == reply_to and props.correlation_id == "corr-1"
                body = orjson.loads(held.body)
                assert len(body["done"]) == 200 and body["results"] == {}
                assert orjson.loads(body["request"])["ids"] == wanted
                await asyncio.sleep(2.5)
                assert len(r.emulator.requests(path_contains=BULK_PUBLISH)) == sent
                assert replies.messages == []  # the reply waits for the continuation
                await control.resume("main")
                outcomes = await r.results.wait_for(600, timeout=60)
                await replies.wait_for(1, timeout=20)
                await until_async(lambda: hold_depth(r, hold), 0)
                await asyncio.sleep(0.5)
        finally:
            if await hold_depth(r, hold) is not None:
                await r.channel.queue_delete(hold)
    seen = collections.Counter(o["id"] for o in outcomes)
    assert sorted(seen) == sorted(wanted) and set(seen.values()) == {1}
    assert {o["status"] for o in outcomes} == {"succeeded"}
    bulk = r.emulator.requests(path_contains=BULK_PUBLISH)
    assert sum(e.items for e in bulk) == 600  # no id sent twice
    assert {r.emulator.datocms.record_status(i) for i in wanted} == {"published"}
    (reply,) = replies.bodies
    assert [item["id"] for item in reply["items"]] == wanted
    assert collections.Counter(i["status"] for i in reply["items"]) == {"succeeded": 600}
    assert len(replies.messages) == 1


async def test_per_id_order_holds_across_a_continuation(r: Rig) -> None:
    """A publishes 600 ids (partly sent at the pause), B, later, unpublishes A's last id x
    (unsent at the pause): the hold queue gets A's continuation before B, and after resume x
    ends unpublished, the others published."""
    settings = slow_dato(r)
    url = settings.amqp_url.get_secret_value()
    hold = f"{r.request_queue}.held.main"
    wanted = ids("o", 600)
    x = wanted[-1]
    await r.publish({"operation": "datocms.items.publish", "target": "main", "ids": wanted})
    await r.publish({"operation": "datocms.items.unpublish", "target": "main", "ids": [x]})
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):
                await until(lambda: len(r.emulator.requests(path_contains=BULK_PUBLISH)) >= 1)
                await control.pause("main")
                await until_async(lambda: hold_depth(r, hold), 2, timeout=20)
                first, second = await peek(r, hold, 2)
                assert first.header.properties.message_type == CONTINUATION_TYPE
                assert second.header.properties.message_type != CONTINUATION_TYPE
                assert orjson.loads(second.body)["operation"] == "datocms.items.unpublish"
                await until_async(lambda: unacked(r.request_queue), 0, timeout=15)
                await control.resume("main")
                outcomes = await r.results.wait_for(601, timeout=60)
                await until_async(lambda: hold_depth(r, hold), 0)
        finally:
            if await hold_depth(r, hold) is not None:
                await r.channel.queue_delete(hold)
    seen = collections.Counter((o["operation"], o["id"]) for o in outcomes)
    assert set(seen.values()) == {1} and len(seen) == 601
    assert r.emulator.datocms.record_status(x) == "draft"
    assert {r.emulator.datocms.record_status(i) for i in wanted[:-1]} == {"published"}


async def test_a_continuation_in_the_request_queue_is_dead_lettered(r: Rig) -> None:
    """A ``bulkops.continuation`` published to the request queue: dead-lettered with the
    reason, its not-done ids answered ``rejected`` as for an invalid message, nothing sent."""
    reply_to, replies = await collect_queue(r.channel)
    request = orjson.dumps(
        {"operation": "datocms.items.publish", "target": "main", "ids": ["a", "b", "c"]}
    )
    body = orjson.dumps({"request": request.decode(), "done": ["a"], "results": {}})
    await r.publish(body, type=CONTINUATION_TYPE, reply_to=reply_to)
    async with r.worker():
        outcomes = await r.results.wait_for(2, timeout=20)
        (reply,) = (await replies.wait_for(1, timeout=20)) and replies.bodies
    reason = "a continuation is only read from a hold queue"
    assert sorted(o["id"] for o in outcomes) == ["b", "c"]
    assert {o["status"] for o in outcomes} == {"rejected"}
    assert reply["error"]["message"] == reason
    assert [i["id"] for i in reply["items"]] == ["b", "c"]
    (dead,) = await peek(r, r.dlq, 1)
    props = dead.header.properties
    assert props.headers[REASON_HEADER] == reason
    assert props.message_type == CONTINUATION_TYPE
    assert r.emulator.requests(api="datocms") == []
