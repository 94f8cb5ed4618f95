"""Bundled forwards in partitioned mode (worker/broker/bundles.py), on real RabbitMQ and real
HTTP to the emulator (its own process, see test_scale_out): a backlog of single-id requests
of several scopes waits in the request queue before the replicas start, so the router
forwards it in bundles (the tests check that it did); every item is answered once, in
per-id order, with its reply; a hand-over while bundles are in flight loses nothing and
sends no id twice; a pause moves the parts of its scope out of mixed bundles; a malformed
bundle is dead-lettered, and ``bulkops dlq replay`` unbundles a refused one."""

from __future__ import annotations

import asyncio
import collections
import os
from typing import Any
from unittest import mock

import aio_pika
import orjson
import pytest

from tests.integration.cli import bulkops, cli_env
from tests.integration.harness import Proc, Rig, collect_queue, emulator_process, ids
from tests.integration.test_scale_out import BLOOM_RATE, DATO_RATE, partitioned_env, replica
from worker.broker import declare_topology
from worker.broker.hold import hold_name
from worker.broker.partitions import declare_partitions
from worker.bundles import Part, encode, encode_part
from worker.control.transport import publish_control
from worker.settings import Settings
from worker.wirenames import BUNDLE_TYPE, REASON_HEADER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DELETE = "bloomreach.catalog_items.delete"
NO_LABELS: frozenset[tuple[str, str]] = frozenset()
BUNDLES = ("bulkops_partition_bundles_total", NO_LABELS)
BUNDLED = ("bulkops_partition_bundled_requests_total", NO_LABELS)


async def declared(r: Rig, env: dict[str, str]) -> Settings:
    """The partitioned topology declared before any replica runs (the backlog waits in it)."""
    with mock.patch.dict(os.environ, env):
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        await declare_topology(await connection.channel(), settings)
        await declare_partitions(await connection.channel(), settings)
    return settings


async def publish_in_order(r: Rig, bodies: list[dict[str, Any]], **props: Any) -> None:
    for n, body in enumerate(bodies):  # one by one: their order is what is tested
        extra = {k: (v(n) if callable(v) else v) for k, v in props.items()}
        await r.publish(body, message_id=f"bq-{n}", **extra)


async def bundled(procs: list[Proc]) -> tuple[float, float]:
    scrapes = [await p.scrape() for p in procs]
    return sum(s.get(BUNDLES, 0) for s in scrapes), sum(s.get(BUNDLED, 0) for s in scrapes)


async def cleanup(r: Rig, partitions: int) -> None:
    for index in range(partitions):
        for lane in ("", ".priority"):
            await r.channel.queue_delete(f"{r.request_queue}.p{index}{lane}")


def chains(prefix: str, records: int, rounds: list[str]) -> list[dict[str, Any]]:
    """Single-id DatoCMS operations, round after round over the same records."""
    return [
        {"operation": f"datocms.items.{op}", "target": "main", "ids": [record]}
        for op in rounds
        for record in ids(prefix, records)
    ]


def deletes(catalog: str, n: int) -> list[dict[str, Any]]:
    return [{"operation": DELETE, "target": "shop", "catalog_id": catalog, "ids": [i]}
            for i in ids(f"{catalog}-", n)]  # fmt: skip


