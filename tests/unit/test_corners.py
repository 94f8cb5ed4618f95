"""Issue 26's pure parts: the coalescer strands what waits behind an unresolved job, the job
follow arithmetic fits under RabbitMQ's consumer timeout, and the DatoCMS adapter follows a
job past its deadline (adapter and emulator in-process, over real HTTP, no broker)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from tests.unit.adapter_support import Sent, Sleeps, statuses
from worker import exactjson
from worker.apis.adapters import ItemResult
from worker.apis.base import BatchKey
from worker.apis.datocms.adapter import DatoCMS, JobPolling
from worker.apis.datocms.target import DatoCMSTarget
from worker.batching import Coalescer
from worker.emulator import Emulator, EmulatorConfig
from worker.errors import ErrorCode, ErrorInfo
from worker.http import RetryPolicy, ScopedClient
from worker.limiter import Limiter, Rate
from worker.messages import Request, parse_request
from worker.metrics import Metrics
from worker.pipeline.dispatch import unresolved
from worker.registry import OPERATIONS
from worker.settings import Settings

PUBLISH = OPERATIONS["datocms.items.publish"]
UNPUBLISH = OPERATIONS["datocms.items.unpublish"]
PUB_KEY = BatchKey(operation=PUBLISH.name, target="main", scope=None)
UNPUB_KEY = BatchKey(operation=UNPUBLISH.name, target="main", scope=None)


def test_an_unresolved_item_takes_the_operations_behind_it_out_unsent() -> None:
    """The head of an id's chain ends unresolved: every item queued behind it on that id is
    returned (to be answered job_unresolved), none becomes ready, other ids are untouched."""
    c = Coalescer()
    head = c.add(PUBLISH, PUB_KEY, "a", object(), 1.0)
    c.add(PUBLISH, PUB_KEY, "b", object(), 1.0)
    later = c.add(UNPUBLISH, UNPUB_KEY, "a", object(), 2.0)
    again = c.add(PUBLISH, PUB_KEY, "a", object(), 3.0)
    assert [i.id for i in c.take(PUB_KEY)] == ["a", "b"]
    assert c.done_unresolved(head) == [later, again]
    assert c.size(UNPUB_KEY) == 0 and c.size(PUB_KEY) == 0
    assert c.pending == 1  # "b" is still in flight
    fresh = c.add(UNPUBLISH, UNPUB_KEY, "a", object(), 4.0)
    assert c.take(UNPUB_KEY) == [fresh], "a later operation on the id is a new chain"


def test_only_a_job_timeout_is_unresolved() -> None:
    """A job given up unfinished may still apply; any other failure is the API's last word."""
    timeout = ItemResult("failed", ErrorInfo(ErrorCode.JOB_TIMEOUT, "job 1", True))
    exhausted = ItemResult("failed", ErrorInfo(ErrorCode.RETRIES_EXHAUSTED, "5xx", True))
    assert unresolved(timeout)
    assert not unresolved(exhausted) and not unresolved(ItemResult("succeeded"))


