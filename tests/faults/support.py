"""Helpers for the fault suite: a private RabbitMQ node to restart, a rig on it, worker knobs.

The shared RabbitMQ on 127.0.0.1:5672 is never restarted: broker restarts happen on a node of
our own (own name, ports, data directory, no plugins), started once per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika

from tests.integration.harness import Proc, Results, Rig, declare_names, free_port, start_worker
from worker.emulator import Emulator
from worker.settings import Settings

# Short bounds so that every fault resolves in seconds (the defaults are minutes).
FAST: dict[str, Any] = {
    "http_timeout_seconds": 2,
    "retry_budget_seconds": 6,
    "max_attempts": 5,
    "job_deadline_seconds": 5,
    "job_follow_seconds": 3,
    "drain_timeout_seconds": 5,
    "linger_seconds": 0.05,
}


async def wait_until(check: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if not isinstance(value, bool):
                value = await value
            if value:
                return
            await asyncio.sleep(0.05)


async def kill9(proc: Proc) -> None:
    """SIGKILL: no drain, no goodbye; whatever it held comes back from the broker."""
    proc.kill()
    await asyncio.wait_for(proc.process.wait(), 10)
    if proc.reader is not None:
        await proc.reader


def rss_kib(proc: Proc) -> int:
    status = Path(f"/proc/{proc.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1])


async def metric(proc: Proc, name: str) -> float:
    """The sum of a metric's samples over all label sets."""
    samples = await proc.scrape()
    return sum(value for (sample, _), value in samples.items() if sample == name)


@contextlib.asynccontextmanager
async def worker(env: dict[str, str]) -> AsyncIterator[Proc]:
    """A worker subprocess that must exit 0 on SIGTERM at the end of the block."""
    proc = await start_worker(env)
    try:
        yield proc
    except BaseException:
        print("worker stderr:\n" + "\n".join(proc.stderr[-40:]))  # shown when the test fails
        raise
    finally:
        code = await proc.terminate()
        assert code == 0, f"worker exited {code}: {proc.stderr_tail()}"


# -- a RabbitMQ node of our own ----------------------------------------------------------------


class PrivateBroker:
    """``rabbitmq-server -detached`` under its own node name, ports and data directory."""

    def __init__(self) -> None:
        self.node = f"bulkops-faults-{os.getpid()}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="bulkops-faults-rmq-"))
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        self.base.chmod(0o755)
        if os.getuid() == 0:  # the packaged scripts run the node as the rabbitmq user
            user = pwd.getpwnam("rabbitmq")
            for path in [self.base, *self.base.iterdir()]:
                os.chown(path, user.pw_uid, user.pw_gid)

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.base / "pid"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
        )
        return env

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/tmp",
        )

    def start(self) -> None:
        subprocess.run(
            ["rabbitmq-server", "-detached"], env=self._env(), cwd="/tmp", check=True, timeout=60
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the node registers with epmd a moment later
            if self.ctl("await_startup", "--timeout", "60").returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"private RabbitMQ node {self.node} did not start")

    def stop(self) -> None:
        self.ctl("stop")

    def stop_app(self) -> None:
        result = self.ctl("stop_app")
        assert result.returncode == 0, result.stderr

    def start_app(self) -> None:
        result = self.ctl("start_app")
        assert result.returncode == 0, result.stderr

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class PrivateRig(Rig):
    """A Rig whose worker and test client use the private node."""

    amqp_url: str = ""

    def settings(self, **overrides: Any) -> Settings:
        overrides.setdefault("amqp_url", self.amqp_url)
        return super().settings(**overrides)


@contextlib.asynccontextmanager
async def private_rig(emulator: Emulator, url: str) -> AsyncIterator[PrivateRig]:
    """Like the harness's rig, but survives broker restarts: a robust connection, and the
    outcomes collected on a durable queue so none is dropped while the node is down."""
    suffix = uuid.uuid4().hex[:8]
    connection = await aio_pika.connect_robust(url, reconnect_interval=0.5)
    async with connection:
        channel = await connection.channel()
        names = await declare_names(channel, f"p.{suffix}")
        results = Results()
        queue = await channel.declare_queue(f"p.{suffix}.outcomes", durable=True)
        await queue.bind(names[2], "#")

        await queue.consume(results.collect_once)
        yield PrivateRig(channel, emulator, results, *names, amqp_url=url)
