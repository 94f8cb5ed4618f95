"""Scenario 2: RabbitMQ restarted mid-stream (stop_app/start_app, and a full stop and start),
on a private node. The worker reconnects by itself and nothing is lost; only requests in
flight at the restart may be answered twice."""

from __future__ import annotations

import asyncio
import collections

import orjson
import pytest

from tests.faults.ledger import Ledger
from tests.faults.support import FAST, PrivateBroker, wait_until, worker
from tests.integration.harness import Results, Rig

pytestmark = pytest.mark.integration
OP = "datocms.items.publish"
PREFETCH = 5


async def _stream(pr: Rig, ledger: Ledger, n: int) -> None:
    for i in range(n):
        await pr.publish(ledger.expect(f"s{i}", OP, [f"s{i}-a", f"s{i}-b"], target="main"))


async def test_stop_app_then_start_app(pr: Rig, private_broker: PrivateBroker) -> None:
    """stop_app closes every connection; the worker retries until start_app and carries on."""
    pr.emulator.config.datocms_job_seconds = 0.3
    ledger = Ledger("2a broker stop_app/start_app", pr.results)
    await _stream(pr, ledger, 40)
    async with worker(pr.env(**FAST, prefetch=PREFETCH, max_inflight_batches=1)):
        await pr.results.wait_for(10, timeout=30)
        ledger.allow_inflight(PREFETCH * 2)  # prefetch messages of 2 ids
        await asyncio.to_thread(private_broker.stop_app)
        await asyncio.sleep(2)
        await asyncio.to_thread(private_broker.start_app)
        ledger.mark_fault_over()
        await ledger.settle(timeout=60)
    ledger.check()
    assert pr.emulator.breaches() == []


async def test_full_stop_and_start(pr: Rig, private_broker: PrivateBroker) -> None:
    """The node stops entirely and starts again from disk: durable queue and persistent
    messages are back, the worker reconnects and answers the rest."""
    pr.emulator.config.datocms_job_seconds = 0.3
    ledger = Ledger("2b broker full stop/start", pr.results)
    await _stream(pr, ledger, 40)
    async with worker(pr.env(**FAST, prefetch=PREFETCH, max_inflight_batches=1)):
        await pr.results.wait_for(10, timeout=30)
        ledger.allow_inflight(PREFETCH * 2)  # prefetch messages of 2 ids
        await asyncio.to_thread(private_broker.stop)
        await asyncio.to_thread(private_broker.start)
        ledger.mark_fault_over()
        await ledger.settle(timeout=60)
    ledger.check()
    assert pr.emulator.breaches() == []


async def test_stop_app_then_start_app_with_replies(pr: Rig, private_broker: PrivateBroker) -> None:
    """The broker restarts while requests with reply_to are answered (outcome mode `none`):
    every request gets its reply once the worker is back, a repeat carries the same
    message_id and items, and only requests in flight at the restart repeat."""
    reply_queue = await pr.channel.declare_queue(f"{pr.request_queue}.replies", durable=True)
    replies = Results()

    await reply_queue.consume(replies.collect_once)
    pr.emulator.config.datocms_job_seconds = 0.3
    wanted = {f"r{i}": [f"r{i}-a", f"r{i}-b"] for i in range(40)}
    for request_id, ids in wanted.items():
        await pr.publish({"operation": OP, "target": "main", "ids": ids,
                          "request_id": request_id}, reply_to=reply_queue.name)  # fmt: skip
    env = pr.env(**FAST, prefetch=PREFETCH, max_inflight_batches=1, item_outcomes="none")
    try:
        async with worker(env):
            await replies.wait_for(10, timeout=30)
            await asyncio.to_thread(private_broker.stop_app)
            await asyncio.sleep(2)
            await asyncio.to_thread(private_broker.start_app)
            await wait_until(lambda: {b["request_id"] for b in replies.bodies} == set(wanted), 60)
    finally:
        await pr.channel.queue_delete(reply_queue.name)
    counts = collections.Counter(str(m.message_id) for m in replies.messages)
    assert set(counts) == {f"{r}:reply" for r in wanted}
    assert sum(n - 1 for n in counts.values()) <= PREFETCH, "only in-flight requests repeat"
    for message in replies.messages:
        body = orjson.loads(message.body)
        assert [i["id"] for i in body["items"]] == wanted[body["request_id"]]
    assert pr.results.messages == []  # mode none: no outcome
    assert pr.emulator.breaches() == []
