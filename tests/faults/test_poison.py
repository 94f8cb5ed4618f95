"""Scenario 5: poison input in a stream of good messages.

Not JSON, wrong types, 100,000 ids in one message, a 20 MB body, unknown operation and target,
ids with '/' or control characters, duplicate ids. Each poison message is either dead-lettered
with the reason in `x-bulkops-reason` (its readable ids answered `rejected`), or, when only
some of its ids are bad, those ids are answered `rejected` with `invalid_id` and the rest sent.
The good messages around the poison are answered `succeeded`; nothing is lost or left queued.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiormq.abc import DeliveredMessage

from tests.faults.ledger import Ledger
from tests.faults.support import FAST, rss_kib, wait_until, worker
from tests.integration.harness import Rig, ids, plain_targets
from worker.broker import REASON_HEADER
from worker.messages import MAX_BODY_BYTES, MAX_IDS, outcome_message_id, routing_operation

pytestmark = pytest.mark.integration
PUBLISH = "datocms.items.publish"
DELETE = "bloomreach.catalog_items.delete"
# The 100,000-id message uses an operation no other message here uses, so its outcomes can be
# counted on a queue of their own instead of being kept as messages by the test.
MANY_OP = "datocms.uploads.destroy"
MANY = 100_000


class Counted:
    """Consumes one queue without acks, keeping only message ids and what the bodies say
    (on the aiormq channel: aio-pika's per-message cost would slow the worker next door)."""

    def __init__(self, ledger: Ledger, expected: int) -> None:
        self.ledger = ledger
        self.expected = expected
        self.statuses: collections.Counter[tuple[str, str | None]] = collections.Counter()
        self.mismatched = 0

    async def __call__(self, message: DeliveredMessage) -> None:
        body = orjson.loads(message.body)
        mid = str(message.header.properties.message_id)
        if mid != outcome_message_id(body["request_id"], body["operation"], body["id"]):
            self.mismatched += 1
        self.statuses[(body["status"], body["error"] and body["error"]["code"])] += 1
        self.ledger.counted[mid] += 1
        total = self.ledger.counted.total()
        if total % 1000 == 0 or total >= self.expected:  # settle() recounts on each wake
            self.ledger.results.changed.set()


async def test_poison_among_good_messages(r: Rig) -> None:
    r.emulator.config.bloomreach_rate = (5, 1.0)
    ledger = Ledger("5 poison input among good messages", r.results)
    good: list[str] = []  # outcome message ids that must be `succeeded`
    rejected: dict[str, tuple[str, str]] = {}  # outcome message id -> (code, routing key)
    reasons: dict[str, str] = {}  # dead-lettered message_id -> what the reason must say

    def expect_good(n: int) -> dict[str, Any]:
        if n % 2:
            body = ledger.expect(f"g{n}", DELETE, ids(f"g{n}-", 5), target="shop", catalog_id="c")
            good.extend(outcome_message_id(f"g{n}", DELETE, i) for i in ids(f"g{n}-", 5))
        else:
            body = ledger.expect(f"g{n}", PUBLISH, ids(f"g{n}-", 5), target="main")
            good.extend(outcome_message_id(f"g{n}", PUBLISH, i) for i in ids(f"g{n}-", 5))
        return body

    def expect_rejected(rid: str, operation: str, item_ids: list[str], code: str) -> None:
        ledger.expect(rid, operation, item_ids)
        for i in item_ids:
            key = f"{routing_operation(operation)}.rejected"
            rejected[outcome_message_id(rid, operation, i)] = (code, key)

    poison: list[tuple[str, bytes | dict[str, Any]]] = []

    def dead(mid: str, body: bytes | dict[str, Any], reason: str) -> None:
        poison.append((mid, body))
        reasons[mid] = reason

    dead("p-notjson", b"{not json", "not JSON")
    dead("p-array", b"[1, 2]", "JSON object")
    dead(
        "p-op-type",
        {"operation": 42, "target": "main", "ids": ["wt-1", "wt-2"], "request_id": "p-op-type"},
        "operation: Input should be a valid string",
    )
    expect_rejected("p-op-type", "invalid", ["wt-1", "wt-2"], "invalid_message")
    dead("p-ids-type", {"operation": PUBLISH, "target": "main", "ids": "abc"}, "ids:")
    dead(
        "p-env-type",
        {"operation": PUBLISH, "target": "main", "environment": 7, "ids": ["we-1"]},
        "environment:",
    )
    expect_rejected("p-env-type", PUBLISH, ["we-1"], "invalid_message")
    huge = orjson.dumps(
        {"operation": PUBLISH, "target": "main", "ids": ids("h", 1), "pad": "x" * 20_000_000}
    )
    dead("p-huge", huge, f"over {MAX_BODY_BYTES}")
    dead(
        "p-unknown-op",
        {"operation": "datocms.items.explode", "target": "main", "ids": ["uo-1", "uo-2"]},
        "unknown operation 'datocms.items.explode'",
    )
    expect_rejected("p-unknown-op", "datocms.items.explode", ["uo-1", "uo-2"], "unknown_operation")
    dead(
        "p-unknown-target",
        {"operation": PUBLISH, "target": "nope", "ids": ["ut-1"]},
        "unknown target 'nope'",
    )
    expect_rejected("p-unknown-target", PUBLISH, ["ut-1"], "unknown_target")

    # Bad ids inside an otherwise valid message: those ids rejected, the rest sent, and
    # duplicates answered once.
    bad_bloom = ["ok-b1", "a/b", "ctl\x01x", "ok-b1", "tab\tx", "ok-b2", "a/b"]
    bad_dato = ["okd-1", "x/y", "nl\nid", 5, "", "okd-1", "okd-2", "okd-2"]
    mixed: list[tuple[str, dict[str, Any]]] = [
        (
            "p-ids-bloom",
            {"operation": DELETE, "target": "shop", "catalog_id": "c", "ids": bad_bloom},
        ),
        ("p-ids-dato", {"operation": PUBLISH, "target": "main", "ids": bad_dato}),
    ]
    ledger.expect("p-ids-bloom", DELETE, ["ok-b1", "ok-b2"])
    good += [outcome_message_id("p-ids-bloom", DELETE, i) for i in ("ok-b1", "ok-b2")]
    expect_rejected("p-ids-bloom", DELETE, ["a/b", "ctl\x01x", "tab\tx"], "invalid_id")
    ledger.expect("p-ids-dato", PUBLISH, ["okd-1", "okd-2"])
    good += [outcome_message_id("p-ids-dato", PUBLISH, i) for i in ("okd-1", "okd-2")]
    expect_rejected("p-ids-dato", PUBLISH, ["x/y", "nl\nid", "5", ""], "invalid_id")

    # Good messages before, between and after every poison message.
    n = 0
    stream: list[tuple[str, bytes | dict[str, Any]]] = [*poison, *mixed]
    for mid, body in stream:
        for _ in range(3):
            await r.publish(expect_good(n), message_id=f"g{n}")
            n += 1
        await r.publish(body, message_id=mid)
    for _ in range(3):
        await r.publish(expect_good(n), message_id=f"g{n}")
        n += 1

    async with worker(r.env(**{**FAST, "targets": plain_targets(r.settings(), "5/1s")})) as proc:
        await ledger.settle(timeout=40)
        await wait_until(lambda: _depth_is(r, r.dlq, len(reasons)), 10)
    assert not [line for line in proc.stderr if "session ended" in line]
    row = ledger.check()
    assert row.duplicated == 0

    # Good ids all succeeded, and the ones around the poison were not held behind it.
    outcomes = {str(m.message_id): (m, orjson.loads(m.body)) for m in r.results.messages}
    assert [mid for mid in good if outcomes[mid][1]["status"] != "succeeded"] == []
    # Rejected ids: the specific code, not sent, routed by status.
    for mid, (code, routing_key) in rejected.items():
        message, body = outcomes[mid]
        assert (body["status"], body["error"]["code"]) == ("rejected", code), (mid, body)
        assert body["attempts"] == 0 and body["batch_id"] is None
        assert message.routing_key == routing_key, (mid, message.routing_key)
    slash = outcomes[outcome_message_id("p-ids-bloom", DELETE, "a/b")][1]
    assert "'/'" in slash["error"]["message"]
    control = outcomes[outcome_message_id("p-ids-bloom", DELETE, "ctl\x01x")][1]
    assert "control characters" in control["error"]["message"]
    # Only good ids reached the APIs: as many as there are good ids, each once.
    bulk = [e for e in r.emulator.requests() if "bulk" in e.path and e.status < 300]
    assert sum(e.items for e in bulk) == len(good)
    assert r.emulator.breaches() == []
    # Dead letters: exactly the whole-message poison, with the reason and the body kept.
    letters = await _dead_letters(r, len(reasons))
    got = {str(m.message_id): m for m in letters}
    assert set(got) == set(reasons)
    for mid, must_say in reasons.items():
        reason = str(got[mid].headers[REASON_HEADER])
        assert must_say in reason, (mid, reason)
        assert got[mid].headers["x-bulkops-original-queue"] == r.request_queue
    assert len(got["p-huge"].body) == len(huge)
    assert got["p-notjson"].body == b"{not json"
    assert await r.queue_depth(r.request_queue) == 0


async def _depth_is(r: Rig, queue: str, n: int) -> bool:
    return await r.queue_depth(queue) == n


async def _dead_letters(r: Rig, count: int) -> list[AbstractIncomingMessage]:
    queue = await r.channel.declare_queue(r.dlq, passive=True)
    got = []
    for _ in range(count):
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        await message.ack()
        got.append(message)
    assert await queue.get(fail=False) is None, "no more dead letters than expected"
    return got


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_hundred_thousand_ids_in_one_message(r: Rig) -> None:
    """A message of 100,000 ids does not fit the schema (at most 10,000): it is dead-lettered
    and each of its ids answered `rejected` (`invalid_message`), once. Publishing those
    100,000 outcomes holds neither the loop nor the good messages behind it, and the worker's
    memory stays bounded while it does."""
    ledger = Ledger("5 one message of 100,000 ids", r.results)
    suffix = r.request_queue.split(".")[1]
    mine = await r.channel.declare_queue(f"t.{suffix}.outcomes", passive=True)
    await mine.unbind(r.exchange, "#")  # the rig keeps the good outcomes as messages...
    await mine.bind(r.exchange, "datocms.items.#")
    many_queue = await r.channel.declare_queue(f"t.{suffix}.many", exclusive=True)
    await many_queue.bind(r.exchange, f"{MANY_OP}.#")  # ...the 100,000 are only counted
    counted = Counted(ledger, MANY)
    raw = await r.channel.get_underlay_channel()
    await raw.basic_consume(many_queue.name, counted, no_ack=True)
    many = [f"m{n:06d}" for n in range(MANY)]
    body = {"operation": MANY_OP, "target": "main", "ids": many, "request_id": "p-many"}
    ledger.expect("p-many", MANY_OP, many)
    await r.publish(body, message_id="p-many")
    good = [ledger.expect(f"g{n}", PUBLISH, ids(f"g{n}-", 5), target="main") for n in range(20)]

    # A short idle-renew: answering the 100,000 takes far longer, and that is work in flight,
    # not an idle consumer (a renew mid-way once redelivered the message and answered twice).
    async with worker(r.env(**FAST, consumer_idle_renew_seconds=5)) as proc:
        baseline = rss_kib(proc)
        await wait_until(lambda: counted.ledger.counted.total() > 0, 30)
        await r.publish_many(good)  # while the 100,000 rejections are going out
        published_good = time.monotonic()
        await wait_until(lambda: len(r.results.messages) >= 100, 30)
        good_took = time.monotonic() - published_good
        rejections_then = ledger.counted.total()
        peak = baseline
        deadline = time.monotonic() + 240
        while ledger.answered() < len(ledger.expected) and time.monotonic() < deadline:
            peak = max(peak, rss_kib(proc))
            await ledger.settle(timeout=0.5, grace=0)
        await ledger.settle(timeout=1)
        await wait_until(lambda: _depth_is(r, r.dlq, 1), 10)
    print(
        f"100,000 ids: good answered in {good_took:.1f}s with {rejections_then} of {MANY} "
        f"rejections out; worker RSS {baseline // 1024} -> peak {peak // 1024} MiB"
    )
    assert not [line for line in proc.stderr if "session ended" in line], "loop stalled"
    row = ledger.check()
    assert row.duplicated == 0
    assert rejections_then < MANY, "good messages waited for all 100,000 rejections"
    assert {o["status"] for o in r.results.bodies} == {"succeeded"}
    assert counted.statuses == {("rejected", "invalid_message"): MANY}, counted.statuses
    assert counted.mismatched == 0
    assert (peak - baseline) // 1024 < 150, f"RSS grew {(peak - baseline) // 1024} MiB"
    [letter] = await _dead_letters(r, 1)
    assert f"at most {MAX_IDS} items" in str(letter.headers[REASON_HEADER])
    assert letter.body == orjson.dumps(body)
    assert await r.queue_depth(r.request_queue) == 0
