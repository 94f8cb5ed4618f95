"""The batch format's messages: parts of at most 4 MiB, message ids, body."""

from __future__ import annotations

import orjson

from worker.cli.tail import outcome_lines
from worker.client import outcome_items
from worker.errors import ErrorInfo
from worker.outcomes import PART_BYTES, Heading, OutcomeBatch, batch_item, parts


def test_parts_stay_under_4_mib_and_keep_every_item_in_order() -> None:
    items = [batch_item("r-1", f"id-{n:06d}" + "x" * 200, "7", None, 1) for n in range(40_000)]
    split = parts(items)
    assert len(split) > 1
    assert [i for part in split for i in part] == items
    heading = Heading("r-1", "datocms.items.publish", "main", ())
    for n, part in enumerate(split):
        batch = OutcomeBatch(heading, "succeeded", "b1", n, "2026-12-04T00:00:00Z", part, "b1")
        body = batch.body()
        assert len(body) <= PART_BYTES
        assert batch.message_id == f"b1:succeeded:{n}"
        assert orjson.loads(body)["part"] == n


def test_body_and_intake_message_id() -> None:
    heading = Heading("r-9", "bloomreach.catalog_items.delete", "shop", (("catalog_id", "c1"),))
    error = ErrorInfo("invalid_id", "contains /", False)
    batch = OutcomeBatch(
        heading, "rejected", None, 0, "t", (batch_item("r-9", "a/b", None, error, 0),), "r-9"
    )
    assert batch.message_id == "r-9:bloomreach.catalog_items.delete:rejected"
    assert batch.routing_key == "bloomreach.catalog_items.delete.rejected"
    body = orjson.loads(batch.body())
    assert body["catalog_id"] == "c1" and body["batch_id"] is None
    assert body["items"] == [
        {"request_id": "r-9", "id": "a/b", "job_id": None, "attempts": 0,
         "error": {"code": "invalid_id", "message": "contains /", "retryable": False}}
    ]  # fmt: skip


def test_tail_and_outcome_items_read_a_batch_message_item_by_item() -> None:
    heading = Heading("r-1", "datocms.items.publish", "main", ())
    error = ErrorInfo("ITEM_LOCKED", "locked", False)
    items = (batch_item("r-1", "a", "7", error, 1), batch_item("r-2", "b", "7", error, 2))
    body = OutcomeBatch(heading, "failed", "b1", 0, "T", items, "b1").body()
    flat = outcome_items(body)
    assert [(o["request_id"], o["id"], o["status"], o["batch_id"], o["attempts"]) for o in flat] == [
        ("r-1", "a", "failed", "b1", 1),
        ("r-2", "b", "failed", "b1", 2),
    ]
    assert "items" not in flat[0] and "part" not in flat[0]
    assert outcome_lines(body) == [
        "T  failed     datocms.items.publish  main  a  ITEM_LOCKED: locked",
        "T  failed     datocms.items.publish  main  b  ITEM_LOCKED: locked",
    ]
    assert [orjson.loads(line)["id"] for line in outcome_lines(body, as_json=True)] == ["a", "b"]
    single = b'{"id": "x", "status": "succeeded", "items": 3}'
    assert outcome_items(single) == [orjson.loads(single)]
    assert outcome_lines(single, as_json=True) == [single.decode()]
