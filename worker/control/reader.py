"""``ControlReader``: keeps a worker's ``ControlState`` from the control stream.

``await reader.start()`` returns once everything the stream held when the worker started has
been applied (end detection: a confirmed sentinel the reader publishes and reads up to); the
reader then goes on applying new records live, calling ``on_record`` for each, answering
``status`` (when given a ``snapshot``), and writing the pauses in force again every
``rewrite_seconds``. A lost connection is reconnected; consumption resumes after the last
offset applied, so no record is applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from worker.addresses import Addresses
from worker.control.config import REWRITE_SECONDS
from worker.control.messages import SENTINEL_TYPE, Control, ControlInvalid, parse_control
from worker.control.state import ControlState
from worker.control.transport import (
    WorkerSnapshot,
    answer_status,
    declare_control,
    props_of,
    publish_control,
    rewrite_headers,
    status_body,
)
from worker.metrics import Metrics

log = logging.getLogger("bulkops.control")

OnRecord = Callable[[Control, bool], Awaitable[None] | None]
"""Called for each valid record read live (after ``start``): the record, and whether it
changed the state (a new cancel, a pause, a resume of a pause in force)."""

RECONNECT_SECONDS = 1.0
STATUS_MAX_AGE = 60.0
"""A ``status`` older than this (read again after a reconnection) is not answered: its
asker has given up."""


class ControlReader:
    """Reads the control stream into ``state`` (see the module docstring)."""

    def __init__(
        self,
        amqp_url: str | Addresses,
        state: ControlState,
        *,
        exchange: str = "bulkops.control",
        targets: Mapping[str, str] | None = None,
        metrics: Metrics | None = None,
        on_record: OnRecord | None = None,
        snapshot: Callable[[], WorkerSnapshot] | None = None,
        rewrite_seconds: float = REWRITE_SECONDS,
        prefetch: int = 1000,
        clock: Callable[[], float] = time.time,
        connection_name: str = "bulkops-control",
    ) -> None:
        self.addresses = amqp_url if isinstance(amqp_url, Addresses) else Addresses.parse(amqp_url)
        self.state = state
        self.exchange = exchange
        self.targets = targets
        self.metrics = metrics
        self.on_record = on_record
        self.snapshot = snapshot
        self.rewrite_seconds = rewrite_seconds
        self.prefetch = prefetch
        self.clock = clock
        self.connection_name = connection_name
        self.caught_up = asyncio.Event()
        self.last_offset: int | None = None  # of the last record applied
        self.records = 0  # records read (valid, invalid and sentinels)
        self.invalid = 0
        self._sentinels: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._channel: AbstractChannel | None = None
        self._closing = False

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, timeout: float | None = None) -> None:
        """Start reading; return once caught up with what the stream held (raises what the
        first connection raised, or ``TimeoutError``)."""
        self._task = asyncio.create_task(self._run(), name="control-reader")
        caught = asyncio.create_task(self.caught_up.wait())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait({self._task, caught}, return_when=asyncio.FIRST_COMPLETED)
            if not self.caught_up.is_set():
                await self._task  # raises its error
                raise RuntimeError("the control reader stopped before it caught up")
        except BaseException:
            await self.close()  # nothing left running behind a failed start
            raise
        finally:
            caught.cancel()

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """Sessions until closed; before catching up, the first failure is raised."""
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.caught_up.is_set() and self.last_offset is None:
                    raise
                log.warning("control stream session ended (%s): reconnecting", type(exc).__name__)
                self.addresses.failed()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _session(self) -> None:
        lost = asyncio.Event()
        connection: AbstractConnection = await self.addresses.connect(
            client_properties={"connection_name": self.connection_name}
        )
        connection.close_callbacks.add(lambda *_: lost.set())
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.prefetch)  # streams require it
            _, queue = await declare_control(channel, self.exchange, self.state.cancel_ttl)
            self._channel = channel
            offset: Any = "first" if self.last_offset is None else self.last_offset + 1
            messages: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            await queue.consume(messages.put, arguments={"x-stream-offset": offset})
            if not self.caught_up.is_set():
                sentinel = uuid.uuid4().hex
                self._sentinels.add(sentinel)
                await self._publish(channel, b"{}", {}, SENTINEL_TYPE, sentinel)
            tasks = [
                asyncio.create_task(self._consume(messages)),
                asyncio.create_task(lost.wait()),
                asyncio.create_task(self._rewrites(channel)),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            raise ConnectionError("control connection lost")
        finally:
            self._channel = None
            with contextlib.suppress(Exception):
                await connection.close()

    async def _publish(
        self, channel: AbstractChannel, body: bytes, headers: dict[str, Any], kind: str,
        message_id: str | None = None,
    ) -> None:  # fmt: skip
        exchange = await channel.get_exchange(self.exchange, ensure=False)
        await exchange.publish(
            aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id or uuid.uuid4().hex,
                type=kind,
                app_id="bulkops-worker",
                headers=headers,
            ),
            routing_key="",
        )

    # -- records ---------------------------------------------------------------------------

    async def _consume(self, messages: asyncio.Queue[AbstractIncomingMessage]) -> None:
        while True:
            message = await messages.get()
            offset = (message.headers or {}).get("x-stream-offset")
            offset = offset if isinstance(offset, int) else None
            if offset is not None and self.last_offset is not None and offset <= self.last_offset:
                await message.ack()  # read before the reconnection: applied already
                continue
            await self._record(message, offset)
            if offset is not None:
                self.last_offset = offset
            await message.ack()  # a stream consumer's credit

    async def _record(self, message: AbstractIncomingMessage, offset: int | None) -> None:
        self.records += 1
        if message.type == SENTINEL_TYPE:
            if message.message_id in self._sentinels:
                self._sentinels.clear()
                self.caught_up.set()
            return
        now = self.clock()
        parsed = parse_control(message.body, props_of(message, offset), self.targets, now)
        if isinstance(parsed, ControlInvalid):
            self._invalid(parsed, message)
            return
        live = self.caught_up.is_set()
        if parsed.command == "status":
            if live and now - parsed.at <= STATUS_MAX_AGE:  # none read again after a restart
                await self._status(parsed)
            return
        changed = self.state.apply(parsed, now)
        if self.metrics is not None:
            self.metrics.control_applied.labels(parsed.command).inc()
        if live and self.on_record is not None:
            try:  # the record is applied: a failing hook must not make it read again
                result = self.on_record(parsed, changed)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("control hook failed on a %s record", parsed.command)

    def _invalid(self, invalid: ControlInvalid, message: AbstractIncomingMessage) -> None:
        self.invalid += 1
        if self.metrics is not None:
            self.metrics.control_invalid.labels(invalid.code).inc()
        log.warning(
            "control message %s (app_id %s) ignored: %s",
            invalid.message_id, (message.app_id or "")[:64], invalid.reason,
        )  # fmt: skip

    async def _status(self, control: Control) -> None:
        if self.snapshot is None or self._channel is None:
            return
        body = status_body(self.snapshot(), self.state, self.clock())
        try:
            await answer_status(self._channel, control, body)
        except Exception as exc:  # a reply that cannot go does not stop the reader
            log.warning("status reply not sent (%s)", type(exc).__name__)

    async def _rewrites(self, channel: AbstractChannel) -> None:
        """Write the pauses in force again every ``rewrite_seconds``, so that retention
        never drops the last record of one. Duplicates (many replicas) change nothing."""
        await self.caught_up.wait()
        while True:
            await asyncio.sleep(self.rewrite_seconds)
            await self.rewrite(channel)

    async def rewrite(self, channel: AbstractChannel | None = None) -> int:
        """Write each pause in force again now; how many."""
        channel = channel or self._channel
        if channel is None:
            return 0
        written = 0
        for body, headers in rewrite_headers(self.state):
            await publish_control(
                channel, body, exchange=self.exchange, app_id="bulkops-worker",
                headers=headers, declare=False,
            )  # fmt: skip
            written += 1
        return written
