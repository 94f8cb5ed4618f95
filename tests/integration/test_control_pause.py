"""Pause and resume (CONTRACT "Control", issue 23) against the real RabbitMQ and the
emulator's real limits: two catalogs with backlogs, one paused before the worker starts; the
other runs to the end, the paused one sends nothing (its items wait, counted in the metrics
and in ``status``), a restart keeps the pause, and after resume everything completes, each
id once and in per-id order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.integration.harness import Rig, ids
from worker.client.control import ControlClient

pytestmark = pytest.mark.integration

OP = "bloomreach.catalog_items.delete"
UPSERT = "bloomreach.catalog_items.upsert"


def delete(catalog: str, item_ids: list[str]) -> dict[str, Any]:
    return {"operation": OP, "target": "shop", "catalog_id": catalog, "ids": item_ids}


def limited(r: Rig, per_second: int, batch: int, **overrides: Any) -> Any:
    r.emulator.config.bloomreach_rate = (per_second, 1.0)
    targets = dict(r.settings().targets)
    targets["shop"] = targets["shop"].model_copy(
        update={"rate_limit": f"{per_second}/1s", "max_batch_items": batch}
    )
    return r.settings(targets=targets, **overrides)


async def until(check: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def test_a_paused_catalog_sends_nothing_until_resumed_across_a_restart(r: Rig) -> None:
    settings = limited(r, 4, 50, linger_seconds=0.05)
    url = settings.amqp_url.get_secret_value()
    one, two = ids("one", 300), ids("two", 300)
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        await control.pause("shop", catalog_id="cat-2", reason="vendor maintenance")
        for n in range(0, 300, 50):
            await r.publish(delete("cat-1", one[n : n + 50]))
            await r.publish(delete("cat-2", two[n : n + 50]))
        async with r.worker(settings):
            await r.results.wait_for(300, timeout=30)  # cat-1 ran at its limit
            await until(lambda: r.metric("bulkops_held_items", target="shop") == 300)
            assert r.metric("bulkops_paused_scopes", target="shop") == 1
            assert r.metric("bulkops_pause_started_seconds", target="shop") > 0
            (report,) = await control.status(timeout=5, expect=1)
        assert {o["id"] for o in r.results.bodies} == set(one)
        assert r.emulator.bloomreach.deleted("cat-2") == []
        scopes = {s["scope"]["catalog_id"]: s for s in report["scopes"]}
        assert scopes["cat-2"]["paused"] and scopes["cat-2"]["pending"] == 300
        (pause,) = report["pauses"]
        assert pause["reason"] == "vendor maintenance" and pause["app_id"] == "bulkops-client"
        r.registry = CollectorRegistry()  # a new process's metrics
        async with r.worker(settings):  # a restart: still paused
            await asyncio.sleep(2.0)
            assert r.emulator.bloomreach.deleted("cat-2") == []
            await control.resume("shop", catalog_id="cat-2")
            outcomes = await r.results.wait_for(600, timeout=30)
    assert sorted(o["id"] for o in outcomes) == sorted(one + two)  # each once
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert sorted(r.emulator.bloomreach.deleted("cat-2")) == sorted(two)
    assert r.emulator.breaches() == []
