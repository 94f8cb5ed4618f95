"""A graceful stop with a backlog keeps per-id order: the requests the worker took and had
not started go back to the HEAD of the request queue, ahead of what was still queued behind
them, also when an ack sent just before the stop made RabbitMQ hand the consumer one more
message that reaches the broker's channel after the basic.cancel: RabbitMQ 3.10 returns such
a message to the head at once, ahead of the nacks that follow the cancel-ok
(rabbitmq-server#3729; .investigation/requeue-race.py). The worker takes it back with
basic.get and gives it back after its own (worker/broker/run.py ``_take_bounced``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.integration.harness import Rig
from tests.integration.harness import probe_depth as depth
from worker.broker.acker import Acker
from worker.client.control import ControlClient

pytestmark = pytest.mark.integration


def dato(operation: str, item_id: str) -> dict[str, Any]:
    return {"operation": f"datocms.items.{operation}", "target": "main", "ids": [item_id]}


async def test_requests_given_back_at_a_stop_come_back_ahead_of_later_ones(
    r: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten single-id publishes (``x`` the sixth) are taken (prefetch 10), an unpublish of
    ``x`` waits in the queue behind them. One request goes out every 2 s, one id each: the
    worker is stopped after the first, giving back the other nine. The next worker must
    publish ``x`` before it unpublishes it: ``x`` ends a draft.

    The stop is set in the same step as the first ack (Acker.ack), so the ack and the
    basic.cancel leave back to back: the unpublish, handed to the consumer for the slot the
    ack frees, reaches the broker's channel after the cancel, every time (a SIGTERM on the
    outcome did so in about half the runs). The first worker never sees it."""
    first = [f"a{n}" if n != 5 else "x" for n in range(10)]
    for item in first:
        await r.publish(dato("publish", item))
    await r.publish(dato("unpublish", "x"))
    r.emulator.config.datocms_rate = (1, 2.0)
    targets = dict(r.settings().targets)
    targets["main"] = targets["main"].model_copy(
        update={"rate_limit": "1/2s", "max_batch_items": 1}
    )
    acked = asyncio.Event()
    ack = Acker.ack

    def ack_and_stop(self: Acker, tag: int) -> None:
        ack(self, tag)
        acked.set()
        stopping.set()  # the loop runs the Acker (ack written) before the stop path's cancel

    monkeypatch.setattr(Acker, "ack", ack_and_stop)
    with caplog.at_level(logging.INFO, logger="bulkops.broker"):
        async with r.worker(r.settings(targets=targets, prefetch=10, linger_seconds=0.0)) as (
            stopping
        ):
            await asyncio.wait_for(acked.wait(), 30)
    monkeypatch.undo()
    drained = [m.getMessage() for m in caplog.records if m.getMessage().startswith("draining")]
    print("RUN1", [(b["id"], b["operation"][14:]) for b in r.results.bodies], drained)
    assert [b["id"] for b in r.results.bodies] == ["a0"]
    assert drained == ["draining: 9 requests given back, 0 to finish"]  # unpublish not seen
    r.emulator.config.datocms_rate = (1000, 1.0)
    targets["main"] = targets["main"].model_copy(update={"rate_limit": "1000/1s"})
    async with r.worker_process(r.env(targets=targets, prefetch=1)):
        outcomes = await r.results.wait_for(11, timeout=60)
        await asyncio.sleep(0.3)
    print("ORDER", [(o["id"], o["operation"][14:]) for o in outcomes])
    on_x = [o for o in outcomes if o["id"] == "x"]
    assert [o["operation"] for o in on_x] == ["datocms.items.publish", "datocms.items.unpublish"]
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert r.emulator.datocms.record_status("x") == "draft"
    assert len(outcomes) == len(r.results.bodies) == 11  # each answered once


async def test_requests_a_hold_queue_drain_gives_back_at_a_stop_go_to_its_head(r: Rig) -> None:
    """The whole DatoCMS target paused: publish a, b, c then unpublish a, b, c move to its
    hold queue. Resumed with one request every 2 s, one id each, prefetch 3: the drain takes
    the three publishes, the first is sent and the worker is stopped. The two publishes not
    started must go back to the hold queue's HEAD (a nack with requeue put them at its tail,
    behind the unpublishes of their ids: RabbitMQ 3.10, quorum queue without a delivery
    limit). The next worker ends every id a draft, each operation answered once."""
    hold = f"{r.request_queue}.held.main"
    items = ["a", "b", "c"]
    settings = r.settings()
    url = settings.amqp_url.get_secret_value()
    targets = dict(settings.targets)
    slow = targets["main"].model_copy(update={"rate_limit": "1/2s", "max_batch_items": 1})
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        await control.pause("main", reason="drain order at a stop")
        for operation in ("publish", "unpublish"):
            for item in items:
                await r.publish(dato(operation, item))
        try:
            r.emulator.config.datocms_rate = (1, 2.0)
            first = r.settings(targets={**targets, "main": slow}, prefetch=3, linger_seconds=0.0)
            async with r.worker(first):
                async with asyncio.timeout(20):
                    while await r.queue_depth(r.request_queue) or await depth(r, hold) != 6:
                        await asyncio.sleep(0.1)
                await control.resume("main")
                async with asyncio.timeout(20):
                    while not r.emulator.requests(api="datocms"):
                        await asyncio.sleep(0.02)
            assert len(r.results.bodies) <= 1
            r.emulator.config.datocms_rate = (1000, 1.0)
            r.registry = CollectorRegistry()  # a new process's metrics
            async with r.worker(r.settings(linger_seconds=0.0)):
                outcomes = await r.results.wait_for(6, timeout=30)
                await asyncio.sleep(0.5)
        finally:
            if await depth(r, hold) is not None:
                await r.channel.queue_delete(hold)
    print("ORDER", [(o["id"], o["operation"][14:], o["status"]) for o in outcomes])
    assert len(r.results.bodies) == 6  # each operation answered once
    for item in items:
        ops = [o["operation"][14:] for o in outcomes if o["id"] == item]
        assert ops == ["publish", "unpublish"], item
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert {i: r.emulator.datocms.record_status(i) for i in items} == dict.fromkeys(items, "draft")
