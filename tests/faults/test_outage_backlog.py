"""Scenario 8: the API is down with a backlog far larger than the prefetch.

The worker holds at most ``prefetch`` messages (the broker's count and its own pending gauge),
its memory does not grow with the backlog (two backlog sizes, same bound), items that outlast
the retry budget end `failed` / `retries_exhausted` and are acked (nothing is held anywhere
near the consumer timeout), and once the API is back the backlog drains with nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import pytest

from tests.faults.ledger import Ledger
from tests.faults.support import FAST, metric, rss_kib, worker
from tests.integration.harness import Rig
from worker.emulator import Fault

pytestmark = pytest.mark.integration
OP = "datocms.items.publish"
PREFETCH = 100
OUTAGE_S = 8.0
RETRY_BUDGET_S = 3.0
RSS_BUDGET_MIB = 40  # growth over the idle worker, whatever the backlog


@dataclass
class Samples:
    rss_kib: list[int] = field(default_factory=list)
    pending: list[float] = field(default_factory=list)
    unacked: list[int] = field(default_factory=list)


async def _unacked(queue: str) -> int | None:
    """The broker's own count of delivered, unacked messages on ``queue``."""
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        "list_queues",
        "name",
        "messages_unacknowledged",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd="/tmp",
    )
    try:
        out, _ = await proc.communicate()
    except asyncio.CancelledError:  # the test is done with it: leave no process behind
        proc.kill()
        await proc.wait()
        raise
    for line in out.decode().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue and parts[1].isdigit():
            return int(parts[1])
    return None


async def _outage(r: Rig, backlog: int, prefix: str) -> tuple[Samples, int, Ledger]:
    ledger = Ledger(f"8 API down {OUTAGE_S:g}s, backlog {backlog:,}", r.results)
    await r.publish_many(
        [ledger.expect(f"{prefix}{n}", OP, [f"{prefix}{n}"], target="main") for n in range(backlog)]
    )
    r.emulator.inject(Fault("status", count=10**9, status=503, api="datocms"))
    env = r.env(
        **{
            **FAST,
            "prefetch": PREFETCH,
            "retry_budget_seconds": RETRY_BUDGET_S,
            "max_attempts": 50,  # the budget, not the attempts, ends the retries
            "backoff_max_seconds": 0.5,
        }
    )
    samples = Samples()
    async with worker(env) as proc:
        baseline = rss_kib(proc)

        async def broker_view() -> None:
            while True:
                unacked = await _unacked(r.request_queue)
                if unacked is not None:
                    samples.unacked.append(unacked)
                await asyncio.sleep(1)

        async def sample() -> None:
            samples.rss_kib.append(rss_kib(proc))
            samples.pending.append(await metric(proc, "bulkops_pending_items"))

        watcher = asyncio.create_task(broker_view())
        try:
            down_until = time.monotonic() + OUTAGE_S
            while time.monotonic() < down_until:
                await sample()
                await asyncio.sleep(0.2)
            assert await r.queue_depth(r.request_queue) > 0, "backlog outlasted the outage"
            r.emulator.reset()  # the API is back: faults, log and rate windows forgotten
            ledger.mark_fault_over()
            deadline = time.monotonic() + 60
            while ledger.answered() < len(ledger.expected) and time.monotonic() < deadline:
                await sample()
                await ledger.settle(timeout=0.2, grace=0)
            await ledger.settle(timeout=1)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    return samples, baseline, ledger


async def test_api_down_with_a_large_backlog_stays_bounded(r: Rig) -> None:
    runs = []
    for backlog, prefix in ((1_000, "s"), (6_000, "l")):
        r.results.messages.clear()
        samples, baseline, ledger = await _outage(r, backlog, prefix)
        row = ledger.check()
        growth = (max(samples.rss_kib) - baseline) // 1024
        print(
            f"backlog {backlog}: RSS {baseline // 1024} MiB idle, +{growth} MiB peak; "
            f"pending max {max(samples.pending):.0f}, broker unacked max "
            f"{max(samples.unacked, default=-1)} ({len(samples.unacked)} samples); "
            f"recovered in {row.recover_s}s"
        )
        runs.append(growth)
        assert row.duplicated == 0
        assert max(samples.pending) <= PREFETCH
        assert samples.unacked and max(samples.unacked) <= PREFETCH
        assert growth < RSS_BUDGET_MIB, f"RSS grew {growth} MiB with a backlog of {backlog}"
        bodies = r.results.bodies
        failed = [b for b in bodies if b["status"] == "failed"]
        # The outage outlasted the retry budget: the held items were answered and acked (the
        # next ones were delivered), not kept until the API came back.
        assert len(failed) >= PREFETCH, len(failed)
        assert {b["error"]["code"] for b in failed} == {"retries_exhausted"}
        assert {b["status"] for b in bodies} == {"succeeded", "failed"}
        assert await r.queue_depth(r.request_queue) == 0
        assert r.emulator.breaches() == []
    small, large = runs
    assert large - small < 15, f"RSS growth follows the backlog: +{small} vs +{large} MiB"
