"""Per-item truth and per-id order in the corners (issue 26), against the real RabbitMQ and
the emulator over HTTP: jobs that outlive the deadline, bulk requests refused whole for some
of their items. Each test names what it proves."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.integration.harness import Rig

pytestmark = pytest.mark.integration

PUBLISH = "datocms.items.publish"
UNPUBLISH = "datocms.items.unpublish"


class Renewals(logging.Handler):
    """Sets ``renewed`` when the worker renews its broker session (a reconnect)."""

    def __init__(self) -> None:
        super().__init__()
        self.renewed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "renewing the broker session" in record.getMessage():
            self.renewed.set()


def dato(operation: str, ids: list[str], params: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"operation": operation, "target": "main", "ids": ids}
    if params is not None:
        body["params"] = params
    return body


def by_operation(outcomes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["operation"]: o for o in outcomes}


async def test_a_job_past_the_deadline_is_followed_and_the_unpublish_behind_it_wins(
    r: Rig,
) -> None:
    """A publish whose job runs 2.5 s against a 1 s deadline, then an unpublish of the same
    record: the publish is followed past its deadline and answered `succeeded` (nothing at
    the first deadline), the unpublish goes only after the publish job's result, and the
    record ends `draft` (the order the worker consumed them in)."""
    r.emulator.config.datocms_job_seconds_by_action = {"publish": 2.5}
    r.emulator.datocms.seed_records(["late1"])
    await r.publish(dato(PUBLISH, ["late1"]))
    await r.publish(dato(UNPUBLISH, ["late1"]))
    settings = r.settings(job_deadline_seconds=1.0, job_follow_seconds=10.0)
    async with r.worker(settings):
        outcomes = by_operation(await r.results.wait_for(2, timeout=30))
    assert outcomes[PUBLISH]["status"] == "succeeded", outcomes[PUBLISH]["error"]
    assert outcomes[UNPUBLISH]["status"] == "succeeded", outcomes[UNPUBLISH]["error"]
    publish_job = outcomes[PUBLISH]["job_id"]
    done = [
        e.t
        for e in r.emulator.requests(path_contains=f"/job-results/{publish_job}")
        if e.status == 200
    ]
    (unpublish,) = r.emulator.requests(path_contains="/items/bulk/unpublish")
    assert done and unpublish.t > done[0], "the unpublish went before the publish job ended"
    assert r.emulator.datocms.record_status("late1") == "draft"
    assert r.emulator.breaches() == []


async def test_a_job_never_resolved_strands_the_operations_behind_it_unsent(r: Rig) -> None:
    """A publish job that outlives the deadline and the follow bound: its item is answered
    `job_timeout` once (at the bound), the unpublish waiting behind it `failed` with
    `job_unresolved` (retryable) and is never sent; another record's unpublish is not held."""
    r.emulator.config.datocms_job_seconds_by_action = {"publish": 600.0}
    r.emulator.datocms.seed_records(["stuck1", "free1"])
    await r.publish(dato(PUBLISH, ["stuck1"]))
    await r.publish(dato(UNPUBLISH, ["stuck1", "free1"]))
    settings = r.settings(job_deadline_seconds=0.5, job_follow_seconds=1.0)
    async with r.worker(settings):
        outcomes = await r.results.wait_for(3, timeout=30)
    got = {
        (o["operation"], o["id"]): (o["status"], (o["error"] or {}).get("code")) for o in outcomes
    }
    assert got == {
        (PUBLISH, "stuck1"): ("failed", "job_timeout"),
        (UNPUBLISH, "stuck1"): ("failed", "job_unresolved"),
        (UNPUBLISH, "free1"): ("succeeded", None),
    }
    stranded = next(o for o in outcomes if o["error"] and o["error"]["code"] == "job_unresolved")
    assert stranded["error"]["retryable"] is True
    polls = r.emulator.requests(path_contains="/job-results/")
    assert len(outcomes) == 3 and len(polls) >= 2
    (unpublish,) = r.emulator.requests(path_contains="/items/bulk/unpublish")
    assert unpublish.items == 1, "only free1 was sent"
    assert r.emulator.datocms.record_status("stuck1") == "draft"
    assert r.emulator.breaches() == []


def spread(good: list[str], bad: list[str]) -> list[str]:
    """``bad`` placed among ``good`` at even distances (not at the batch's ends)."""
    out, step = list(good), len(good) // (len(bad) + 1)
    for n, item in enumerate(bad, start=1):
        out.insert(n * step + n - 1, item)
    return out