def interleave(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for n in range(max(len(x) for x in lists)):
        out.extend(x[n] for x in lists if n < len(x))
    return out


def once_each(outcomes: list[dict[str, Any]]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((o["request_id"], o["id"]) for o in outcomes)


async def test_single_id_requests_of_several_scopes_go_in_bundles_answered_once_in_order(
    r: Rig,
) -> None:
    """2 replicas, 4 partitions (rebalancing every second hands partitions on while bundles
    are in flight): 450 single-id requests over a DatoCMS chain (publish, unpublish,
    publish of 50 records) and two catalogs. Every item answered exactly once, every
    request replied to once with its correlation_id, every record published at the end."""
    dato = chains("c", 50, ["publish", "unpublish", "publish"])
    messages = interleave(dato, deletes("cat-0", 150), deletes("cat-1", 150))
    replies_queue, replies = await collect_queue(r.channel)
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE,
                                 datocms_job_seconds=0.1)  # fmt: skip
        env = await partitioned_env(r, emulator, partitions=4, dato_batch=20)
        await declared(r, env)
        await publish_in_order(r, messages, reply_to=replies_queue,
                               correlation_id=lambda n: f"corr-{n}")  # fmt: skip
        procs = [await replica(env) for _ in range(2)]
        try:
            outcomes = await r.results.wait_for(len(messages), timeout=150, distinct=True)
            await replies.wait_for(len(messages), timeout=30)
            bundles, carried = await bundled(procs)
        finally:
            codes = [await p.terminate() for p in procs]
        assert codes == [0, 0], [p.stderr_tail() for p in procs]
        states = {i: await emulator.record_status(i) for i in ids("c", 50)}
        log = await emulator.entries()
    assert bundles >= 2 and carried >= 50, (bundles, carried)  # it was bundled
    counts = once_each(outcomes)
    assert len(counts) == len(messages) and max(counts.values()) == 1
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert {k: v for k, v in states.items() if v != "published"} == {}
    assert [e for e in log if e["breach"]] == []
    got = {m.correlation_id: orjson.loads(m.body) for m in replies.messages}
    assert len(replies.messages) == len(messages) == len(got)
    for n, body in enumerate(messages):
        reply = got[f"corr-{n}"]
        assert reply["request_id"] == f"bq-{n}"
        assert [i["id"] for i in reply["items"]] == body["ids"]
    await cleanup(r, 4)


async def test_a_replica_stopping_with_bundles_in_flight_loses_nothing_and_sends_nothing_twice(
    r: Rig,
) -> None:
    """One partition, two replicas: the first owns it and holds bundles (up to 30 requests,
    its prefetch) of a chain of single operations on 40 records when it is stopped
    (SIGTERM). What it started it finishes, whole bundles; what it did not it gives back,
    whole bundles, at the queue's head: no (request, id) answered twice (so none sent
    twice), every record in the state of its last operation."""
    rounds = ["publish", "unpublish", "publish", "unpublish", "publish"]
    messages = chains("s", 40, rounds)
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, datocms_job_seconds=0.2)
        env = await partitioned_env(r, emulator, partitions=1, prefetch=30, dato_batch=10)
        # Time to finish the bundles it started (up to 30 requests each, at 20 requests per
        # 6 s): past the drain timeout a bundle goes back whole, its answered parts with it.
        env["BULKOPS_DRAIN_TIMEOUT_SECONDS"] = "40"
        await declared(r, env)
        await publish_in_order(r, messages)
        first = await replica(env)
        second = await replica(env)
        try:
            await r.results.wait_for(20, timeout=30)
            bundles, _ = await bundled([first])
            assert await first.terminate() == 0, first.stderr_tail()
            outcomes = await r.results.wait_for(len(messages), timeout=120, distinct=True)
        finally:
            code = await second.terminate()
            await first.terminate()
        assert code == 0, second.stderr_tail()
        states = {i: await emulator.record_status(i) for i in ids("s", 40)}
        log = await emulator.entries()
    assert bundles >= 1
    counts = once_each(outcomes)
    assert len(counts) == len(messages)
    assert [k for k, v in counts.items() if v > 1] == []  # nothing sent twice
    sent = sum(e["items"] for e in log if e["api"] == "datocms")
    assert sent == len(messages)  # each id of each request sent once
    assert {k: v for k, v in states.items() if v != "published"} == {}
    assert {o["status"] for o in outcomes} == {"succeeded"}
    await cleanup(r, 1)


