"""``bulkops cancel|pause|resume|status`` and the client's ``ControlClient`` on the real
RabbitMQ (issue 23): a confirmed message exits 0 and is in the control stream (read back by a
``ControlReader``, as a worker starting later would); every kind of bad input exits 2 (or
raises) and publishes nothing; an unreachable broker exits 2 without the credentials;
``status`` collects the answers of one and of two running readers acting as workers, and
exits 1 when none answers."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aio_pika.exceptions
import orjson
import pytest

from tests.integration.cli import Ran, bulkops
from worker.client import Client, ControlClient, ControlPublishError, ControlRefused
from worker.control.config import stream_name
from worker.control.reader import ControlReader
from worker.control.state import ControlState
from worker.control.transport import ScopeCounts, WorkerSnapshot

URL = "amqp://guest:guest@127.0.0.1:5672/"
TTL = 86400.0  # the commands' default: the stream is declared alike by all
TARGETS = {"shop": {"kind": "bloomreach"}, "cms": {"kind": "datocms"}}
KINDS = {"shop": "bloomreach", "cms": "datocms"}
REPORT_KEYS = {"worker", "at", "scopes", "pauses", "cancels", "partitions"}


@pytest.fixture
async def exchange() -> AsyncIterator[str]:
    """A fresh control exchange (and stream) for the test, deleted afterwards."""
    name = f"test.control.{uuid.uuid4().hex[:10]}"
    yield name
    connection = await aio_pika.connect(URL)
    async with connection:
        cleanup = await connection.channel()
        await cleanup.queue_delete(stream_name(name))
        await cleanup.exchange_delete(name)


def env(exchange: str, url: str = URL) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BULKOPS_")}
    base.update(
        BULKOPS_AMQP_URL=url,
        BULKOPS_CONTROL_EXCHANGE=exchange,
        BULKOPS_TARGETS=orjson.dumps(TARGETS).decode(),
    )
    return base


async def run(exchange: str, *args: str, url: str = URL) -> Ran:
    return await bulkops(*args, env=env(exchange, url), timeout=30)


async def read_back(exchange: str) -> ControlState:
    """The control state a worker starting now would have."""
    reader = ControlReader(URL, ControlState(TTL), exchange=exchange)
    await reader.start(timeout=10)
    await reader.close()
    return reader.state


async def stream_exists(exchange: str) -> bool:
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(stream_name(exchange), passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        return True


def worker(name: str, exchange: str, partitions: tuple[int, ...] | None = None) -> ControlReader:
    counts = ScopeCounts("shop", ("catalog_id", "products"), pending=3, in_flight=1, held=2)
    snapshot = WorkerSnapshot(name, (counts,), partitions)
    return ControlReader(URL, ControlState(TTL), exchange=exchange, snapshot=lambda: snapshot)


# -- the commands ---------------------------------------------------------------------------


async def test_each_command_exits_0_once_confirmed_and_its_record_is_in_the_stream(
    exchange: str,
) -> None:
    before = time.time() - 1  # a request published before the cancels
    first = await run(exchange, "pause", "cms", "--primary")  # declares the stream
    sent = await asyncio.gather(
        run(exchange, "cancel", "r1", "r2", "--reason", "wrong list"),
        run(exchange, "cancel", "--target", "shop", "--catalog-id", "old"),
        run(exchange, "cancel", "--target", "cms"),
        run(exchange, "pause", "shop", "--catalog-id", "products", "--reason", "maint"),
        run(exchange, "pause", "cms", "--environment", "sandbox"),
        run(exchange, "resume", "cms", "--primary"),
    )
    sent.insert(0, first)
    for ran in sent:
        assert ran.code == 0, ran.stderr
        assert len(ran.stdout.strip()) == 32  # the message id, on stdout
        assert "confirmed by the broker" in ran.stderr
    state = await read_back(exchange)
    now = time.time()
    cancel = state.cancelled("r2", now)
    assert cancel is not None
    assert (cancel.reason, cancel.user_id, cancel.app_id) == ("wrong list", "guest", "bulkops-cli")
    assert state.scope_cancelled("shop", ("catalog_id", "old"), before, now) is not None
    assert state.scope_cancelled("shop", ("catalog_id", "new"), before, now) is None
    assert state.scope_cancelled("cms", ("environment", "any"), before, now) is not None
    paused = {(p.target, p.scope): (p.reason, p.user_id) for p in state.pauses()}
    assert paused == {
        ("shop", ("catalog_id", "products")): ("maint", "guest"),
        ("cms", ("environment", "sandbox")): (None, "guest"),
    }  # the primary environment was paused, then resumed: the named one stays


BAD = [
    (["cancel"], "cancel needs request_ids or a target"),
    (["cancel", "bad id"], "request id 'bad id' is not"),
    (["cancel", "r1", "--target", "shop"], "not both"),
    (["cancel", "r1", "--catalog-id", "c"], "goes with --target"),
    (["cancel", "--target", "nowhere"], "unknown target 'nowhere'"),
    (["pause", "cms", "--catalog-id", "c"], "catalog_id does not apply to target 'cms'"),
    (["pause", "shop", "--primary"], "no single primary scope"),
    (["pause", "cms", "--environment", "Not OK"], "environment must be"),
    (["resume", "shop", "--reason", "x" * 1001], "reason"),
    (["pause", "cms", "--environment", "a", "--primary"], "not allowed with"),
    (["status", "--timeout", "0"], "more than 0"),
]


async def test_each_kind_of_bad_input_exits_2_with_the_reason_and_publishes_nothing(
    exchange: str,
) -> None:
    ran = await asyncio.gather(*(run(exchange, *args) for args, _ in BAD))
    for (args, said), one in zip(BAD, ran, strict=True):
        assert (one.code, one.stdout) == (2, ""), args
        assert said in one.stderr, (args, one.stderr)
    assert not await stream_exists(exchange)  # nothing was even declared


async def test_an_unreachable_broker_exits_2_without_the_credentials(exchange: str) -> None:
    url = "amqp://operator:s3cret-pw@127.0.0.1:1/"
    commands = (["pause", "shop"], ["status", "--timeout", "1"])
    for ran in await asyncio.gather(*(run(exchange, *args, url=url) for args in commands)):
        assert ran.code == 2
        assert "cannot connect to the broker at amqp://127.0.0.1:1/" in ran.stderr
        assert "s3cret" not in ran.stderr + ran.stdout


async def test_status_prints_what_one_and_then_two_workers_answered(exchange: str) -> None:
    ran = await run(exchange, "status", "--timeout", "0.5")
    assert (ran.code, ran.stdout) == (1, "")
    assert "no worker answered within 0.5 s" in ran.stderr

    first = worker("w-one", exchange, partitions=(0, 2))
    await first.start(timeout=10)
    try:
        assert (await run(exchange, "pause", "shop", "--reason", "vendor")).code == 0
        ran = await run(exchange, "status", "--timeout", "1")
        assert ran.code == 0, ran.stderr
        assert ran.lines[0].startswith("worker w-one (partitions [0, 2]) at 20")
        assert ran.lines[2].split() == ["shop", "catalog_id=products", "3", "1", "yes", "2"]
        assert "paused shop (whole target) since" in ran.stdout
        assert "by user guest, app bulkops-cli: vendor" in ran.stdout
        assert "1 worker(s) answered" in ran.stderr

        second = worker("w-two", exchange)
        await second.start(timeout=10)
        try:
            ran = await run(exchange, "status", "--json", "--timeout", "1")
        finally:
            await second.close()
    finally:
        await first.close()
    assert ran.code == 0, ran.stderr
    reports = {report["worker"]: report for report in ran.json_lines}
    assert set(reports) == {"w-one", "w-two"}
    for report in reports.values():
        assert set(report) == REPORT_KEYS
        assert report["scopes"] == [
            {"target": "shop", "scope": {"catalog_id": "products"}, "pending": 3,
             "in_flight": 1, "paused": True, "held": 2}
        ]  # fmt: skip
        assert [(p["target"], p["reason"], p["user_id"]) for p in report["pauses"]] == [
            ("shop", "vendor", "guest")
        ]
    assert (reports["w-one"]["partitions"], reports["w-two"]["partitions"]) == ([0, 2], None)


# -- the client -----------------------------------------------------------------------------


async def test_the_client_sends_each_operation_and_the_stream_keeps_it(exchange: str) -> None:
    before = time.time() - 1
    async with ControlClient.connect(URL, exchange=exchange, targets=KINDS) as control:
        ids = [
            await control.cancel(["a-1", "a-2"], reason="oops"),
            await control.cancel_scope("shop", catalog_id="old"),
            await control.pause("cms", environment=None, reason="outage"),
            await control.pause("shop"),
            await control.resume("shop"),
        ]
    assert len(set(ids)) == 5
    state = await read_back(exchange)
    now = time.time()
    assert state.cancelled("a-1", now) is not None
    assert state.scope_cancelled("shop", ("catalog_id", "old"), before, now) is not None
    assert [(p.target, p.scope, p.reason, p.app_id) for p in state.pauses()] == [
        ("cms", ("environment", None), "outage", "bulkops-client")
    ]


async def test_the_client_refuses_bad_messages_and_publishes_nothing(exchange: str) -> None:
    async with ControlClient.connect(URL, exchange=exchange, targets=KINDS) as control:
        bad: list[tuple[Any, str]] = [
            (control.cancel([]), "List should have at least 1 item"),
            (control.cancel(["has space"]), "request id 'has space'"),
            (control.cancel_scope("nowhere"), "unknown target 'nowhere'"),
            (control.pause("cms", catalog_id="c"), "catalog_id does not apply"),
            (control.pause("shop", catalog_id=None), "catalog_id cannot be null"),
            (control.pause("shop", colour="red"), "unknown scope field 'colour'"),
            (control.resume("cms", environment="a", catalog_id="b"), "at most one scope"),
        ]
        for call, said in bad:
            with pytest.raises(ControlRefused, match=said):
                await call
        with pytest.raises(ValueError, match="timeout"):
            await control.status(timeout=0)
    assert not await stream_exists(exchange)


async def test_the_clients_status_collects_every_workers_report(exchange: str) -> None:
    async with ControlClient.connect(URL, exchange=exchange) as control:
        started = time.monotonic()
        assert await control.status(timeout=0.5) == []
        assert time.monotonic() - started >= 0.5
        workers = [worker("w-a", exchange), worker("w-b", exchange, (1,))]
        await asyncio.gather(*(w.start(timeout=10) for w in workers))
        try:
            reports = await control.status(timeout=5, expect=2)
        finally:
            await asyncio.gather(*(w.close() for w in workers))
    assert sorted(r["worker"] for r in reports) == ["w-a", "w-b"]
    assert all(set(r) == REPORT_KEYS for r in reports)


async def test_a_client_reaches_the_control_operations_on_its_connection(exchange: str) -> None:
    queue = f"test.requests.{uuid.uuid4().hex[:10]}"
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, auto_delete=True)
        async with Client.connect(URL, queue) as client:
            await client.control(exchange=exchange).pause("shop", reason="via Client")
    assert [p.reason for p in (await read_back(exchange)).pauses()] == ["via Client"]


async def test_the_client_raises_when_the_broker_cannot_be_reached() -> None:
    with pytest.raises(ConnectionError):
        async with ControlClient.connect("amqp://guest:guest@127.0.0.1:1/"):
            pass


async def test_a_publisher_with_another_cancel_ttl_uses_the_stream_as_it_is(
    exchange: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with ControlClient.connect(URL, exchange=exchange) as control:
        await control.pause("shop")
    async with ControlClient.connect(URL, exchange=exchange, cancel_ttl_seconds=60) as control:
        await control.pause("cms")  # its stream arguments differ: a warning, not a failure
    assert "exists with other arguments" in caplog.text
    assert [p.target for p in (await read_back(exchange)).pauses()] == ["shop", "cms"]


async def test_an_exchange_the_broker_refuses_exits_2_and_raises(exchange: str) -> None:
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT, durable=True)
    ran = await run(exchange, "pause", "shop")
    assert ran.code == 2
    assert "was not published to" in ran.stderr and "PRECONDITION_FAILED" in ran.stderr
    async with ControlClient.connect(URL, exchange=exchange) as control:
        with pytest.raises(ControlPublishError, match="PRECONDITION_FAILED"):
            await control.pause("shop")
