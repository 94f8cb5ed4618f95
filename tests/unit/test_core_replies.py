"""Replies and outcome modes (worker/messages.py, Tracked in worker/pipeline/requests.py): pure, no
broker. The reply body is the contract's ("Replies"): one place builds it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from worker.apis.adapters import ItemResult
from worker.messages import ErrorInfo, Invalid, Request, parse_request, published
from worker.pipeline.requests import Tracked

KINDS = {"main": "datocms", "shop": "bloomreach"}


class Delivery:
    async def ack(self) -> None:
        raise AssertionError("not settled here")

    async def nack(self, requeue: bool) -> None:
        raise AssertionError("not settled here")


def request(**body: Any) -> Request:
    parsed = parse_request(orjson.dumps(body), "m-1", KINDS)
    assert isinstance(parsed, Request), parsed
    return parsed


def tracked(req: Request, reply_to: str | None = "replies") -> Tracked:
    remaining = len(req.ids) + len(req.rejected)
    return Tracked(Delivery(), req, None, None, remaining, reply_to=reply_to)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("all", {"succeeded", "failed", "rejected"}),
        ("failures", {"failed", "rejected"}),
        ("none", set()),
    ],
)
def test_outcome_modes_publish_exactly_their_statuses(mode: str, expected: set[str]) -> None:
    statuses = ("succeeded", "failed", "rejected")
    assert {s for s in statuses if published(mode, s)} == expected  # type: ignore[arg-type]


def test_reply_lists_every_distinct_id_in_message_order_with_counts() -> None:
    """Sent, failed and rejected ids interleaved, a duplicate once: the reply keeps the
    message order; succeeded ids are implied (nothing held for them)."""
    req = request(operation="bloomreach.catalog_items.delete", target="shop", catalog_id="c",
                  request_id="r-1", ids=["a", "x/y", "b", "a", 5, "c"])  # fmt: skip
    t = tracked(req)
    locked = ErrorInfo("Item locked", "no", False)
    t.note("a", ItemResult("succeeded"))
    t.note("b", ItemResult("failed", locked))
    for rejection in req.rejected:
        t.note(rejection.id, ItemResult("rejected", rejection.error(), 0))
    t.note("c", ItemResult("succeeded"))
    assert set(t.answers) == {"b", "x/y", "5"}
    reply = t.reply()
    body = orjson.loads(reply.body())
    assert [(i["id"], i["status"]) for i in body["items"]] == [
        ("a", "succeeded"), ("x/y", "rejected"), ("b", "failed"), ("5", "rejected"),
        ("c", "succeeded"),
    ]  # fmt: skip
    assert body["items"][2]["error"] == {"code": "Item locked", "message": "no",
                                         "retryable": False}  # fmt: skip
    assert body["counts"] == {"succeeded": 2, "failed": 1, "rejected": 2}
    assert (body["request_id"], body["catalog_id"], body["environment"]) == ("r-1", "c", None)
    assert body["operation"] == "bloomreach.catalog_items.delete"
    assert "error" not in body
    assert reply.message_id == "r-1:reply"


def test_without_reply_to_no_result_is_kept() -> None:
    t = tracked(request(operation="datocms.items.publish", target="main", ids=["a"]), None)
    t.note("a", ItemResult("failed", ErrorInfo("ITEM_LOCKED", "locked")))
    assert t.answers == {}


def test_reply_of_an_unreadable_message_has_the_error_and_its_readable_ids() -> None:
    """Dead-lettered: readable ids rejected with the message's error, which is also the
    top-level error; no readable ids: an empty list."""
    unknown = parse_request(
        orjson.dumps({"operation": "nope", "target": "main", "ids": ["u1", "u1", "u2"]}),
        "m-2",
        KINDS,
    )
    assert isinstance(unknown, Invalid)
    body = orjson.loads(unknown.reply("2026-11-30T12:00:00.000000Z").body())
    assert [(i["id"], i["status"]) for i in body["items"]] == [("u1", "rejected"),
                                                              ("u2", "rejected")]  # fmt: skip
    assert body["error"]["code"] == "unknown_operation"
    assert body["counts"] == {"succeeded": 0, "failed": 0, "rejected": 2}
    garbage = parse_request(b"{oops", "m-3", KINDS)
    assert isinstance(garbage, Invalid)
    body = orjson.loads(garbage.reply("2026-11-30T12:00:00.000000Z").body())
    assert body["items"] == [] and body["error"]["code"] == "not_json"
    assert body["request_id"] == "m-3" and body["operation"] is None
