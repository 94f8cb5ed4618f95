"""DatoCMS CMA emulation over real HTTP: auth, bulk jobs, read-back, single-record, variants."""

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
    async with Emulator(EmulatorConfig(datocms_job_seconds=0.05)) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.base_url, headers=HEADERS) as http:
        yield http


def bulk_body(op: str, ids: list[str], rel: str = "items", kind: str = "item") -> dict[str, Any]:
    linkage = [{"type": kind, "id": i} for i in ids]
    return {"data": {"type": op, "relationships": {rel: {"data": linkage}}}}


def publish_body(ids: list[str]) -> dict[str, Any]:
    return bulk_body("item_bulk_publish_operation", ids)


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["data"][0]["attributes"]["code"]
    return code


async def wait_result(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(100):
        response = await client.get(f"/job-results/{job_id}")
        if response.status_code == 200:
            attributes: dict[str, Any] = response.json()["data"]["attributes"]
            return attributes
        assert response.status_code == 404
        await asyncio.sleep(0.02)
    raise AssertionError("job never finished")


async def test_missing_or_wrong_token_is_401_invalid_authorization_header(
    client: httpx.AsyncClient,
) -> None:
    for auth in ("Bearer nope", "dato-token", ""):
        response = await client.get("/items", headers={"Authorization": auth})
        assert response.status_code == 401
        assert error_code(response) == "INVALID_AUTHORIZATION_HEADER"
        assert response.headers["X-RateLimit-Limit"] == "60"


async def test_missing_api_version_and_wrong_content_type_are_refused(
    client: httpx.AsyncClient,
) -> None:
    """Both JSON content types are the API's (the reference pages send
    application/vnd.api+json, the official client application/json); others are refused."""
    response = await client.get("/items", headers={"X-Api-Version": "2"})
    assert response.status_code == 400
    assert error_code(response) == "INVALID_API_VERSION"
    response = await client.post(
        "/items/bulk/publish",
        json=publish_body(["a"]),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 415
    for content_type in ("application/json", "application/vnd.api+json"):
        response = await client.post(
            "/items/bulk/publish",
            json=publish_body(["a"]),
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 202


async def test_answers_carry_the_reference_content_type_request_id_and_rate_headers(
    client: httpx.AsyncClient,
) -> None:
    """As the reference pages print them: Content-Type exactly application/json (which the
    official client requires), X-Request-Id, X-RateLimit-Limit/-Remaining; on errors too."""
    accepted = await client.post("/items/bulk/publish", json=publish_body(["a"]))
    missing = await client.get("/job-results/999999")
    listed = await client.get("/items", params={"filter[ids]": "a", "version": "current"})
    for response in (accepted, missing, listed):
        assert response.headers["Content-Type"] == "application/json"
        assert len(response.headers["X-Request-Id"]) >= 16
        assert {"x-ratelimit-limit", "x-ratelimit-remaining"} <= set(response.headers.keys())
    assert accepted.headers["X-Request-Id"] != listed.headers["X-Request-Id"]
    error = missing.json()["data"][0]
    assert error["type"] == "api_error" and error["attributes"]["doc_url"].endswith("#NOT_FOUND")


async def test_list_by_ids_takes_version_current_or_published(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    """version=published leaves out records that have no published version (drafts)."""
    emu.datocms.seed_records(["d"], status="draft")
    emu.datocms.seed_records(["p"], status="published")
    emu.datocms.seed_records(["u"], status="updated")
    params = {"filter[ids]": "d,p,u"}
    current = await client.get("/items", params={**params, "version": "current"})
    published = await client.get("/items", params={**params, "version": "published"})
    assert [i["id"] for i in current.json()["data"]] == ["d", "p", "u"]
    assert [i["id"] for i in published.json()["data"]] == ["p", "u"]
    wrong = await client.get("/items", params={**params, "version": "latest"})
    assert wrong.status_code == 422 and error_code(wrong) == "INVALID_FIELD"


async def test_publish_job_is_404_while_running_then_200_with_counts_and_read_back_published(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.seed_records(["a", "b"], status="updated")
    response = await client.post("/items/bulk/publish", json=publish_body(["a", "b", "c"]))
    assert response.status_code == 202
    job = response.json()["data"]
    assert job["type"] == "job"
    running = await client.get(f"/job-results/{job['id']}")
    assert running.status_code == 404 and error_code(running) == "NOT_FOUND"
    result = await wait_result(client, job["id"])
    assert result == {
        "status": 200,
        "payload": {"data": [], "meta": {"successful": 3, "failed": 0}},
    }
    read = await client.get("/items", params={"filter[ids]": "a,b,c", "version": "current"})
    statuses = {item["id"]: item["meta"]["status"] for item in read.json()["data"]}
    assert statuses == {"a": "published", "b": "published", "c": "published"}
    assert emu.datocms.record_status("a") == "published"
    assert emu.requests(path_contains="/items/bulk/publish")[0].job_id == job["id"]
    assert emu.requests(path_contains="/items/bulk/publish")[0].items == 3


async def test_unpublish_and_destroy_jobs_apply_and_destroyed_records_vanish_from_read_back(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.seed_records(["a", "b"], status="published")
    body = bulk_body("item_bulk_unpublish_operation", ["a"])
    await wait_result(
        client, (await client.post("/items/bulk/unpublish", json=body)).json()["data"]["id"]
    )
    body = bulk_body("item_bulk_destroy_operation", ["b"])
    await wait_result(
        client, (await client.post("/items/bulk/destroy", json=body)).json()["data"]["id"]
    )
    read = await client.get("/items", params={"filter[ids]": "a,b"})
    assert [(i["id"], i["meta"]["status"]) for i in read.json()["data"]] == [("a", "draft")]
    assert emu.datocms.record_status("b") is None


async def test_locked_records_count_as_failed_and_single_publish_answers_422_with_the_code(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.set_failure(["locked"], "publish", "ITEM_LOCKED")
    response = await client.post("/items/bulk/publish", json=publish_body(["ok", "locked"]))
    result = await wait_result(client, response.json()["data"]["id"])
    assert result["payload"]["meta"] == {"successful": 1, "failed": 1}
    assert emu.datocms.record_status("locked") == "draft"
    single = await client.put("/items/locked/publish")
    assert single.status_code == 422 and error_code(single) == "ITEM_LOCKED"
    single = await client.put("/items/ok/unpublish")
    assert single.status_code == 200
    assert single.json()["data"]["meta"]["status"] == "draft"


async def test_uploads_in_use_fail_bulk_destroy_and_single_delete_with_upload_in_use(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.seed_uploads(["used"], in_use=True)
    emu.datocms.seed_uploads(["free"])
    body = bulk_body("upload_bulk_destroy_operation", ["used", "free"], "uploads", "upload")
    result = await wait_result(
        client, (await client.post("/uploads/bulk/destroy", json=body)).json()["data"]["id"]
    )
    assert result["payload"]["meta"] == {"successful": 1, "failed": 1}
    assert not emu.datocms.upload_exists("free") and emu.datocms.upload_exists("used")
    read = await client.get("/uploads", params={"filter[ids]": "used,free"})
    assert [u["id"] for u in read.json()["data"]] == ["used"]
    single = await client.delete("/uploads/used")
    assert single.status_code == 422 and error_code(single) == "UPLOAD_IS_CURRENTLY_IN_USE"
    assert (await client.delete("/uploads/free")).status_code == 404


async def test_single_record_endpoints_decode_percent_encoded_ids_and_404_when_absent(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.seed_records(["a-b_c"], status="draft")
    response = await client.put("/items/a%2Db%5Fc/publish")
    assert response.status_code == 200 and response.json()["data"]["id"] == "a-b_c"
    assert emu.datocms.record_status("a-b_c") == "published"
    emu.config.datocms_async_single_destroy = False  # the synchronous variant
    assert (await client.delete("/items/a%2Db_c")).status_code == 200
    missing = await client.delete("/items/a-b_c")
    assert missing.status_code == 404 and error_code(missing) == "NOT_FOUND"


async def test_unknown_ids_counted_as_failed_by_default(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.datocms.mark_missing(["ghost"])
    response = await client.post("/items/bulk/publish", json=publish_body(["a", "ghost"]))
    result = await wait_result(client, response.json()["data"]["id"])
    assert result["payload"]["meta"] == {"successful": 1, "failed": 1}


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [("reject_404", 404, "NOT_FOUND"), ("reject_422", 422, "INVALID_FIELD")],
)
async def test_unknown_ids_can_refuse_the_whole_request_and_apply_nothing(
    emu: Emulator, client: httpx.AsyncClient, mode: str, status: int, code: str
) -> None:
    emu.config.datocms_unknown_ids = mode  # type: ignore[assignment]
    emu.config.datocms_implicit_records = False
    emu.datocms.seed_records(["a"])
    response = await client.post("/items/bulk/publish", json=publish_body(["a", "ghost"]))
    assert response.status_code == status and error_code(response) == code
    await asyncio.sleep(0.08)
    assert emu.datocms.record_status("a") == "draft"
    assert emu.datocms.record_status("ghost") is None


async def test_more_than_max_items_or_wrong_shape_is_422_invalid_field(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    ids = [f"r{i}" for i in range(201)]
    response = await client.post("/items/bulk/publish", json=publish_body(ids))
    assert response.status_code == 422 and error_code(response) == "INVALID_FIELD"
    wrong_type = bulk_body("item_bulk_destroy_operation", ["a"])
    assert (await client.post("/items/bulk/publish", json=wrong_type)).status_code == 422
    wrong_kind = bulk_body("item_bulk_publish_operation", ["a"], kind="upload")
    assert (await client.post("/items/bulk/publish", json=wrong_kind)).status_code == 422
    emu.config.datocms_max_uploads = 2
    uploads = bulk_body("upload_bulk_destroy_operation", ["a", "b", "c"], "uploads", "upload")
    assert (await client.post("/uploads/bulk/destroy", json=uploads)).status_code == 422


async def test_job_that_never_finishes_stays_404(emu: Emulator, client: httpx.AsyncClient) -> None:
    emu.config.datocms_job_never_finishes = True
    job_id = (await client.post("/items/bulk/publish", json=publish_body(["a"]))).json()["data"][
        "id"
    ]
    await asyncio.sleep(0.1)
    assert (await client.get(f"/job-results/{job_id}")).status_code == 404
    assert emu.datocms.record_status("a") == "draft"


async def test_environments_keep_separate_state(emu: Emulator, client: httpx.AsyncClient) -> None:
    response = await client.put("/items/a/publish", headers={"X-Environment": "sandbox-1"})
    assert response.status_code == 200
    assert emu.datocms.record_status("a", environment="sandbox-1") == "published"
    assert emu.datocms.record_status("a") == "draft"
    assert emu.requests(path_contains="/items/a/")[0].environment == "sandbox-1"


async def test_read_back_honours_page_limit_and_caps_it_at_500(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    ids = ",".join(f"r{i}" for i in range(40))
    default = await client.get("/items", params={"filter[ids]": ids})
    assert len(default.json()["data"]) == 30 and default.json()["meta"]["total_count"] == 40
    limited = await client.get("/items", params={"filter[ids]": ids, "page[limit]": "5"})
    assert len(limited.json()["data"]) == 5
    too_big = await client.get("/items", params={"filter[ids]": ids, "page[limit]": "501"})
    assert too_big.status_code == 422


async def test_async_single_destroy_answers_202_and_the_job_carries_the_record_or_the_error(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    """The real DELETE /items/<id>: 202 + a job; the result holds the record (status 200) or
    the error the destroy met (status 422 with DELETE_RESTRICTION), applied only then.
    The default, as the reference page and the official client show it."""
    emu.datocms.set_failure(["kept"], "destroy", "DELETE_RESTRICTION")
    gone = await client.delete("/items/gone")
    assert gone.status_code == 202 and gone.json()["data"]["type"] == "job"
    result = await wait_result(client, gone.json()["data"]["id"])
    assert (result["status"], result["payload"]["data"]["id"]) == (200, "gone")
    assert emu.datocms.record_status("gone") is None
    kept = await client.delete("/items/kept")
    assert kept.status_code == 202
    result = await wait_result(client, kept.json()["data"]["id"])
    assert result["status"] == 422
    assert result["payload"]["data"][0]["attributes"]["code"] == "DELETE_RESTRICTION"
    assert emu.datocms.record_status("kept") == "draft"


async def test_records_without_drafts_read_back_with_null_status_and_stay_published(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    """Seeded with status None: meta.status null in read-backs and single answers; publish
    changes nothing, unpublish is refused."""
    emu.datocms.seed_records(["n"], status=None)
    read = await client.get("/items", params={"filter[ids]": "n"})
    assert [i["meta"]["status"] for i in read.json()["data"]] == [None]
    published = await client.put("/items/n/publish")
    assert published.status_code == 200 and published.json()["data"]["meta"]["status"] is None
    refused = await client.put("/items/n/unpublish")
    assert refused.status_code == 422
    assert emu.datocms.record_status("n") == "published"
