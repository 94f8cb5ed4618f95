"""The installed ``bulkops`` command against the real RabbitMQ (and the worker with the
emulator where outcomes are needed): usage errors, the messages ``submit`` publishes,
``tail``, ``dlq list`` and ``dlq replay``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.integration.cli import (
    Ran,
    bulkops,
    cli_env,
    running,
    take_all,
    write_lines,
)
from tests.integration.harness import Rig

pytestmark = pytest.mark.integration

DATO = "datocms.items.publish"
BLOOM_DELETE = "bloomreach.catalog_items.delete"


async def wait_depth(r: Rig, queue: str, depth: int, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while await r.queue_depth(queue) != depth:
            await asyncio.sleep(0.05)


def assert_usage_error(ran: Ran, text: str) -> None:
    assert ran.code == 2, ran
    assert text in ran.stderr, ran.stderr
    assert ran.stdout == ""


@pytest.mark.parametrize(
    ("args", "stdin", "text"),
    [
        (["datocms.items.explode", "--target", "main"], b"a1\n", "unknown operation"),
        ([DATO, "--target", "nope"], b"a1\n", "unknown target 'nope'"),
        ([DATO, "--target", "shop"], b"a1\n", "is a bloomreach target"),
        ([BLOOM_DELETE, "--target", "shop"], b"a1\n", "needs a catalog_id"),
        ([DATO, "--target", "main", "--environment", "Bad Env"], b"a1\n", "environment must"),
        ([DATO, "--target", "main", "--params", '{"stage": "x"}'], b"a1\n", "takes no params"),
        (["datocms.items.move_to_stage", "--target", "main", "--params", "[1]"], b"a1\n",
         "--params must be a JSON object"),
        (["datocms.items.move_to_stage", "--target", "main", "--params", '{"stage": ""}'],
         b"a1\n", "params.stage must be a non-empty string"),
        (["bloomreach.catalog_items.upsert", "--target", "shop", "--catalog-id", "c",
          "--items-file", "-"], b'{"id": "a"}\nnot json\n', "line 2: not JSON"),
        ([DATO, "--target", "main", "--items-file", "-"], b"{}\n", "carries ids"),
        ([DATO, "--target", "main", "--chunk", "0"], b"a1\n", "--chunk must be 1 to 10000"),
        ([DATO, "--target", "main", "--ids-file", "/nonexistent/ids.txt"], None, "cannot read"),
        ([DATO, "--target", "main"], b"\n\n", "no ids in standard input"),
    ],
)  # fmt: skip
async def test_submit_usage_errors_exit_2_with_a_clear_message_and_publish_nothing(
    r: Rig, args: list[str], stdin: bytes | None, text: str
) -> None:
    """Every job no worker would take (unknown operation or target, wrong scope or params,
    a bad input line, a bad option) is refused with exit 2 and a message naming the problem,
    before anything is published: the request queue stays empty."""
    ran = await bulkops("submit", *args, env=cli_env(r), stdin=stdin)
    assert_usage_error(ran, text)
    assert await r.queue_depth(r.request_queue) == 0


async def test_broker_errors_exit_2_and_never_print_the_password(r: Rig, tmp_path: Path) -> None:
    """A broker that cannot be reached or refuses the login is exit 2 with the host in the
    message, and the password of BULKOPS_AMQP_URL appears nowhere in the output."""
    ids = write_lines(tmp_path / "ids.txt", ["a1"])
    for url in ("amqp://guest:s3cr3t-pw@127.0.0.1:1/", "amqp://guest:s3cr3t-pw@127.0.0.1:5672/"):
        env = cli_env(r, BULKOPS_AMQP_URL=url)
        for args in (["submit", DATO, "--target", "main", "--ids-file", str(ids)],
                     ["tail"], ["dlq", "list"]):  # fmt: skip
            ran = await bulkops(*args, env=env)
            assert_usage_error(ran, "cannot connect to the broker at amqp://127.0.0.1:")
            assert "s3cr3t-pw" not in ran.stderr + ran.stdout


async def test_missing_queues_or_exchange_are_usage_errors_naming_them(r: Rig) -> None:
    """A request queue, results exchange or DLQ that does not exist (worker not deployed, or
    a typo in the settings) is exit 2 naming it, not a hang or a traceback."""
    env = cli_env(r, BULKOPS_REQUEST_QUEUE="no.such.requests",
                  BULKOPS_RESULTS_EXCHANGE="no.such.results",
                  BULKOPS_DEAD_LETTER_QUEUE="no.such.dlq")  # fmt: skip
    submit = await bulkops("submit", DATO, "--target", "main", env=env, stdin=b"a1\n")
    assert_usage_error(submit, "queue 'no.such.requests' does not exist")
    assert_usage_error(await bulkops("tail", env=env), "exchange 'no.such.results' does not exist")
    assert_usage_error(await bulkops("dlq", "list", env=env), "queue 'no.such.dlq' does not exist")


async def test_submit_publishes_contract_messages_with_reply_to_in_chunks(
    r: Rig, tmp_path: Path
) -> None:
    """Items from JSON lines become request messages of at most --chunk items, each with
    the contract's fields (items, catalog_id, request_id), persistent JSON, a reply_to and
    correlation_id = request_id; the command then waits for the replies (no worker here)."""
    items = [{"id": f"sku-{n}", "properties": {"price": n + 0.5}, "upsert": True} for n in range(5)]
    path = write_lines(tmp_path / "items.jsonl", [orjson.dumps(i).decode() for i in items])
    args = ["submit", "bloomreach.catalog_items.update", "--target", "shop",
            "--catalog-id", "products", "--items-file", str(path), "--chunk", "2"]  # fmt: skip
    async with running(*args, env=cli_env(r)) as submit:
        await wait_depth(r, r.request_queue, 3)
        messages = await take_all(r, r.request_queue, timeout=1)
        assert submit.process.returncode is None, "still waiting for the replies"
        assert await submit.interrupt_twice() == 130
    bodies = [orjson.loads(m.body) for m in messages]
    assert [b["items"] for b in bodies] == [items[0:2], items[2:4], items[4:5]]
    for message, body in zip(messages, bodies, strict=True):
        assert set(body) == {"operation", "target", "catalog_id", "items", "request_id"}
        assert (body["operation"], body["target"], body["catalog_id"]) == (
            "bloomreach.catalog_items.update",
            "shop",
            "products",
        )
        assert message.correlation_id == message.message_id == body["request_id"]
        assert message.reply_to and message.reply_to.startswith("amq.gen-")
        assert message.content_type == "application/json"
        assert message.delivery_mode == 2
    assert len({b["request_id"] for b in bodies}) == 3


async def test_submit_no_wait_publishes_params_and_ids_without_reply_to(r: Rig) -> None:
    """--no-wait publishes ids from standard input with the given --params passed through,
    without reply_to, and exits 0 at once; targets are left to the worker when
    BULKOPS_TARGETS names none (the documented fallback)."""
    env = cli_env(r)
    del env["BULKOPS_TARGETS"]
    ran = await bulkops(
        "submit", "datocms.uploads.tag", "--target", "anywhere", "--environment", "sandbox-1",
        "--params", '{"tags": ["spring", "sale"]}', "--chunk", "2", "--no-wait",
        env=env, stdin=b"u1\nu2\n\nu3\n",
    )  # fmt: skip
    assert ran.code == 0, ran
    assert "published 2 requests with 3 ids" in ran.stderr
    messages = await take_all(r, r.request_queue, timeout=1)
    bodies = [orjson.loads(m.body) for m in messages]
    assert [b["ids"] for b in bodies] == [["u1", "u2"], ["u3"]]
    assert all(b["params"] == {"tags": ["spring", "sale"]} for b in bodies)
    assert all(b["environment"] == "sandbox-1" and b["target"] == "anywhere" for b in bodies)
    assert all(m.reply_to is None for m in messages)


async def test_tail_prints_each_outcome_as_it_arrives_and_filters_by_binding(r: Rig) -> None:
    """`tail` prints one readable line per outcome the worker publishes (id, status, error
    code); `tail --json '*.*.*.failed'` prints only the failed one, as its JSON body; both
    exit 0 on Ctrl-C."""
    r.emulator.datocms.set_failure(["locked-1"], "publish", "ITEM_LOCKED")
    env = cli_env(r)
    async with (
        running("tail", env=env) as everything,
        running("tail", "--json", "*.*.*.failed", env=env) as failures,
    ):
        await everything.stderr_line("tailing")
        await failures.stderr_line("tailing")
        async with r.worker():
            await r.publish(
                {"operation": DATO, "target": "main", "ids": ["ok-1", "ok-2", "locked-1"]},
                message_id="tail-1",
            )
            lines = await everything.stdout_lines(3)
            failed = await failures.stdout_lines(1)
        assert await everything.interrupt() == 0
        assert await failures.interrupt() == 0
    by_id = {line.split()[4]: line.split() for line in lines}
    assert set(by_id) == {"ok-1", "ok-2", "locked-1"}
    assert by_id["ok-1"][1:4] == ["succeeded", DATO, "main"]
    assert by_id["locked-1"][1:4] == ["failed", DATO, "main"]
    assert by_id["locked-1"][5] == "ITEM_LOCKED:"
    body = orjson.loads(failed[0])
    assert (body["id"], body["status"], body["error"]["code"]) == (
        "locked-1",
        "failed",
        "ITEM_LOCKED",
    )


POISON = [
    (b"{not json", "dl-notjson", "not JSON"),
    (orjson.dumps({"operation": "datocms.items.explode", "target": "main", "ids": ["u1", "u2"]}),
     "dl-unknown-op", "unknown operation"),
    (orjson.dumps({"operation": BLOOM_DELETE, "target": "shop", "ids": ["s1"]}),
     "dl-no-catalog", "catalog_id is required"),
]  # fmt: skip


async def dead_letter_poison(r: Rig) -> None:
    """The worker dead-letters the three poison messages, one after the other (in order)."""
    async with r.worker():
        for depth, (body, message_id, _) in enumerate(POISON, 1):
            await r.publish(body, message_id=message_id, correlation_id=f"c-{message_id}")
            await wait_depth(r, r.dlq, depth)


async def test_dlq_list_shows_reasons_without_removing_and_replay_moves_exactly_two(
    r: Rig,
) -> None:
    """`dlq list` prints each dead letter's reason, operation, target, request_id and id
    count, in queue order, and leaves them all there in the same order (listed twice);
    `dlq replay --limit 2` moves exactly the first two back to the request queue (body,
    message_id and correlation_id unchanged, dead-lettering headers dropped), the third stays."""
    await dead_letter_poison(r)
    env = cli_env(r)
    first = await bulkops("dlq", "list", env=env)
    second = await bulkops("dlq", "list", "--json", env=env)
    assert first.code == second.code == 0, (first, second)
    assert len(first.lines) == 3 and "3 of 3 dead letters" in first.stderr
    for line, (_, message_id, reason) in zip(first.lines, POISON, strict=True):
        assert line.startswith(message_id) and reason in line.split("  reason: ")[1]
    assert "datocms.items.explode  main  ids=2" in first.lines[1]
    assert f"{BLOOM_DELETE}  shop  ids=1" in first.lines[2]
    listed = second.json_lines
    assert [d["request_id"] for d in listed] == [m for _, m, _ in POISON]
    # `deliveries` (x-delivery-count) counts the first listing's return before RabbitMQ 4.3
    # only (4.3 counts basic.reject, not basic.nack): its value is not asserted here.
    assert all(isinstance(d["deliveries"], int) for d in listed)
    assert await r.queue_depth(r.dlq) == 3

    replay = await bulkops("dlq", "replay", "--limit", "2", env=env)
    assert replay.code == 0, replay
    assert "replayed 2 to" in replay.stderr and f"; 1 kept in {r.dlq}" in replay.stderr
    moved = await take_all(r, r.request_queue, timeout=1)
    assert [(m.body, m.message_id) for m in moved] == [(b, m) for b, m, _ in POISON[:2]]
    assert [m.correlation_id for m in moved] == ["c-dl-notjson", "c-dl-unknown-op"]
    for message in moved:  # the queue's own x-delivery-count starts afresh
        assert not {"x-bulkops-reason", "x-bulkops-original-queue", "x-death"} & set(
            message.headers
        )
        assert message.headers.get("x-delivery-count", 0) == 0
        assert message.type is None, message.type
    left = await take_all(r, r.dlq, timeout=1)
    assert [m.message_id for m in left] == ["dl-no-catalog"]


async def test_dlq_replay_by_reason_moves_only_matching_and_keeps_the_rest_in_order(
    r: Rig,
) -> None:
    """`dlq replay --reason` moves only the dead letters whose reason contains the text
    (case-insensitive); the others stay in the DLQ in their order."""
    await dead_letter_poison(r)
    ran = await bulkops("dlq", "replay", "--reason", "UNKNOWN OPERATION", env=cli_env(r))
    assert ran.code == 0, ran
    assert "replayed 1 to" in ran.stderr and "2 kept" in ran.stderr
    moved = await take_all(r, r.request_queue, timeout=1)
    assert [m.message_id for m in moved] == ["dl-unknown-op"]
    left = await take_all(r, r.dlq, timeout=1)
    assert [m.message_id for m in left] == ["dl-notjson", "dl-no-catalog"]


async def test_ctrl_c_while_standard_input_is_still_open_exits_130_at_once(r: Rig) -> None:
    """A submit reading a pipe that has not ended (ids still to come) stops on Ctrl-C with
    exit 130 (the first Ctrl-C withdraws and waits for replies, the second leaves at once):
    the read blocked on standard input does not keep the process alive; the requests of the
    ids read so far were published."""
    async with running("submit", DATO, "--target", "main", "--chunk", "2", env=cli_env(r),
                       stdin=b"a1\na2\na3\n", close_stdin=False) as submit:  # fmt: skip
        await wait_depth(r, r.request_queue, 1)
        assert await submit.interrupt_twice(timeout=10) == 130
    assert await r.queue_depth(r.request_queue) == 1
