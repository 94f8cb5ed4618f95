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


def fast_bloomreach(r: Rig, **overrides: object) -> dict[str, str]:
    """Worker env with Bloomreach at 5 requests per 1 s on both sides (the limit is not
    what these tests are about)."""
    r.emulator.config.bloomreach_rate = (5, 1.0)
    settings = r.settings()
    targets = dict(settings.targets)
    targets["shop"] = targets["shop"].model_copy(update={"rate_limit": "5/1s"})
    return r.env(targets=targets, **overrides)


@pytest.mark.parametrize("forms", ["delete-ids", "post-objects"])
async def test_bloomreach_delete_succeeds_under_each_wire_form_with_auto(
    r: Rig, forms: str
) -> None:
    """With delete_format auto (the default), deletes succeed whichever form the API takes:
    DELETE with id strings at once, or, on a 405 to it, POST with objects from then on (one
    405 in all); per-item answers still map to their ids."""
    r.emulator.config.bloomreach_delete_forms = forms  # type: ignore[assignment]
    good, bad = ids("sku", 40), ["bad-1", "bad-2"]
    r.emulator.bloomreach.set_item_error("cat-9", bad, "Item cannot be deleted")
    for n in range(0, 40, 10):
        await r.publish({"operation": "bloomreach.catalog_items.delete", "target": "shop",
                         "catalog_id": "cat-9", "ids": good[n : n + 10] + bad[n // 20 :][:1]})
    async with r.worker_process(fast_bloomreach(r)):
        outcomes = await r.results.wait_for(44, timeout=60)
    table: dict[str, set[tuple[str, str | None]]] = {}
    for o in outcomes:
        table.setdefault(o["id"], set()).add((o["status"], (o["error"] or {}).get("code")))
    assert {i: table[i] for i in good} == {i: {("succeeded", None)} for i in good}
    assert {i: table[i] for i in bad} == {i: {("failed", "Item cannot be deleted")} for i in bad}
    assert sorted(r.emulator.bloomreach.deleted("cat-9")) == good
    sent = r.emulator.requests(path_contains="/bulk-delete")
    refused = [e for e in sent if e.status == 405]
    assert len(refused) == (1 if forms == "post-objects" else 0)
    method = "DELETE" if forms == "delete-ids" else "POST"
    assert {e.method for e in sent if e.status == 200} == {method}
    assert r.emulator.breaches() == []


async def test_12000_ids_against_a_5000_item_cap_answering_413_are_all_answered(r: Rig) -> None:
    """A real cap of 5,000 items answered 413 (not the documented 400 at 10,000): the
    10,000-id request is split until accepted, later batches of that size are split before
    sending, and every id gets its own correct answer (scattered per-item errors included);
    no 429, no breach."""
    r.emulator.config.bloomreach_max_items = 5_000
    r.emulator.config.bloomreach_oversize_status = 413
    wanted = ids("sku-", 12_000)
    bad = wanted[7::1000]  # one in every thousand, spread over the splits
    r.emulator.bloomreach.set_item_error("cat-1", bad, "Item cannot be deleted")
    await r.publish_many(
        [
            {"operation": "bloomreach.catalog_items.delete", "target": "shop",
             "catalog_id": "cat-1", "ids": wanted[n : n + 200]}
            for n in range(0, 12_000, 200)
        ]
    )  # fmt: skip
    async with r.worker_process(r.env(linger_seconds=1.0)):
        outcomes = await r.results.wait_for(12_000, timeout=90)
    table = by_id(outcomes)
    assert sorted(table) == wanted
    assert {table[i]["status"] for i in wanted if i not in bad} == {"succeeded"}
    assert {(table[i]["status"], table[i]["error"]["code"]) for i in bad} == {
        ("failed", "Item cannot be deleted")
    }
    assert sorted(r.emulator.bloomreach.deleted("cat-1")) == sorted(set(wanted) - set(bad))
    sent = r.emulator.requests(path_contains="/bulk-delete")
    assert all(e.items <= 5_000 for e in sent if e.status == 200)
    assert all(e.status in (200, 413) for e in sent), [e.status for e in sent]
    assert r.emulator.breaches() == []
