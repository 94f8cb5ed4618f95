"""Scenario 1: kill -9 of the worker at each point of a request's life, then a restart.

Nothing is lost; the only items answered twice are those of requests that were in flight
(consumed, not acked) at the kill, and a repeat carries the same message_id.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage

from tests.faults.ledger import Ledger
from tests.faults.support import FAST, kill9, metric, wait_until, worker
from tests.integration.harness import Results, Rig, ids, start_worker
from worker.client import outcome_items
from worker.emulator import Fault

pytestmark = pytest.mark.integration
OP = "datocms.items.publish"


async def _restart_and_settle(r: Rig, ledger: Ledger, env: dict[str, str]) -> None:
    ledger.mark_fault_over()
    async with worker(env):
        await ledger.settle(timeout=60)
    ledger.check()
    assert r.emulator.breaches() == []
    assert await r.queue_depth(r.request_queue) == 0


async def test_kill_with_ids_pending_in_a_batch(r: Rig) -> None:
    """Killed while ids linger in an unsent batch: all come back, none answered twice."""
    ledger = Ledger("1a kill -9: ids pending in a batch", r.results)
    for n in range(5):
        await r.publish(ledger.expect(f"pend-{n}", OP, ids(f"p{n}-", 10), target="main"))
    proc = await start_worker(r.env(**{**FAST, "linger_seconds": 30}))
    await wait_until(lambda: _pending_is(proc, 50))
    ledger.snapshot_inflight()
    await kill9(proc)
    assert r.emulator.requests(path_contains="/bulk/") == [], "nothing was sent yet"
    await _restart_and_settle(r, ledger, r.env(**FAST))
    assert ledger.row().duplicated == 0


async def _pending_is(proc: object, n: int) -> bool:
    return await metric(proc, "bulkops_pending_items") == n  # type: ignore[arg-type]


async def test_kill_after_the_api_call_before_the_outcome(r: Rig) -> None:
    """Killed while the DatoCMS job runs: the next worker sends the ids again (bulk publish is
    idempotent in effect) and answers each once; no outcome had gone out before."""
    r.emulator.config.datocms_job_seconds = 3.0
    ledger = Ledger("1b kill -9: after API call, before outcome", r.results)
    for n in range(4):
        await r.publish(ledger.expect(f"api-{n}", OP, ids(f"a{n}-", 25), target="main"))
    proc = await start_worker(r.env(**FAST))
    await wait_until(lambda: bool(r.emulator.requests(path_contains="/items/bulk/publish")))
    ledger.snapshot_inflight()
    await kill9(proc)
    assert r.results.messages == []
    r.emulator.config.datocms_job_seconds = 0.05
    await _restart_and_settle(r, ledger, r.env(**FAST))
    assert len(r.emulator.requests(path_contains="/items/bulk/publish")) >= 2
    assert ledger.row().duplicated == 0


async def test_kill_after_the_outcome_before_the_ack(r: Rig) -> None:
    """One message of 400 ids goes out as two batches; the second is answered, the first is
    stuck, so the message is not acked. Killed then: the message comes back, the answered
    half is answered again with the same message_ids, and nothing else is repeated."""
    r.emulator.inject(Fault("slow", count=1, path_contains="/items/bulk/publish", delay=8))
    ledger = Ledger("1c kill -9: after outcome, before ack", r.results)
    await r.publish(ledger.expect("big", OP, ids("b", 400), target="main"))
    env = r.env(**{**FAST, "http_timeout_seconds": 20})
    proc = await start_worker(env)
    # The small requests only once a batch of the big one is stuck: a worker that starts
    # waits one window, and then every ready batch goes at once, so the slow fault could
    # otherwise hit the small requests' batch instead.
    await wait_until(lambda: bool(r.emulator.requests(path_contains="/items/bulk/publish")))
    for n in range(3):  # requests answered and acked before the kill: never repeated
        await r.publish(ledger.expect(f"done-{n}", OP, [f"d{n}"], target="main"))
    await r.results.wait_for(203, timeout=30)
    await asyncio.sleep(0.5)  # the acks of the small requests reach the broker
    assert ledger.snapshot_inflight() == 400
    await kill9(proc)
    started = time.monotonic()
    await _restart_and_settle(r, ledger, r.env(**FAST))
    assert time.monotonic() - started < 30
    row = ledger.row()
    assert row.duplicated >= 200, "the half answered before the kill was answered again"
    assert {str(m.message_id).split(":")[0] for m in r.results.messages} >= {"big"}


async def test_kill_mid_backlog_with_replies_answers_every_request(r: Rig) -> None:
    """kill -9 while a backlog of requests with reply_to is being answered (outcome mode
    `failures`): after a restart every request has its reply, none is lost; a request
    answered twice (in flight at the kill) is answered with the same message_id and the
    same items; every failure outcome is published."""
    reply_queue = await r.channel.declare_queue(f"{r.request_queue}.replies", durable=True)
    replies = Results()

    async def collect(message: AbstractIncomingMessage) -> None:
        replies.messages.append(message)
        replies.changed.set()
        await message.ack()

    await reply_queue.consume(collect)
    r.emulator.config.datocms_job_seconds = 0.3
    r.emulator.datocms.set_failure(["k7-00003"], "publish", "ITEM_LOCKED")
    wanted = {f"k{n}": ids(f"k{n}-", 20) for n in range(60)}
    for request_id, item_ids in wanted.items():
        await r.publish({"operation": OP, "target": "main", "ids": item_ids,
                         "request_id": request_id}, reply_to=reply_queue.name)  # fmt: skip
    env = r.env(**{**FAST, "item_outcomes": "failures", "max_inflight_batches": 1})
    try:
        proc = await start_worker(env)
        await replies.wait_for(10, timeout=30)
        await kill9(proc)
        before = len(replies.messages)
        assert before < len(wanted), "killed mid-backlog"
        async with worker(env):
            await wait_until(lambda: {b["request_id"] for b in replies.bodies} == set(wanted), 60)
        assert await r.queue_depth(r.request_queue) == 0
    finally:
        await r.channel.queue_delete(reply_queue.name)
    seen: dict[str, list[AbstractIncomingMessage]] = {}
    for message in replies.messages:
        seen.setdefault(orjson.loads(message.body)["request_id"], []).append(message)
    for request_id, messages in seen.items():
        assert {m.message_id for m in messages} == {f"{request_id}:reply"}
        items = {orjson.dumps(orjson.loads(m.body)["items"]) for m in messages}
        assert len(items) == 1, f"{request_id} answered twice, differently"
        body = orjson.loads(messages[0].body)
        assert [i["id"] for i in body["items"]] == wanted[request_id]
    assert orjson.loads(seen["k7"][0].body)["counts"] == {"succeeded": 19, "failed": 1,
                                                          "rejected": 0}  # fmt: skip
    duplicated = sum(len(m) - 1 for m in seen.values())
    assert duplicated <= len(wanted) - 10, "only requests in flight at the kill repeat"
    failures = [b for b in r.results.bodies if b["id"] == "k7-00003"]
    assert failures and {b["status"] for b in r.results.bodies} == {"failed"}


async def test_kill_mid_backlog_in_the_batch_format_loses_nothing(r: Rig) -> None:
    """BULKOPS_OUTCOME_FORMAT=batch, kill -9 mid-backlog (one locked record, one invalid id):
    after a restart every item is answered inside some batch message, none lost; only items
    of requests in flight at the kill repeat, and a repeat carries the same per-item identity
    (request_id, operation, id) and the same status."""
    r.emulator.config.datocms_job_seconds = 0.3
    r.emulator.datocms.set_failure(["bk7-00003"], "publish", "ITEM_LOCKED")
    ledger = Ledger("1e kill -9 mid-backlog, batch format", r.results)
    for n in range(60):
        extra = ["bad id"] if n == 9 else []
        await r.publish(ledger.expect(f"bk{n}", OP, [*ids(f"bk{n}-", 20), *extra],
                                      target="main"))  # fmt: skip
    env = r.env(**{**FAST, "outcome_format": "batch", "max_inflight_batches": 1})
    proc = await start_worker(env)
    await wait_until(lambda: ledger.answered() >= 200, 30)
    ledger.snapshot_inflight(recent=6)
    await kill9(proc)
    assert ledger.answered() < 1201, "killed mid-backlog"
    await _restart_and_settle(r, ledger, env)
    assert {m.type for m in r.results.messages} == {"bulkops.outcomes"}
    statuses: dict[str, set[str]] = {}
    for message in r.results.messages:
        body = orjson.loads(message.body)
        for item in body["items"]:
            statuses.setdefault(f"{item['request_id']}:{item['id']}", set()).add(body["status"])
    assert all(len(s) == 1 for s in statuses.values()), "a repeat says the same"
    assert statuses["bk7:bk7-00003"] == {"failed"}
    assert statuses["bk9:bad id"] == {"rejected"}


async def test_redelivered_request_in_the_batch_format_repeats_the_same_items(r: Rig) -> None:
    """1c in the batch format: the half of a 400-id message answered before the kill is
    answered again after the redelivery, in another batch message (another batch_id), with
    the same per-item identity (request_id, operation, id), so a consumer drops it."""
    r.emulator.inject(Fault("slow", count=1, path_contains="/items/bulk/publish", delay=8))
    ledger = Ledger("1f kill -9: after outcome, before ack, batch", r.results)
    await r.publish(ledger.expect("big", OP, ids("b", 400), target="main"))
    env = r.env(**{**FAST, "http_timeout_seconds": 20, "outcome_format": "batch"})
    proc = await start_worker(env)
    await wait_until(lambda: bool(r.emulator.requests(path_contains="/items/bulk/publish")))
    for n in range(3):
        await r.publish(ledger.expect(f"done-{n}", OP, [f"d{n}"], target="main"))
    await wait_until(lambda: ledger.answered() >= 203, 30)
    await asyncio.sleep(0.5)  # the acks of the small requests reach the broker
    assert ledger.snapshot_inflight() == 400
    before = {str(m.message_id) for m in r.results.messages}
    await kill9(proc)
    await _restart_and_settle(r, ledger, r.env(**{**FAST, "outcome_format": "batch"}))
    row = ledger.row()
    assert row.duplicated >= 200, "the half answered before the kill was answered again"
    again = [m for m in r.results.messages if str(m.message_id) not in before]
    repeated = {(i["request_id"], i["operation"], i["id"]) for m in again
                for i in outcome_items(m.body)}  # fmt: skip
    first = {(i["request_id"], i["operation"], i["id"]) for m in r.results.messages
             if str(m.message_id) in before for i in outcome_items(m.body)}  # fmt: skip
    assert len(first & repeated) >= 200
    assert {i[0] for i in first & repeated} == {"big"}
