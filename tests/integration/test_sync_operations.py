"""The sync operations against the real RabbitMQ and the emulator over HTTP: Bloomreach
catalog upsert and partial update, DatoCMS stage moves, upload tags and collections. Each
test names what it proves; every one also checks that no rate limit was breached."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.harness import Rig

pytestmark = pytest.mark.integration

UPSERT = "bloomreach.catalog_items.upsert"
UPDATE = "bloomreach.catalog_items.update"
DELETE = "bloomreach.catalog_items.delete"
CATALOG = "products"


def catalog_message(operation: str, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "operation": operation,
        "target": "shop",
        "catalog_id": CATALOG,
        "items": items,
        **extra,
    }


def upserts(r: Rig) -> list[int]:
    """Items per upsert request (PUT .../items), in order."""
    return [
        e.items
        for e in r.emulator.requests("bloomreach")
        if e.method == "PUT" and e.path.endswith("/items")
    ]


def statuses(outcomes: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for o in outcomes:
        out.setdefault(o["id"], []).append(o["status"])
    return out


async def test_2000_catalog_items_in_100_item_messages_become_at_most_2_upserts(r: Rig) -> None:
    """20 messages of 100 items for one catalog: at most 2 upsert requests carry all 2,000
    (the 10,000-item cap allows one; a first batch's send may split the intake in two), and
    every item's properties are in the catalog."""
    wanted = {f"sku-{n:04d}": {"price": n, "title": f"item {n}"} for n in range(2000)}
    pairs = list(wanted.items())
    await r.publish_many(
        [
            catalog_message(UPSERT, [{"id": i, "properties": p} for i, p in pairs[n : n + 100]])
            for n in range(0, 2000, 100)
        ]
    )
    async with r.worker_process(r.env(linger_seconds=1.0)):
        outcomes = await r.results.wait_for(2000, timeout=60)
    assert {o["status"] for o in outcomes} == {"succeeded"}
    sent = upserts(r)
    assert len(sent) <= 2 and sum(sent) == 2000, sent
    assert r.emulator.bloomreach.catalog.items(CATALOG) == wanted
    assert r.emulator.breaches() == []


async def test_partial_update_merges_and_the_upsert_flag_decides_creation(r: Rig) -> None:
    """Partial update keeps properties not given; ``upsert: false`` on a missing item fails
    it with the API's message, ``upsert: true`` creates it."""
    r.emulator.bloomreach.catalog.seed(CATALOG, {"sku-1": {"price": 1, "color": "red"}})
    items = [
        {"id": "sku-1", "properties": {"price": 2}},
        {"id": "missing", "properties": {"price": 3}, "upsert": False},
        {"id": "created", "properties": {"price": 4}, "upsert": True},
    ]
    await r.publish(catalog_message(UPDATE, items))
    async with r.worker():
        outcomes = await r.results.wait_for(3)
    by_id = {o["id"]: o for o in outcomes}
    assert by_id["sku-1"]["status"] == "succeeded"
    assert by_id["created"]["status"] == "succeeded"
    assert by_id["missing"]["status"] == "failed"
    assert by_id["missing"]["error"]["code"] == "Item does not exist"
    assert r.emulator.bloomreach.catalog.items(CATALOG) == {
        "sku-1": {"price": 2, "color": "red"},
        "created": {"price": 4},
    }
    assert r.emulator.breaches() == []


async def test_upsert_then_delete_leaves_it_deleted_and_delete_then_upsert_present(
    r: Rig,
) -> None:
    """Operations on one id apply in consumption order whatever the operations: "a" is
    upserted then deleted (gone), "b" deleted then upserted (present), and no request
    carries one id twice."""
    r.emulator.bloomreach.catalog.seed(CATALOG, {"b": {"v": 0}})
    await r.publish(catalog_message(UPSERT, [{"id": "a", "properties": {"v": 1}}]))
    await r.publish(
        {"operation": DELETE, "target": "shop", "catalog_id": CATALOG, "ids": ["a", "b"]}
    )
    await r.publish(catalog_message(UPSERT, [{"id": "b", "properties": {"v": 2}}]))
    async with r.worker():
        outcomes = await r.results.wait_for(4)
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert r.emulator.bloomreach.catalog.items(CATALOG) == {"b": {"v": 2}}
    assert r.emulator.breaches() == []


async def test_two_different_updates_of_one_id_are_both_answered_and_the_later_wins(
    r: Rig,
) -> None:
    """Two partial updates of one id with different properties never share a request: both
    are answered, in two requests, and the catalog holds the later's value."""
    r.emulator.bloomreach.catalog.seed(CATALOG, {"sku-1": {"price": 1}})
    await r.publish(catalog_message(UPDATE, [{"id": "sku-1", "properties": {"price": 2}}]))
    await r.publish(catalog_message(UPDATE, [{"id": "sku-1", "properties": {"price": 3}}]))
    async with r.worker():
        outcomes = await r.results.wait_for(2)
    assert statuses(outcomes) == {"sku-1": ["succeeded", "succeeded"]}
    partial = r.emulator.requests("bloomreach", "partial-update")
    assert [e.items for e in partial] == [1, 1]
    assert r.emulator.bloomreach.catalog.items(CATALOG) == {"sku-1": {"price": 3}}
    assert r.emulator.breaches() == []


async def test_bad_catalog_items_are_rejected_with_their_reason_the_rest_proceed(r: Rig) -> None:
    """Each bad item is ``rejected`` with ``invalid_item`` (or ``invalid_id``) and a reason
    naming what is wrong; the good item is upserted; nothing is dead-lettered."""
    items: list[Any] = [
        {"id": "good", "properties": {"v": 1}, "upsert": True},
        {"id": "no-props"},
        {"id": "list-props", "properties": [1]},
        {"id": "bad-flag", "properties": {}, "upsert": "yes"},
        {"id": "a/b", "properties": {}},
    ]
    await r.publish(catalog_message(UPDATE, items))
    await r.publish(catalog_message(UPSERT, [{"id": "p", "properties": {}}], params={"x": 1}))
    async with r.worker():
        outcomes = await r.results.wait_for(6)
    by_id = {o["id"]: o for o in outcomes}
    assert by_id["good"]["status"] == "succeeded"
    reasons = {
        i: (o["error"]["code"], o["error"]["message"]) for i, o in by_id.items() if i != "good"
    }
    assert {i: o["status"] for i, o in by_id.items() if i != "good"} == dict.fromkeys(
        reasons, "rejected"
    )
    assert reasons["no-props"] == (
        "invalid_item",
        "invalid item 'no-props': 'properties' is missing",
    )
    assert reasons["list-props"][1].endswith("'properties' must be a JSON object")
    assert reasons["bad-flag"][1].endswith("'upsert' must be true or false")
    assert reasons["a/b"][0] == "invalid_id"
    assert reasons["p"] == ("invalid_params", f"invalid params: {UPSERT} takes no params")
    assert r.emulator.bloomreach.catalog.items(CATALOG) == {"good": {"v": 1}}
    assert await r.queue_depth(r.dlq) == 0


def dato_message(operation: str, params: Any, ids: list[str]) -> dict[str, Any]:
    return {"operation": operation, "target": "main", "params": params, "ids": ids}


async def test_300_single_id_stage_moves_become_2_requests(r: Rig) -> None:
    """300 single-id move-to-stage messages with equal params are sent as 2 bulk requests
    (200 + 100), and every record reads back in the asked stage."""
    wanted = [f"rec{n:03d}" for n in range(300)]
    r.emulator.datocms.seed_records(wanted, stage="draft")
    await r.publish_many(
        [dato_message("datocms.items.move_to_stage", {"stage": "review"}, [i]) for i in wanted]
    )
    async with r.worker_process(r.env(linger_seconds=1.0)):
        outcomes = await r.results.wait_for(300, timeout=60)
    assert {o["status"] for o in outcomes} == {"succeeded"}
    sent = r.emulator.requests(path_contains="/items/bulk/move-to-stage")
    assert sorted(e.items for e in sent) == [100, 200]
    assert {r.emulator.datocms.meta.stage(None, i) for i in wanted} == {"review"}
    assert r.emulator.breaches() == []


async def test_different_stages_never_share_a_request_and_apply_in_order(r: Rig) -> None:
    """Two stage moves of one record with different params: two requests, both answered,
    the later stage is the record's."""
    r.emulator.datocms.seed_records(["rec"], stage="draft")
    await r.publish(dato_message("datocms.items.move_to_stage", {"stage": "review"}, ["rec"]))
    await r.publish(dato_message("datocms.items.move_to_stage", {"stage": "done"}, ["rec"]))
    async with r.worker():
        outcomes = await r.results.wait_for(2)
    assert statuses(outcomes) == {"rec": ["succeeded", "succeeded"]}
    assert len(r.emulator.requests(path_contains="/items/bulk/move-to-stage")) == 2
    assert r.emulator.datocms.meta.stage(None, "rec") == "done"


async def test_tags_and_collections_read_back_as_asked(r: Rig) -> None:
    """Tags are added to each upload's own, and uploads go into a collection; a locked
    upload fails with the API's code; the others read back as asked."""
    r.emulator.datocms.seed_uploads(["u1", "u2", "u3"], tags=["old"])
    r.emulator.datocms.set_failure(["u3"], "upload_tag", "INSUFFICIENT_PERMISSIONS")
    await r.publish(dato_message("datocms.uploads.tag", {"tags": ["sale"]}, ["u1", "u2", "u3"]))
    await r.publish(
        dato_message("datocms.uploads.set_collection", {"upload_collection": "c-1"}, ["u1", "u2"])
    )
    async with r.worker():
        outcomes = await r.results.wait_for(5)
    assert statuses(outcomes) == {
        "u1": ["succeeded", "succeeded"],
        "u2": ["succeeded", "succeeded"],
        "u3": ["failed"],
    }
    failed = next(o for o in outcomes if o["status"] == "failed")
    assert failed["error"]["code"] == "INSUFFICIENT_PERMISSIONS"
    meta = r.emulator.datocms.meta
    assert [meta.tags(None, u) for u in ("u1", "u2", "u3")] == [["old", "sale"]] * 2 + [["old"]]
    assert [meta.collection(None, u) for u in ("u1", "u2")] == ["c-1", "c-1"]
    assert r.emulator.breaches() == []


@pytest.mark.parametrize(
    ("operation", "params", "reason"),
    [
        (
            "datocms.uploads.tag",
            {"tags": []},
            "params.tags must be a list of 1 to 100 non-empty strings",
        ),
        (
            "datocms.uploads.tag",
            {"tags": [1]},
            "params.tags must be a list of 1 to 100 non-empty strings",
        ),
        ("datocms.items.move_to_stage", None, "datocms.items.move_to_stage requires params"),
        ("datocms.items.move_to_stage", {"stage": ""}, "params.stage must be a non-empty string"),
        ("datocms.uploads.set_collection", {}, "params must have 'upload_collection'"),
        ("datocms.items.publish", {"stage": "x"}, "datocms.items.publish takes no params"),
    ],
)
async def test_bad_params_reject_every_item_of_the_message(
    r: Rig, operation: str, params: Any, reason: str
) -> None:
    """Missing or wrong params, or params on an operation without any: every id of the
    message is ``rejected`` (``invalid_params``) with the reason; nothing is sent or
    dead-lettered."""
    await r.publish(dato_message(operation, params, ["a", "b"]))
    async with r.worker():
        outcomes = await r.results.wait_for(2)
    assert {(o["id"], o["status"]) for o in outcomes} == {("a", "rejected"), ("b", "rejected")}
    assert {o["error"]["code"] for o in outcomes} == {"invalid_params"}
    assert {o["error"]["message"] for o in outcomes} == {f"invalid params: {reason}"}
    assert r.emulator.requests("datocms") == []
    assert await r.queue_depth(r.dlq) == 0
