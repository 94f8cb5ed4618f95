"""Bloomreach catalog bulk-delete emulation over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from worker.emulator import Emulator, EmulatorConfig

PATH = "/data/v2/projects/proj-1/catalogs/cat-1/items/bulk-delete"
AUTH = httpx.BasicAuth("bloom-key", "bloom-secret")


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig()) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.base_url, auth=AUTH) as http:
        yield http


async def test_answers_one_element_per_item_in_order_with_per_item_errors(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.bloomreach.set_item_error("cat-1", ["bad"], "Item is locked")
    body = [
        {"item_id": "a"},
        {"item_id": 7},
        {"item_id": "bad"},
        {},
        {"item_id": ""},
        {"item_id": "b"},
    ]
    response = await client.post(PATH, json=body)
    assert response.status_code == 200
    malformed = {
        "success": False,
        "queued": False,
        "errors": {"_global": ["Malformed item id. Item id should be a string"]},
    }
    locked = {"success": False, "queued": False, "errors": {"_global": ["Item is locked"]}}
    ok = {"success": True, "queued": True}
    assert response.json() == [ok, malformed, locked, malformed, malformed, ok]
    assert emu.bloomreach.deleted("cat-1") == ["a", "b"]
    assert emu.requests(api="bloomreach")[0].items == 6
    assert emu.requests(api="bloomreach")[0].scope == "proj-1/cat-1"


async def test_string_booleans_variant_answers_true_false_strings(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.config.bloomreach_string_booleans = True
    response = await client.post(PATH, json=[{"item_id": "a"}, {"item_id": None}])
    assert [(e["success"], e["queued"]) for e in response.json()] == [
        ("True", "True"),
        ("False", "False"),
    ]


async def test_bad_credentials_are_401_and_wrong_project_is_403(client: httpx.AsyncClient) -> None:
    wrong = await client.post(PATH, json=[], auth=httpx.BasicAuth("bloom-key", "nope"))
    assert wrong.status_code == 401
    other = await client.post(PATH.replace("proj-1", "proj-2"), json=[])
    assert other.status_code == 403


async def test_whole_request_400s_invalid_json_not_a_list_too_many_items_too_many_bytes(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.config.bloomreach_rate = (100, 10.0)
    headers = {"Content-Type": "application/json"}
    assert (await client.post(PATH, content=b"{nope", headers=headers)).status_code == 400
    assert (await client.post(PATH, json={"item_id": "a"})).status_code == 400
    too_many = [{"item_id": f"i{n}"} for n in range(10_001)]
    response = await client.post(PATH, json=too_many)
    assert response.status_code == 400 and "errors" in response.json()
    emu.config.bloomreach_max_body_bytes = 1000
    big = orjson.dumps([{"item_id": "x" * 100} for _ in range(10)])
    assert len(big) > 1000
    assert (await client.post(PATH, content=big, headers=headers)).status_code == 400
    assert emu.bloomreach.deleted("cat-1") == []


@pytest.mark.parametrize("retry_after", [True, False])
async def test_sixth_request_in_ten_seconds_is_429_with_or_without_retry_after(
    emu: Emulator, client: httpx.AsyncClient, retry_after: bool
) -> None:
    emu.config.bloomreach_retry_after = retry_after
    statuses = [(await client.post(PATH, json=[{"item_id": "a"}])).status_code for _ in range(5)]
    assert statuses == [200] * 5
    other_catalog = await client.post(PATH.replace("cat-1", "cat-2"), json=[{"item_id": "a"}])
    assert other_catalog.status_code == 200
    response = await client.post(PATH, json=[{"item_id": "b"}])
    assert response.status_code == 429
    assert ("Retry-After" in response.headers) is retry_after
    if retry_after:
        assert 1 <= int(response.headers["Retry-After"]) <= 10
    assert [e.path for e in emu.breaches()] == [PATH]
    assert emu.bloomreach.deleted("cat-1") == ["a"] * 5


@pytest.mark.parametrize(
    ("forms", "delete_status", "post_status"),
    [("both", 200, 200), ("delete-ids", 200, 405), ("post-objects", 405, 200)],
)
async def test_each_wire_form_of_bulk_delete_can_be_the_only_one_accepted(
    emu: Emulator, client: httpx.AsyncClient, forms: str, delete_status: int, post_status: int
) -> None:
    """DELETE with id strings, POST with {"item_id"} objects; the refused method is 405."""
    emu.config.bloomreach_delete_forms = forms  # type: ignore[assignment]
    by_delete = await client.request("DELETE", PATH, json=["d1", 7])
    by_post = await client.post(PATH, json=[{"item_id": "p1"}])
    assert (by_delete.status_code, by_post.status_code) == (delete_status, post_status)
    if delete_status == 200:
        assert [e["success"] for e in by_delete.json()] == [True, False]
    else:
        assert "DELETE" not in by_delete.headers["Allow"]
    deleted = (["d1"] if delete_status == 200 else []) + (["p1"] if post_status == 200 else [])
    assert emu.bloomreach.deleted("cat-1") == deleted


async def test_oversize_can_be_answered_413_with_a_lower_item_cap(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    """A 5,000-item cap answered 413 (as a proxy might): 5,001 ids are refused whole."""
    emu.config.bloomreach_max_items = 5_000
    emu.config.bloomreach_oversize_status = 413
    over = await client.post(PATH, json=[{"item_id": f"i{n}"} for n in range(5_001)])
    assert over.status_code == 413
    at_cap = await client.post(PATH, json=[{"item_id": f"i{n}"} for n in range(5_000)])
    assert at_cap.status_code == 200 and len(at_cap.json()) == 5_000
