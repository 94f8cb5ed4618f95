"""The DatoCMS adapter without a broker: adapter, ScopedClient and the emulator in-process,
over real HTTP. What it proves: a bulk request refused as a whole for some ids still carries
the good ones (refusal isolation), and a job that only counts failures is attributed to the
right items (read-back, then the single-record endpoint's own error)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.unit.adapter_support import Sent, Sleeps, statuses
from worker.apis.adapters import ItemResult
from worker.apis.base import BatchKey
from worker.apis.datocms.adapter import DatoCMS, JobPolling
from worker.apis.datocms.target import DatoCMSTarget
from worker.emulator import Emulator, EmulatorConfig, Fault
from worker.http import RetryPolicy, ScopedClient
from worker.limiter import Limiter, Rate
from worker.metrics import Metrics

PUBLISH = "datocms.items.publish"
DESTROY = "datocms.items.destroy"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(datocms_job_seconds=0.01)) as emulator:
        yield emulator


async def execute(
    emu: Emulator, operation: str, ids: list[str], environment: str | None = None
) -> dict[str, ItemResult]:
    target = DatoCMSTarget(kind="datocms", base_url=emu.base_url, api_token="dato-token")  # type: ignore[arg-type]
    retry = RetryPolicy(4, 60.0, 0.01, 0.05, sleep=Sleeps())
    jobs = JobPolling(deadline_seconds=5.0, initial_seconds=0.01, max_seconds=0.05)
    adapter = DatoCMS(target, retry, jobs)
    async with httpx.AsyncClient() as http:
        client = ScopedClient(http, Limiter(Rate(60, 3.0)), Metrics(CollectorRegistry()), "main")
        key = BatchKey(operation=operation, target="main", scope=environment)
        return await adapter.execute(key, [Sent(i) for i in ids], client, None)


def bulk_requests(emu: Emulator) -> int:
    return len(emu.requests("datocms", "/bulk/"))


@pytest.mark.parametrize(
    ("mode", "code"), [("reject_404", "NOT_FOUND"), ("reject_422", "INVALID_FIELD")]
)
async def test_a_request_refused_for_missing_ids_fails_those_and_sends_the_rest(
    emu: Emulator, mode: str, code: str
) -> None:
    """The API refuses the whole bulk request (404 or 422) because some ids do not exist:
    a read-back finds the missing ones, they fail with the refusal's code, and the rest is
    sent again on its own and published."""
    emu.config = EmulatorConfig(datocms_job_seconds=0.01, datocms_unknown_ids=mode)  # type: ignore[arg-type]
    emu.datocms.seed_records(["a", "b", "c"])
    emu.datocms.mark_missing(["x", "y"])
    results = await execute(emu, PUBLISH, ["a", "x", "b", "y", "c"])
    assert statuses(results) == {
        "a": ("succeeded", None),
        "b": ("succeeded", None),
        "c": ("succeeded", None),
        "x": ("failed", code),
        "y": ("failed", code),
    }
    assert [emu.datocms.record_status(i) for i in "abc"] == ["published"] * 3
    assert bulk_requests(emu) == 2  # the refused one, then the good ids alone


async def test_a_refusal_the_read_back_cannot_explain_probes_the_ends_and_resends_the_rest(
    emu: Emulator,
) -> None:
    """Every id exists, yet the request is refused (a scripted 422 on the first bulk call
    only): with no missing id to blame, the first and last id go alone through the
    single-record endpoint and the others are sent again as one request."""
    records = list("abcdefgh")
    emu.datocms.seed_records(records)
    emu.inject(
        Fault(
            kind="status",
            api="datocms",
            path_contains="/items/bulk/publish",
            status=422,
            body={"data": [{"attributes": {"code": "INVALID_FIELD", "details": {}}}]},
        )
    )
    results = await execute(emu, PUBLISH, records)
    assert {s for s, _ in statuses(results).values()} == {"succeeded"}
    assert bulk_requests(emu) == 2  # refused whole, then the middle ids
    assert len(emu.requests("datocms", "/publish")) - bulk_requests(emu) == 2  # a and h alone


async def test_a_job_that_counts_failures_is_attributed_by_read_back_and_single_record(
    emu: Emulator,
) -> None:
    """The job only says "1 failed": the read-back shows which record is not published, and
    the single-record endpoint's answer gives that item its precise error; the others
    succeed with the job's id."""
    emu.datocms.seed_records(["a", "b", "c"])
    emu.datocms.set_failure(["b"], "publish", "ITEM_LOCKED")
    results = await execute(emu, PUBLISH, ["a", "b", "c"])
    assert statuses(results) == {
        "a": ("succeeded", None),
        "b": ("failed", "ITEM_LOCKED"),
        "c": ("succeeded", None),
    }
    job_ids = {r.job_id for r in results.values()}
    assert len(job_ids) == 1 and None not in job_ids
    assert results["b"].attempts == 2  # the bulk request, then the single-record one
    assert results["a"].attempts == 1


async def test_unknown_ids_counted_failed_get_the_single_record_not_found(emu: Emulator) -> None:
    """The default variant: unknown ids do not refuse the request, the job counts them
    failed; the read-back misses them and the single-record endpoint answers NOT_FOUND."""
    emu.datocms.seed_records(["a"])
    emu.datocms.mark_missing(["gone"])
    results = await execute(emu, PUBLISH, ["a", "gone"])
    assert statuses(results) == {"a": ("succeeded", None), "gone": ("failed", "NOT_FOUND")}


async def test_destroy_reads_absence_as_done(emu: Emulator) -> None:
    """For destroy the read-back's "done" is absence: the destroyed records succeed, the one
    the API refused to destroy fails with its code."""
    emu.datocms.seed_records(["a", "b"], status="published")
    emu.datocms.set_failure(["b"], "destroy", "DELETE_RESTRICTION")
    results = await execute(emu, DESTROY, ["a", "b"])
    assert statuses(results) == {"a": ("succeeded", None), "b": ("failed", "DELETE_RESTRICTION")}
    assert emu.datocms.record_status("a") is None