def summary(outcomes: list[dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    return {o["id"]: (o["status"], (o["error"] or {}).get("code")) for o in outcomes}


async def test_a_stage_move_of_153_refused_whole_for_3_moves_the_150(r: Rig) -> None:
    """153 records moved to `review` in one batch; 3 belong to a model whose workflow has no
    such stage and the API refuses the whole bulk request (422 INVALID_FIELD): the 150 are
    moved and `succeeded`, the 3 `failed` with the API's own error for them."""
    good = [f"rec{n:03d}" for n in range(150)]
    bad = ["odd1", "odd2", "odd3"]
    r.emulator.config.datocms_item_refusal = "reject_422"
    r.emulator.datocms.seed_records(good, stage="draft")
    r.emulator.datocms.seed_records(bad, stage="draft", workflow="legacy")
    r.emulator.datocms.meta.set_stages(None, "legacy", ["draft", "done"])
    await r.publish(dato("datocms.items.move_to_stage", spread(good, bad), {"stage": "review"}))
    async with r.worker():
        outcomes = await r.results.wait_for(153, timeout=60)
    got = summary(outcomes)
    assert {i: s for i, s in got.items() if s != ("succeeded", None)} == {
        b: ("failed", "INVALID_FIELD") for b in bad
    }
    assert {r.emulator.datocms.meta.stage(None, i) for i in good} == {"review"}
    assert {r.emulator.datocms.meta.stage(None, i) for i in bad} == {"draft"}
    assert r.emulator.breaches() == []


@pytest.mark.parametrize(
    ("operation", "params", "action", "read"),
    [
        ("datocms.uploads.tag", {"tags": ["sale"]}, "upload_tag", "tags"),
        (
            "datocms.uploads.set_collection",
            {"upload_collection": "c-1"},
            "upload_set_collection",
            "collection",
        ),
    ],
)
async def test_uploads_tagged_or_moved_153_refused_whole_for_3_apply_the_150(
    r: Rig, operation: str, params: dict[str, Any], action: Any, read: str
) -> None:
    """The same shape for uploads: the API refuses the whole bulk tag or set-collection
    request (422 INVALID_FIELD) for 3 of 153 uploads; the 150 are changed and `succeeded`,
    the 3 `failed` with the single-record update's own error, and keep what they had."""
    good = [f"up{n:03d}" for n in range(150)]
    bad = ["odd1", "odd2", "odd3"]
    r.emulator.config.datocms_item_refusal = "reject_422"
    r.emulator.datocms.seed_uploads([*good, *bad], tags=["old"], collection="c-0")
    r.emulator.datocms.set_failure(bad, action, "INVALID_FIELD")
    await r.publish(dato(operation, spread(good, bad), params))
    async with r.worker():
        outcomes = await r.results.wait_for(153, timeout=60)
    got = summary(outcomes)
    assert {i: s for i, s in got.items() if s != ("succeeded", None)} == {
        b: ("failed", "INVALID_FIELD") for b in bad
    }
    meta = r.emulator.datocms.meta
    if read == "tags":
        assert {tuple(meta.tags(None, u)) for u in good} == {("old", "sale")}
        assert {tuple(meta.tags(None, u)) for u in bad} == {("old",)}
    else:
        assert {meta.collection(None, u) for u in good} == {"c-1"}
        assert {meta.collection(None, u) for u in bad} == {"c-0"}
    assert r.emulator.breaches() == []


async def test_integers_beyond_64_bits_in_properties_reach_the_api_exactly(r: Rig) -> None:
    """2^70 (and 2^70 + 1, which no float holds, and its negative) in catalog `properties`
    arrive at the API as the same integers, written as sent, in an upsert and a partial
    update; nothing is rejected or turned into a float."""
    big, odd = 2**70, 2**70 + 1
    properties = f'{{"n": {big}, "odd": {odd}, "neg": -{odd}, "small": 7, "f": 0.5}}'
    for operation, item in (
        ("bloomreach.catalog_items.upsert", f'{{"id": "big-1", "properties": {properties}}}'),
        (
            "bloomreach.catalog_items.update",
            f'{{"id": "big-2", "properties": {properties}, "upsert": true}}',
        ),
    ):
        raw = (
            f'{{"operation": "{operation}", "target": "shop", "catalog_id": "products", '
            f'"items": [{item}]}}'
        )
        await r.publish(raw.encode())  # written by hand: orjson cannot write 2^70
    async with r.worker():
        outcomes = await r.results.wait_for(2)
    assert {o["status"] for o in outcomes} == {"succeeded"}, outcomes
    items = r.emulator.bloomreach.catalog.items("products")
    for item_id in ("big-1", "big-2"):
        props = items[item_id]
        assert props == {"n": big, "odd": odd, "neg": -odd, "small": 7, "f": 0.5}
        assert all(type(props[k]) is int for k in ("n", "odd", "neg"))
    assert r.emulator.breaches() == []


async def test_a_reconnect_keeps_the_bulk_delete_form_a_405_taught(r: Rig) -> None:
    """The target answers 405 to `DELETE` (it takes `POST` objects): the first delete pays
    one 405 and switches; after the broker session is renewed (a reconnect: new session, new
    pipeline), the next delete goes as `POST` at once: one `DELETE` in all. The same holds for
    the size a 413 taught (kept with the adapter) and the limit DatoCMS states (kept with the
    process's limiters)."""
    r.emulator.config.bloomreach_delete_forms = "post-objects"
    r.emulator.config.bloomreach_rate = (5, 1.0)
    base = r.settings(consumer_idle_renew_seconds=0.5)
    targets = dict(base.targets)
    targets["shop"] = targets["shop"].model_copy(update={"rate_limit": "5/1s"})
    settings = r.settings(consumer_idle_renew_seconds=0.5, targets=targets)
    delete = {"operation": "bloomreach.catalog_items.delete", "target": "shop",
              "catalog_id": "cat-1"}  # fmt: skip
    handler, logger = Renewals(), logging.getLogger("bulkops.broker")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        await r.publish({**delete, "ids": ["first"]})
        async with r.worker(settings):
            await r.results.wait_for(1)
            await asyncio.wait_for(handler.renewed.wait(), 20)
            await r.publish({**delete, "ids": ["second"]})
            outcomes = await r.results.wait_for(2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert {o["id"]: o["status"] for o in outcomes} == {"first": "succeeded", "second": "succeeded"}
    sent = r.emulator.requests(path_contains="/bulk-delete")
    assert [e.method for e in sent] == ["DELETE", "POST", "POST"]
    assert sorted(r.emulator.bloomreach.deleted("cat-1")) == ["first", "second"]
    assert r.emulator.breaches() == []
