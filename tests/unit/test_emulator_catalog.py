"""Bloomreach catalog bulk update (PUT .../items) and bulk partial update (POST
.../items/partial-update) over real HTTP: per-item answers in order, catalog state, the
rate limit shared with bulk-delete per catalog, size caps and variants; and the admin API
for stages, collections and catalog items."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from worker.emulator import Emulator, EmulatorConfig

ITEMS = "/data/v2/projects/proj-1/catalogs/cat-1/items"
PARTIAL = ITEMS + "/partial-update"
DELETE = ITEMS + "/bulk-delete"
AUTH = httpx.BasicAuth("bloom-key", "bloom-secret")
OK = {"success": True, "queued": True}


def failed(field: str, message: str) -> dict[str, Any]:
    return {"success": False, "queued": False, "errors": {field: [message]}}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(bloomreach_rate=(100, 10.0))) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.base_url, auth=AUTH) as http:
        yield http


async def test_bulk_update_creates_or_replaces_items_whole_and_answers_in_order(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.bloomreach.catalog.seed("cat-1", {"a": {"price": 1, "title": "A"}})
    emu.bloomreach.set_item_error("cat-1", ["locked"], "Item is locked")
    body = [
        {"item_id": "a", "properties": {"price": 2}},
        {"item_id": "b", "properties": {"title": "B"}},
        {"item_id": 7, "properties": {}},
        {"item_id": "x/y", "properties": {}},
        {"item_id": "locked", "properties": {}},
        {"item_id": "c", "properties": "nope"},
    ]
    response = await client.put(ITEMS, json=body)
    assert response.status_code == 200
    assert response.json() == [
        OK,
        OK,
        failed("_global", "Malformed item id. Item id should be a string"),
        failed("_global", "Malformed item id. Item id should not contain '/'"),
        failed("_global", "Item is locked"),
        failed("properties", "Properties should be an object"),
    ]
    assert emu.bloomreach.catalog.items("cat-1") == {"a": {"price": 2}, "b": {"title": "B"}}
    entry = emu.requests(api="bloomreach")[0]
    assert (entry.method, entry.items, entry.scope) == ("PUT", 6, "proj-1/cat-1")


async def test_partial_update_merges_and_fails_missing_items_unless_upsert(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.bloomreach.catalog.seed("cat-1", {"a": {"price": 1, "title": "A"}})
    body = [
        {"item_id": "a", "properties": {"price": 2}},
        {"item_id": "new", "properties": {"price": 3}},
        {"item_id": "made", "properties": {"price": 4}, "upsert": True},
        {"item_id": "off", "properties": {}, "upsert": False},
        {"item_id": "odd", "properties": {}, "upsert": "yes"},
    ]
    response = await client.post(PARTIAL, json=body)
    assert response.json() == [
        OK,
        failed("_global", "Item does not exist"),
        OK,
        failed("_global", "Item does not exist"),
        failed("upsert", "Upsert should be a boolean"),
    ]
    assert emu.bloomreach.catalog.items("cat-1") == {
        "a": {"price": 2, "title": "A"},
        "made": {"price": 4},
    }


@pytest.mark.parametrize("path", [ITEMS, PARTIAL])
async def test_properties_the_catalog_does_not_define_fail_that_item(
    emu: Emulator, client: httpx.AsyncClient, path: str
) -> None:
    emu.bloomreach.catalog.set_fields("cat-1", ["price", "title"])
    body = [
        {"item_id": "a", "properties": {"price": 1}, "upsert": True},
        {"item_id": "b", "properties": {"colour": "red", "size": 2, "price": 1}, "upsert": True},
    ]
    method = "PUT" if path == ITEMS else "POST"
    response = await client.request(method, path, json=body)
    assert response.json() == [
        OK,
        failed("properties", "Fields ['colour', 'size'] are not properly defined."),
    ]
    assert list(emu.bloomreach.catalog.items("cat-1")) == ["a"]


async def test_property_names_empty_or_with_dot_dollar_or_nul_fail_that_item(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    body = [
        {"item_id": str(n), "properties": {key: 1}}
        for n, key in enumerate(["", "a.b", "$x", "n\0", "ok"])
    ]
    answers = (await client.put(ITEMS, json=body)).json()
    assert [a["success"] for a in answers] == [False, False, False, False, True]
    assert answers[1]["errors"] == {"properties": ["Invalid property name 'a.b'"]}


async def test_bulk_delete_removes_items_from_the_catalog_and_missing_ones_still_succeed(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    await client.put(ITEMS, json=[{"item_id": "a", "properties": {}}])
    response = await client.request("DELETE", DELETE, json=["a", "never"])
    assert response.json() == [OK, OK]
    assert emu.bloomreach.catalog.items("cat-1") == {}
    again = await client.post(PARTIAL, json=[{"item_id": "a", "properties": {"p": 1}}])
    assert again.json() == [failed("_global", "Item does not exist")]


async def test_bulk_delete_update_and_partial_update_share_one_limit_per_catalog(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.config.bloomreach_rate = (5, 10.0)
    item = [{"item_id": "a", "properties": {}, "upsert": True}]
    statuses = [
        (await client.put(ITEMS, json=item)).status_code,
        (await client.post(PARTIAL, json=item)).status_code,
        (await client.post(DELETE, json=[{"item_id": "a"}])).status_code,
        (await client.put(ITEMS, json=item)).status_code,
        (await client.post(PARTIAL, json=item)).status_code,
        (await client.put(ITEMS.replace("cat-1", "cat-2"), json=item)).status_code,
        (await client.post(PARTIAL, json=item)).status_code,
    ]
    assert statuses == [200, 200, 200, 200, 200, 200, 429]
    assert [e.path for e in emu.breaches()] == [PARTIAL]
    assert emu.requests(api="bloomreach")[-1].scope == "proj-1/cat-1"


@pytest.mark.parametrize("path", [ITEMS, PARTIAL])
async def test_size_caps_auth_and_shape_refuse_the_whole_request(
    emu: Emulator, client: httpx.AsyncClient, path: str
) -> None:
    method = "PUT" if path == ITEMS else "POST"
    headers = {"Content-Type": "application/json"}
    emu.config.bloomreach_max_items = 3
    four = [{"item_id": f"i{n}", "properties": {}} for n in range(4)]
    assert (await client.request(method, path, json=four)).status_code == 400
    emu.config.bloomreach_oversize_status = 413
    assert (await client.request(method, path, json=four)).status_code == 413
    emu.config.bloomreach_max_body_bytes = 100
    big = orjson.dumps([{"item_id": "a", "properties": {"x": "y" * 200}}])
    assert (await client.request(method, path, content=big, headers=headers)).status_code == 413
    not_list = await client.request(method, path, json={"item_id": "a"})
    assert not_list.status_code == 400 and "errors" in not_list.json()
    wrong = await client.request(method, path, json=[], auth=httpx.BasicAuth("bloom-key", "no"))
    assert wrong.status_code == 401
    assert emu.bloomreach.catalog.items("cat-1") == {}


async def test_string_booleans_variant_applies_to_update_answers(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.config.bloomreach_string_booleans = True
    body = [{"item_id": "a", "properties": {}}, {"item_id": "b", "properties": []}]
    response = await client.put(ITEMS, json=body)
    assert [(e["success"], e["queued"]) for e in response.json()] == [
        ("True", "True"),
        ("False", "False"),
    ]


async def test_admin_api_seeds_and_reads_stages_collections_and_catalog_items(
    emu: Emulator,
) -> None:
    ok = {"ok": True}
    async with httpx.AsyncClient(base_url=emu.base_url) as admin:
        seed = {
            "environment": "sb",
            "records": ["r1"],
            "stage": "draft",
            "workflow": "editorial",
            "uploads": ["u1"],
            "tags": ["a"],
            "upload_collection": "col-1",
        }
        assert (await admin.post("/_emulator/datocms/seed", json=seed)).json() == ok
        stages = {"environment": "sb", "workflow": "editorial", "stages": ["draft", "review"]}
        assert (await admin.post("/_emulator/datocms/stages", json=stages)).json() == ok
        cols = {"environment": "sb", "ids": ["col-1"]}
        assert (await admin.post("/_emulator/datocms/upload-collections", json=cols)).json() == ok
        bad = await admin.post("/_emulator/datocms/stages", json={"workflow": "x"})
        assert bad.status_code == 400
        record = await admin.get(
            "/_emulator/datocms/records/r1/stage", params={"environment": "sb"}
        )
        assert record.json() == {
            "id": "r1",
            "exists": True,
            "stage": "draft",
            "workflow": "editorial",
        }
        upload = await admin.get("/_emulator/datocms/uploads/u1/meta", params={"environment": "sb"})
        assert upload.json() == {
            "id": "u1",
            "exists": True,
            "tags": ["a"],
            "upload_collection": "col-1",
        }
        assert emu.datocms.meta.stage_exists("sb", "r1", "review")
        assert not emu.datocms.meta.stage_exists("sb", "r1", "published")
        assert not emu.datocms.meta.collection_exists("sb", "col-2")
        items = {"catalog_id": "cat-1", "items": [{"item_id": "a", "properties": {"p": 1}}]}
        assert (await admin.post("/_emulator/bloomreach/items", json=items)).json() == ok
        fields = {"catalog_id": "cat-1", "fields": ["p"]}
        assert (await admin.post("/_emulator/bloomreach/fields", json=fields)).json() == ok
        read = await admin.get("/_emulator/bloomreach/items/cat-1")
        assert read.json() == {"catalog_id": "cat-1", "items": {"a": {"p": 1}}}
        assert (await admin.post("/_emulator/reset")).json() == ok
        assert (await admin.get("/_emulator/bloomreach/items/cat-1")).json()["items"] == {}
        assert emu.datocms.meta.stage("sb", "r1") is None
