"""Coalescing against the real RabbitMQ and the emulator over HTTP."""

from __future__ import annotations

import pytest

from tests.integration.harness import Rig, ids

pytestmark = pytest.mark.integration


async def test_1000_single_id_messages_become_5_full_datocms_requests(r: Rig) -> None:
    """1,000 single-id publish messages for one scope are sent as 5 requests of 200.

    As deployed, the worker runs as its own process; the 1 s linger lets the whole intake fit
    in it even on a loaded machine: what is proven is the coalescing, not the intake speed.
    """
    wanted = ids("rec", 1000)
    await r.publish_many(
        [{"operation": "datocms.items.publish", "target": "main", "ids": [i]} for i in wanted]
    )
    async with r.worker_process(r.env(linger_seconds=1.0)):
        outcomes = await r.results.wait_for(1000, timeout=60)
    assert sorted(o["id"] for o in outcomes) == wanted
    assert {o["status"] for o in outcomes} == {"succeeded"}
    sent = r.emulator.requests(path_contains="/items/bulk/publish")
    assert [e.items for e in sent] == [200] * 5
    assert r.emulator.breaches() == []
    assert all(r.emulator.datocms.record_status(i) == "published" for i in wanted)
    assert await r.queue_depth(r.request_queue) == 0


async def test_20000_bloomreach_ids_in_200_id_messages_become_2_requests_of_10000(r: Rig) -> None:
    """100 messages of 200 ids for one catalog are sent as 2 requests of 10,000 ids.

    The worker runs as its own process, as deployed. The linger is 1 s so that the whole
    intake (100 messages, which a first batch's send interrupts briefly) fits in it: what is
    proven is the coalescing, not the intake speed (the benchmark measures that).
    """
    wanted = ids("sku-", 20_000)
    await r.publish_many(
        [
            {
                "operation": "bloomreach.catalog_items.delete",
                "target": "shop",
                "catalog_id": "cat-1",
                "ids": wanted[n : n + 200],
            }
            for n in range(0, 20_000, 200)
        ]
    )
    async with r.worker_process(r.env(linger_seconds=1.0)):
        outcomes = await r.results.wait_for(20_000, timeout=60)
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert len({o["id"] for o in outcomes}) == 20_000
    sent = r.emulator.requests(path_contains="/bulk-delete")
    assert [e.items for e in sent] == [10_000, 10_000]
    assert sorted(r.emulator.bloomreach.deleted("cat-1")) == wanted
    assert r.emulator.breaches() == []


async def test_backlog_under_rate_limit_sends_only_full_requests_and_never_breaches(r: Rig) -> None:
    """With the limiter saturated, batches keep growing: every bulk request is full and no
    request (job polls included) breaches the limit.

    DatoCMS at 10 requests/s for the token (emulator and worker agree), 6,000 ids of backlog
    in 40-id messages across two environments: 30 full bulk requests plus their polls.
    """
    r.emulator.config.datocms_rate = (10, 1.0)
    settings = r.settings()
    targets = dict(settings.targets)
    targets["main"] = targets["main"].model_copy(update={"rate_limit": "10/1s"})
    env = r.env(targets=targets, prefetch=200)
    await r.publish_many(
        [
            {
                "operation": "datocms.items.publish",
                "target": "main",
                "environment": f"env-{n % 2}",
                "ids": ids(f"e{n % 2}m{n}x", 40),
            }
            for n in range(150)
        ]
    )
    async with r.worker_process(env):
        outcomes = await r.results.wait_for(6_000, timeout=90)
    assert {o["status"] for o in outcomes} == {"succeeded"}
    bulk = r.emulator.requests(path_contains="/items/bulk/publish")
    assert [e.items for e in bulk] == [200] * 30
    assert r.emulator.breaches() == []
    assert all(e.status != 429 for e in r.emulator.requests(api="datocms"))
