"""Issue 19: RabbitMQ nodes killed with SIGKILL mid-backlog on the three-node cluster of
scripts/cluster.sh. In each scenario every id is on a ledger and answered right, none lost,
per-id order kept (a publish then an unpublish of one id ends unpublished), 0 rate-limit
breaches, nothing left in the queues; the recovery time (kill to every id answered) is
printed in the cluster ledger."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aio_pika
import orjson
import pytest

from tests.cluster.support import cluster_rig, kill9, leader, queue_depths, restart, url, urls
from tests.faults.ledger import Ledger
from tests.faults.support import FAST, PrivateRig, metric, wait_until, worker
from tests.integration.harness import Proc
from worker.broker.partitions import presence_queue
from worker.broker.topology import unrouted_name
from worker.emulator import Emulator
from worker.settings import Settings

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.timeout(240)]
PUBLISH, UNPUBLISH = "datocms.items.publish", "datocms.items.unpublish"
PREFETCH = 5
REQUESTS = 60


async def backlog(r: PrivateRig, ledger: Ledger, environments: int) -> list[tuple[str, str]]:
    """REQUESTS requests of 2 ids over ``environments`` DatoCMS environments (so over
    partitions); every fifth id is published and, in a later request, unpublished. Returns the
    (environment, id) pairs that must end unpublished."""
    flipped = []
    for n in range(REQUESTS):
        env = f"env-{n % environments}"
        await r.publish(ledger.expect(f"b{n}", PUBLISH, [f"b{n}-a", f"b{n}-b"], target="main",
                                      environment=env))  # fmt: skip
        if n % 5 == 4:
            await r.publish(ledger.expect(f"u{n}", UNPUBLISH, [f"b{n}-a"], target="main",
                                          environment=env))  # fmt: skip
            flipped.append((env, f"b{n}-a"))
    return flipped


def check_end_state(r: PrivateRig, ledger: Ledger, flipped: list[tuple[str, str]]) -> None:
    row = ledger.check()
    print(f"\n{ledger.scenario}: recovered in {row.recover_s}s")
    assert r.emulator.breaches() == []
    for env, item in flipped:
        assert r.emulator.datocms.record_status(item, env) == "draft", item
    for body in (orjson.loads(m.body) for m in r.results.messages):
        assert body["status"] == "succeeded", body


async def nothing_left(r: PrivateRig) -> None:
    """Every queue of the rig empty, but the test's outcome queue and the control stream (a
    stream keeps what it was sent: the worker's catch-up sentinels)."""
    prefix = r.request_queue.removesuffix(".requests")
    kept = (".outcomes", ".control.state")
    await wait_until(
        lambda: all(n == 0 for q, n in queue_depths(prefix).items() if not q.endswith(kept)),
        30,
    )


@contextlib.asynccontextmanager
async def workers(r: PrivateRig, lists: list[str], **extra: object) -> AsyncIterator[list[Proc]]:
    settings = {**FAST, "prefetch": PREFETCH, "max_inflight_batches": 2, **extra}
    async with contextlib.AsyncExitStack() as stack:
        procs = [await stack.enter_async_context(worker(r.env(**settings, amqp_url=amqp)))
                 for amqp in lists]  # fmt: skip
        yield procs


@pytest.mark.parametrize("mode", ["single", "partitioned"])
async def test_request_queue_leader_killed(emulator: Emulator, mode: str) -> None:
    """(a) The request queue's leader (node 1) is killed mid-backlog while the workers are
    connected elsewhere. Partitioned (2 workers, 4 partitions): one worker was connected to
    node 1 too, and node 1 also held the DLQ and the parking queue: that worker fails over to
    the next address (c), and its new sessions declare the parking queue again (d)."""
    emulator.config.datocms_job_seconds = 0.2
    async with cluster_rig(emulator, declare_on=1, client_on=3) as r:
        assert leader(r.request_queue) == 1 and leader(f"{r.exchange}.unrouted") == 1
        ledger = Ledger(f"cluster (a) leader killed, {mode}", r.results)
        partitioned = mode == "partitioned"
        flipped = await backlog(r, ledger, 4 if partitioned else 1)
        lists = [urls(1, 2, 3), urls(2, 3, 1)] if partitioned else [urls(2, 3, 1)]
        extra = {"partitions": 4, "partition_exchange": f"{r.request_queue}.partitions",
                 "partition_rebalance_seconds": 2} if partitioned else {}  # fmt: skip
        async with workers(r, lists, **extra) as procs:
            await r.results.wait_for(20, timeout=60)
            ledger.allow_inflight(PREFETCH * 2 * len(procs) * (5 if partitioned else 1))
            await kill9(1)
            ledger.mark_fault_over()
            await ledger.settle(timeout=120)
            await nothing_left(r)
            if partitioned:
                failed_over = [p for p in procs if any("failed over" in x for x in p.stderr)]
                assert failed_over, "the worker on node 1 did not fail over"
        check_end_state(r, ledger, flipped)


