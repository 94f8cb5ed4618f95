"""Per-item truth: every item gets its own correct outcome, whatever the API reports."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.integration.harness import Rig, ids
from worker.emulator import Fault

pytestmark = pytest.mark.integration


def by_id(outcomes: list[dict]) -> dict[str, dict]:
    table = {o["id"]: o for o in outcomes}
    assert len(table) == len(outcomes), "one outcome per id"
    return table


async def test_counted_failures_are_attributed_to_the_right_records(r: Rig) -> None:
    """The job only counts failures; locked records and missing ids still get their own code
    (read-back, then the single-record endpoint), and the others succeed."""
    good, locked, missing = ids("ok", 150), ids("lk", 30), ids("gone", 20)
    r.emulator.datocms.set_failure(locked, "publish", "ITEM_LOCKED")
    r.emulator.datocms.mark_missing(missing)
    await r.publish(
        {
            "operation": "datocms.items.publish",
            "target": "main",
            "ids": good + locked + missing,
            "request_id": "mixed-1",
        }
    )
    async with r.worker():
        outcomes = by_id(await r.results.wait_for(200))
    assert len(r.emulator.requests(path_contains="/items/bulk/publish")) == 1
    for i in good:
        assert outcomes[i]["status"] == "succeeded", outcomes[i]
        assert r.emulator.datocms.record_status(i) == "published"
    for i in locked:
        assert outcomes[i]["status"] == "failed"
        assert outcomes[i]["error"]["code"] == "ITEM_LOCKED"
        assert r.emulator.datocms.record_status(i) == "draft"
    for i in missing:
        assert outcomes[i]["status"] == "failed"
        assert outcomes[i]["error"]["code"] == "NOT_FOUND"
    assert {o["job_id"] for o in outcomes.values()} != {None}
    assert r.emulator.breaches() == []


@pytest.mark.parametrize(
    ("variant", "code"), [("reject_422", "INVALID_FIELD"), ("reject_404", "NOT_FOUND")]
)
async def test_whole_request_refusal_isolates_the_bad_ids(r: Rig, variant: str, code: str) -> None:
    """When a bulk request is refused as a whole for some ids, the good ids still succeed and
    only the bad ones fail, with the API's code."""
    r.emulator.config.datocms_unknown_ids = variant  # type: ignore[assignment]
    good, missing = ids("ok", 190), ["gone1", "gone2", "gone3"]
    r.emulator.datocms.mark_missing(missing, "sandbox-1")
    await r.publish(
        {
            "operation": "datocms.items.unpublish",
            "target": "main",
            "environment": "sandbox-1",
            "ids": good[:100] + missing + good[100:],
        }
    )
    async with r.worker():
        outcomes = by_id(await r.results.wait_for(193))
    assert {outcomes[i]["status"] for i in good} == {"succeeded"}
    assert all(r.emulator.datocms.record_status(i, "sandbox-1") == "draft" for i in good)
    for i in missing:
        assert (outcomes[i]["status"], outcomes[i]["error"]["code"]) == ("failed", code)
        assert outcomes[i]["environment"] == "sandbox-1"
    assert r.emulator.breaches() == []


async def test_assets_in_use_fail_alone_when_destroying_uploads(r: Rig) -> None:
    """Uploads still in use count as failed in the job: they fail with
    UPLOAD_IS_CURRENTLY_IN_USE, the unused ones are destroyed."""
    free, used = ids("up", 40), ids("used", 5)
    r.emulator.datocms.seed_uploads(free)
    r.emulator.datocms.seed_uploads(used, in_use=True)
    await r.publish({"operation": "datocms.uploads.destroy", "target": "main", "ids": free + used})
    async with r.worker():
        outcomes = by_id(await r.results.wait_for(45))
    assert {outcomes[i]["status"] for i in free} == {"succeeded"}
    assert not any(r.emulator.datocms.upload_exists(i) for i in free)
    assert {outcomes[i]["error"]["code"] for i in used} == {"UPLOAD_IS_CURRENTLY_IN_USE"}
    assert all(r.emulator.datocms.upload_exists(i) for i in used)


async def test_destroy_reports_restricted_records(r: Rig) -> None:
    """Destroying records: deleted ones succeed, DELETE_RESTRICTION ones fail with that code."""
    doomed, kept = ids("d", 10), ids("k", 3)
    r.emulator.datocms.set_failure(kept, "destroy", "DELETE_RESTRICTION")
    await r.publish({"operation": "datocms.items.destroy", "target": "main", "ids": doomed + kept})
    async with r.worker():
        outcomes = by_id(await r.results.wait_for(13))
    assert {outcomes[i]["status"] for i in doomed} == {"succeeded"}
    assert all(r.emulator.datocms.record_status(i) is None for i in doomed)
    assert {outcomes[i]["error"]["code"] for i in kept} == {"DELETE_RESTRICTION"}