async def test_a_pause_moves_its_scopes_parts_out_of_mixed_bundles_and_the_rest_runs(
    r: Rig,
) -> None:
    """One partition (every scope's bundles mix DatoCMS and Bloomreach requests), the
    DatoCMS target paused before the replicas start: its parts go to the hold queue one by
    one (acked there, nothing left unacked), the Bloomreach parts of the same bundles run
    to their end; after the resume every operation is answered once, in per-id order."""
    dato = chains("p", 20, ["publish", "unpublish", "publish"])
    messages = interleave(dato, deletes("cat-0", 200))
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE)
        env = await partitioned_env(r, emulator, partitions=1)
        settings = await declared(r, env)
        hold = hold_name(settings, ("main", None), 0)
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
        procs: list[Proc] = []
        try:
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = env["BULKOPS_CONTROL_EXCHANGE"]
                await publish_control(channel, {"command": "pause", "target": "main"},
                                      exchange=exchange)  # fmt: skip
                await publish_in_order(r, messages)
                procs = [await replica(env) for _ in range(2)]
                await r.results.wait_for(200, timeout=90)  # Bloomreach ran to its end
                await asyncio.sleep(0.5)
                assert await r.queue_depth(hold) == len(dato)  # moved, not unacked
                assert [e for e in await emulator.entries() if e["api"] == "datocms"] == []
                bundles, _ = await bundled(procs)
                await publish_control(channel, {"command": "resume", "target": "main"},
                                      exchange=exchange)  # fmt: skip
                outcomes = await r.results.wait_for(len(messages), timeout=90, distinct=True)
                await channel.queue_delete(hold)
        finally:
            codes = [await p.terminate() for p in procs]
        assert codes == [0, 0], [p.stderr_tail() for p in procs]
        states = {await emulator.record_status(i) for i in ids("p", 20)}
    assert bundles >= 1
    counts = once_each(outcomes)
    assert len(counts) == len(messages) and max(counts.values()) == 1
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert states == {"published"}
    await cleanup(r, 1)


async def test_a_malformed_bundle_is_dead_lettered_and_a_refused_one_is_replayed_unbundled(
    r: Rig,
) -> None:
    """A malformed bundle in a partition queue is dead-lettered with its reason; a
    well-formed one published to the request queue is refused there (a bundle is read only
    from a partition queue). ``dlq list`` shows both as bundles; ``dlq replay`` sends the
    well-formed one's requests back to the request queue one by one (they are routed and
    answered, with their own message ids) and keeps the malformed one."""
    parts = [
        encode_part(Part(orjson.dumps({"operation": DELETE, "target": "shop",
                                       "catalog_id": "cat-0", "ids": [f"u{n}"]}),
                         message_id=f"unb-{n}", content_type="application/json"))
        for n in range(3)
    ]  # fmt: skip
    good = encode([p for p in parts if p is not None])
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE)
        env = await partitioned_env(r, emulator, partitions=2)
        await declared(r, env)
        bad = aio_pika.Message(b'{"bundle":1,"parts":[{"body":7}]}', type=BUNDLE_TYPE,
                               message_id="bad-bundle")  # fmt: skip
        await r.channel.default_exchange.publish(bad, f"{r.request_queue}.p1")
        await r.publish(good, type=BUNDLE_TYPE, message_id="good-bundle")
        async with r.worker_process(env):
            async with asyncio.timeout(60):
                while await r.queue_depth(r.dlq) < 2:
                    await asyncio.sleep(0.2)
            reasons: dict[str, str] = {}
            queue = await r.channel.get_queue(r.dlq)
            for _ in range(2):
                message = await queue.get(timeout=5)
                assert message is not None and message.type == BUNDLE_TYPE
                reasons[str(message.message_id)] = str((message.headers or {})[REASON_HEADER])
                await message.nack(requeue=True)
            assert "malformed bundle: part 0: `body` must be a string" in reasons["bad-bundle"]
            assert reasons["good-bundle"] == "a bundle is only read from a partition queue"
            env_cli = cli_env(r)
            listed = await bulkops("dlq", "list", "--json", env=env_cli)
            assert sorted(d["bundle"] for d in listed.json_lines) == [0, 3]
            replay = await bulkops("dlq", "replay", env=env_cli)
            assert replay.code == 0, replay.stderr
            assert "a malformed bundle cannot be replayed" in replay.stdout
            async with asyncio.timeout(60):
                while len(done := [o for o in r.results.bodies if o["status"] == "succeeded"]) < 3:
                    r.results.changed.clear()
                    await r.results.changed.wait()
        left = await r.queue_depth(r.dlq)
    assert sorted(o["request_id"] for o in done) == [
        "unb-0", "unb-1", "unb-2"
    ]  # fmt: skip
    assert left == 1  # the malformed one stays
    await cleanup(r, 2)
