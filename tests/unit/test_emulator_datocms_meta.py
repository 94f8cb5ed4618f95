"""DatoCMS stages, upload tags and upload collections over real HTTP: bulk jobs with their
counts, per-item failures, read-back of meta.stage / attributes.tags /
relationships.upload_collection, and the single-record updates that give the precise error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from worker.emulator import Emulator, EmulatorConfig

HEADERS = {
    "Authorization": "Bearer dato-token",
    "X-Api-Version": "3",
    "Accept": "application/json",
    "Content-Type": "application/vnd.api+json",
}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(datocms_job_seconds=0.02)) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.base_url, headers=HEADERS) as http:
        yield http


def linkage(kind: str, ids: list[str]) -> dict[str, Any]:
    return {"data": [{"type": kind, "id": i} for i in ids]}


def move_body(stage: object, ids: list[str]) -> dict[str, Any]:
    return {
        "data": {
            "type": "item_bulk_move_to_stage_operation",
            "attributes": {"stage": stage},
            "relationships": {"items": linkage("item", ids)},
        }
    }


def tag_body(tags: object, ids: list[str]) -> dict[str, Any]:
    return {
        "data": {
            "type": "upload_bulk_tag_operation",
            "attributes": {"tags": tags},
            "relationships": {"uploads": linkage("upload", ids)},
        }
    }


def collection_body(collection: str | None, ids: list[str]) -> dict[str, Any]:
    data = None if collection is None else {"type": "upload_collection", "id": collection}
    return {
        "data": {
            "type": "upload_bulk_set_upload_collection_operation",
            "relationships": {
                "uploads": linkage("upload", ids),
                "upload_collection": {"data": data},
            },
        }
    }


def code_of(response: httpx.Response) -> str:
    code: str = response.json()["data"][0]["attributes"]["code"]
    return code


async def run_job(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["data"]["id"]
    for _ in range(200):
        result = await client.get(f"/job-results/{job_id}")
        if result.status_code == 200:
            attributes: dict[str, Any] = result.json()["data"]["attributes"]
            return attributes
        await asyncio.sleep(0.01)
    raise AssertionError("job never finished")


async def stages(client: httpx.AsyncClient, ids: str) -> dict[str, str | None]:
    read = await client.get("/items", params={"filter[ids]": ids, "version": "current"})
    return {item["id"]: item["meta"]["stage"] for item in read.json()["data"]}


async def uploads(client: httpx.AsyncClient, ids: str) -> dict[str, tuple[list[str], Any]]:
    read = await client.get("/uploads", params={"filter[ids]": ids})
    return {
        u["id"]: (u["attributes"]["tags"], u["relationships"]["upload_collection"]["data"])
        for u in read.json()["data"]
    }


async def test_records_read_back_with_a_null_stage_by_default(client: httpx.AsyncClient) -> None:
    assert await stages(client, "a,b") == {"a": None, "b": None}
    single = await client.get("/items/a")
    assert single.status_code == 200 and single.json()["data"]["meta"]["stage"] is None


async def test_move_to_stage_job_counts_locked_and_workflowless_records_as_failed(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    """Stages exist per workflow: a record whose workflow lacks the stage fails, as does one
    scripted to fail (ITEM_LOCKED); the others move and read back with meta.stage."""
    emu.datocms.meta.set_stages(None, "editorial", ["draft", "review"])
    emu.datocms.meta.set_stages(None, "legal", ["approved"])
    emu.datocms.seed_records(["a", "b", "locked"], workflow="editorial", stage="draft")
    emu.datocms.seed_records(["other"], workflow="legal")
    emu.datocms.set_failure(["locked"], "move_to_stage", "ITEM_LOCKED")
    emu.datocms.mark_missing(["ghost"])
    ids = ["a", "b", "locked", "other", "ghost"]
    result = await run_job(client, "/items/bulk/move-to-stage", move_body("review", ids))
    assert result == {
        "status": 200,
        "payload": {"data": [], "meta": {"successful": 2, "failed": 3}},
    }
    assert await stages(client, ",".join(ids)) == {
        "a": "review",
        "b": "review",
        "locked": "draft",
        "other": None,
    }
    entry = emu.requests(path_contains="move-to-stage")[0]
    assert entry.items == 5 and entry.job_id is not None


async def test_unknown_stage_fails_every_record_of_the_workflow(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.meta.set_stages(None, None, ["draft", "review"])
    result = await run_job(client, "/items/bulk/move-to-stage", move_body("nowhere", ["a", "b"]))
    assert result["payload"]["meta"] == {"successful": 0, "failed": 2}
    assert await stages(client, "a,b") == {"a": None, "b": None}


@pytest.mark.parametrize(
    "body",
    [
        move_body("", ["a"]),
        move_body(None, ["a"]),
        move_body("review", [f"r{n}" for n in range(201)]),
        {"data": {"type": "item_bulk_move_to_stage_operation", "relationships": {}}},
    ],
)
async def test_move_to_stage_bad_body_or_over_200_records_is_422(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await client.post("/items/bulk/move-to-stage", json=body)
    assert response.status_code == 422 and code_of(response) == "INVALID_FIELD"


async def test_single_record_update_of_meta_stage_gives_the_precise_error(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.meta.set_stages(None, "editorial", ["review"])
    emu.datocms.seed_records(["a", "locked"], workflow="editorial")
    emu.datocms.set_failure(["locked"], "move_to_stage", "ITEM_LOCKED")
    emu.datocms.mark_missing(["ghost"])

    def body(item_id: str, stage: str | None) -> dict[str, Any]:
        return {"data": {"type": "item", "id": item_id, "meta": {"stage": stage}}}

    moved = await client.put("/items/a", json=body("a", "review"))
    assert moved.status_code == 200 and moved.json()["data"]["meta"]["stage"] == "review"
    unknown = await client.put("/items/a", json=body("a", "nowhere"))
    assert unknown.status_code == 422 and code_of(unknown) == "INVALID_FIELD"
    assert unknown.json()["data"][0]["attributes"]["details"]["field"] == "meta.stage"
    locked = await client.put("/items/locked", json=body("locked", "review"))
    assert locked.status_code == 422 and code_of(locked) == "ITEM_LOCKED"
    missing = await client.put("/items/ghost", json=body("ghost", "review"))
    assert missing.status_code == 404 and code_of(missing) == "NOT_FOUND"
    cleared = await client.put("/items/a", json=body("a", None))
    assert cleared.status_code == 200 and cleared.json()["data"]["meta"]["stage"] is None
    assert (await client.get("/items/ghost")).status_code == 404
    assert emu.datocms.meta.stage(None, "locked") is None


async def test_bulk_tag_adds_tags_without_duplicates_and_in_use_uploads_still_tag(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.seed_uploads(["u1"], tags=["cats", "old"])
    emu.datocms.seed_uploads(["u2"], in_use=True)
    emu.datocms.set_failure(["bad"], "upload_tag", "INSUFFICIENT_PERMISSIONS")
    emu.datocms.mark_missing(["gone"])
    body = tag_body(["new", "cats", "new"], ["u1", "u2", "bad", "gone"])
    result = await run_job(client, "/uploads/bulk/tag", body)
    assert result["payload"]["meta"] == {"successful": 2, "failed": 2}
    assert await uploads(client, "u1,u2,bad,gone") == {
        "u1": (["cats", "old", "new"], None),
        "u2": (["new", "cats"], None),
        "bad": ([], None),
    }
    bad_tags = await client.post("/uploads/bulk/tag", json=tag_body(["ok", ""], ["u1"]))
    assert bad_tags.status_code == 422 and code_of(bad_tags) == "INVALID_FIELD"


async def test_bulk_set_collection_moves_uploads_in_and_out_and_reads_back(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.meta.set_collections(None, ["col-1", "col-2"])
    emu.datocms.seed_uploads(["u1", "u2"], collection="col-1")
    emu.datocms.set_failure(["u2"], "upload_set_collection", "INSUFFICIENT_PERMISSIONS")
    body = collection_body("col-2", ["u1", "u2", "u3"])
    result = await run_job(client, "/uploads/bulk/set-upload-collection", body)
    assert result["payload"]["meta"] == {"successful": 2, "failed": 1}
    col = {"type": "upload_collection", "id": "col-2"}
    assert await uploads(client, "u1,u2,u3") == {
        "u1": ([], col),
        "u2": ([], {"type": "upload_collection", "id": "col-1"}),
        "u3": ([], col),
    }
    out = await run_job(
        client, "/uploads/bulk/set-upload-collection", collection_body(None, ["u1"])
    )
    assert out["payload"]["meta"] == {"successful": 1, "failed": 0}
    single = await client.get("/uploads/u1")
    assert single.json()["data"]["relationships"]["upload_collection"]["data"] is None


async def test_unknown_collection_refuses_the_request_or_counts_failed_per_flag(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.meta.set_collections(None, ["col-1"])
    body = collection_body("nope", ["u1", "u2"])
    refused = await client.post("/uploads/bulk/set-upload-collection", json=body)
    assert refused.status_code == 422 and code_of(refused) == "INVALID_FIELD"
    emu.config.datocms_unknown_collection = "count_failed"
    result = await run_job(client, "/uploads/bulk/set-upload-collection", body)
    assert result["payload"]["meta"] == {"successful": 0, "failed": 2}
    malformed = {
        "data": {
            "type": "upload_bulk_set_upload_collection_operation",
            "relationships": {"uploads": linkage("upload", ["u1"])},
        }
    }
    response = await client.post("/uploads/bulk/set-upload-collection", json=malformed)
    assert response.status_code == 422


async def test_single_upload_update_replaces_tags_sets_collection_or_gives_the_error(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.meta.set_collections(None, ["col-1"])
    emu.datocms.seed_uploads(["u1"], tags=["a", "b"])
    emu.datocms.set_failure(["locked"], "upload_tag", "ITEM_LOCKED")
    emu.datocms.mark_missing(["gone"])

    def body(upload_id: str, tags: list[str], collection: str | None) -> dict[str, Any]:
        data = None if collection is None else {"type": "upload_collection", "id": collection}
        return {
            "data": {
                "type": "upload",
                "id": upload_id,
                "attributes": {"tags": tags},
                "relationships": {"upload_collection": {"data": data}},
            }
        }

    updated = await client.put("/uploads/u1", json=body("u1", ["c"], "col-1"))
    assert updated.status_code == 200
    data = updated.json()["data"]
    assert data["attributes"]["tags"] == ["c"]
    assert data["relationships"]["upload_collection"]["data"]["id"] == "col-1"
    unknown = await client.put("/uploads/u1", json=body("u1", ["d"], "nope"))
    assert unknown.status_code == 422 and code_of(unknown) == "INVALID_FIELD"
    assert emu.datocms.meta.tags(None, "u1") == ["c"]  # the refused update applied nothing
    locked = await client.put("/uploads/locked", json=body("locked", ["x"], None))
    assert locked.status_code == 422 and code_of(locked) == "ITEM_LOCKED"
    gone = await client.put("/uploads/gone", json=body("gone", ["x"], None))
    assert gone.status_code == 404
    assert (await client.get("/uploads/gone")).status_code == 404


async def test_new_endpoints_count_against_the_rate_limit_and_are_logged(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.config.datocms_rate = (2, 10.0)
    assert (await client.post("/uploads/bulk/tag", json=tag_body(["t"], ["u"]))).status_code == 202
    assert (await client.get("/uploads/u")).status_code == 200
    limited = await client.post("/items/bulk/move-to-stage", json=move_body("s", ["a"]))
    assert limited.status_code == 429 and "X-RateLimit-Reset" in limited.headers
    assert [e.path for e in emu.breaches()] == ["/items/bulk/move-to-stage"]


async def test_destroyed_records_and_uploads_lose_their_stage_tags_and_collection(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.seed_records(["r"], stage="review")
    emu.datocms.seed_uploads(["u"], tags=["t"], collection="c")
    destroyed = await client.delete("/items/r")  # a job (the API's form): its result tells
    assert destroyed.status_code == 202
    for _ in range(100):
        if (await client.get(f"/job-results/{destroyed.json()['data']['id']}")).status_code == 200:
            break
        await asyncio.sleep(0.01)
    assert (await client.delete("/uploads/u")).status_code == 200
    meta = emu.datocms.meta
    assert (meta.stage(None, "r"), meta.tags(None, "u"), meta.collection(None, "u")) == (
        None,
        [],
        None,
    )


async def test_async_upload_update_answers_202_and_the_job_result_carries_upload_or_error(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.config.datocms_async_upload_update = True
    emu.datocms.meta.set_collections(None, ["col-1"])
    emu.datocms.seed_uploads(["u1"], tags=["a"])

    async def update(collection: str) -> dict[str, Any]:
        body = {
            "data": {
                "type": "upload",
                "id": "u1",
                "attributes": {"tags": ["b"]},
                "relationships": {
                    "upload_collection": {"data": {"type": "upload_collection", "id": collection}}
                },
            }
        }
        response = await client.put("/uploads/u1", json=body)
        assert response.status_code == 202 and response.json()["data"]["type"] == "job"
        for _ in range(200):
            result = await client.get(f"/job-results/{response.json()['data']['id']}")
            if result.status_code == 200:
                attributes: dict[str, Any] = result.json()["data"]["attributes"]
                return attributes
            await asyncio.sleep(0.01)
        raise AssertionError("job never finished")

    refused = await update("nope")
    assert refused["status"] == 422
    assert refused["payload"]["data"][0]["attributes"]["code"] == "INVALID_FIELD"
    assert emu.datocms.meta.tags(None, "u1") == ["a"]
    done = await update("col-1")
    assert done["status"] == 200
    assert done["payload"]["data"]["attributes"]["tags"] == ["b"]
    assert emu.datocms.meta.collection(None, "u1") == "col-1"


async def test_stages_and_collections_are_per_environment(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    """A sandbox (X-Environment) has its own workflows, stages and collections."""
    emu.datocms.meta.set_stages("sb", None, ["review"])
    sandbox = {"X-Environment": "sb"}
    response = await client.post(
        "/items/bulk/move-to-stage", json=move_body("elsewhere", ["a"]), headers=sandbox
    )
    job_id = response.json()["data"]["id"]
    for _ in range(200):
        result = await client.get(f"/job-results/{job_id}", headers=sandbox)
        if result.status_code == 200:
            break
        await asyncio.sleep(0.01)
    assert result.json()["data"]["attributes"]["payload"]["meta"]["failed"] == 1
    primary = await run_job(client, "/items/bulk/move-to-stage", move_body("elsewhere", ["a"]))
    assert primary["payload"]["meta"] == {"successful": 1, "failed": 0}
    assert emu.datocms.meta.stage(None, "a") == "elsewhere"
    assert emu.datocms.meta.stage("sb", "a") is None


async def test_admin_failures_accept_the_new_actions(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(base_url=emu.base_url) as admin:
        for action in ("move_to_stage", "upload_tag", "upload_set_collection"):
            failure = {"ids": ["x"], "action": action, "code": "ITEM_LOCKED"}
            assert (await admin.post("/_emulator/datocms/failures", json=failure)).json() == {
                "ok": True
            }
    result = await run_job(client, "/uploads/bulk/tag", tag_body(["t"], ["x", "y"]))
    assert result["payload"]["meta"] == {"successful": 1, "failed": 1}
