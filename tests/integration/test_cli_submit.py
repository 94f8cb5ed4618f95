"""``bulkops submit`` end to end: the installed command, the real RabbitMQ, the worker (its
replies) and the emulator. Exit codes, one result line per item, counts by status and code,
and memory that does not grow with the input."""

from __future__ import annotations

import collections
from pathlib import Path

import aio_pika
import orjson
import pytest

from tests.bench import amqp
from tests.bench.procs import emulator, worker, worker_env
from tests.bench.run import UNLIMITED
from tests.integration.cli import bulkops, bulkops_peak_rss, cli_env, write_lines
from tests.integration.harness import AMQP_URL, Rig
from worker.client import Chunk, Client, Job

pytestmark = pytest.mark.integration

DATO = "datocms.items.publish"


async def test_submit_1005_ids_with_5_failing_exits_1_with_every_result_and_the_counts(
    r: Rig, tmp_path: Path
) -> None:
    """1,005 ids from a file, 5 of them locked in the API: exit 1, 1,005 result lines (one
    per id, each id once), 1,000 succeeded and 5 failed with ITEM_LOCKED in the lines and
    in the summary; progress as plain lines (not a terminal), ending at 100%."""
    all_ids = [f"rec-{n:04d}" for n in range(1005)]
    locked = all_ids[10:1005:200]
    r.emulator.datocms.set_failure(locked, "publish", "ITEM_LOCKED")
    source = write_lines(tmp_path / "ids.txt", all_ids)
    out = tmp_path / "results.jsonl"
    async with r.worker():
        ran = await bulkops("submit", DATO, "--target", "main", "--environment", "sandbox-1",
                            "--ids-file", str(source), "--results", str(out), env=cli_env(r))  # fmt: skip
    assert ran.code == 1, ran
    results = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 1005 and sorted(x["id"] for x in results) == all_ids
    statuses = collections.Counter(x["status"] for x in results)
    assert statuses == {"succeeded": 1000, "failed": 5}
    assert {x["id"] for x in results if x["status"] == "failed"} == set(locked)
    assert {x["error"]["code"] for x in results if x["error"]} == {"ITEM_LOCKED"}
    assert "1005 items answered in 2 requests: 1000 succeeded, 5 failed, 0 rejected" in ran.stderr
    assert "failed ITEM_LOCKED: 5" in ran.stderr
    assert "answered 1005 of 1005 items (100%)" in ran.stderr
    assert await r.queue_depth(r.request_queue) == 0


async def test_submit_from_standard_input_all_succeeding_exits_0_with_results_on_stdout(
    r: Rig,
) -> None:
    """Ids on standard input (no --ids-file), --chunk 7: exit 0, one JSON result line per id
    on standard output, every one succeeded, summary on standard error."""
    all_ids = [f"in-{n:03d}" for n in range(30)]
    async with r.worker():
        ran = await bulkops("submit", DATO, "--target", "main", "--chunk", "7",
                            env=cli_env(r), stdin="\n".join(all_ids).encode())  # fmt: skip
    assert ran.code == 0, ran
    results = ran.json_lines
    assert sorted(x["id"] for x in results) == all_ids
    assert {x["status"] for x in results} == {"succeeded"}
    assert "30 items answered in 5 requests: 30 succeeded, 0 failed, 0 rejected" in ran.stderr


async def test_submit_of_a_file_with_an_invalid_id_sends_the_rest_and_exits_1(
    r: Rig, tmp_path: Path
) -> None:
    """An id the worker would reject (Bloomreach ids cannot hold '/') does not stop the job:
    the rest is sent and succeeds, that id is answered rejected (invalid_id) in the results,
    and the exit is 1, as the contract says for rejected items (--dry-run shows it before)."""
    all_ids = ["ok-1", "bad/id", "ok-2"]
    source = write_lines(tmp_path / "ids.txt", all_ids)
    out = tmp_path / "results.jsonl"
    async with r.worker():
        ran = await bulkops("submit", "bloomreach.catalog_items.delete", "--target", "shop",
                            "--catalog-id", "products", "--ids-file", str(source),
                            "--results", str(out), env=cli_env(r))  # fmt: skip
    assert ran.code == 1, ran
    results = {x["id"]: x for x in (orjson.loads(line) for line in out.read_text().splitlines())}
    assert sorted(results) == sorted(all_ids)
    assert results["bad/id"]["status"] == "rejected"
    assert results["bad/id"]["error"]["code"] == "invalid_id"
    assert results["ok-1"]["status"] == results["ok-2"]["status"] == "succeeded"
    assert "3 items answered in 1 requests: 2 succeeded, 0 failed, 1 rejected" in ran.stderr


