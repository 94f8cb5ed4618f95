"""Real parts for integration tests: the local RabbitMQ, the emulator over HTTP, the worker
running in-process on fresh queue names. Waits are on events with timeouts, never bare sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from worker.app import run
from worker.emulator import Emulator
from worker.settings import Settings

AMQP_URL = os.environ.get("BULKOPS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@dataclass
class Results:
    """Outcomes received on a queue bound to the results exchange with '#'."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.body) for m in self.messages]

    def by_id(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for body in self.bodies:
            out.setdefault(body["id"], []).append(body)
        return out

    async def collect_once(self, message: AbstractIncomingMessage) -> None:
        """A consumer callback that keeps each message and acks it, skipping the broker's
        redelivery of one already kept (our own ack may be lost in a broker restart or a node
        failure: that is not the worker sending it twice, which would not be flagged
        redelivered)."""
        mid = message.message_id
        if not (message.redelivered and any(m.message_id == mid for m in self.messages)):
            self.messages.append(message)
            self.changed.set()
        await message.ack()

    async def wait_for(
        self, count: int, timeout: float = 30.0, *, distinct: bool = False
    ) -> list[dict[str, Any]]:
        """Until ``count`` outcomes arrived; ``distinct``: ``count`` different message ids
        (a redelivered request's outcomes come again with the same id, and must not make up
        for outcomes still to come)."""

        def arrived() -> int:
            if distinct:
                return len({m.message_id for m in self.messages})
            return len(self.messages)

        async with asyncio.timeout(timeout):
            while arrived() < count:
                self.changed.clear()
                await self.changed.wait()
        return self.bodies


@dataclass
class Rig:
    """Names, a channel for the test's own publishing, the emulator and the results."""

    channel: AbstractChannel
    emulator: Emulator
    results: Results
    request_queue: str
    dlq: str
    exchange: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def settings(self, **overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "amqp_url": AMQP_URL,
            "request_queue": self.request_queue,
            "dead_letter_queue": self.dlq,
            "results_exchange": self.exchange,
            # Each test's own control state: a cancel or pause of another never holds here.
            "control_exchange": f"{self.request_queue}.control",
            # Each test's own partition exchange: a shared one routes p<i> to every run's
            # partition queues (two runs on one broker took each other's messages).
            "partition_exchange": f"{self.request_queue}.partitions",
            "http_port": 0,
            "http_host": "127.0.0.1",
            "linger_seconds": 0.2,
            "job_poll_initial_seconds": 0.05,
            "job_poll_max_seconds": 0.2,
            "backoff_base_seconds": 0.05,
            "backoff_max_seconds": 0.5,
            "drain_timeout_seconds": 15,
            "targets": {
                "main": {
                    "kind": "datocms",
                    "base_url": self.emulator.base_url,
                    "api_token": "dato-token",
                },
                "shop": {
                    "kind": "bloomreach",
                    "base_url": self.emulator.base_url,
                    "api_key_id": "bloom-key",
                    "api_secret": "bloom-secret",
                    "project_id": "proj-1",
                },
            },
        }
        base.update(overrides)
        return Settings(_env_file=None, **base)  # type: ignore[call-arg]

    async def publish(self, body: dict[str, Any] | bytes, lane: str = "", **props: Any) -> None:
        """Publish to the request queue (``lane=".priority"``: to the priority lane)."""
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        props.setdefault("timestamp", datetime.now(UTC))
        message = aio_pika.Message(
            raw,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **props,
        )
        await self.channel.default_exchange.publish(message, self.request_queue + lane)

    async def publish_many(self, bodies: list[dict[str, Any]]) -> None:
        await asyncio.gather(*(self.publish(b) for b in bodies))

    async def queue_depth(self, name: str) -> int:
        queue = await self.channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0

    @contextlib.asynccontextmanager
    async def worker(self, settings: Settings | None = None) -> AsyncIterator[asyncio.Event]:
        """Run the worker in this loop; leaving the block stops it (as SIGTERM would)."""
        stopping = asyncio.Event()
        task = asyncio.create_task(run(settings or self.settings(), stopping, self.registry))
        try:
            yield stopping
        finally:
            stopping.set()
            code = await asyncio.wait_for(task, 60)
            assert code == 0

    def env(self, **overrides: Any) -> dict[str, str]:
        """Environment for a worker subprocess: the same settings as ``settings()``."""
        settings = self.settings(**overrides)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BULKOPS_")}
        for name, value in settings.model_dump(mode="json").items():
            if name == "targets":
                targets = plain_targets(settings)
                env["BULKOPS_TARGETS"] = orjson.dumps(targets).decode()
            elif name == "amqp_url":
                env["BULKOPS_AMQP_URL"] = settings.amqp_url.get_secret_value()
            else:
                env[f"BULKOPS_{name.upper()}"] = str(value)
        env["BULKOPS_HTTP_PORT"] = str(free_port())
        return env

    @contextlib.asynccontextmanager
    async def worker_process(self, env: dict[str, str] | None = None) -> AsyncIterator[Proc]:
        """Run ``python -m worker run`` as a real process; leaving the block sends SIGTERM
        and expects exit code 0."""
        proc = await start_worker(env or self.env())
        try:
            yield proc
        finally:
            code = await proc.terminate()
            assert code == 0, f"worker exited {code}: {proc.stderr_tail()}"

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return value or 0.0


async def collect_queue(channel: AbstractChannel, name: str | None = None) -> tuple[str, Results]:
    """An exclusive queue (named, or server-named) whose messages are collected and acked:
    a requester's reply queue."""
    queue = await channel.declare_queue(name or "", exclusive=True)
    results = Results()

    async def collect(message: AbstractIncomingMessage) -> None:
        results.messages.append(message)
        results.changed.set()
        await message.ack()

    await queue.consume(collect)
    return queue.name, results


async def declare_names(channel: AbstractChannel, prefix: str) -> tuple[str, str, str]:
    """Fresh request queue, DLQ and results exchange names, declared as the worker would,
    so that tests can publish before the worker starts."""
    from worker.broker import declare_topology

    names = (f"{prefix}.requests", f"{prefix}.dlq", f"{prefix}.results")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        request_queue=names[0],
        dead_letter_queue=names[1],
        results_exchange=names[2],
    )
    await declare_topology(channel, settings)
    return names