def test_the_follow_bound_must_fit_under_the_consumer_timeout() -> None:
    """Defaults: 300 s retry budget + 300 s deadline + 600 s follow = 20 min, under the 25 min
    the worker keeps below RabbitMQ's 30-minute consumer timeout; more is refused."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.job_follow_seconds == 600
    with pytest.raises(ValidationError, match="job_follow_seconds"):
        Settings(_env_file=None, job_follow_seconds=1000)  # type: ignore[call-arg]


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(datocms_job_seconds=0.01)) as emulator:
        yield emulator


async def publish(emu: Emulator, ids: list[str], jobs: JobPolling) -> dict[str, ItemResult]:
    target = DatoCMSTarget(kind="datocms", base_url=emu.base_url, api_token="dato-token")  # type: ignore[arg-type]
    adapter = DatoCMS(target, RetryPolicy(4, 60.0, 0.01, 0.05, sleep=Sleeps()), jobs)
    async with httpx.AsyncClient() as http:
        client = ScopedClient(http, Limiter(Rate(60, 3.0)), Metrics(CollectorRegistry()), "main")
        return await adapter.execute(PUB_KEY, [Sent(i) for i in ids], client, None)


async def test_a_job_past_its_deadline_is_followed_to_its_result(emu: Emulator) -> None:
    """A 0.6 s job against a 0.2 s deadline and 5 s of following: succeeded, with its job id,
    and polled slower past the deadline (each poll counted as a request)."""
    emu.config.datocms_job_seconds_by_action = {"publish": 0.6}
    jobs = JobPolling(0.2, 0.01, 0.05, follow_seconds=5.0)
    results = await publish(emu, ["a", "b"], jobs)
    assert statuses(results) == {"a": ("succeeded", None), "b": ("succeeded", None)}
    assert results["a"].job_id is not None
    polls = [e.t for e in emu.requests("datocms", "/job-results/")]
    late = [b - a for a, b in itertools.pairwise(polls) if a - polls[0] > 0.25]
    assert late and min(late) >= jobs.follow_interval * 0.9


async def test_a_job_past_the_follow_bound_is_answered_job_timeout_with_its_id(
    emu: Emulator,
) -> None:
    """No result by deadline + follow: job_timeout (retryable), carrying the job's id."""
    emu.config.datocms_job_seconds_by_action = {"publish": 60.0}
    results = await publish(emu, ["a"], JobPolling(0.1, 0.01, 0.05, follow_seconds=0.3))
    (result,) = results.values()
    assert result.error is not None and result.error.code == "job_timeout"
    assert result.error.retryable and result.job_id is not None
    polls = emu.requests("datocms", "/job-results/")
    assert polls[-1].t - polls[0].t >= 0.3


STAGE = "datocms.items.move_to_stage"


async def move(emu: Emulator, ids: list[str], budget: int | None = None) -> dict[str, ItemResult]:
    target = DatoCMSTarget(kind="datocms", base_url=emu.base_url, api_token="dato-token")  # type: ignore[arg-type]
    jobs = JobPolling(5.0, 0.01, 0.05)
    adapter = DatoCMS(target, RetryPolicy(4, 60.0, 0.01, 0.05, sleep=Sleeps()), jobs)
    if budget is not None:
        adapter.isolation_requests = budget
    key = BatchKey(operation=STAGE, target="main", scope=None, params='{"stage":"review"}')
    async with httpx.AsyncClient() as http:
        client = ScopedClient(http, Limiter(Rate(600, 3.0)), Metrics(CollectorRegistry()), "main")
        return await adapter.execute(key, [Sent(i) for i in ids], client, None)


def refusing_emulator(emu: Emulator, good: list[str], bad: list[str]) -> None:
    emu.config.datocms_item_refusal = "reject_422"
    emu.datocms.seed_records(good, stage="draft")
    emu.datocms.seed_records(bad, stage="draft", workflow="legacy")
    emu.datocms.meta.set_stages(None, "legacy", ["draft", "done"])


async def test_a_stage_move_refused_whole_for_3_records_moves_the_other_40(emu: Emulator) -> None:
    """A whole-request 422 because 3 of 43 records' workflow lacks the stage: the 40 others
    move and succeed, the 3 fail with the single-record update's own INVALID_FIELD; the
    extra requests stay within the documented bound."""
    good = [f"g{n:02d}" for n in range(40)]
    bad = ["b1", "b2", "b3"]
    ids = [*good[:10], "b1", *good[10:25], "b2", "b3", *good[25:]]
    refusing_emulator(emu, good, bad)
    results = await move(emu, ids)
    assert {i: s for i, s in statuses(results).items() if s != ("succeeded", None)} == {
        b: ("failed", "INVALID_FIELD") for b in bad
    }
    assert all("meta.stage" in (results[b].error.message if results[b].error else "") for b in bad)
    assert {emu.datocms.meta.stage(None, i) for i in good} == {"review"}
    bulk = emu.requests("datocms", "/items/bulk/move-to-stage")
    assert len(bulk) <= 2 + 2 * 3 * 6  # 2 + 2·k·log2(n)
    singles = [e for e in emu.requests("datocms", "/items/") if e.method == "PUT"]
    assert len(singles) <= 2 + 4 * len(bad)


async def test_isolation_stops_at_its_budget_and_fails_the_rest_with_the_refusal(
    emu: Emulator,
) -> None:
    """With the budget spent, the parts still refused fail with the API's refusal, saying
    they were not isolated; nothing is sent beyond the bound."""
    good = [f"g{n:02d}" for n in range(30)]
    bad = [f"b{n}" for n in range(8)]
    ids = [good[0], *[x for pair in zip(bad, good[1:9], strict=True) for x in pair], *good[9:]]
    refusing_emulator(emu, good, bad)
    results = await move(emu, ids, budget=4)
    failed = {i: r for i, r in results.items() if r.status == "failed"}
    assert set(bad) <= set(failed)
    assert any("not isolated" in (r.error.message if r.error else "") for r in failed.values())
    assert len(emu.requests("datocms", "/items/bulk/move-to-stage")) <= 1 + 4


