"""Pause and resume (CONTRACT "Control", issue 23) against the real RabbitMQ and the
emulator's real limits: two catalogs with backlogs, one paused before the worker starts; the
other runs to the end, the paused one sends nothing (its items wait, counted in the metrics
and in ``status``), a restart keeps the pause, and after resume everything completes, each
id once and in per-id order."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.integration.harness import Rig, ids, in_force, start_worker
from tests.integration.harness import probe_depth as hold_depth
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
    """cat-2 paused before the worker starts: its messages go to its hold queue (nothing
    unacked in the worker), cat-1 runs to the end; a restart keeps the pause; after resume
    the hold queue is drained and deleted, every id answered once."""
    settings = limited(r, 4, 50, linger_seconds=0.05)
    url = settings.amqp_url.get_secret_value()
    hold = f"{r.request_queue}.held.shop.catalog_id.cat-2"
    one, two = ids("one", 300), ids("two", 300)
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        await control.pause("shop", catalog_id="cat-2", reason="vendor maintenance")
        for n in range(0, 300, 50):
            await r.publish(delete("cat-1", one[n : n + 50]))
            await r.publish(delete("cat-2", two[n : n + 50]))
        try:
            async with r.worker(settings):
                await r.results.wait_for(300, timeout=30)  # cat-1 ran at its limit
                await until(lambda: r.metric("bulkops_held_items", target="shop") == 300)
                assert r.metric("bulkops_paused_scopes", target="shop") == 1
                assert r.metric("bulkops_pause_started_seconds", target="shop") > 0
                (report,) = await control.status(timeout=5, expect=1)
                assert await hold_depth(r, hold) == 6
                assert await r.queue_depth(r.request_queue) == 0  # nothing left unacked
            assert {o["id"] for o in r.results.bodies} == set(one)
            assert r.emulator.bloomreach.deleted("cat-2") == []
            scopes = {s["scope"]["catalog_id"]: s for s in report["scopes"]}
            assert scopes["cat-2"]["paused"] and scopes["cat-2"]["held"] == 300
            (pause,) = report["pauses"]
            assert pause["reason"] == "vendor maintenance"
            assert pause["app_id"] == "bulkops-client"
            r.registry = CollectorRegistry()  # a new process's metrics
            async with r.worker(settings):  # a restart: still paused
                await asyncio.sleep(1.5)
                assert r.emulator.bloomreach.deleted("cat-2") == []
                assert await hold_depth(r, hold) == 6
                await control.resume("shop", catalog_id="cat-2")
                outcomes = await r.results.wait_for(600, timeout=30)
                await until_async(lambda: hold_depth(r, hold), 0)  # drained, left in place
        finally:
            if await hold_depth(r, hold) is not None:
                await r.channel.queue_delete(hold)
    assert sorted(o["id"] for o in outcomes) == sorted(one + two)  # each once
    assert {o["status"] for o in outcomes} == {"succeeded"}
    assert sorted(r.emulator.bloomreach.deleted("cat-2")) == sorted(two)
    assert r.emulator.breaches() == []


async def test_a_live_pause_moves_what_was_not_sent_and_resume_brings_it_back(r: Rig) -> None:
    """A backlog of cat-2 under way (1 request of 50 ids a second): paused live, requests none
    of whose ids were sent move to the hold queue, those under way finish; no cat-2 request
    is sent during the pause; after resume every id is answered once."""
    settings = limited(r, 1, 50, linger_seconds=0.05)
    url = settings.amqp_url.get_secret_value()
    hold = f"{r.request_queue}.held.shop"
    wanted = ids("w", 500)
    for n in range(0, 500, 50):
        await r.publish(delete("cat-2", wanted[n : n + 50]))
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):
                await r.results.wait_for(50, timeout=30)
                await control.pause("shop")  # the whole target
                await until(lambda: r.metric("bulkops_held_items", target="shop") >= 250)
                sent = len(r.emulator.requests(api="bloomreach"))
                await asyncio.sleep(2.5)
                assert len(r.emulator.requests(api="bloomreach")) <= sent + 1  # one in flight
                assert (await hold_depth(r, hold) or 0) >= 5
                await control.resume("shop")
                outcomes = await r.results.wait_for(500, timeout=60)
                await until_async(lambda: hold_depth(r, hold), 0)
        finally:
            if await hold_depth(r, hold) is not None:
                await r.channel.queue_delete(hold)
    assert sorted(o["id"] for o in outcomes) == sorted(wanted)
    assert sorted(r.emulator.bloomreach.deleted("cat-2")) == sorted(wanted)


async def until_async(probe: Any, expected: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while await probe() != expected:
            await asyncio.sleep(0.2)


async def test_a_pause_survives_kill_9_and_resume_keeps_per_id_order(r: Rig) -> None:
    """The whole DatoCMS target paused before the worker starts; publish, unpublish, publish
    of the same 20 ids move to the hold queue; the worker is killed (-9) and started again:
    still paused, nothing sent; after resume every id ends published (the operations ran in
    their order) and each operation is answered once."""
    hold = f"{r.request_queue}.held.main"
    targets = ids("k", 20)
    env = r.env()
    url = env["BULKOPS_AMQP_URL"]
    async with ControlClient.connect(url, exchange=env["BULKOPS_CONTROL_EXCHANGE"]) as control:
        await control.pause("main", reason="kill -9 test")
        for operation in ("publish", "unpublish", "publish"):
            await r.publish(
                {"operation": f"datocms.items.{operation}", "target": "main", "ids": targets}
            )
        try:
            first = await start_worker(env)
            await until_async(lambda: hold_depth(r, hold), 3)
            first.kill()
            await first.process.wait()
            async with r.worker_process(env):  # a new process: reads the pause again
                await asyncio.sleep(1.5)
                assert r.emulator.requests(api="datocms") == []
                assert await hold_depth(r, hold) == 3
                await control.resume("main")
                outcomes = await r.results.wait_for(60, timeout=30)
                await until_async(lambda: hold_depth(r, hold), 0)
        finally:
            if await hold_depth(r, hold) is not None:
                await r.channel.queue_delete(hold)
    by_op = collections.Counter((o["operation"], o["id"]) for o in outcomes)
    assert set(by_op.values()) == {1, 2}  # publish twice, unpublish once, per id
    assert len(outcomes) == 60 and {o["status"] for o in outcomes} == {"succeeded"}
    assert {r.emulator.datocms.record_status(i) for i in targets} == {"published"}


async def test_a_late_move_into_a_drained_hold_queue_is_not_lost(r: Rig) -> None:
    """Several replicas: one drains cat-2's hold queue after the resume while another, which
    has not read the resume yet, still moves a message into it. The drained hold queue is
    left in place (RabbitMQ 3.10 refuses ``if-empty`` deletes of quorum queues, so a delete
    could take that message with it) and watched: the late message is drained and answered.
    The late move is played by publishing straight into the hold queue after the drain."""
    settings = limited(r, 20, 50, linger_seconds=0.05)
    url = settings.amqp_url.get_secret_value()
    hold = ".held.shop.catalog_id.cat-2"
    early, late = ids("early", 50), ids("late", 50)
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):
                await control.pause("shop", catalog_id="cat-2")
                await in_force(control)
                await r.publish(delete("cat-2", early))
                await until_async(lambda: hold_depth(r, r.request_queue + hold), 1)
                await control.resume("shop", catalog_id="cat-2")
                await r.results.wait_for(50, timeout=20)
                await asyncio.sleep(2.5)  # the drain is over (checked each second)
                assert await hold_depth(r, r.request_queue + hold) == 0  # left in place
                await r.publish(
                    delete("cat-2", late), lane=hold, headers={"x-bulkops-lane": "main"}
                )
                outcomes = await r.results.wait_for(100, timeout=20)
                await until_async(lambda: hold_depth(r, r.request_queue + hold), 0)
        finally:
            if await hold_depth(r, r.request_queue + hold) is not None:
                await r.channel.queue_delete(r.request_queue + hold)
    assert sorted(o["id"] for o in outcomes) == sorted(early + late)
    assert sorted(r.emulator.bloomreach.deleted("cat-2")) == sorted(early + late)


async def test_a_hold_queue_deleted_by_hand_is_declared_again_at_the_next_pause(r: Rig) -> None:
    """The README lets the operator delete an empty hold queue when no pause of its scope is
    in force. The next pause of the scope in the same session moves into it again: the move's
    publish comes back unroutable, the queue is declared again and the move made (it used to
    retry forever, holding every other move and the pause's control hook)."""
    settings = limited(r, 20, 50, linger_seconds=0.05)
    url = settings.amqp_url.get_secret_value()
    hold = f"{r.request_queue}.held.shop.catalog_id.cat-2"
    first, second = ids("first", 50), ids("second", 50)
    async with ControlClient.connect(url, exchange=settings.control_exchange) as control:
        try:
            async with r.worker(settings):
                await control.pause("shop", catalog_id="cat-2")
                await in_force(control)
                await r.publish(delete("cat-2", first))
                await until_async(lambda: hold_depth(r, hold), 1)
                await control.resume("shop", catalog_id="cat-2")
                await r.results.wait_for(50, timeout=20)
                await asyncio.sleep(2.5)  # the drain is over (checked each second)
                await r.channel.queue_delete(hold)  # by hand, empty, no pause in force
                await control.pause("shop", catalog_id="cat-2")
                await in_force(control)
                await r.publish(delete("cat-2", second))
                await until_async(lambda: hold_depth(r, hold), 1)
                assert sorted(r.emulator.bloomreach.deleted("cat-2")) == sorted(first)
                await control.resume("shop", catalog_id="cat-2")
                outcomes = await r.results.wait_for(100, timeout=20)
        finally:
            if await hold_depth(r, hold) is not None:
                await r.channel.queue_delete(hold)
    assert sorted(o["id"] for o in outcomes) == sorted(first + second)
    assert sorted(r.emulator.bloomreach.deleted("cat-2")) == sorted(first + second)
