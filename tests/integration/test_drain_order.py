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

from tests.integration.harness import Rig
from worker.broker.acker import Acker

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
