"""Coalescing against the real RabbitMQ and the emulator over HTTP."""

from __future__ import annotations

import pytest

from tests.integration.harness import Rig, ids

pytestmark = pytest.mark.integration


async def test_1000_single_id_messages_become_5_full_datocms_requests(r: Rig) -> None:
    """1,000 single-id publish messages for one scope are sent as 5 requests of 200."""
    wanted = ids("rec", 1000)
    await r.publish_many([
        {"operation": "datocms.items.publish", "target": "main", "ids": [i]} for i in wanted
    ])
    async with r.worker():
        outcomes = await r.results.wait_for(1000, timeout=60)
    assert sorted(o["id"] for o in outcomes) == wanted
    assert {o["status"] for o in outcomes} == {"succeeded"}
    sent = r.emulator.requests(path_contains="/items/bulk/publish")
    assert [e.items for e in sent] == [200] * 5
    assert r.emulator.breaches() == []
    assert all(r.emulator.datocms.record_status(i) == "published" for i in wanted)
    assert await r.queue_depth(r.request_queue) == 0
