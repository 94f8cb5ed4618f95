"""Cancel with 3 partitioned replicas (CONTRACT "Control", issue 23): every replica reads
the control stream; a Bloomreach delete cancelled after its first window sends no cancelled
id in any later API request, and every item is answered exactly once (sent ones with their
true outcome, the rest ``rejected``/``cancelled``). The emulator is its own process (see
test_scale_out)."""

from __future__ import annotations

import collections
import os
from unittest import mock

import aio_pika
import orjson
import pytest

from tests.integration.harness import Proc, Rig, emulator_process, ids
from tests.integration.test_scale_out import BLOOM_RATE, DATO_RATE, partitioned_env, replica
from worker.broker import declare_topology
from worker.broker.hold import hold_name
from worker.broker.partition_topology import partition_of
from worker.broker.partitions import declare_partitions
from worker.control.transport import publish_control
from worker.messages import parse_request
from worker.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

OP = "bloomreach.catalog_items.delete"


async def test_three_partitioned_replicas_withdraw_a_cancelled_delete(r: Rig) -> None:
    wanted = ids("p", 2000)
    request_ids = [f"preq-{n}" for n in range(40)]
    messages = [
        {"request_id": rid, "operation": OP, "target": "shop", "catalog_id": "cat-0",
         "ids": wanted[n * 50 : (n + 1) * 50]}
        for n, rid in enumerate(request_ids)
    ]  # fmt: skip
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE)
        env = await partitioned_env(r, emulator, partitions=3)
        procs: list[Proc] = [await replica(env) for _ in range(3)]
        try:
            await r.publish_many(messages)
            await r.results.wait_for(1, timeout=60)  # the first window went
            connection = await aio_pika.connect(r.settings().amqp_url.get_secret_value())
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                await publish_control(
                    channel, {"command": "cancel", "request_ids": request_ids, "reason": "oops"},
                    exchange=env["BULKOPS_CONTROL_EXCHANGE"],
                )  # fmt: skip
            outcomes = await r.results.wait_for(len(wanted), timeout=60, distinct=True)
        finally:
            codes = [await p.terminate() for p in procs]
        assert codes == [0, 0, 0], [p.stderr_tail() for p in procs]
        log = await emulator.entries()
        deleted = orjson.loads(
            (await emulator._call("GET", "/_emulator/bloomreach/deleted/cat-0")).content
        )["deleted"]
    counts = collections.Counter(o["id"] for o in outcomes)
    assert set(counts) == set(wanted) and max(counts.values()) == 1  # each once
    succeeded = {o["id"] for o in outcomes if o["status"] == "succeeded"}
    cancelled = {o["id"] for o in outcomes if o["status"] == "rejected"}
    assert {o["error"]["code"] for o in outcomes if o["status"] == "rejected"} == {"cancelled"}
    assert succeeded == set(deleted) and succeeded | cancelled == set(wanted)
    assert cancelled, "nothing was withdrawn"
    sent = sum(e["items"] for e in log if e["api"] == "bloomreach")
    assert sent == len(deleted)  # no cancelled id in any API request
    assert [e for e in log if e["breach"]] == []
    for index in range(3):
        for lane in ("", ".priority"):
            await r.channel.queue_delete(f"{r.request_queue}.p{index}{lane}")


