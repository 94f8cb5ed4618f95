"""Pure parts of the client and the commands: the contract's operation table against the
worker's, job checks, request bodies, streaming input, tallies, progress lines, outcome and
dead-letter lines, and what may be printed of a broker URL."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from worker.broker import REASON_HEADER as WORKER_REASON_HEADER
from worker.cli.common import CliError, load_settings, safe_url
from worker.cli.dlq import REASON_HEADER, DeadLetter, reason_of, replay_headers
from worker.cli.inputs import InputError, Source
from worker.cli.progress import Lines, Quiet
from worker.cli.submit import Tally, result_lines
from worker.cli.tail import outcome_line
from worker.client import CONTRACT_OPERATIONS, Answer, Job, JobError, Reply
from worker.client.connection import answer, iterate
from worker.registry import OPERATIONS


def test_contract_table_has_every_worker_operation_with_the_same_api_and_scope() -> None:
    """The client's table (the contract's) knows each operation the worker implements, with
    the same API, scope field and whether the scope is required: they cannot drift apart."""
    for name, operation in OPERATIONS.items():
        spec = CONTRACT_OPERATIONS[name]
        assert (spec.api, spec.scope_field, spec.scope_required) == (
            operation.api, operation.scope_field, operation.scope_required,
        ), name  # fmt: skip
        assert (spec.carries, spec.params) == (operation.carries, operation.params), name


def test_reason_header_is_the_one_the_worker_writes() -> None:
    """dlq reads the header the worker's dead-lettering sets."""
    assert REASON_HEADER == WORKER_REASON_HEADER


TARGETS = {"main": "datocms", "shop": "bloomreach", "other": None}


@pytest.mark.parametrize(
    ("job", "problem"),
    [
        (Job("datocms.items.explode", "main"), "unknown operation 'datocms.items.explode'"),
        (Job("datocms.items.publish", "nope"), "unknown target 'nope'"),
        (Job("datocms.items.publish", "shop"), "is a bloomreach target"),
        (Job("bloomreach.catalog_items.delete", "shop"), "needs a catalog_id"),
        (Job("bloomreach.catalog_items.delete", "shop", "env", "c"), "environment does not apply"),
        (Job("datocms.items.publish", "main", catalog_id="c"), "catalog_id does not apply"),
        (Job("bloomreach.catalog_items.delete", "shop", catalog_id="a/b"), "catalog_id must"),
        (Job("datocms.items.publish", "main", params={"stage": "x"}), "takes no params"),
        (Job("datocms.items.move_to_stage", "main"), "needs params"),
        (Job("datocms.items.move_to_stage", "main", params={"stage": 1}), "params.stage"),
        (Job("datocms.items.move_to_stage", "main", params={"stage": "a", "x": 1}), "only 'stage'"),
        (Job("datocms.uploads.tag", "main", params={"tags": []}), "1 to 100 non-empty"),
        (Job("datocms.uploads.tag", "main", params={"tags": ["a", ""]}), "1 to 100 non-empty"),
        (Job("datocms.uploads.set_collection", "main", params={}), "must have 'upload_collection'"),
        (Job("datocms.uploads.set_collection", "main", params={"upload_collection": 5}), "id string"),
    ],
)  # fmt: skip
def test_job_check_refuses_what_no_worker_would_take(job: Job, problem: str) -> None:
    """Each job that breaks the contract raises JobError naming the problem."""
    with pytest.raises(JobError) as raised:
        job.check(TARGETS)
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    "job",
    [
        Job("datocms.items.publish", "main", environment="sandbox-1"),
        Job("datocms.items.publish", "other"),  # kind not configured: any operation
        Job("bloomreach.catalog_items.update", "shop", catalog_id="products"),
        Job("datocms.items.move_to_stage", "main", params={"stage": "review"}),
        Job("datocms.uploads.tag", "main", params={"tags": ["a", "b"]}),
        Job("datocms.uploads.set_collection", "main", params={"upload_collection": None}),
    ],
)
def test_job_check_accepts_contract_jobs(job: Job) -> None:
    """Jobs that fit the contract pass, and return their operation's spec."""
    assert job.check(TARGETS).name == job.operation


def test_targets_are_checked_only_when_some_are_configured() -> None:
    """Without configured targets, any target name passes (the worker decides); an unknown
    operation is refused all the same."""
    assert Job("datocms.items.publish", "anything").check({}).api == "datocms"
    with pytest.raises(JobError):
        Job("datocms.items.nope", "anything").check({})


