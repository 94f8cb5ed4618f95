"""The DatoCMS stage, tag and collection operations without a broker: adapter, ScopedClient
and the in-process emulator over real HTTP. What it proves: the bulk body carries the params,
the read-back shows each item's truth, an item not applied gets the single-record update's
precise error, a tag fallback keeps the upload's existing tags, and an unknown collection
fails the batch without splitting it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.unit.adapter_support import Sent, Sleeps, statuses
from worker.apis.adapters import ItemResult
from worker.apis.base import BatchKey, params_key
from worker.apis.datocms.adapter import DatoCMS, JobPolling
from worker.apis.datocms.target import DatoCMSTarget
from worker.emulator import Emulator, EmulatorConfig
from worker.http import RetryPolicy, ScopedClient
from worker.limiter import Limiter, Rate
from worker.metrics import Metrics

STAGE = "datocms.items.move_to_stage"
TAG = "datocms.uploads.tag"
COLLECTION = "datocms.uploads.set_collection"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(datocms_job_seconds=0.01)) as emulator:
        yield emulator


async def execute(
    emu: Emulator, operation: str, params: dict[str, Any], ids: list[str]
) -> dict[str, ItemResult]:
    target = DatoCMSTarget(kind="datocms", base_url=emu.base_url, api_token="dato-token")  # type: ignore[arg-type]
    retry = RetryPolicy(4, 60.0, 0.01, 0.05, sleep=Sleeps())
    jobs = JobPolling(deadline_seconds=5.0, initial_seconds=0.01, max_seconds=0.05)
    adapter = DatoCMS(target, retry, jobs)
    async with httpx.AsyncClient() as http:
        client = ScopedClient(http, Limiter(Rate(60, 3.0)), Metrics(CollectorRegistry()), "main")
        key = BatchKey(operation, "main", None, params_key(params))
        return await adapter.execute(key, [Sent(i) for i in ids], client, None)


async def test_a_stage_move_reads_back_and_fails_the_locked_item_with_its_code(
    emu: Emulator,
) -> None:
    """Records move to the asked stage in one bulk request; a locked record is not moved
    and fails with the record update's own code (ITEM_LOCKED)."""
    emu.datocms.seed_records(["a", "b", "c"], stage="draft")
    emu.datocms.set_failure(["b"], "move_to_stage", "ITEM_LOCKED")
    results = await execute(emu, STAGE, {"stage": "review"}, ["a", "b", "c"])
    assert statuses(results) == {
        "a": ("succeeded", None),
        "b": ("failed", "ITEM_LOCKED"),
        "c": ("succeeded", None),
    }
    meta = emu.datocms.meta
    assert [meta.stage(None, i) for i in "abc"] == ["review", "draft", "review"]
    assert len(emu.requests("datocms", "/items/bulk/move-to-stage")) == 1


async def test_a_stage_the_workflow_lacks_fails_with_invalid_field(emu: Emulator) -> None:
    """A stage unknown to a record's workflow: the single-record update answers
    INVALID_FIELD for that record."""
    emu.datocms.seed_records(["a"], stage="draft", workflow="wf")
    emu.datocms.meta.set_stages(None, "wf", ["draft", "review"])
    results = await execute(emu, STAGE, {"stage": "nowhere"}, ["a"])
    assert statuses(results) == {"a": ("failed", "INVALID_FIELD")}


async def test_tags_are_added_and_a_failed_item_keeps_its_tags(emu: Emulator) -> None:
    """Bulk tag adds the tags to each upload's own; an upload refused by the bulk job is
    asked again with its existing tags plus the new ones, and its scripted refusal is the
    precise error; its tags are unchanged."""
    emu.datocms.seed_uploads(["u1", "u2"], tags=["old"])
    emu.datocms.set_failure(["u2"], "upload_tag", "INSUFFICIENT_PERMISSIONS")
    results = await execute(emu, TAG, {"tags": ["new", "old"]}, ["u1", "u2"])
    assert statuses(results) == {
        "u1": ("succeeded", None),
        "u2": ("failed", "INSUFFICIENT_PERMISSIONS"),
    }
    assert emu.datocms.meta.tags(None, "u1") == ["old", "new"]
    assert emu.datocms.meta.tags(None, "u2") == ["old"]


async def test_set_collection_and_null_read_back_as_asked(emu: Emulator) -> None:
    """Uploads go into a collection, then out of it (``null``)."""
    emu.datocms.seed_uploads(["u1", "u2"], collection="old")
    into = await execute(emu, COLLECTION, {"upload_collection": "c-1"}, ["u1", "u2"])
    assert {r.status for r in into.values()} == {"succeeded"}
    assert [emu.datocms.meta.collection(None, u) for u in ("u1", "u2")] == ["c-1", "c-1"]
    out = await execute(emu, COLLECTION, {"upload_collection": None}, ["u1"])
    assert statuses(out) == {"u1": ("succeeded", None)}
    assert emu.datocms.meta.collection(None, "u1") is None


async def test_an_unknown_collection_fails_the_batch_without_splitting(emu: Emulator) -> None:
    """The API refuses the whole request (422 INVALID_FIELD) for a collection that does
    not exist: every upload fails with that code after one read-back, no halving."""
    emu.datocms.seed_uploads(["u1", "u2", "u3", "u4"])
    emu.datocms.meta.set_collections(None, ["c-1"])
    results = await execute(
        emu, COLLECTION, {"upload_collection": "nope"}, ["u1", "u2", "u3", "u4"]
    )
    assert {s for s, _ in statuses(results).values()} == {"failed"}
    assert {c for _, c in statuses(results).values()} == {"INVALID_FIELD"}
    assert len(emu.requests("datocms", "/uploads/bulk/set-upload-collection")) == 1
