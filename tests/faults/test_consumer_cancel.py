"""Scenario 3: the broker cancels the worker's consumer (its queue deleted and declared again).

The worker must notice and consume the new queue (or exit non-zero for its orchestrator),
never sit idle reporting ready.
"""

from __future__ import annotations

import aio_pika
import aio_pika.exceptions
import httpx
import pytest

from tests.faults.ledger import Ledger
from tests.faults.support import FAST, wait_until, worker
from tests.integration.harness import AMQP_URL, Rig, ids
from worker.broker import declare_topology

pytestmark = pytest.mark.integration
OP = "datocms.items.publish"


async def test_queue_deleted_and_declared_again_is_consumed_again(r: Rig) -> None:
    """After the request queue is deleted and declared again, messages published to the new
    queue are answered: the worker consumes again by itself."""
    ledger = Ledger("3 queue deleted + declared again", r.results)
    # RabbitMQ sends no Basic.Cancel when a quorum queue is deleted and declared again at once
    # (and hands the new queue's messages to the dead consumer): the idle renewal catches it.
    async with worker(r.env(**FAST, consumer_idle_renew_seconds=2)) as proc:
        await r.publish(ledger.expect("before", OP, ids("x", 5), target="main"))
        await ledger.settle(timeout=20, grace=0)
        await r.channel.queue_delete(r.request_queue)
        await declare_topology(r.channel, r.settings())
        ledger.mark_fault_over()
        await r.publish(ledger.expect("after", OP, ids("y", 5), target="main"))
        await ledger.settle(timeout=20)
        ledger.check()
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://127.0.0.1:{proc.port}/readyz")
        assert ready.status_code == 200
    row = ledger.row()
    assert row.recover_s is not None and row.recover_s < 10


async def test_a_deleted_queue_is_declared_again_by_the_worker(r: Rig) -> None:
    """Deleted and not declared again by anyone: the worker's next session declares it, so
    the worker does not sit ready on a consumer that no longer exists."""
    async with worker(r.env(**FAST)) as proc:
        await r.channel.queue_delete(r.request_queue)
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:

            async def exists() -> bool:
                channel = await connection.channel()  # a failed passive declare closes it
                try:
                    await channel.declare_queue(r.request_queue, passive=True)
                except aio_pika.exceptions.ChannelClosed:
                    return False
                await channel.close()
                return True

            await wait_until(exists, timeout=10)
        ledger = Ledger("3 queue deleted: Basic.Cancel, re-declared", r.results)
        await r.publish(ledger.expect("again", OP, ids("z", 3), target="main"))
        await ledger.settle(timeout=20)
        ledger.check()
        assert proc.process.returncode is None