def test_request_body_carries_exactly_ids_or_items_and_passes_params_through() -> None:
    """The body has the contract's fields only: ids or items (never both), scope and params
    when set, the request id."""
    job = Job("datocms.uploads.tag", "main", environment="e1", params={"tags": ["x"]})
    assert orjson.loads(job.body("r1", ids=["a", "b"])) == {
        "operation": "datocms.uploads.tag", "target": "main", "environment": "e1",
        "params": {"tags": ["x"]}, "ids": ["a", "b"], "request_id": "r1",
    }  # fmt: skip
    items = [{"id": "sku", "properties": {"p": 1}}]
    update = Job("bloomreach.catalog_items.update", "shop", catalog_id="c")
    assert orjson.loads(update.body("r2", items=items))["items"] == items
    with pytest.raises(ValueError, match="exactly one"):
        job.body("r3", ids=["a"], items=items)


def test_ids_are_streamed_in_chunks_skipping_blank_lines(tmp_path: Path) -> None:
    """Ids come one per line, trimmed, blank lines skipped, in chunks of the given size; the
    file's count is known before publishing."""
    path = tmp_path / "ids.txt"
    path.write_text("a\n  b \n\n\nc\r\nd\ne\n")
    source = Source(str(path), "ids")
    assert source.check() == 5
    assert [c.ids for c in source.chunks(2)] == [["a", "b"], ["c", "d"], ["e"]]


def test_items_lines_must_be_json_objects_named_by_line_number(tmp_path: Path) -> None:
    """A line that is not JSON, or not an object, is an InputError naming its line."""
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a"}\n\n[1]\n')
    with pytest.raises(InputError, match="line 3: an item must be a JSON object"):
        Source(str(path), "items").check()
    path.write_text('{"id": "a"}\n{"id": \n')
    with pytest.raises(InputError, match="line 2: not JSON"):
        list(Source(str(path), "items").chunks(10))


def test_items_chunks_are_bounded_by_bytes_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk of items is cut before it outgrows MAX_CHUNK_BYTES, whatever --chunk says."""
    monkeypatch.setattr("worker.cli.inputs.MAX_CHUNK_BYTES", 100)
    path = tmp_path / "items.jsonl"
    line = orjson.dumps({"id": "x", "properties": {"text": "y" * 30}}).decode()
    path.write_text("\n".join([line] * 7) + "\n")
    sizes = [len(c) for c in Source(str(path), "items").chunks(1000)]
    assert sum(sizes) == 7 and max(sizes) == 100 // (len(line) + 1)


def test_a_missing_file_is_an_input_error() -> None:
    with pytest.raises(InputError, match="cannot read /nonexistent"):
        Source("/nonexistent/ids.txt", "ids").check()


def reply(*statuses: str, error: dict[str, object] | None = None) -> Reply:
    items = [
        {"id": f"i{n}", "status": s,
         "error": None if s == "succeeded" else {"code": f"C{s}", "message": "m"}}
        for n, s in enumerate(statuses)
    ]  # fmt: skip
    counts = {s: statuses.count(s) for s in ("succeeded", "failed", "rejected")}
    return Reply.model_validate(
        {
            "request_id": "r",
            "operation": "o",
            "target": "t",
            "counts": counts,
            "items": items,
            "finished_at": "t",
            "error": error,
        }
    )


def test_tally_counts_by_status_and_code_and_sets_the_exit_code() -> None:
    """All succeeded: exit 0; any failed or rejected: exit 1, with counts by code; ids of a
    message refused as a whole without readable ids count as rejected under its code."""
    tally = Tally()
    tally.add(Answer(reply("succeeded", "succeeded"), 2))
    assert tally.exit_code == 0
    tally.add(Answer(reply("succeeded", "failed", "rejected"), 3))
    refused = reply(error={"code": "too_large", "message": "m"})
    tally.add(Answer(refused, 4, ("a", "b", "c", "d")))
    assert tally.exit_code == 1
    assert (tally.items, tally.requests) == (9, 3)
    assert dict(tally.statuses) == {"succeeded": 3, "failed": 1, "rejected": 5}
    assert tally.summary() == [
        "9 items answered in 3 requests: 3 succeeded, 1 failed, 5 rejected",
        "  failed Cfailed: 1",
        "  rejected Crejected: 1",
        "  rejected too_large: 4",
    ]


def test_result_lines_are_one_json_object_per_item() -> None:
    """Each item of the reply is a line; ids the reply could not list are `rejected` lines
    with the reply's top-level error."""
    refused = reply(error={"code": "invalid_message", "message": "m"})
    assert [orjson.loads(x) for x in result_lines(answer(refused, ["a", "b", "a"])).split()] == [
        {"id": k, "status": "rejected",
         "error": {"code": "invalid_message", "message": "m", "retryable": False}}
        for k in ("a", "b")
    ]  # fmt: skip
    lines = result_lines(Answer(reply("succeeded", "failed"), 2)).splitlines()
    assert [orjson.loads(x) for x in lines] == [
        {"id": "i0", "status": "succeeded", "error": None},
        {"id": "i1", "status": "failed",
         "error": {"code": "Cfailed", "message": "m", "retryable": False}},
    ]  # fmt: skip