@contextlib.asynccontextmanager
async def rig(emulator: Emulator) -> AsyncIterator[Rig]:
    suffix = uuid.uuid4().hex[:8]
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        names = await declare_names(channel, f"t.{suffix}")
        results = Results()
        queue = await channel.declare_queue(f"t.{suffix}.outcomes", exclusive=True)
        await queue.bind(names[2], "#")

        async def collect(message: AbstractIncomingMessage) -> None:
            results.messages.append(message)
            results.changed.set()
            await message.ack()

        await queue.consume(collect)
        r = Rig(channel, emulator, results, *names)
        try:
            yield r
        finally:
            control = f"{names[0]}.control"
            queues = (
                *names[:2],
                f"{names[0]}.priority",
                f"{names[2]}.unrouted",
                f"{control}.state",
            )
            for name in queues:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            for name in (names[2], f"{names[2]}.unrouted", control):
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(name)


def plain_targets(settings: Settings, bloom_rate: str | None = None) -> dict[str, Any]:
    """The targets as plain JSON-able dicts (secrets revealed: for a test worker's env),
    optionally with another Bloomreach rate limit."""
    out: dict[str, Any] = {}
    for name, target in settings.targets.items():
        fields = {
            k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v)
            for k, v in dict(target).items()
            if v is not None
        }
        if bloom_rate is not None and target.kind == "bloomreach":
            fields["rate_limit"] = bloom_rate
        out[name] = fields
    return out


def die_with_parent() -> None:
    """In the child: be killed when the test process dies, however it dies (no orphans)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """A worker subprocess, its metrics port and its stderr (JSON log lines)."""

    process: asyncio.subprocess.Process
    port: int
    stderr: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{self.port}/metrics")).text
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    async def ready(self, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout), httpx.AsyncClient() as client:
            while True:
                if self.process.returncode is not None:
                    raise AssertionError(f"worker died: {self.stderr_tail()}")
                try:
                    response = await client.get(f"http://127.0.0.1:{self.port}/readyz")
                    if response.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)

    async def terminate(self, timeout: float = 60.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self.reader is not None:
            await self.reader
        return code

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    def stderr_tail(self) -> str:
        return "\n".join(self.stderr[-20:])


async def start_worker(env: dict[str, str], ready: bool = True) -> Proc:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        "run",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    proc = Proc(process, int(env["BULKOPS_HTTP_PORT"]))

    async def read() -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            proc.stderr.append(line.decode(errors="replace").rstrip())

    proc.reader = asyncio.create_task(read())
    if ready:
        await proc.ready()
    return proc


@dataclass
class EmulatorProcess:
    """``python -m worker emulator`` in a process of its own, driven over its admin
    endpoints (a busy test or benchmark loop then cannot delay its clock or its answers)."""

    process: asyncio.subprocess.Process
    base_url: str

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as client:
            response = await client.request(method, path, **kwargs)
            response.raise_for_status()
            return response

    async def configure(self, **fields: Any) -> None:
        await self._call("POST", "/_emulator/config", json=fields)

    async def reset(self) -> None:
        await self._call("POST", "/_emulator/reset")

    async def log(self) -> dict[str, Any]:
        """The request log (``entries``) and the breach count (``breaches``)."""
        result: dict[str, Any] = orjson.loads((await self._call("GET", "/_emulator/log")).content)
        return result

    async def entries(self) -> list[dict[str, Any]]:
        return list((await self.log())["entries"])

    async def record_status(self, record_id: str) -> str | None:
        response = await self._call("GET", f"/_emulator/datocms/records/{record_id}")
        status: str | None = response.json()["status"]
        return status


@contextlib.asynccontextmanager
async def emulator_process() -> AsyncIterator[EmulatorProcess]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "emulator", "--port", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )  # fmt: skip
    emulator = EmulatorProcess(process, f"http://127.0.0.1:{port}")
    try:
        async with asyncio.timeout(20):
            while True:
                with contextlib.suppress(httpx.TransportError, httpx.HTTPStatusError):
                    await emulator._call("GET", "/_emulator/config")
                    break
                await asyncio.sleep(0.05)
        yield emulator
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


async def probe_depth(r: Rig, name: str) -> int | None:
    """Messages in a queue; None when it does not exist (probed on a channel of its own: a
    failed passive declaration closes the channel it is tried on)."""
    channel = await r.channel.get_underlay_channel()
    probe = await channel.connection.channel()
    try:
        ok = await probe.queue_declare(name, passive=True)
    except Exception:
        return None
    await probe.close()
    return int(ok.message_count or 0)


async def in_force(control: Any) -> None:
    """Return once the one running worker has applied every control record sent so far: a
    ``status`` comes after them in the stream, and is answered only once they are applied
    (``control``: a ``worker.client.control.ControlClient``). A fixed sleep after a pause was
    not enough on a loaded machine."""
    reports = await control.status(timeout=10, expect=1)
    assert len(reports) == 1, reports
