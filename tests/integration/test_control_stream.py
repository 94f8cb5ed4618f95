"""The control stream on the real RabbitMQ (issue 23): a reader started after cancels and
pauses were published has them all before ``start`` returns (sentinel end detection), hears
live ones after, every reader hears every message, invalid ones are counted and ignored,
pauses in force are written again, and a reader reconnects without applying twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
import pytest
from aio_pika.abc import AbstractChannel
from prometheus_client import CollectorRegistry

from worker.control.config import stream_name
from worker.control.messages import Control, ControlRefused
from worker.control.reader import ControlReader
from worker.control.state import ControlState
from worker.control.transport import (
    ControlPublishError,
    ScopeCounts,
    WorkerSnapshot,
    publish_control,
)
from worker.metrics import Metrics
from worker.registry import SCOPES

URL = "amqp://guest:guest@127.0.0.1:5672/"
FIELD = next(iter(SCOPES))
TTL = 3600.0


@pytest.fixture
async def channel() -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(URL)
    async with connection:
        yield await connection.channel(publisher_confirms=True)


@pytest.fixture
async def exchange(channel: AbstractChannel) -> AsyncIterator[str]:
    """A fresh control exchange (and stream) for the test, deleted afterwards."""
    name = f"test.control.{uuid.uuid4().hex[:10]}"
    yield name
    connection = await aio_pika.connect(URL)
    async with connection:
        cleanup = await connection.channel()
        await cleanup.queue_delete(stream_name(name))
        await cleanup.exchange_delete(name)


async def publish(channel: AbstractChannel, exchange: str, body: dict[str, Any], **kw: Any) -> str:
    return await publish_control(channel, body, exchange=exchange, cancel_ttl_seconds=TTL, **kw)


def reader(exchange: str, **kw: Any) -> ControlReader:
    return ControlReader(URL, ControlState(TTL), exchange=exchange, **kw)


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.02)


async def test_a_late_reader_has_everything_before_start_returns_then_hears_live_ones(
    channel: AbstractChannel, exchange: str
) -> None:
    await publish(channel, exchange, {"command": "cancel", "request_ids": ["r1"], "reason": "x"})
    await publish(channel, exchange, {"command": "pause", "target": "shop", FIELD: "c1"})
    await publish(channel, exchange, {"command": "pause", "target": "cms"})
    await publish(channel, exchange, {"command": "resume", "target": "cms"})
    heard: list[tuple[Control, bool]] = []
    late = reader(exchange, on_record=lambda c, changed: heard.append((c, changed)))
    await late.start(timeout=10)
    try:
        now = time.time()
        cancel = late.state.cancelled("r1", now)
        assert cancel is not None and cancel.reason == "x" and cancel.app_id == "bulkops"
        assert late.state.paused("shop", (FIELD, "c1")) is not None
        assert late.state.paused("cms", None) is None
        assert heard == []  # catching up calls no hook: the pipeline is not running yet
        await publish(channel, exchange, {"command": "cancel", "target": "shop", FIELD: "c2"})
        await until(lambda: len(heard) == 1)
        assert heard[0][0].command == "cancel" and heard[0][1] is True
        assert late.state.scope_cancelled("shop", (FIELD, "c2"), now - 1, time.time())
    finally:
        await late.close()


async def test_two_readers_both_hear_every_message(channel: AbstractChannel, exchange: str) -> None:
    one, two = reader(exchange), reader(exchange)
    await one.start(timeout=10)
    await two.start(timeout=10)
    try:
        for index in range(20):
            await publish(channel, exchange, {"command": "cancel", "request_ids": [f"r{index}"]})
        for each in (one, two):
            await until(lambda each=each: len(each.state.cancels(time.time())) == 20)
    finally:
        await one.close()
        await two.close()


async def test_invalid_messages_are_counted_logged_and_ignored(
    channel: AbstractChannel, exchange: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ControlRefused):  # the publishing helper refuses it
        await publish(channel, exchange, {"command": "pause"})
    await publish(channel, exchange, {"command": "cancel", "request_ids": ["r"]})  # declares
    raw = await channel.get_exchange(exchange, ensure=False)
    for body in (b"not json", b'{"command": "pause"}', b'{"command": "explode"}'):
        await raw.publish(aio_pika.Message(body, message_id="bad"), routing_key="")
    await publish(channel, exchange, {"command": "pause", "target": "t"})
    metrics = Metrics(CollectorRegistry())
    late = reader(exchange, metrics=metrics, targets=None)
    await late.start(timeout=10)
    try:
        assert late.invalid == 3
        assert late.state.paused("t", None) is not None  # what follows is applied
        for code in ("not_json", "missing_field", "unknown_command"):
            assert metrics.control_invalid.labels(code)._value.get() == 1
        assert "control message bad (app_id ) ignored: pause needs a target" in caplog.text
    finally:
        await late.close()


async def test_pauses_in_force_are_written_again_and_a_rewrite_that_crossed_a_resume_is_late(
    channel: AbstractChannel, exchange: str
) -> None:
    first = await publish(
        channel, exchange, {"command": "pause", "target": "t", "reason": "r"}, user_id="guest"
    )
    writer = reader(exchange)
    await writer.start(timeout=10)
    try:
        assert await writer.rewrite() == 1
        await writer.rewrite()  # a second replica's rewrite: harmless
        await publish(channel, exchange, {"command": "resume", "target": "t"})
        await until(lambda: writer.state.paused("t", None) is None)
        stale = ControlState(TTL)
        stale.apply(Control("pause", 1, target="t", message_id=first))
        writer.state = stale  # a replica that had not yet read the resume writes it again
        await writer.rewrite()
    finally:
        await writer.close()
    late = reader(exchange)
    await late.start(timeout=10)
    try:
        assert late.records >= 6
        assert late.state.paused("t", None) is None
    finally:
        await late.close()
    # Only the rewrites kept (retention dropped the first pause): the pause as first sent.
    only = reader(exchange + ".only")
    await publish(channel, exchange + ".only", {"command": "status"}, reply_to="nobody")
    try:
        state = ControlState(TTL)
        sent = Control("pause", 7, target="t", message_id="p0", reason="why", user_id="ops")
        state.apply(sent)
        only.state = state
        connection = await aio_pika.connect(URL)
        async with connection:
            await only.rewrite(await connection.channel(publisher_confirms=True))
        fresh = reader(exchange + ".only")
        await fresh.start(timeout=10)
        pause = fresh.state.paused("t", None)
        await fresh.close()
        assert pause is not None
        assert (pause.at, pause.origin, pause.reason, pause.user_id) == (7, "p0", "why", "ops")
    finally:
        connection = await aio_pika.connect(URL)
        async with connection:
            cleanup = await connection.channel()
            await cleanup.queue_delete(stream_name(exchange + ".only"))
            await cleanup.exchange_delete(exchange + ".only")


async def test_status_is_answered_live_to_reply_to_with_the_correlation_id(
    channel: AbstractChannel, exchange: str
) -> None:
    await publish(channel, exchange, {"command": "status"}, reply_to="nobody.listens.here")
    await publish(channel, exchange, {"command": "pause", "target": "shop", FIELD: "c1"})
    snapshot = WorkerSnapshot(
        "w1", (ScopeCounts("shop", (FIELD, "c1"), pending=3, held=2),), partitions=(0, 2)
    )
    live = reader(exchange, snapshot=lambda: snapshot)
    await live.start(timeout=10)
    try:
        replies = await channel.declare_queue(exclusive=True)
        await publish(channel, exchange, {"command": "status"}, reply_to=replies.name,
                      correlation_id="c-1")  # fmt: skip
        message = await _one(replies)
        assert message.correlation_id == "c-1"
        body = orjson.loads(message.body)
        assert body["worker"] == "w1" and body["partitions"] == [0, 2]
        assert body["scopes"] == [
            {"target": "shop", "scope": {FIELD: "c1"}, "pending": 3, "in_flight": 0,
             "paused": True, "held": 2}
        ]  # fmt: skip
        assert [p["target"] for p in body["pauses"]] == ["shop"]
        assert await replies.get(fail=False) is None  # the old status was not answered
    finally:
        await live.close()


async def _one(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    deadline = time.monotonic() + 5
    while True:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            return message
        assert time.monotonic() < deadline, "no status reply"
        await asyncio.sleep(0.02)


async def test_a_reader_resumes_after_a_lost_connection_without_applying_twice(
    channel: AbstractChannel, exchange: str
) -> None:
    await publish(channel, exchange, {"command": "pause", "target": "t", "reason": "r"})
    heard: list[Control] = []
    name = f"bulkops-control-{uuid.uuid4().hex[:8]}"
    live = reader(exchange, on_record=lambda c, changed: heard.append(c), connection_name=name)
    await live.start(timeout=10)
    try:
        await publish(channel, exchange, {"command": "cancel", "request_ids": ["r1"]})
        await until(lambda: len(heard) == 1)
        before = live.last_offset
        assert before is not None
        await _drop_connections(name)
        await publish(channel, exchange, {"command": "cancel", "request_ids": ["r9"]})
        await until(lambda: len(heard) == 2, timeout=15)
        assert [c.request_ids for c in heard] == [("r1",), ("r9",)]
        assert live.last_offset is not None and live.last_offset > before
        await asyncio.sleep(0.3)
        assert len(heard) == 2  # nothing read before the loss came again
    finally:
        await live.close()


async def _drop_connections(name: str) -> None:
    """Close, on the broker's side, the connections named ``name`` (rabbitmqctl)."""

    async def ctl(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        return out.decode()

    listed = await ctl("list_connections", "pid", "client_properties")
    pids = [line.split("\t", 1)[0] for line in listed.splitlines() if f'"{name}"' in line]
    assert pids, "the reader's connection is listed"
    for pid in pids:
        await ctl("close_connection", pid, "test: connection lost")


async def test_publishing_is_refused_clearly_when_the_broker_does_not_confirm(
    channel: AbstractChannel, exchange: str
) -> None:
    # No stream bound (declare=False on an exchange nobody declared as bound): unroutable.
    await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
    with pytest.raises(ControlPublishError, match="did not confirm"):
        await publish_control(
            channel, {"command": "cancel", "request_ids": ["r"]}, exchange=exchange,
            declare=False,
        )  # fmt: skip


async def test_catching_up_with_a_long_stream_is_quick(
    channel: AbstractChannel, exchange: str, capsys: pytest.CaptureFixture[str]
) -> None:
    count = 5000
    await publish(channel, exchange, {"command": "pause", "target": "t"})
    raw = await channel.get_exchange(exchange, ensure=False)
    sent = [
        raw.publish(
            aio_pika.Message(
                orjson.dumps({"command": "cancel", "request_ids": [f"r{i}"]}),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=datetime.now(UTC),  # a cancel without one is refused
            ),
            routing_key="",
        )
        for i in range(count)
    ]
    await asyncio.gather(*sent)
    started = time.monotonic()
    late = reader(exchange)
    await late.start(timeout=30)
    took = time.monotonic() - started
    try:
        assert len(late.state.cancels(time.time())) == count
        with capsys.disabled():
            print(f"\ncontrol reader caught up with {count + 1} records in {took:.2f} s")
    finally:
        await late.close()


async def test_a_reader_that_cannot_connect_fails_its_start() -> None:
    nowhere = ControlReader("amqp://guest:guest@127.0.0.1:1/", ControlState(TTL))
    with pytest.raises(OSError):
        await nowhere.start(timeout=10)
    assert nowhere._task is not None and nowhere._task.done()


async def test_a_running_reader_writes_the_pauses_in_force_again_on_its_own(
    channel: AbstractChannel, exchange: str
) -> None:
    await publish(channel, exchange, {"command": "pause", "target": "t"})
    rewrites: list[Control] = []
    writer = reader(exchange, rewrite_seconds=0.1, on_record=lambda c, _: rewrites.append(c))
    await writer.start(timeout=10)
    try:
        await until(lambda: len(rewrites) >= 2)
        assert all(c.command == "pause" and c.rewrite_of for c in rewrites)
        assert [p.target for p in writer.state.pauses()] == ["t"]  # one pause, still
    finally:
        await writer.close()
