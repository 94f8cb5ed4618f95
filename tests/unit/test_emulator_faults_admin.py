"""Scripted faults (status, slow, drop, job_failure) and the /_emulator admin endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from worker.emulator import Emulator, EmulatorConfig, Fault, LogEntry, serve

HEADERS = {
    "Authorization": "Bearer dato-token",
    "X-Api-Version": "3",
    "Content-Type": "application/vnd.api+json",
}
BLOOM = "/data/v2/projects/proj-1/catalogs/cat-1/items/bulk-delete"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(datocms_job_seconds=0.02)) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.base_url, headers=HEADERS) as http:
        yield http


def publish(ids: list[str]) -> dict[str, Any]:
    linkage = [{"type": "item", "id": i} for i in ids]
    return {
        "data": {
            "type": "item_bulk_publish_operation",
            "relationships": {"items": {"data": linkage}},
        }
    }


async def finished(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(100):
        response = await client.get(f"/job-results/{job_id}")
        if response.status_code == 200:
            attributes: dict[str, Any] = response.json()["data"]["attributes"]
            return attributes
        await asyncio.sleep(0.01)
    raise AssertionError("job never finished")


async def test_status_fault_answers_transient_service_unavailable_then_is_used_up(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.inject(Fault("status", count=2, api="datocms", path_contains="/items"))
    first, second, third = [await client.get("/items") for _ in range(3)]
    assert first.status_code == second.status_code == 503
    attributes = first.json()["data"][0]["attributes"]
    assert attributes["code"] == "SERVICE_UNAVAILABLE" and attributes["transient"] is True
    assert "X-RateLimit-Remaining" in first.headers
    assert third.status_code == 200
    assert [e.fault for e in emu.log] == ["status", "status", None]
    assert emu.faults() == []


async def test_status_fault_with_custom_body_and_headers_for_each_api(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    locked = {
        "data": [
            {
                "id": "1",
                "type": "api_error",
                "attributes": {"code": "ITEM_LOCKED", "details": {}, "transient": True},
            }
        ]
    }
    emu.inject(Fault("status", api="datocms", status=422, body=locked, headers={"X-Test": "1"}))
    response = await client.post("/items/bulk/publish", json=publish(["a"]))
    assert response.status_code == 422 and response.json() == locked
    assert response.headers["X-Test"] == "1"
    emu.inject(Fault("status", api="bloomreach", status=429))
    bloom = await client.post(
        BLOOM, json=[{"item_id": "a"}], auth=httpx.BasicAuth("bloom-key", "bloom-secret")
    )
    assert bloom.status_code == 429 and bloom.headers["Retry-After"] == "1"
    assert emu.bloomreach.deleted("cat-1") == []


async def test_slow_fault_delays_the_answer_and_a_timed_out_post_still_takes_effect(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.inject(Fault("slow", delay=0.3, path_contains="/items/bulk"))
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/items/bulk/publish", json=publish(["a"]), timeout=0.1)
    for _ in range(50):
        entry = emu.requests(path_contains="/items/bulk")[0]
        if entry.job_id is not None:
            break
        await asyncio.sleep(0.02)
    assert entry.fault == "slow" and entry.status == 202 and entry.job_id is not None
    await finished(client, entry.job_id)
    assert emu.datocms.record_status("a") == "published"


async def test_drop_fault_closes_the_connection_so_the_client_sees_a_transport_error(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.inject(Fault("drop", api="datocms"))
    with pytest.raises(httpx.TransportError):
        await client.get("/items")
    assert (await client.get("/items")).status_code == 200
    assert [e.status for e in emu.log] == [0, 200]


async def test_job_failure_fault_gives_a_non_2xx_job_result_and_applies_nothing(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.inject(Fault("job_failure", status=500))
    status = await client.get("/items")  # job faults leave ordinary requests alone
    assert status.status_code == 200
    job_id = (await client.post("/items/bulk/publish", json=publish(["a"]))).json()["data"]["id"]
    result = await finished(client, job_id)
    assert result["status"] == 500
    assert result["payload"]["data"][0]["attributes"]["transient"] is True
    assert emu.datocms.record_status("a") == "draft"
    again = (await client.post("/items/bulk/publish", json=publish(["a"]))).json()["data"]["id"]
    assert (await finished(client, again))["status"] == 200


async def test_faulted_requests_count_toward_the_rate_limit(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.config.datocms_rate = (1, 10.0)
    emu.inject(Fault("status", api="datocms"))
    assert (await client.get("/items")).status_code == 503
    assert (await client.get("/items")).status_code == 429
    assert len(emu.breaches()) == 1


async def test_admin_endpoints_drive_state_config_faults_and_log(emu: Emulator) -> None:
    async with (
        httpx.AsyncClient(base_url=emu.base_url) as admin,
        httpx.AsyncClient(base_url=emu.base_url, headers=HEADERS) as client,
    ):
        ok = {"ok": True}
        assert (
            await admin.post(
                "/_emulator/config", json={"datocms_job_seconds": 0, "datocms_rate": [100, 1]}
            )
        ).status_code == 200
        assert emu.config.datocms_rate == (100, 1.0)
        assert (await admin.post("/_emulator/config", json={"nonsense": 1})).status_code == 400
        seed = {
            "records": ["r1"],
            "status": "published",
            "uploads": ["u1"],
            "in_use": True,
            "environment": "sb",
        }
        assert (await admin.post("/_emulator/datocms/seed", json=seed)).json() == ok
        failure = {"ids": ["r2"], "action": "publish", "code": "UNPUBLISHED_LINK"}
        assert (await admin.post("/_emulator/datocms/failures", json=failure)).json() == ok
        record = await admin.get("/_emulator/datocms/records/r1", params={"environment": "sb"})
        assert record.json() == {"id": "r1", "status": "published"}
        refused = await client.put("/items/r2/publish")
        assert refused.status_code == 422
        assert refused.json()["data"][0]["attributes"]["code"] == "UNPUBLISHED_LINK"
        errors = {"catalog_id": "cat-1", "item_ids": ["x"], "message": "nope"}
        assert (await admin.post("/_emulator/bloomreach/item-errors", json=errors)).json() == ok
        bloom = await client.post(
            BLOOM,
            json=[{"item_id": "x"}, {"item_id": "y"}],
            auth=httpx.BasicAuth("bloom-key", "bloom-secret"),
            headers={"Content-Type": "application/json"},
        )
        assert bloom.json()[0]["errors"] == {"_global": ["nope"]}
        deleted = await admin.get("/_emulator/bloomreach/deleted/cat-1")
        assert deleted.json() == {"catalog_id": "cat-1", "deleted": ["y"]}
        fault = {"kind": "status", "status": 502, "api": "datocms"}
        assert (await admin.post("/_emulator/faults", json=fault)).json() == ok
        assert (await client.get("/items")).status_code == 502
        log = (await admin.get("/_emulator/log", params={"api": "datocms"})).json()
        assert log["breaches"] == 0 and [e["path"] for e in log["entries"]] == [
            "/items/r2/publish",
            "/items",
        ]
        assert "dato-token" not in str(log) and "bloom-secret" not in str(log)
        assert (await admin.post("/_emulator/reset")).json() == ok
        assert emu.bloomreach.deleted("cat-1") == [] and emu.requests(api="datocms") == []
        assert emu.datocms.record_status("r1", "sb") == "draft"  # implicit again


async def test_log_entries_carry_arrival_time_method_query_and_body_size(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    await client.get("/items", params={"filter[ids]": "a,b"})
    await client.post("/items/bulk/publish", json=publish(["a", "b"]))
    first, second = emu.log
    assert isinstance(first, LogEntry) and first.t <= second.t
    assert first.method == "GET" and first.body_bytes == 0 and first.items == 0
    assert first.path == "/items" and "filter" in first.query and "a,b" in first.query
    assert second.method == "POST" and second.items == 2 and second.body_bytes > 0


async def test_serve_prints_the_base_url_and_runs_until_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    task = asyncio.create_task(serve(EmulatorConfig()))
    for _ in range(200):
        out = capsys.readouterr().out.strip()
        if out:
            break
        await asyncio.sleep(0.01)
    assert out.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient(base_url=out) as admin:
        assert (await admin.get("/_emulator/log")).json()["count"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