def test_exactjson_keeps_integers_of_any_size_and_matches_orjson_otherwise() -> None:
    """Integers beyond 64 bits are read and written exactly; every other document reads and
    writes as orjson does (same bytes out)."""
    raw = b'{"a":1180591620717411303425,"b":-9223372036854775809,"c":[1.5,"x",true,null]}'
    value = exactjson.loads(raw)
    assert value["a"] == 2**70 + 1 and value["b"] == -(2**63) - 1
    assert exactjson.dumps(value) == raw
    plain = {"k": [1, 2.25, "é", {"z": None, "a": 18446744073709551615}]}
    assert exactjson.dumps(plain, sort_keys=True) == orjson.dumps(
        plain, option=orjson.OPT_SORT_KEYS
    )
    assert exactjson.loads(orjson.dumps(plain)) == plain
    with pytest.raises(orjson.JSONDecodeError):
        exactjson.loads(b'{"a": NaN, "b": 12345678901234567890123}')


def test_a_request_message_keeps_a_2_to_the_70_property_exact() -> None:
    """The worker's message parsing keeps 2^70 + 1 an integer (orjson alone reads a float),
    and an item with it is valid, not rejected."""
    body = (
        b'{"operation": "bloomreach.catalog_items.upsert", "target": "shop", '
        b'"catalog_id": "c", "items": [{"id": "a", "properties": {"n": 1180591620717411303425}}]}'
    )
    parsed = parse_request(body, "m1", {"shop": "bloomreach"})
    assert isinstance(parsed, Request), parsed
    assert parsed.payload("a") == {"properties": {"n": 2**70 + 1}}
    assert not parsed.rejected


async def test_refused_ends_alone_do_not_condemn_the_middle(emu: Emulator) -> None:
    """The first and last records are the refused ones: probed alone they fail with their
    own error, the 10 between them go as one request and move."""
    good = [f"g{n}" for n in range(10)]
    refusing_emulator(emu, good, ["b1", "b2"])
    results = await move(emu, ["b1", *good, "b2"])
    assert {i for i, r in results.items() if r.status == "failed"} == {"b1", "b2"}
    assert {emu.datocms.meta.stage(None, i) for i in good} == {"review"}
    assert len(emu.requests("datocms", "/items/bulk/move-to-stage")) == 2


async def test_a_refusal_of_the_params_costs_two_bulk_requests_and_five_probes(
    emu: Emulator,
) -> None:
    """A stage no record's workflow has: the ends fail alone, the others together are refused
    alike, three of them alone too, and that is taken as a refusal of the params: every
    record fails INVALID_FIELD with no halving."""
    records = [f"r{n}" for n in range(12)]
    refusing_emulator(emu, [], records)
    results = await move(emu, records)
    assert {statuses(results)[i] for i in records} == {("failed", "INVALID_FIELD")}
    assert "refusal of the request's params" in (results["r5"].error or ErrorInfo("", "")).message
    assert len(emu.requests("datocms", "/items/bulk/move-to-stage")) == 2
    assert len([e for e in emu.requests("datocms", "/items/") if e.method == "PUT"]) == 5


async def test_refused_ends_and_middle_still_apply_every_good_record(emu: Emulator) -> None:
    """Three refused records, at both ends and one in the middle: the ends alone and the
    others together are refused alike, as a refusal of the params would be, but a probe of
    the others alone moves, so they are split: the 20 good records move, the 3 bad fail."""
    good = [f"g{n:02d}" for n in range(20)]
    refusing_emulator(emu, good, ["b1", "b2", "b3"])
    results = await move(emu, ["b1", *good[:10], "b2", *good[10:], "b3"])
    assert {i for i, r in results.items() if r.status == "failed"} == {"b1", "b2", "b3"}
    assert {statuses(results)[i] for i in ("b1", "b2", "b3")} == {("failed", "INVALID_FIELD")}
    assert {emu.datocms.meta.stage(None, i) for i in good} == {"review"}