@pytest.mark.parametrize("string_booleans", [False, True])
async def test_bloomreach_per_item_answers_map_back_in_order(r: Rig, string_booleans: bool) -> None:
    """Each element of Bloomreach's answer belongs to the id at the same position; booleans
    printed as strings are read too."""
    r.emulator.config.bloomreach_string_booleans = string_booleans
    good, bad = ids("sku", 50), ["bad-1", "bad-2"]
    r.emulator.bloomreach.set_item_error("cat-9", bad, "Item cannot be deleted")
    await r.publish(
        {
            "operation": "bloomreach.catalog_items.delete",
            "target": "shop",
            "catalog_id": "cat-9",
            "ids": good[:25] + bad + good[25:],
        }
    )
    async with r.worker():
        outcomes = by_id(await r.results.wait_for(52))
    assert {outcomes[i]["status"] for i in good} == {"succeeded"}
    for i in bad:
        assert outcomes[i]["status"] == "failed"
        assert outcomes[i]["error"]["code"] == "Item cannot be deleted"
        assert outcomes[i]["catalog_id"] == "cat-9"
    assert sorted(r.emulator.bloomreach.deleted("cat-9")) == good


async def test_transient_errors_are_retried_then_succeed(r: Rig) -> None:
    """A burst of 503s, a dropped connection and a 429 without Retry-After are retried; the
    items succeed with the attempts counted, and the limit is never breached."""
    r.emulator.inject(Fault("status", count=2, api="datocms", path_contains="/bulk/", status=503))
    r.emulator.inject(Fault("drop", count=1, api="bloomreach"))
    r.emulator.config.bloomreach_retry_after = False
    r.emulator.inject(Fault("status", count=1, api="bloomreach", status=429))
    await r.publish({"operation": "datocms.items.publish", "target": "main", "ids": ["a1", "a2"]})
    await r.publish(
        {
            "operation": "bloomreach.catalog_items.delete",
            "target": "shop",
            "catalog_id": "c",
            "ids": ["b1"],
        }
    )
    settings = r.settings()
    settings.targets["shop"] = settings.targets["shop"].model_copy(update={"rate_limit": "5/1s"})
    r.emulator.config.bloomreach_rate = (5, 1.0)
    async with r.worker(settings):
        outcomes = by_id(await r.results.wait_for(3, timeout=60))
    assert {o["status"] for o in outcomes.values()} == {"succeeded"}
    assert outcomes["a1"]["attempts"] == 3
    assert outcomes["b1"]["attempts"] == 3
    assert r.emulator.breaches() == []


async def test_permanent_errors_fail_at_once_with_the_api_code(r: Rig) -> None:
    """A wrong token is not retried: every item fails with the API's 401 code."""
    settings = r.settings()
    settings.targets["main"] = settings.targets["main"].model_copy(
        update={"api_token": SecretStr("wrong-token")}
    )
    await r.publish({"operation": "datocms.items.publish", "target": "main", "ids": ["x1", "x2"]})
    async with r.worker(settings):
        outcomes = by_id(await r.results.wait_for(2))
    assert {o["status"] for o in outcomes.values()} == {"failed"}
    assert {o["error"]["retryable"] for o in outcomes.values()} == {False}
    assert {o["attempts"] for o in outcomes.values()} == {1}
    assert len(r.emulator.requests(path_contains="/items/bulk/publish")) == 1
    assert "wrong-token" not in str(list(outcomes.values()))


async def test_retries_exhausted_after_the_budget(r: Rig) -> None:
    """An API that keeps answering 503 ends in `failed` / `retries_exhausted` after
    max_attempts sends, retryable true."""
    r.emulator.inject(Fault("status", count=100, api="bloomreach", status=503))
    await r.publish(
        {
            "operation": "bloomreach.catalog_items.delete",
            "target": "shop",
            "catalog_id": "c",
            "ids": ["z1"],
        }
    )
    settings = r.settings(max_attempts=3)
    settings.targets["shop"] = settings.targets["shop"].model_copy(update={"rate_limit": "5/1s"})
    r.emulator.config.bloomreach_rate = (5, 1.0)
    async with r.worker(settings):
        (outcome,) = await r.results.wait_for(1)
    assert outcome["status"] == "failed"
    assert outcome["error"]["code"] == "retries_exhausted"
    assert outcome["error"]["retryable"] is True
    assert outcome["attempts"] == 3
    assert len(r.emulator.requests(path_contains="/bulk-delete")) == 3


async def test_job_that_never_finishes_fails_with_job_timeout(r: Rig) -> None:
    """A job whose result never appears is given up at the deadline and the follow bound:
    `job_timeout`."""
    r.emulator.config.datocms_job_never_finishes = True
    await r.publish({"operation": "datocms.items.publish", "target": "main", "ids": ["slow1"]})
    async with r.worker(r.settings(job_deadline_seconds=1.0, job_follow_seconds=0.5)):
        (outcome,) = await r.results.wait_for(1, timeout=20)
    assert (outcome["status"], outcome["error"]["code"]) == ("failed", "job_timeout")
    assert r.emulator.breaches() == []


async def test_missing_environment_fails_every_id_without_splitting(r: Rig) -> None:
    """A bulk request to a sandbox environment that does not exist is refused with 404; the
    read-back is refused too, so every id fails NOT_FOUND at once instead of the batch being
    split into hundreds of requests."""
    r.emulator.config.datocms_environments = {"main"}
    await r.publish({"operation": "datocms.items.publish", "target": "main",
                     "environment": "deleted-sandbox", "ids": ids("e", 200)})
    async with r.worker():
        outcomes = by_id(await r.results.wait_for(200))
    assert {(o["status"], o["error"]["code"]) for o in outcomes.values()} == {
        ("failed", "NOT_FOUND")
    }
    assert len(r.emulator.requests(api="datocms")) <= 3
