"""``ControlClient``: cancel requests or a scope, pause and resume a scope, ask every worker's
status (CONTRACT "Control").

```python
from worker.client import ControlClient

async with ControlClient.connect("amqp://guest:guest@127.0.0.1:5672/") as control:
    await control.cancel(["req-1", "req-2"], reason="wrong list")
    await control.pause("shop", catalog_id="products", reason="vendor maintenance")
    await control.resume("shop", catalog_id="products")
    await control.cancel_scope("cms", environment=None)  # None: the primary environment
    for report in await control.status(timeout=3):
        print(report["worker"], report["scopes"])
```

Every message is validated with the workers' own rules (``ControlRefused``, a ``ValueError``,
and nothing published) and each call returns the message id once the broker confirmed it
(``ControlPublishError`` when it did not). A scope is a keyword named after an API's scope
field (``worker.registry.SCOPES``); absent: the whole target; ``None``: the primary scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aio_pika.exceptions
import aiormq.exceptions
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from worker.addresses import Addresses
from worker.control.config import DEFAULT_CANCEL_TTL, DEFAULT_EXCHANGE
from worker.control.messages import ControlRefused, ScopeSel, control_body
from worker.control.transport import ControlPublishError, publish_control
from worker.registry import SCOPES

__all__ = ["ControlClient", "ControlPublishError", "ControlRefused", "scope_of"]

DEFAULT_STATUS_TIMEOUT = 3.0


def scope_of(scope: Mapping[str, str | None]) -> ScopeSel | None:
    """The scope a call's keywords name: none, the whole target; one scope field of the
    registry, that scope (``None``: the primary). ``ControlRefused`` for anything else."""
    unknown = sorted(set(scope) - set(SCOPES))
    if unknown:
        known = ", ".join(SCOPES)
        raise ControlRefused("invalid_scope", f"unknown scope field {unknown[0]!r} ({known})")
    if len(scope) > 1:
        raise ControlRefused(
            "conflicting_fields", f"give at most one scope field, not {' and '.join(scope)}"
        )
    return next(iter(scope.items()), None)


class ControlClient:
    """Publishes control messages on a confirm channel of ``connection``."""

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        cancel_ttl_seconds: float = DEFAULT_CANCEL_TTL,
        targets: Mapping[str, str] | None = None,
        app_id: str = "bulkops-client",
    ) -> None:
        self._connection = connection
        self.exchange = exchange
        self.cancel_ttl_seconds = cancel_ttl_seconds
        self.targets = targets  # name -> API kind: when given, targets and scopes are checked
        self.app_id = app_id
        self._channel: AbstractChannel | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, **kwargs: Any) -> AsyncIterator[ControlClient]:
        """Connect (``url`` may list a cluster's nodes, comma-separated) and yield a client."""
        connection = await Addresses.parse(url).connect(
            client_properties={"connection_name": "bulkops-control-client"}
        )
        async with connection:
            yield cls(connection, **kwargs)

    async def cancel(
        self, request_ids: list[str] | tuple[str, ...], *, reason: str | None = None
    ) -> str:
        """Withdraw every item of these requests not yet sent to an API."""
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        body = control_body("cancel", request_ids=ids, reason=reason, targets=self.targets)
        return await self._send(body)

    async def cancel_scope(
        self, target: str, *, reason: str | None = None, **scope: str | None
    ) -> str:
        """Withdraw every item of ``target`` (or of one scope of it) not yet sent."""
        return await self._scoped("cancel", target, reason, scope)

    async def pause(self, target: str, *, reason: str | None = None, **scope: str | None) -> str:
        """Send nothing more for ``target`` (or one scope of it) until resumed."""
        return await self._scoped("pause", target, reason, scope)

    async def resume(self, target: str, *, reason: str | None = None, **scope: str | None) -> str:
        """End the pause of ``target`` (or of that scope of it)."""
        return await self._scoped("resume", target, reason, scope)

    async def status(
        self, timeout: float = DEFAULT_STATUS_TIMEOUT, *, expect: int | None = None
    ) -> list[dict[str, Any]]:
        """Ask every running worker; the reports that came within ``timeout`` seconds (or
        as soon as ``expect`` of them came), in the order they came (an empty list: no
        worker answered). Each is a worker's JSON reply: ``worker``, ``at``, ``scopes``,
        ``pauses``, ``cancels``, ``partitions``."""
        if not (0 < timeout <= 3600):
            raise ValueError("the status timeout must be more than 0 and at most 3600 seconds")
        enough = asyncio.Event()
        channel = await self._connection.channel()
        reports: list[dict[str, Any]] = []
        correlation_id = uuid.uuid4().hex
        try:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)

            async def take(message: AbstractIncomingMessage) -> None:
                if message.correlation_id == correlation_id:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        report = orjson.loads(message.body)
                        if isinstance(report, dict):
                            reports.append(report)
                if expect is not None and len(reports) >= expect:
                    enough.set()
                await message.ack()

            await queue.consume(take)
            body = control_body("status", reply_to=queue.name, targets=self.targets)
            await self._send(body, reply_to=queue.name, correlation_id=correlation_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), timeout)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return list(reports)

    async def _scoped(
        self, command: str, target: str, reason: str | None, scope: Mapping[str, str | None]
    ) -> str:
        body = control_body(
            command, target=target, reason=reason, scope=scope_of(scope), targets=self.targets
        )
        return await self._send(body)

    def _user(self) -> str | None:
        """The connection's login: the AMQP ``user_id`` (the broker checks it is the login),
        so status shows who sent a pause or a cancel."""
        url = getattr(self._connection, "url", None)
        user = getattr(url, "user", None)
        return user if isinstance(user, str) and user else None

    async def _send(self, body: bytes, **kwargs: Any) -> str:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True)
        try:
            return await publish_control(
                self._channel,
                body,
                exchange=self.exchange,
                app_id=self.app_id,
                user_id=self._user(),
                targets=self.targets,
                cancel_ttl_seconds=self.cancel_ttl_seconds,
                **kwargs,
            )
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException) as exc:
            # e.g. the exchange exists as another type: its declaration is refused
            raise ControlPublishError(
                f"the control message was not published to {self.exchange!r}: {exc!r}"[:500]
            ) from exc
