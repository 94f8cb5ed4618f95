"""BULKOPS_AMQP_URL as a list (issue 19): with the first address dead (nothing listens on
it), the worker, every `bulkops` command and the client library go on to the next one at
once, and no password reaches a log line or an error."""

from __future__ import annotations

import time

import pytest

from tests.faults.support import worker
from tests.integration.cli import bulkops, cli_env
from tests.integration.harness import AMQP_URL, Rig, free_port, ids
from worker.client import Chunk, Client, Job

pytestmark = pytest.mark.integration
OP = "datocms.items.publish"


def dead_first() -> str:
    """A URL list whose first node is down (a port nothing listens on), with a password."""
    return f"amqp://guest:hunter2-dead@127.0.0.1:{free_port()}/,{AMQP_URL}"


async def test_worker_skips_a_dead_first_address_at_once(r: Rig) -> None:
    """The worker process answers through the second address; the log names the dead node by
    host:port only."""
    await r.publish({"operation": OP, "target": "main", "ids": ids("a", 5), "request_id": "a"})
    started = time.monotonic()
    async with worker(r.env(amqp_url=dead_first())) as proc:
        await r.results.wait_for(5)
        assert time.monotonic() - started < 15
    log = "\n".join(proc.stderr)
    assert "unreachable" in log and "trying the next address" in log
    assert "hunter2" not in log and "guest:" not in log


async def test_bulkops_commands_and_the_client_library_skip_a_dead_first_address(
    r: Rig,
) -> None:
    """`bulkops dlq list` and `Client.connect` with the dead address first reach the broker."""
    ran = await bulkops("dlq", "list", env=cli_env(r, BULKOPS_AMQP_URL=dead_first()))
    assert ran.code == 0, ran.stderr
    assert "hunter2" not in ran.stderr + ran.stdout
    async with r.worker(), Client.connect(dead_first(), r.request_queue) as client:
        reply = await client.request(Job(OP, "main"), Chunk(ids=["c-1"]))
    assert [(i.id, i.status) for i in reply.items] == [("c-1", "succeeded")]


async def test_every_address_down_is_an_error_without_the_password(r: Rig) -> None:
    both = f"amqp://u:hunter2@127.0.0.1:{free_port()}/,amqp://u:hunter2@127.0.0.1:{free_port()}/"
    ran = await bulkops("dlq", "list", env=cli_env(r, BULKOPS_AMQP_URL=both))
    assert ran.code == 2
    assert "cannot connect to the broker at amqp://127.0.0.1:" in ran.stderr
    assert "hunter2" not in ran.stderr