def test_plain_progress_prints_a_line_per_tenth_of_the_total() -> None:
    """Off a terminal: one line each time another 10% is answered, none in between."""
    out = io.StringIO()
    lines = Lines(1000, out)
    for _ in range(40):
        lines.advance(25)
    assert out.getvalue().splitlines() == [
        f"answered {n * 100} of 1000 items ({n * 10}%)" for n in range(1, 11)
    ]
    unknown = io.StringIO()
    counting = Lines(None, unknown)
    counting.advance(25_000)
    assert unknown.getvalue() == "answered 25000 items\n"


def test_outcome_line_shows_status_operation_target_scope_id_and_error() -> None:
    body = orjson.dumps(
        {
            "finished_at": "T",
            "status": "failed",
            "operation": "datocms.items.publish",
            "target": "main",
            "environment": "e1",
            "catalog_id": None,
            "id": "x",
            "error": {"code": "ITEM_LOCKED", "message": "locked"},
        }
    )
    assert (
        outcome_line(body) == "T  failed     datocms.items.publish  main/e1  x  ITEM_LOCKED: locked"
    )
    assert outcome_line(b"not json") == "not json"


def test_dead_letter_lines_read_the_body_and_both_kinds_of_reason() -> None:
    """The worker's reason header, else the broker's x-death reason; ids or items counted;
    an unreadable body still gets a line."""
    body = orjson.dumps({"operation": "op", "target": "t", "items": [{}, {}], "request_id": "r"})
    letter = DeadLetter.of(body, {REASON_HEADER: "bad", "x-delivery-count": 2}, "m")
    assert letter == DeadLetter("bad", "op", "t", "r", 2, 2)
    by_broker = DeadLetter.of(b"\xff", {"x-death": [{"reason": b"rejected"}]}, "m2")
    assert (by_broker.reason, by_broker.request_id, by_broker.ids) == (
        "dead-lettered by the broker: rejected", "m2", None,
    )  # fmt: skip
    assert reason_of({}) == "-"


def test_replayed_messages_keep_the_publishers_headers_only() -> None:
    headers = {
        "trace": "t1", REASON_HEADER: "r", "x-bulkops-original-queue": "q", "x-death": [],
        "x-first-death-reason": "rejected", "x-delivery-count": 3,
    }  # fmt: skip
    assert replay_headers(headers) == {"trace": "t1"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://user:pa55@rabbit.example:5672/prod", "amqp://rabbit.example:5672/prod"),
        ("amqps://user:pa55@rabbit.example/", "amqps://rabbit.example/"),
        ("amqp://rabbit", "amqp://rabbit/"),
    ],
)
def test_safe_url_never_shows_credentials(url: str, shown: str) -> None:
    assert safe_url(url) == shown


def test_bad_settings_name_the_variable_but_never_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A BULKOPS_TARGETS that does not fit is a CliError naming the setting; the secret
    inside the value is not in the message."""
    monkeypatch.setenv("BULKOPS_TARGETS", '{"main": {"kind": 5, "api_token": "t0ps3cret"}}')
    with pytest.raises(CliError) as raised:
        load_settings()
    assert "BULKOPS_TARGETS" in str(raised.value)
    assert "t0ps3cret" not in str(raised.value)
    monkeypatch.setenv("BULKOPS_TARGETS", '{"main": {"kind": "datocms", "api_token": "t"}}')
    assert load_settings().target_kinds() == {"main": "datocms"}


async def test_iterate_advances_a_plain_iterable_off_the_loop_and_raises_its_errors() -> None:
    """Plain iterables are read in order, one step per thread hop; an error raised while
    reading (a bad input line) reaches the consumer after the values before it."""

    def lines() -> Iterator[int]:
        yield 1
        yield 2
        raise InputError("line 3: bad")

    got = []
    with pytest.raises(InputError, match="line 3"):
        async for value in iterate(lines()):
            got.append(value)
    assert got == [1, 2]
    assert [v async for v in iterate(iter(range(5)))] == [0, 1, 2, 3, 4]


async def test_quiet_says_once_per_silence_what_the_command_waits_for() -> None:
    """After `seconds` without a reply the command says once what it waits for; a reply
    resets it, and a new silence as long says it again."""
    said: list[str] = []
    quiet = Quiet(said.append, "is a worker consuming q?", seconds=0.08)
    watcher = asyncio.create_task(quiet.watch())
    try:
        async with asyncio.timeout(5):
            while not said:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # a longer silence: still said once
            assert len(said) == 1 and said[0].endswith(": is a worker consuming q?")
            quiet.touch()
            while len(said) < 2:
                await asyncio.sleep(0.01)
    finally:
        watcher.cancel()
