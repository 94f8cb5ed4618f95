"""Cancel (CONTRACT "Control", issue 23) against the real RabbitMQ and the emulator's real
limits: a Bloomreach delete cancelled after its first window sends no cancelled id in any
later API request, every item is answered exactly once (sent ones with their true outcome,
the rest ``rejected``/``cancelled``) and the replies say the same; a cancel published before
the worker starts withdraws everything of its requests (the batch format names it
``<request_id>:<operation>:cancelled``); a scope cancel withdraws what was published before
it, in that scope only. Scaled down from the issue's 500,000 ids: the same paths, in seconds."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
import pytest

from tests.integration.harness import Rig, collect_queue, ids, in_force
from tests.integration.harness import probe_depth as depth
from worker.client.control import ControlClient
from worker.control.transport import publish_control

pytestmark = pytest.mark.integration

OP = "bloomreach.catalog_items.delete"


def delete(request_id: str, catalog: str, item_ids: list[str]) -> dict[str, Any]:
    return {
        "request_id": request_id, "operation": OP, "target": "shop",
        "catalog_id": catalog, "ids": item_ids,
    }  # fmt: skip


def limited(r: Rig, per_second: int, batch: int, **overrides: Any) -> Any:
    """Settings with Bloomreach limited to ``per_second`` requests (emulator and worker agree)
    of at most ``batch`` ids."""
    r.emulator.config.bloomreach_rate = (per_second, 1.0)
    targets = dict(r.settings().targets)
    targets["shop"] = targets["shop"].model_copy(
        update={"rate_limit": f"{per_second}/1s", "max_batch_items": batch}
    )
    return r.settings(targets=targets, **overrides)


async def control(r: Rig, body: dict[str, Any]) -> None:
    connection = await aio_pika.connect(r.settings().amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await publish_control(channel, body, exchange=r.settings().control_exchange)


def by_id(outcomes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    seen = Counter(o["id"] for o in outcomes)
    assert [i for i, n in seen.items() if n > 1] == []  # each item answered exactly once
    return {o["id"]: o for o in outcomes}


async def test_a_delete_cancelled_after_its_first_window_sends_no_cancelled_id(r: Rig) -> None:
    """4,000 ids in 40 messages, 100 ids a request, 4 requests a second: cancelled by request
    id once the first outcomes are in. Nothing cancelled is sent later; every id is answered
    once; the replies agree with the outcomes."""
    wanted = ids("d", 4000)
    reply_to, replies = await collect_queue(r.channel)
    request_ids = [f"req-{n}" for n in range(40)]
    for n, request_id in enumerate(request_ids):
        await r.publish(delete(request_id, "cat-1", wanted[n * 100 : (n + 1) * 100]),
                        reply_to=reply_to)  # fmt: skip
    async with r.worker(limited(r, 4, 100, linger_seconds=0.05)):
        await r.results.wait_for(1, timeout=30)  # the first window went
        await control(r, {"command": "cancel", "request_ids": request_ids, "reason": "wrong"})
        sent_by_cancel = len(r.emulator.requests(api="bloomreach"))
        outcomes = by_id(await r.results.wait_for(len(wanted), timeout=60, distinct=True))
        await replies.wait_for(len(request_ids), timeout=30)
    assert set(outcomes) == set(wanted)
    deleted = set(r.emulator.bloomreach.deleted("cat-1"))
    succeeded = {i for i, o in outcomes.items() if o["status"] == "succeeded"}
    cancelled = {i for i, o in outcomes.items() if o["status"] == "rejected"}
    assert succeeded == deleted and succeeded | cancelled == set(wanted)
    assert len(succeeded) > 0 and len(cancelled) >= 2000, (len(succeeded), len(cancelled))
    sent = sum(e.items for e in r.emulator.requests(api="bloomreach"))
    assert sent == len(deleted)  # no cancelled id was part of any API request
    assert len(r.emulator.requests(api="bloomreach")) <= sent_by_cancel + 4  # those in flight
    errors = {orjson.dumps(outcomes[i]["error"]) for i in cancelled}
    assert errors == {
        b'{"code":"cancelled","message":"cancelled by bulkops before it was sent: wrong",'
        b'"retryable":false}'
    }
    replied: Counter[str] = Counter()
    for body in replies.bodies:
        for item in body["items"]:
            replied[item["status"]] += 1
            assert outcomes[item["id"]]["status"] == item["status"]
    assert replied == Counter({"succeeded": len(succeeded), "rejected": len(cancelled)})


async def test_a_cancel_sent_before_the_worker_starts_holds_for_it(r: Rig) -> None:
    """Cancelled before any worker ran: those requests' ids are all ``rejected``/
    ``cancelled`` (the batch format names the message ``<request_id>:<op>:cancelled``), the
    others run; nothing cancelled reaches the API."""
    await control(r, {"command": "cancel", "request_ids": ["gone-1", "gone-2"], "reason": "x"})
    await r.publish(delete("gone-1", "cat-1", ids("a", 50)))
    await r.publish(delete("kept", "cat-1", ids("b", 50)))
    await r.publish(delete("gone-2", "cat-1", ids("c", 50)))
    settings = limited(r, 5, 1000, outcome_format="batch")
    async with r.worker(settings):
        await r.results.wait_for(3, timeout=30)
        await asyncio.sleep(0.3)  # nothing more comes
        url = settings.amqp_url.get_secret_value()
        async with ControlClient.connect(url, exchange=settings.control_exchange) as client:
            (report,) = await client.status(timeout=5, expect=1)
    (cancel,) = report["cancels"]  # the cancel in force: what, who, why, since when
    assert cancel["request_ids"] == ["gone-1", "gone-2"] and cancel["reason"] == "x"
    assert cancel["app_id"] == "bulkops" and cancel["since"] > 0 and report["partitions"] is None
    messages = {m.message_id: orjson.loads(m.body) for m in r.results.messages}
    assert len(r.results.messages) == 3
    for request_id, prefix in (("gone-1", "a"), ("gone-2", "c")):
        body = messages[f"{request_id}:{OP}:cancelled"]
        assert body["status"] == "rejected"
        assert [i["id"] for i in body["items"]] == ids(prefix, 50)
        assert {i["error"]["code"] for i in body["items"]} == {"cancelled"}
    assert sorted(r.emulator.bloomreach.deleted("cat-1")) == sorted(ids("b", 50))


async def test_a_scope_cancel_withdraws_that_scope_published_before_it(r: Rig) -> None:
    """A cancel of (shop, cat-2) withdraws the cat-2 backlog published before it; cat-1 runs,
    and a cat-2 request published after the cancel runs too."""
    await r.publish(delete("two-old", "cat-2", ids("x", 30)))
    await r.publish(delete("one", "cat-1", ids("y", 30)))
    await asyncio.sleep(1.1)  # AMQP timestamps are whole seconds
    await control(r, {"command": "cancel", "target": "shop", "catalog_id": "cat-2"})
    await asyncio.sleep(1.1)
    await r.publish(delete("two-new", "cat-2", ids("z", 30)))
    async with r.worker(limited(r, 5, 1000)):
        outcomes = by_id(await r.results.wait_for(90, timeout=30))
    assert {i for i, o in outcomes.items() if o["status"] == "rejected"} == set(ids("x", 30))
    assert sorted(r.emulator.bloomreach.deleted("cat-2")) == sorted(ids("z", 30))
    assert sorted(r.emulator.bloomreach.deleted("cat-1")) == sorted(ids("y", 30))


async def test_a_scope_cancel_withdraws_a_held_request_without_a_timestamp(r: Rig) -> None:
    """A cat-2 request without an AMQP timestamp moved to its hold queue during a pause, then
    a scope cancel of cat-2, then the resume: it was published before the cancel (the worker
    first consumed it before), so all its ids are answered ``rejected``/``cancelled`` and
    none is sent (the time of its consumption from the hold queue is after the cancel)."""
    settings = limited(r, 5, 1000)
    url = settings.amqp_url.get_secret_value()
    hold = f"{r.request_queue}.held.shop.catalog_id.cat-2"
    wanted = ids("nots", 30)
    async with ControlClient.connect(url, exchange=settings.control_exchange) as client:
        try:
            async with r.worker(settings):
                await client.pause("shop", catalog_id="cat-2")
                await in_force(client)
                await r.publish(delete("no-stamp", "cat-2", wanted), timestamp=None)
                async with asyncio.timeout(15):
                    while await depth(r, hold) != 1:
                        await asyncio.sleep(0.1)
                await asyncio.sleep(1.1)
                await control(r, {"command": "cancel", "target": "shop", "catalog_id": "cat-2"})
                await asyncio.sleep(1.1)
                await client.resume("shop", catalog_id="cat-2")
                outcomes = by_id(await r.results.wait_for(30, timeout=20))
        finally:
            if await depth(r, hold) is not None:
                await r.channel.queue_delete(hold)
    assert {o["status"] for o in outcomes.values()} == {"rejected"}
    assert {o["error"]["code"] for o in outcomes.values()} == {"cancelled"}
    assert r.emulator.bloomreach.deleted("cat-2") == []


async def test_a_worker_starts_on_a_control_stream_declared_with_other_arguments(
    r: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream exists with another retention (another cancel TTL): the worker uses it as
    it is, says so, and still hears a cancel."""
    settings = limited(r, 5, 1000)
    exchange = settings.control_exchange
    await r.channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    stream = await r.channel.declare_queue(
        f"{exchange}.state", durable=True,
        arguments={"x-queue-type": "stream", "x-max-age": "1h"},
    )  # fmt: skip
    await stream.bind(exchange)
    fanout = await r.channel.get_exchange(exchange)  # published as is: nothing declared here
    cancel = b'{"command": "cancel", "request_ids": ["gone"]}'
    await fanout.publish(aio_pika.Message(cancel, timestamp=datetime.now(UTC)), "")
    await r.publish(delete("gone", "cat-1", ids("g", 5)))
    await r.publish(delete("kept", "cat-1", ids("k", 5)))
    async with r.worker(settings):
        outcomes = by_id(await r.results.wait_for(10, timeout=30))
    assert {i for i, o in outcomes.items() if o["status"] == "rejected"} == set(ids("g", 5))
    assert "exists with other arguments" in caplog.text