async def test_worker_node_killed_and_restarted(emulator: Emulator) -> None:
    """(b) The only node the worker knows (node 2) is killed, and restarted 3 s later: the
    worker reconnects to it and answers the rest."""
    emulator.config.datocms_job_seconds = 0.2
    async with cluster_rig(emulator, declare_on=1, client_on=3) as r:
        ledger = Ledger("cluster (b) worker's node killed, restarted", r.results)
        flipped = await backlog(r, ledger, 1)
        async with workers(r, [urls(2)]):
            await r.results.wait_for(20, timeout=60)
            ledger.allow_inflight(PREFETCH * 2)
            await kill9(2)
            ledger.mark_fault_over()
            await asyncio.sleep(3)  # the node stays down a while: that is the fault
            await restart(2)
            await ledger.settle(timeout=120)
            await nothing_left(r)
        check_end_state(r, ledger, flipped)


async def test_worker_node_killed_for_good_with_a_second_address(emulator: Emulator) -> None:
    """(c) The node the worker is connected to (node 2) is killed for good; the worker was
    given node 3 as well and goes on there at once (a failover counted)."""
    emulator.config.datocms_job_seconds = 0.2
    async with cluster_rig(emulator, declare_on=1, client_on=3) as r:
        ledger = Ledger("cluster (c) worker's node killed for good", r.results)
        flipped = await backlog(r, ledger, 1)
        async with workers(r, [urls(2, 3)]) as procs:
            await r.results.wait_for(20, timeout=60)
            ledger.allow_inflight(PREFETCH * 2)
            await kill9(2)
            ledger.mark_fault_over()
            started = time.monotonic()
            await ledger.settle(timeout=120)
            await nothing_left(r)
            assert await _failovers(procs[0]) == 1
            assert time.monotonic() - started < 60
            log = "\n".join(procs[0].stderr)
            assert "failed over from broker 127.0.0.1:5682 to 127.0.0.1:5683" in log
            assert "guest:guest" not in log
        check_end_state(r, ledger, flipped)


async def _failovers(proc: Proc) -> float:
    return await metric(proc, "bulkops_broker_failovers_total")


async def test_an_older_deployments_classic_queues_on_a_dead_node_do_not_stop_the_worker(
    emulator: Emulator,
) -> None:
    """(d, upgraded) An older deployment left the parking queue and the partitions' presence
    queue as classic queues, both on node 2, and node 2 is dead for good. Their declare
    answers NOT_FOUND (home node down): the worker (partitioned, 2 partitions) logs it, goes
    on without them, and answers the whole backlog in order."""
    emulator.config.datocms_job_seconds = 0.2

    async def classic_queues_on_node_2(settings: Settings) -> None:
        async with await aio_pika.connect(url(2)) as older:
            channel = await older.channel()
            for name in (unrouted_name(settings), presence_queue(settings)):
                await channel.declare_queue(name, durable=True)  # classic, home node 2

    async with cluster_rig(emulator, declare_on=1, client_on=3,
                           before=classic_queues_on_node_2) as r:  # fmt: skip
        await kill9(2)
        ledger = Ledger("cluster (d) older classic queues on a dead node", r.results)
        flipped = await backlog(r, ledger, 2)
        extra = {"partitions": 2, "partition_exchange": f"{r.request_queue}.partitions"}
        async with workers(r, [urls(1, 3)], **extra) as procs:
            ledger.mark_fault_over()
            await ledger.settle(timeout=120)
            log = "\n".join(procs[0].stderr)
            assert "cannot be reached" in log and "going on without it" in log
        await restart(2)
        await nothing_left(r)
        check_end_state(r, ledger, flipped)
