"""Scenarios 6 and 7: outcome publishing fails (unroutable returns, the results exchange
deleted so the broker closes the channel), and SIGTERM during a long job with a backlog."""

from __future__ import annotations

import time

import aio_pika
import pytest

from tests.faults.ledger import Ledger
from tests.faults.support import FAST, wait_until, worker
from tests.integration.harness import Proc, Rig, ids, start_worker
from worker.broker import declare_topology, unrouted_name

pytestmark = pytest.mark.integration
OP = "datocms.items.publish"


async def nowhere_to_go(r: Rig, proc: Proc) -> aio_pika.abc.AbstractQueue:
    """Once the worker consumes: nothing bound to the results exchange and the parking queue
    deleted by hand, so an outcome can be neither routed nor parked. Returns the rig's
    outcome queue, unbound."""
    await wait_until(lambda: any("consuming" in line for line in proc.stderr), 30)
    queue_name = f"t.{r.request_queue.split('.')[1]}.outcomes"  # the rig's only binding
    await r.channel.queue_delete(unrouted_name(r.settings()))
    queue = await r.channel.declare_queue(queue_name, passive=True)
    await queue.unbind(r.exchange, "#")
    return queue


async def test_outcomes_with_nowhere_to_go_hold_the_ack_until_confirmed(r: Rig) -> None:
    """No binding and no parking queue: every outcome is returned and cannot be parked, the
    worker retries, does not ack, and answers once a binding is back."""
    ledger = Ledger("6 outcomes unroutable, parking queue gone", r.results)
    async with worker(r.env(**FAST)) as proc:
        queue = await nowhere_to_go(r, proc)
        await r.publish(ledger.expect("u", OP, ids("u", 10), target="main"))
        await wait_until(lambda: any("parking queue" in line for line in proc.stderr), 30)
        assert r.results.messages == []
        assert await r.queue_depth(r.request_queue) == 0  # delivered, held unacked
        await queue.bind(r.exchange, "#")
        ledger.mark_fault_over()
        await ledger.settle(timeout=30)
    ledger.check()
    assert await r.queue_depth(r.request_queue) == 0


async def test_results_exchange_deleted(r: Rig) -> None:
    """Publishing to a deleted exchange makes the broker close the channel: the session
    ends, the next one declares the exchange again, nothing is acked before it is confirmed."""
    queue_name = f"t.{r.request_queue.split('.')[1]}.outcomes"
    r.emulator.config.datocms_job_seconds = 1.5
    ledger = Ledger("6 results exchange deleted", r.results)
    async with worker(r.env(**FAST)) as proc:
        await r.publish(ledger.expect("x", OP, ids("x", 10), target="main"))
        await wait_until(lambda: bool(r.emulator.requests(path_contains="/items/bulk/")))
        await r.channel.exchange_delete(r.exchange)  # while the job runs
        await wait_until(lambda: any("session ended" in line for line in proc.stderr), 20)
        await declare_topology(r.channel, r.settings())  # idempotent: same as the worker's
        queue = await r.channel.declare_queue(queue_name, passive=True)
        await queue.bind(r.exchange, "#")
        ledger.mark_fault_over()
        await ledger.settle(timeout=30)
    ledger.check()


async def test_sigterm_while_outcomes_are_returned_exits_within_the_drain_bound(r: Rig) -> None:
    """Returned outcomes that cannot be parked either (no binding, parking queue deleted) are
    retried for ever, but SIGTERM still exits 0 within the drain timeout; the request goes
    back to the queue and a later worker answers it."""
    ledger = Ledger("6 SIGTERM while outcomes returned", r.results)
    env = r.env(**{**FAST, "drain_timeout_seconds": 3})
    proc = await start_worker(env)
    queue = await nowhere_to_go(r, proc)
    await r.publish(ledger.expect("t", OP, ids("t", 10), target="main"))
    await wait_until(lambda: any("parking queue" in line for line in proc.stderr), 30)
    started = time.monotonic()
    assert await proc.terminate(timeout=15) == 0
    assert time.monotonic() - started < 3 + 3
    await queue.bind(r.exchange, "#")
    ledger.mark_fault_over()
    async with worker(r.env(**FAST)):
        await ledger.settle(timeout=30)
    ledger.check()


@pytest.mark.parametrize("job_seconds", [2.0, 8.0])
async def test_sigterm_during_a_long_job_with_a_backlog(r: Rig, job_seconds: float) -> None:
    """SIGTERM while a DatoCMS job runs and a backlog waits: exit 0 within the drain bound,
    unstarted requests given back; with the job shorter than the bound it is answered,
    longer and its request is requeued unanswered. A second worker answers the rest:
    0 lost, 0 duplicated."""
    drain = 4.0
    r.emulator.config.datocms_job_seconds = job_seconds
    ledger = Ledger(f"7 SIGTERM, job {job_seconds:g}s, drain {drain:g}s", r.results)
    for n in range(60):
        await r.publish(ledger.expect(f"q{n}", OP, [f"q{n}"], target="main"))
    env = r.env(
        **{
            **FAST,
            "drain_timeout_seconds": drain,
            "job_deadline_seconds": 20,
            "prefetch": 20,
            "max_inflight_batches": 1,
        }
    )
    proc = await start_worker(env)
    await wait_until(lambda: bool(r.emulator.requests(path_contains="/items/bulk/publish")))
    started = time.monotonic()
    assert await proc.terminate(timeout=30) == 0
    assert time.monotonic() - started < drain + 2
    first = len(r.results.messages)
    assert first < 60
    r.emulator.config.datocms_job_seconds = 0.05
    ledger.mark_fault_over()
    async with worker(r.env(**FAST)):
        await ledger.settle(timeout=30)
    ledger.check()
    assert ledger.row().duplicated == 0
    assert r.emulator.breaches() == []
