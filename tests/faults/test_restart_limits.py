"""Scenario: kill -9 of a worker that is using both APIs' whole limits, and a restart at once.

The new process cannot see what its predecessor sent in the last window (Bloomreach states
nothing, DatoCMS only on an answer): it must not send for a scope before the predecessor's
requests have left the API's window. The emulator runs as its own process, so that its
arrival times and its breach verdicts are not those of this test's busy loop.
"""

from __future__ import annotations

import pytest

from tests.faults.support import kill9, wait_until, worker
from tests.integration.harness import Rig, emulator_process, ids, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def test_kill9_mid_backlog_and_immediate_restart_gets_no_429_from_either_api(
    r: Rig,
) -> None:
    """Killed right after a full Bloomreach window (5 requests) while a DatoCMS backlog runs
    at its limit, and restarted at once: the new worker waits out the windows, so neither
    API answers a single 429 (nor sees a breach), and every id is answered."""
    dato_ids, bloom_ids = ids("rd", 3000), ids("rb", 1000)
    async with emulator_process() as emulator:
        await emulator.configure(datocms_job_seconds=0.05)
        base = r.settings().targets
        targets = {
            "main": base["main"].model_copy(
                update={"base_url": emulator.base_url, "max_batch_items": 10}
            ),
            "shop": base["shop"].model_copy(
                update={"base_url": emulator.base_url, "max_batch_items": 200}
            ),
        }
        env = r.env(targets=targets, http_timeout_seconds=5, drain_timeout_seconds=5)
        await r.publish_many(
            [{"operation": "datocms.items.publish", "target": "main", "ids": dato_ids[n : n + 30]}
             for n in range(0, 3000, 30)]
            + [{"operation": "bloomreach.catalog_items.delete", "target": "shop",
                "catalog_id": "cat-r", "ids": bloom_ids[n : n + 50]} for n in range(0, 1000, 50)]
        )  # fmt: skip

        async def answered(api: str, at_least: int) -> bool:
            entries = await emulator.entries()
            return sum(e["api"] == api and e["status"] > 0 for e in entries) >= at_least

        first = await start_worker(env)
        await wait_until(lambda: answered("bloomreach", 5), timeout=60)
        assert await answered("datocms", 60), "the DatoCMS backlog is running"
        await kill9(first)
        killed_after = len(await emulator.entries())
        async with worker(env):
            wanted = set(dato_ids) | set(bloom_ids)
            await wait_until(
                lambda: {o["id"] for o in r.results.bodies} >= wanted, timeout=120
            )
        log = await emulator.log()
    entries = log["entries"]
    assert len(entries) > killed_after, "the restarted worker sent requests"
    assert [(e["api"], e["path"]) for e in entries if e["status"] == 429] == []
    assert log["breaches"] == 0