async def test_client_library_request_returns_the_workers_reply(r: Rig) -> None:
    """The README's client example: Client.connect + request returns the reply of the real
    worker, items in message order with their statuses and the counts."""
    r.emulator.datocms.set_failure(["c-2"], "publish", "ITEM_LOCKED")
    async with r.worker(), Client.connect(AMQP_URL, r.request_queue) as client:
        reply = await client.request(Job(DATO, "main"), Chunk(ids=["c-1", "c-2", "c-3"]))
    assert [(i.id, i.status) for i in reply.items] == [
        ("c-1", "succeeded"), ("c-2", "failed"), ("c-3", "succeeded"),
    ]  # fmt: skip
    assert (reply.counts.succeeded, reply.counts.failed, reply.counts.rejected) == (2, 1, 0)
    assert reply.items[1].error is not None and reply.items[1].error.code == "ITEM_LOCKED"


async def test_submit_catalog_items_from_json_lines_exits_0(r: Rig, tmp_path: Path) -> None:
    """Catalog items from JSON lines are upserted: exit 0, every item succeeded."""
    items = [{"id": f"sku-{n}", "properties": {"price": n}} for n in range(5)]
    source = write_lines(tmp_path / "items.jsonl", [orjson.dumps(i).decode() for i in items])
    async with r.worker():
        ran = await bulkops("submit", "bloomreach.catalog_items.upsert", "--target", "shop",
                            "--catalog-id", "products", "--items-file", str(source),
                            env=cli_env(r))  # fmt: skip
    assert sorted(x["id"] for x in ran.json_lines) == [i["id"] for i in items]
    assert ran.code == 0, ran


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_submit_of_a_million_ids_runs_in_bounded_memory(tmp_path: Path) -> None:
    """A submit of 1,000,000 ids from a file peaks at about the RSS of one of 100,000 (ten
    times fewer): memory does not grow with the input. The worker (a process, limits lifted,
    BULKOPS_ITEM_OUTCOMES=none) answers every id; the figures are printed."""
    names = amqp.Names.fresh("submit-memory")
    small = write_lines(tmp_path / "small.txt", [f"sku-{n:07d}" for n in range(100_000)])
    large = tmp_path / "large.txt"
    with large.open("w") as f:
        f.writelines(f"sku-{n:07d}\n" for n in range(1_000_000))
    connection = await aio_pika.connect(AMQP_URL)
    async with connection, emulator() as emu:
        channel = await connection.channel()
        await amqp.declare(channel, names)
        await emu.configure(**UNLIMITED)
        env = worker_env(names, emu.base_url, unlimited=True, item_outcomes="none")
        try:
            async with worker(env):
                runs = {}
                for name, path in (("100k", small), ("1M", large)):
                    out = tmp_path / f"{name}.jsonl"
                    args = ("submit", "bloomreach.catalog_items.delete", "--target", "shop",
                            "--catalog-id", "memory", "--ids-file", str(path),
                            "--results", str(out))  # fmt: skip
                    runs[name] = await bulkops_peak_rss(*args, env=env, timeout=600)
                    ran, _ = runs[name]
                    assert ran.code == 0, ran.stderr
                    with out.open("rb") as results:
                        assert sum(1 for _ in results) == (100_000 if name == "100k" else 1_000_000)
        finally:
            await amqp.delete(channel, names)
    (_, small_kb), (_, large_kb) = runs["100k"], runs["1M"]
    print(f"bulkops submit peak RSS: 100,000 ids {small_kb / 1024:.1f} MB, "
          f"1,000,000 ids {large_kb / 1024:.1f} MB")  # fmt: skip
    assert large_kb < small_kb * 1.2, (small_kb, large_kb)
