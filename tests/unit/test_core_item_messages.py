"""Request messages with ``items`` and ``params`` (worker/messages.py, the operations' rules
in worker/apis/<api>/operations.py): bad items and bad params are answered per item with a
code and a precise reason, the rest of the message proceeds; ids and items both or neither
refuse the message. And per-item order across operations (worker/batching.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from worker.apis.base import BatchKey
from worker.batching import Coalescer
from worker.errors import ErrorCode
from worker.messages import Invalid, Request, parse_request
from worker.registry import OPERATIONS

TARGETS = {"main": "datocms", "shop": "bloomreach"}
UPSERT = "bloomreach.catalog_items.upsert"
UPDATE = "bloomreach.catalog_items.update"


def parse(**body: Any) -> Request | Invalid:
    return parse_request(orjson.dumps(body), "m-1", TARGETS)


def request(**body: Any) -> Request:
    parsed = parse(**body)
    assert isinstance(parsed, Request), parsed
    return parsed


def rejections(req: Request) -> dict[str, tuple[str, str]]:
    return {r.id: (r.code, r.reason) for r in req.rejected}


def test_items_become_ids_with_their_payloads() -> None:
    req = request(
        operation=UPDATE,
        target="shop",
        catalog_id="c",
        items=[{"id": "a", "properties": {"p": 1}, "upsert": True}, {"id": "b", "properties": {}}],
    )
    assert req.ids == ("a", "b") and not req.rejected
    assert req.payload("a") == {"properties": {"p": 1}, "upsert": True}
    assert req.payload("b") == {"properties": {}}


@pytest.mark.parametrize(
    ("operation", "item", "reason"),
    [
        (UPSERT, {"id": "x"}, "'properties' is missing"),
        (UPSERT, {"id": "x", "properties": [1]}, "'properties' must be a JSON object"),
        (UPDATE, {"id": "x", "properties": {}, "upsert": "yes"}, "'upsert' must be true or false"),
        (UPSERT, {"id": "x", "properties": {}, "upsert": True}, "unknown field(s) 'upsert'"),
    ],
)
def test_a_bad_item_is_rejected_with_its_reason_and_the_rest_proceed(
    operation: str, item: dict[str, Any], reason: str
) -> None:
    req = request(
        operation=operation,
        target="shop",
        catalog_id="c",
        items=[{"id": "ok", "properties": {"p": 1}}, item],
    )
    assert req.ids == ("ok",)
    assert rejections(req) == {"x": (ErrorCode.INVALID_ITEM, f"invalid item 'x': {reason}")}
    assert req.distinct_ids == ("ok", "x")


def test_an_item_that_is_not_an_object_or_has_a_bad_id_is_rejected() -> None:
    req = request(
        operation=UPSERT,
        target="shop",
        catalog_id="c",
        items=["plain", {"id": "a/b", "properties": {}}, {"id": "ok", "properties": {}}],
    )
    assert req.ids == ("ok",)
    got = rejections(req)
    assert got["plain"][0] == ErrorCode.INVALID_ITEM
    assert got["a/b"][0] == ErrorCode.INVALID_ID


def test_one_id_twice_with_different_data_is_rejected_equal_data_is_one_item() -> None:
    req = request(
        operation=UPSERT,
        target="shop",
        catalog_id="c",
        items=[
            {"id": "same", "properties": {"p": 1}},
            {"id": "same", "properties": {"p": 1}},
            {"id": "differ", "properties": {"p": 1}},
            {"id": "differ", "properties": {"p": 2}},
        ],
    )
    assert req.ids == ("same",)
    code, reason = rejections(req)["differ"]
    assert code == ErrorCode.INVALID_ITEM and "more than once, with different data" in reason


@pytest.mark.parametrize(
    ("operation", "target", "params", "reason"),
    [
        ("datocms.items.publish", "main", {"stage": "x"}, "datocms.items.publish takes no params"),
        (UPSERT, "shop", {}, f"{UPSERT} takes no params"),
    ],
)
def test_params_on_an_operation_without_params_reject_every_item(
    operation: str, target: str, params: Any, reason: str
) -> None:
    scope = {"catalog_id": "c"} if target == "shop" else {}
    carried: dict[str, Any] = (
        {"items": [{"id": "a", "properties": {}}]} if operation == UPSERT else {"ids": ["a"]}
    )
    req = request(operation=operation, target=target, params=params, **scope, **carried)
    assert req.ids == ()
    assert rejections(req) == {"a": (ErrorCode.INVALID_PARAMS, f"invalid params: {reason}")}


@pytest.mark.parametrize(
    "body",
    [
        {"ids": ["a"], "items": [{"id": "a", "properties": {}}]},
        {},
    ],
)
def test_ids_and_items_both_or_neither_refuse_the_message(body: dict[str, Any]) -> None:
    parsed = parse(operation=UPSERT, target="shop", catalog_id="c", **body)
    assert isinstance(parsed, Invalid) and parsed.code == ErrorCode.INVALID_MESSAGE
    assert parsed.readable_ids == (("a",) if body else ())


def test_ids_for_an_operation_with_items_refuse_the_message() -> None:
    parsed = parse(operation=UPSERT, target="shop", catalog_id="c", ids=["a"])
    assert isinstance(parsed, Invalid) and parsed.code == ErrorCode.INVALID_MESSAGE
    assert parsed.reason == f"{UPSERT} takes items, not ids" and parsed.readable_ids == ("a",)


def test_an_upsert_then_a_delete_of_one_id_wait_in_order() -> None:
    """Across operations of one (target, scope, id): the delete is not ready until the
    upsert is done, and different payloads of one operation never join."""
    c = Coalescer()
    upsert, delete = OPERATIONS[UPSERT], OPERATIONS["bloomreach.catalog_items.delete"]
    up_key = BatchKey(UPSERT, "shop", "c")
    del_key = BatchKey(delete.name, "shop", "c")
    first = c.add(upsert, up_key, "a", "w1", 0.0, payload={"properties": {"p": 1}})
    other = c.add(upsert, up_key, "a", "w2", 0.0, payload={"properties": {"p": 2}})
    removal = c.add(delete, del_key, "a", "w3", 0.0)
    assert other is not first and c.size(up_key) == 1 and c.size(del_key) == 0
    assert c.take(up_key) == [first]
    assert c.done(first, 1.0) is other
    assert c.take(up_key) == [other] and c.size(del_key) == 0
    assert c.done(other, 2.0) is removal and c.size(del_key) == 1


# -- items the API could never take, and ids given twice (found in review) -------------------


def test_properties_nested_deeper_than_json_can_be_written_are_rejected_not_held() -> None:
    """orjson reads 1,024 levels but writes 254: such an item passed the check and then
    failed while being queued, leaving its message unanswered for good."""
    deep = b'{"p":' * 300 + b"1" + b"}" * 300
    raw = (
        b'{"operation": "%s", "target": "shop", "catalog_id": "c", "items": '
        b'[{"id": "deep", "properties": %s}, {"id": "ok", "properties": {}}]}'
    ) % (UPSERT.encode(), deep)
    req = parse_request(raw, "m-1", TARGETS)
    assert isinstance(req, Request)
    assert req.ids == ("ok",)
    code, reason = rejections(req)["deep"]
    assert code == ErrorCode.INVALID_ITEM and "nested too deep" in reason


def test_an_item_larger_than_one_request_may_be_is_rejected_not_sent() -> None:
    big = {"id": "big", "properties": {"blob": "x" * 10_000_000}}
    req = request(operation=UPSERT, target="shop", catalog_id="c", items=[big])
    assert req.ids == ()
    code, reason = rejections(req)["big"]
    assert code == ErrorCode.INVALID_ITEM and "10,000,000-byte request" in reason


@pytest.mark.parametrize(
    "copies",
    [
        [{"id": "a", "properties": 5}, {"id": "a", "properties": {"x": 1}}],
        [{"id": "a", "properties": {"x": 1}}, {"id": "a", "properties": 5}],
        ["a", {"id": "a", "properties": {"x": 1}}],
    ],
)
def test_an_id_with_an_invalid_copy_is_rejected_in_every_copy(copies: list[Any]) -> None:
    """No copy is sent and none goes unanswered: the message's data for that id is in doubt."""
    req = request(operation=UPSERT, target="shop", catalog_id="c", items=copies)
    assert req.ids == ()
    assert rejections(req)["a"][0] == ErrorCode.INVALID_ITEM


def test_data_equal_for_python_but_not_as_json_is_different_data() -> None:
    """``true == 1`` in Python, not for the API: the two copies are not one item."""
    items = [{"id": "a", "properties": {"x": True}}, {"id": "a", "properties": {"x": 1}}]
    req = request(operation=UPSERT, target="shop", catalog_id="c", items=items)
    assert req.ids == () and "different data" in rejections(req)["a"][1]
    coalescer = Coalescer()
    op = OPERATIONS[UPSERT]
    key = BatchKey(UPSERT, "shop", "c")
    first = coalescer.add(op, key, "a", "r1", 0.0, 10, {"properties": {"x": True}})
    second = coalescer.add(op, key, "a", "r2", 0.0, 10, {"properties": {"x": 1}})
    same = coalescer.add(op, key, "a", "r3", 0.0, 10, {"properties": {"x": 1}})
    assert first is not second and same is second
