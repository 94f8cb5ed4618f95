"""Bad input gets a clear answer and good messages around it flow on."""

from __future__ import annotations

import pytest

from tests.integration.harness import Rig
from worker.broker import REASON_HEADER

pytestmark = pytest.mark.integration


async def dead_letters(r: Rig, count: int) -> list:
    queue = await r.channel.declare_queue(r.dlq, passive=True)
    got = []
    for _ in range(count):
        message = await queue.get(timeout=5, fail=True)
        await message.ack()
        got.append(message)
    assert await queue.get(fail=False) is None, "no more dead letters than expected"
    return got


async def test_invalid_messages_are_dead_lettered_with_a_reason_and_readable_ids_rejected(
    r: Rig,
) -> None:
    """Not JSON, not an object, schema misfits and unknown operation/target/scope are parked on
    the DLQ with the reason in a header; ids that can be read get `rejected` outcomes; the
    valid message in between is processed normally."""
    await r.publish(
        b"{not json", message_id="m-notjson", type="upstream.job", app_id="feed", priority=3
    )
    await r.publish(b"[1, 2]", message_id="m-list")
    await r.publish(
        {"operation": "datocms.items.publish", "target": "main", "ids": "abc"},
        message_id="m-ids-string",
    )
    await r.publish(
        {"operation": "datocms.items.publish", "target": "main", "ids": ["ok-1"]},
        message_id="m-good",
    )
    await r.publish(
        {"operation": "datocms.items.explode", "target": "main", "ids": ["u1"]},
        message_id="m-unknown-op",
    )
    await r.publish(
        {"operation": "datocms.items.publish", "target": "nope", "ids": ["t1"]},
        message_id="m-unknown-target",
    )
    await r.publish(
        {"operation": "bloomreach.catalog_items.delete", "target": "shop", "ids": ["s1"]},
        message_id="m-no-catalog",
    )
    await r.publish(
        {
            "operation": "datocms.items.publish",
            "target": "main",
            "ids": [f"i{n}" for n in range(10_001)],
        },
        message_id="m-too-many",
    )
    async with r.worker():
        outcomes = await r.results.wait_for(1 + 1 + 1 + 1 + 10_001, timeout=30)
        letters = await dead_letters(r, 7)
    reasons = {m.message_id: m.headers[REASON_HEADER] for m in letters}
    assert set(reasons) == {
        "m-notjson",
        "m-list",
        "m-ids-string",
        "m-unknown-op",
        "m-unknown-target",
        "m-no-catalog",
        "m-too-many",
    }
    assert "not JSON" in reasons["m-notjson"]
    assert "JSON object" in reasons["m-list"]
    assert "ids" in reasons["m-ids-string"]
    assert "unknown operation" in reasons["m-unknown-op"]
    assert "unknown target" in reasons["m-unknown-target"]
    assert "catalog_id is required" in reasons["m-no-catalog"]
    assert "10000" in reasons["m-too-many"]
    (notjson,) = [m for m in letters if m.message_id == "m-notjson"]
    # Body and properties unchanged on the dead letter (dlq replay puts them back as they were).
    assert (notjson.body, notjson.type, notjson.app_id, notjson.priority) == (
        b"{not json",
        "upstream.job",
        "feed",
        3,
    )
    status = {o["id"]: (o["status"], o["error"] and o["error"]["code"]) for o in outcomes}
    assert status["ok-1"] == ("succeeded", None)
    assert status["u1"] == ("rejected", "unknown_operation")
    assert status["t1"] == ("rejected", "unknown_target")
    assert status["s1"] == ("rejected", "missing_scope")
    assert status["i0"] == ("rejected", "invalid_message")
    routing = {m.routing_key for m in r.results.messages if m.message_id.startswith("m-unknown-op")}
    assert routing == {"invalid.rejected"}
    assert await r.queue_depth(r.request_queue) == 0


async def test_bad_ids_are_rejected_and_good_ids_of_the_same_message_sent(r: Rig) -> None:
    """Ids the API cannot take get `rejected` with the reason; the rest of the message is
    processed; duplicate ids are answered once."""
    await r.publish(
        {
            "operation": "bloomreach.catalog_items.delete",
            "target": "shop",
            "catalog_id": "cat",
            "request_id": "req-1",
            "ids": ["good-1", "a/b", "", 7, "tab\there", "good-1", "good-2"],
        }
    )
    async with r.worker():
        outcomes = await r.results.wait_for(6)
    status = {o["id"]: o for o in outcomes}
    assert set(status) == {"good-1", "good-2", "a/b", "", "7", "tab\there"}
    assert status["good-1"]["status"] == status["good-2"]["status"] == "succeeded"
    for bad in ("a/b", "", "7", "tab\there"):
        assert status[bad]["status"] == "rejected"
        assert status[bad]["error"]["code"] == "invalid_id"
    assert "'/'" in status["a/b"]["error"]["message"]
    assert r.emulator.requests(path_contains="/bulk-delete")[0].items == 2
    ids_of = {m.message_id for m in r.results.messages}
    assert "req-1:bloomreach.catalog_items.delete:good-1" in ids_of
