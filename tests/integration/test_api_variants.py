"""The APIs as their vendors document them, where that differs from our first reading: each
variant played by the emulator over HTTP, the worker against the real RabbitMQ."""

from __future__ import annotations

import pytest

from tests.integration.harness import Rig, ids

pytestmark = pytest.mark.integration


def by_id(outcomes: list[dict]) -> dict[str, dict]:
    table = {o["id"]: o for o in outcomes}
    assert len(table) == len(outcomes), "one outcome per id"
    return table


async def test_async_single_destroy_job_error_fails_the_restricted_records(r: Rig) -> None:
    """DELETE /items/<id> answers 202 + a job, as the real API does. The records whose destroy
    job then fails with DELETE_RESTRICTION are `failed` with that code (not `succeeded`
    because the DELETE said 202), and they still exist; the others are destroyed."""
    r.emulator.config.datocms_async_single_destroy = True
    doomed, kept = ids("d", 10), ids("k", 3)
    r.emulator.datocms.set_failure(kept, "destroy", "DELETE_RESTRICTION")
    await r.publish({"operation": "datocms.items.destroy", "target": "main", "ids": doomed + kept})
    async with r.worker():
        outcomes = by_id(await r.results.wait_for(13))
    assert {outcomes[i]["status"] for i in doomed} == {"succeeded"}
    assert all(r.emulator.datocms.record_status(i) is None for i in doomed)
    for i in kept:
        assert (outcomes[i]["status"], outcomes[i]["error"]["code"]) == (
            "failed",
            "DELETE_RESTRICTION",
        ), outcomes[i]
        assert r.emulator.datocms.record_status(i) == "draft"
    singles = [e for e in r.emulator.requests(api="datocms") if e.method == "DELETE"]
    assert sorted(e.path for e in singles) == sorted(f"/items/{i}" for i in kept)
    assert {e.status for e in singles} == {202}, "the variant really answered with jobs"
    assert r.emulator.breaches() == []


async def test_records_without_drafts_read_back_as_published_without_single_calls(
    r: Rig,
) -> None:
    """Records of a model without drafts read back with meta.status null: published is their
    only state, so after a job that counted failures only the really failed (locked) records
    are asked about one by one; the draftless ones succeed without a single-record call."""
    draftless, locked = ids("nd", 20), ids("lk", 2)
    r.emulator.datocms.seed_records(draftless, status=None)
    r.emulator.datocms.set_failure(locked, "publish", "ITEM_LOCKED")
    await r.publish(
        {"operation": "datocms.items.publish", "target": "main", "ids": draftless + locked}
    )
    async with r.worker():
        outcomes = by_id(await r.results.wait_for(22))
    assert {outcomes[i]["status"] for i in draftless} == {"succeeded"}
    assert {outcomes[i]["error"]["code"] for i in locked} == {"ITEM_LOCKED"}
    reads = r.emulator.requests(path_contains="/items")
    assert any(e.method == "GET" and e.path == "/items" for e in reads), "a read-back was made"
    singles = [e.path for e in reads if e.method == "PUT"]
    assert sorted(singles) == sorted(f"/items/{i}/publish" for i in locked)