async def test_a_cancel_sent_before_three_partitioned_replicas_start_holds_for_them(
    r: Rig,
) -> None:
    """The cancel is in the stream before any replica runs: whichever replica owns each
    partition (three catalogs over three partitions) answers the cancelled requests'
    ids ``rejected``/``cancelled`` and sends none of them; the other requests run."""
    messages, gone, kept = [], [], []
    for n in range(12):
        chunk = ids(f"q{n}-", 50)
        rid = f"qreq-{n}"
        (gone if n % 2 else kept).append((rid, chunk))
        messages.append({"request_id": rid, "operation": OP, "target": "shop",
                         "catalog_id": f"cat-{n % 3}", "ids": chunk})  # fmt: skip
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE)
        env = await partitioned_env(r, emulator, partitions=3)
        connection = await aio_pika.connect(r.settings().amqp_url.get_secret_value())
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await publish_control(
                channel, {"command": "cancel", "request_ids": [rid for rid, _ in gone]},
                exchange=env["BULKOPS_CONTROL_EXCHANGE"],
            )  # fmt: skip
            # The replicas' topology (partitioned_env deleted the rig's request queue), so
            # that the requests wait in it before any replica runs.
            with mock.patch.dict(os.environ, env):
                settings = Settings(_env_file=None)  # type: ignore[call-arg]
            await declare_topology(await connection.channel(), settings)
            await declare_partitions(await connection.channel(), settings)
        await r.publish_many(messages)
        procs: list[Proc] = [await replica(env) for _ in range(3)]
        try:
            outcomes = await r.results.wait_for(600, timeout=90, distinct=True)
        finally:
            codes = [await p.terminate() for p in procs]
        assert codes == [0, 0, 0], [p.stderr_tail() for p in procs]
        log = await emulator.entries()
        deleted = set()
        for catalog in range(3):
            answer = await emulator._call("GET", f"/_emulator/bloomreach/deleted/cat-{catalog}")
            deleted |= set(orjson.loads(answer.content)["deleted"])
    by_id = {o["id"]: o for o in outcomes}
    assert len(outcomes) == len(by_id) == 600  # each once
    for _, chunk in gone:
        assert {by_id[i]["status"] for i in chunk} == {"rejected"}
        assert {by_id[i]["error"]["code"] for i in chunk} == {"cancelled"}
    kept_ids = {i for _, chunk in kept for i in chunk}
    assert {by_id[i]["status"] for i in kept_ids} == {"succeeded"}
    assert deleted == kept_ids  # nothing cancelled reached the API
    assert sum(e["items"] for e in log if e["api"] == "bloomreach") == len(kept_ids)
    assert [e for e in log if e["breach"]] == []
    for index in range(3):
        for lane in ("", ".priority"):
            await r.channel.queue_delete(f"{r.request_queue}.p{index}{lane}")


async def test_partitioned_replicas_hold_a_paused_target_and_drain_it_on_resume(r: Rig) -> None:
    """2 replicas, 3 partitions: the DatoCMS target paused; publish, unpublish, publish of
    the same 20 ids go from the owning replica to the partition's hold queue (nothing
    waits unacked), nothing is sent to DatoCMS while Bloomreach's backlog runs to its end;
    after resume the owner drains it: every operation answered once, in per-id order (each
    id ends published)."""
    targets, bloom = ids("h", 20), ids("b", 1000)
    dato = [
        {"operation": f"datocms.items.{op}", "target": "main", "ids": targets}
        for op in ("publish", "unpublish", "publish")
    ]
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE)
        env = await partitioned_env(r, emulator, partitions=3)
        settings = r.settings(partitions=3)
        parsed = parse_request(
            orjson.dumps(dato[0]), None, {"main": "datocms", "shop": "bloomreach"}
        )
        index = partition_of(parsed, 3)  # type: ignore[arg-type]
        hold = hold_name(settings, ("main", None), index)
        procs: list[Proc] = [await replica(env) for _ in range(2)]
        connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
        try:
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = env["BULKOPS_CONTROL_EXCHANGE"]
                await publish_control(channel, {"command": "pause", "target": "main"},
                                      exchange=exchange)  # fmt: skip
                await r.publish_many(
                    [{"operation": OP, "target": "shop", "catalog_id": "cat-0",
                      "ids": bloom[n : n + 50]} for n in range(0, 1000, 50)]
                )  # fmt: skip
                for body in dato:
                    await r.publish(body)
                await r.results.wait_for(1000, timeout=60)  # Bloomreach ran to its end
                probe = await connection.channel()
                queue = await probe.declare_queue(hold, passive=True)
                assert queue.declaration_result.message_count == 3  # moved, not unacked
                assert [e for e in await emulator.entries() if e["api"] == "datocms"] == []
                await publish_control(channel, {"command": "resume", "target": "main"},
                                      exchange=exchange)  # fmt: skip
                outcomes = await r.results.wait_for(1060, timeout=60)
                await probe.queue_delete(hold)
        finally:
            codes = [await p.terminate() for p in procs]
        assert codes == [0, 0], [p.stderr_tail() for p in procs]
        statuses = {await emulator.record_status(i) for i in targets}
    by_op = collections.Counter((o["operation"], o["id"]) for o in outcomes if o["id"] in targets)
    assert sorted(by_op.values()) == [1] * 20 + [2] * 20  # publish twice, unpublish once
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert statuses == {"published"}
    for index in range(3):
        for lane in ("", ".priority"):
            await r.channel.queue_delete(f"{r.request_queue}.p{index}{lane}")
