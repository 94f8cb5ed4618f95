"""The three-node cluster of ``scripts/cluster.sh`` for tests: its addresses, a node's leader
role, SIGKILL and restart, and a rig (test client, durable quorum outcome queue) on a node
the scenario does not kill."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika

from tests.faults.support import PrivateRig
from tests.integration.harness import Results
from worker.broker import declare_topology
from worker.emulator import Emulator
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster.sh"
NODES = (1, 2, 3)


def url(node: int) -> str:
    return f"amqp://guest:guest@127.0.0.1:{5680 + node}/"


def urls(*nodes: int) -> str:
    """BULKOPS_AMQP_URL listing these nodes in this order."""
    return ",".join(url(n) for n in nodes)


def script(*args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"cluster.sh {' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout


def up(node: int) -> bool:
    return f"bulkops-c{node}@localhost up" in script("status")


def ctl(*args: str) -> str:
    """rabbitmqctl against the first node that is up (every node sees the whole cluster)."""
    base = os.environ.get("BULKOPS_TEST_CLUSTER_DIR", "/tmp/bulkops-cluster")
    env = {**os.environ, "HOME": f"{base}/home"}  # the cluster's Erlang cookie is there
    for node in NODES:
        done = subprocess.run(
            ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-q", "-n", f"bulkops-c{node}@localhost",
             *args],
            capture_output=True, text=True, timeout=60, check=False, env=env, cwd="/tmp",
        )  # fmt: skip
        if done.returncode == 0:
            return done.stdout
    raise AssertionError(f"rabbitmqctl {' '.join(args)} failed on every node")


def leader(queue: str) -> int:
    """The node (1-3) holding the quorum queue's leader."""
    for line in ctl("list_queues", "name", "leader").splitlines():
        name, _, where = line.partition("\t")
        if name == queue:
            return int(where.split("@")[0].removeprefix("bulkops-c"))
    raise AssertionError(f"no quorum queue {queue}")


def queue_depths(prefix: str) -> dict[str, int]:
    """Ready + unacked messages of every queue whose name starts with ``prefix``."""
    out = {}
    for line in ctl("list_queues", "name", "messages").splitlines():
        name, _, count = line.partition("\t")
        if name.startswith(prefix):
            out[name] = int(count)
    return out


async def kill9(node: int) -> float:
    """SIGKILL node's beam process and wait until it is gone; returns the monotonic time of
    the kill."""
    pid = int(script("pid", str(node)).strip())
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    async with asyncio.timeout(20):
        while _alive(pid):
            await asyncio.sleep(0.05)
    return killed


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def restart(node: int) -> None:
    await asyncio.to_thread(script, "start-node", str(node))


@contextlib.asynccontextmanager
async def cluster_rig(
    emulator: Emulator,
    declare_on: int,
    client_on: int,
    before: Callable[[Settings], Awaitable[None]] | None = None,
) -> AsyncIterator[PrivateRig]:
    """Fresh names; ``before`` (what an older deployment left) awaited with the rig's
    settings; the topology declared through ``declare_on`` (so its queues' leaders are
    there); the test's own connection, and a quorum outcome queue bound with '#', on
    ``client_on``. Every queue of the rig is deleted at the end."""
    suffix = uuid.uuid4().hex[:8]
    prefix = f"c.{suffix}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        request_queue=f"{prefix}.requests",
        dead_letter_queue=f"{prefix}.dlq",
        results_exchange=f"{prefix}.results",
    )
    if before is not None:
        await before(settings)
    async with await aio_pika.connect(url(declare_on)) as first:
        await declare_topology(await first.channel(), settings)
    connection = await aio_pika.connect_robust(url(client_on), reconnect_interval=0.5)
    async with connection:
        channel = await connection.channel()
        results = Results()
        queue = await channel.declare_queue(
            f"{prefix}.outcomes", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(settings.results_exchange, "#")

        await queue.consume(results.collect_once)
        rig = PrivateRig(
            channel, emulator, results, settings.request_queue, settings.dead_letter_queue,
            settings.results_exchange, amqp_url=url(client_on),
        )  # fmt: skip
        try:
            yield rig
        finally:
            for name in queue_depths(prefix):
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            for name in (settings.results_exchange, f"{settings.results_exchange}.unrouted",
                         f"{prefix}.partitions", f"{settings.request_queue}.control"):  # fmt: skip
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(name)
