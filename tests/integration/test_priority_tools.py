"""The priority lane's tools: `bulkops submit --priority`, the client's `priority=True`, and
`bulkops dlq replay` sending a dead letter back to the lane it came from."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.cli import bulkops, cli_env, take_all, write_lines
from tests.integration.harness import AMQP_URL, Rig
from worker.cli.dlq import origin_lane
from worker.client import Chunk, Client, Job

pytestmark = pytest.mark.integration

DATO = "datocms.items.publish"


async def wait_depth(r: Rig, queue: str, depth: int, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while await r.queue_depth(queue) != depth:
            await asyncio.sleep(0.05)


async def test_submit_priority_publishes_to_the_priority_lane_only(r: Rig, tmp_path: Path) -> None:
    source = write_lines(tmp_path / "ids.txt", ["p-1", "p-2", "p-3"])
    ran = await bulkops("submit", DATO, "--target", "main", "--priority", "--no-wait",
                        "--chunk", "2", "--ids-file", str(source), env=cli_env(r))  # fmt: skip
    assert ran.code == 0, ran
    assert f"to {r.request_queue}.priority" in ran.stderr
    assert await r.queue_depth(r.request_queue) == 0
    moved = await take_all(r, r.request_queue + ".priority", timeout=1)
    assert len(moved) == 2


async def test_client_priority_request_is_answered_from_the_priority_lane(r: Rig) -> None:
    async with (
        r.worker(),
        Client.connect(AMQP_URL, r.request_queue, priority=True) as client,
    ):
        assert client.request_queue == r.request_queue + ".priority"
        reply = await client.request(Job(DATO, "main"), Chunk(ids=["c-1", "c-2"]))
    assert [(i.id, i.status) for i in reply.items] == [("c-1", "succeeded"), ("c-2", "succeeded")]
    assert r.metric("bulkops_lane_items_total", lane="priority") == 2
    assert r.metric("bulkops_lane_items_total", lane="main") == 0
    assert r.metric("bulkops_lane_latency_seconds_count", lane="priority") == 2


async def test_dlq_replay_sends_each_dead_letter_back_to_its_lane(r: Rig) -> None:
    """A refused message from each lane: the worker dead-letters both, naming the lane; the
    replay puts each back where it came from."""
    async with r.worker():
        await r.publish(b"not json", message_id="from-main")
        await wait_depth(r, r.dlq, 1)
        await r.publish(b"not json either", lane=".priority", message_id="from-priority")
        await wait_depth(r, r.dlq, 2)
    ran = await bulkops("dlq", "replay", env=cli_env(r))
    assert ran.code == 0, ran
    assert "replayed 2 to" in ran.stderr and "(1)" in ran.stderr
    main = await take_all(r, r.request_queue, timeout=1)
    priority = await take_all(r, r.request_queue + ".priority", timeout=1)
    assert [m.message_id for m in main] == ["from-main"]
    assert [m.message_id for m in priority] == ["from-priority"]


def test_a_broker_dead_letter_goes_back_to_the_queue_its_x_death_names() -> None:
    death = {"x-death": [{"queue": "q.priority", "reason": "delivery_limit"}]}
    assert origin_lane(death, "q") == "q.priority"
    assert origin_lane({"x-death": [{"queue": "q"}]}, "q") == "q"
    assert origin_lane({"x-bulkops-original-queue": b"q.priority"}, "q") == "q.priority"
    # A partition's priority queue goes back to the priority lane (review of issue 22).
    assert origin_lane({"x-death": [{"queue": "q.p3.priority"}]}, "q") == "q.priority"
    # Anything else (a partition queue, an unknown name) goes to the request queue.
    assert origin_lane({"x-death": [{"queue": "q.p3"}]}, "q") == "q"
    assert origin_lane({"x-death": [{"queue": "other.priority"}]}, "q") == "q"
    assert origin_lane({}, "q") == "q"
