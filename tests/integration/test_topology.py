"""The topology on the real RabbitMQ (issue 19): quorum queues everywhere, a results exchange
any consumer can declare plainly (before or after the worker), unroutable outcomes parked,
queues that already exist with other arguments used as they are, and the delivery limit."""

from __future__ import annotations

import contextlib
import logging
import subprocess

import aio_pika
import aiormq
import pytest

from tests.faults.support import wait_until
from tests.integration.cli import bulkops, cli_env
from tests.integration.harness import AMQP_URL, Rig, ids
from worker.broker.publishing import ROUTING_KEY_HEADER
from worker.broker.topology import broker_major, declare_topology, unrouted_name

pytestmark = pytest.mark.integration
OP = "datocms.items.publish"


def queue_type(r: Rig, name: str) -> str:
    """The queue's type and arguments, as rabbitmqctl lists them."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "type", "arguments"],
        capture_output=True, text=True, timeout=60, check=True, cwd="/tmp",
    ).stdout  # fmt: skip
    for line in out.splitlines():
        fields = line.split("\t")
        if fields[0] == name:
            return "\t".join(fields[1:])
    raise AssertionError(f"no queue {name}")


async def consumer_declares(r: Rig) -> None:
    """What any client library does by default: a durable topic exchange, no arguments (a
    consumer's own connection, whose channel must stay open)."""
    async with await aio_pika.connect(AMQP_URL) as connection:
        channel = await connection.channel()
        await channel.declare_exchange(r.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        assert not channel.is_closed


async def unbind_rig(r: Rig) -> None:
    rig_queue = f"t.{r.request_queue.split('.')[1]}.outcomes"
    await (await r.channel.declare_queue(rig_queue, passive=True)).unbind(r.exchange, "#")


@pytest.mark.parametrize("consumer_first", [True, False])
async def test_plain_declare_works_in_either_order_and_unroutable_outcomes_are_parked(
    r: Rig, consumer_first: bool
) -> None:
    """A consumer's plain declare of the results exchange works before and after the
    worker's; with nothing bound, every outcome is parked in `<exchange>.unrouted` (with its
    routing key, counted) and the request is acked."""
    if consumer_first:
        await r.channel.exchange_delete(r.exchange)
        await consumer_declares(r)
    await unbind_rig(r)
    await r.publish({"operation": OP, "target": "main", "ids": ids("u", 6), "request_id": "u"})
    parked = unrouted_name(r.settings())
    async with r.worker():
        await wait_until(lambda: r.metric("bulkops_outcomes_parked_total") == 6)
        await consumer_declares(r)
    assert await r.queue_depth(parked) == 6
    assert await r.queue_depth(r.request_queue) == 0
    assert r.results.messages == []
    queue = await r.channel.declare_queue(parked, passive=True)
    message = await queue.get(no_ack=True)
    assert message is not None
    assert message.headers[ROUTING_KEY_HEADER] == f"{OP}.succeeded"
    assert message.message_id is not None and message.message_id.startswith("u:")
    assert queue_type(r, parked).startswith("quorum")


async def test_every_durable_queue_is_a_quorum_queue_with_its_delivery_limit(r: Rig) -> None:
    """Request queue: quorum with x-delivery-limit = BULKOPS_DELIVERY_LIMIT and dead-lettering
    to the DLQ; DLQ and parking queue: quorum, no delivery limit (3.x), the parking queue
    bounded with drop-head."""
    assert await broker_major(r.channel) == 3  # this machine's RabbitMQ 3.10
    underlay = await r.channel.get_underlay_channel()
    assert str(underlay.connection.server_properties["version"]).startswith("3.")
    await r.channel.queue_delete(r.request_queue)
    await declare_topology(r.channel, r.settings(delivery_limit=7))
    request = queue_type(r, r.request_queue)
    assert request.startswith("quorum")
    assert 'x-delivery-limit",7' in request.replace(" ", "").replace("{", "").replace("}", "")
    for name in (r.dlq, unrouted_name(r.settings())):
        assert queue_type(r, name).startswith("quorum")
        assert "x-delivery-limit" not in queue_type(r, name)
    assert "drop-head" in queue_type(r, unrouted_name(r.settings()))


async def test_existing_queues_and_exchange_with_other_arguments_do_not_stop_the_worker(
    r: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade: a classic parking queue, a request queue without delivery limit and a
    results exchange declared with alternate-exchange. The worker uses them as they are,
    says what to change, and answers."""
    parked = unrouted_name(r.settings())
    await r.channel.queue_delete(parked)
    await r.channel.queue_delete(r.request_queue)
    await r.channel.exchange_delete(r.exchange)
    await r.channel.declare_queue(parked, durable=True, arguments={"x-queue-type": "classic"})
    await r.channel.declare_queue(r.request_queue, durable=True)
    await r.channel.declare_exchange(
        r.exchange, aio_pika.ExchangeType.TOPIC, durable=True,
        arguments={"alternate-exchange": parked},
    )  # fmt: skip
    rig_queue = f"t.{r.request_queue.split('.')[1]}.outcomes"
    await (await r.channel.declare_queue(rig_queue, passive=True)).bind(r.exchange, "#")
    await r.publish({"operation": OP, "target": "main", "ids": ids("o", 5), "request_id": "o"})
    with caplog.at_level(logging.WARNING, logger="bulkops.broker"):
        async with r.worker():
            await r.results.wait_for(5)
    warned = "\n".join(record.getMessage() for record in caplog.records)
    assert f"queue {parked} exists with other arguments" in warned
    assert f"queue {r.request_queue} exists with other arguments" in warned
    assert f"results exchange {r.exchange} exists with other arguments" in warned
    assert await r.queue_depth(r.request_queue) == 0


async def test_a_message_delivered_past_the_limit_lands_in_the_dlq_with_its_reason(
    r: Rig,
) -> None:
    """RabbitMQ 3.10, limit 2: a request given back (nack with requeue, as a renewal or a
    hand-over does) a third time is dead-lettered to the DLQ, never dropped, and `bulkops dlq
    list` shows why. The DLQ itself drops nothing for its redeliveries."""
    await r.channel.queue_delete(r.request_queue)
    settings = r.settings(delivery_limit=2)
    await declare_topology(r.channel, settings)
    await r.publish({"operation": OP, "target": "main", "ids": ["d1"], "request_id": "d"})
    queue = await r.channel.declare_queue(r.request_queue, passive=True)
    for _ in range(3):
        message = await queue.get(timeout=10)
        assert message is not None
        await message.nack(requeue=True)
    await wait_until(lambda: _depth_is(r, r.dlq, 1))
    assert await r.queue_depth(r.request_queue) == 0
    dlq = await r.channel.declare_queue(r.dlq, passive=True)
    for _ in range(5):  # no limit on the DLQ: returned five times, still there
        letter = await dlq.get(timeout=10)
        assert letter is not None
        await letter.nack(requeue=True)
    await wait_until(lambda: _depth_is(r, r.dlq, 1))
    ran = await bulkops("dlq", "list", env=cli_env(r, BULKOPS_DELIVERY_LIMIT="2"))
    assert ran.code == 0, ran.stderr
    assert "dead-lettered by the broker: delivery_limit" in ran.stdout


async def _depth_is(r: Rig, name: str, depth: int) -> bool:
    return await r.queue_depth(name) == depth


async def test_presence_and_partition_queues_are_quorum(r: Rig) -> None:
    """Partitioned mode: partition queues with the delivery limit, and the presence queue
    (quorum, x-expires), all declared by a running worker."""
    await r.channel.queue_delete(r.request_queue)
    exchange = f"{r.request_queue}.partitions"
    settings = r.settings(partitions=2, partition_exchange=exchange, delivery_limit=9)
    names = [f"{r.request_queue}.p0", f"{r.request_queue}.p1", f"{r.request_queue}.replicas"]
    await declare_topology(r.channel, settings)
    await r.publish({"operation": OP, "target": "main", "ids": ["q1"]})
    try:
        async with r.worker(settings):
            await r.results.wait_for(1)
            for name in names[:2]:
                assert queue_type(r, name).startswith("quorum")
                assert "x-delivery-limit" in queue_type(r, name)
            assert queue_type(r, names[2]).startswith("quorum")
            assert "x-expires" in queue_type(r, names[2])
    finally:
        for name in names:
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                await r.channel.queue_delete(name)
        await r.channel.exchange_delete(exchange)
