"""kill -9 of the worker with both lanes loaded (CONTRACT "Priority lane"): a backlog on the
main lane and urgent requests on the priority lane, some of them answered, some in flight,
some still queued. After a restart nothing is lost, and only items in flight at the kill
are answered twice (with the same message_id)."""

from __future__ import annotations

import pytest

from tests.faults.ledger import Ledger
from tests.faults.support import FAST, kill9, worker
from tests.integration.harness import Rig, ids, start_worker

pytestmark = pytest.mark.integration
OP = "datocms.items.publish"
UNOP = "datocms.items.unpublish"


async def test_kill_with_both_lanes_loaded_loses_nothing(r: Rig) -> None:
    r.emulator.config.datocms_job_seconds = 0.3
    ledger = Ledger("kill -9: both lanes loaded", r.results)
    for n in range(40):
        await r.publish(ledger.expect(f"main-{n}", OP, ids(f"m{n}-", 25), target="main"))
    env = r.env(**{**FAST, "max_inflight_batches": 2})
    proc = await start_worker(env)
    await r.results.wait_for(1, timeout=30)
    for n in range(10):  # urgent: new ids, and ids the backlog holds (order across lanes)
        body = ledger.expect(f"urgent-{n}", UNOP, [f"u{n}", f"m{30 + n}-00000"], target="main")
        await r.publish(body, lane=".priority")
    await r.results.wait_for(300, timeout=30)
    ledger.snapshot_inflight(recent=50)
    await kill9(proc)
    assert ledger.answered() < len(ledger.expected), "killed with work left"
    ledger.mark_fault_over()
    async with worker(env):
        await ledger.settle(timeout=90)
    ledger.check()
    assert r.emulator.breaches() == []
    assert await r.queue_depth(r.request_queue) == 0
    assert await r.queue_depth(r.request_queue + ".priority") == 0
