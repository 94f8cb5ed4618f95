"""Several broker addresses (``BULKOPS_AMQP_URL="amqp://a:5672/,amqp://b:5672/"``): the nodes
of one cluster, tried in turn.

``Addresses`` remembers where the last connection went: the next attempt after a failure
starts from the node after the one that failed, and a node that refuses (or does not answer
within ``CONNECT_TIMEOUT``) is skipped at once for the next. Every replica is given the same
list and starts from its first address; replicas spread over the list only as failovers move
them. Only ``host:port`` is ever logged: user and password stay out of logs and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection

log = logging.getLogger("bulkops.broker")

CONNECT_TIMEOUT = 10.0  # seconds per address: a node that accepts TCP but never answers
UNREACHABLE = (
    ConnectionError,
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPException,
)


def split_urls(value: str) -> list[str]:
    """The addresses of a comma-separated ``BULKOPS_AMQP_URL`` (blanks around commas ignored)."""
    urls = [part.strip() for part in value.split(",") if part.strip()]
    if not urls:
        raise ValueError("no broker address given")
    return urls


def host_port(url: str) -> str:
    """``host:port`` of an AMQP URL: what may be logged of it (never user or password)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    except ValueError:
        port = 0
    return f"{parts.hostname or 'localhost'}:{port}"


class Addresses:
    """The broker's addresses and where the next connection attempt starts."""

    def __init__(self, urls: list[str], on_failover: Callable[[], Any] | None = None) -> None:
        self.urls = urls
        self.start = 0  # the address the next attempt tries first
        self.last: int | None = None  # the address of the last successful connection
        self._on_failover = on_failover

    @classmethod
    def parse(cls, value: str, on_failover: Callable[[], Any] | None = None) -> Addresses:
        return cls(split_urls(value), on_failover)

    def order(self) -> list[int]:
        """Every address once, from ``start`` on."""
        count = len(self.urls)
        return [(self.start + step) % count for step in range(count)]

    def failed(self, index: int | None = None) -> None:
        """The connection to ``index`` (default: the last one) failed or was lost: the next
        attempt starts from the address after it."""
        index = self.last if index is None else index
        if index is not None and len(self.urls) > 1:
            self.start = (index + 1) % len(self.urls)

    def connected(self, index: int) -> None:
        if self.last is not None and index != self.last and self._on_failover is not None:
            self._on_failover()
        if self.last is not None and index != self.last:
            log.warning(
                "failed over from broker %s to %s",
                host_port(self.urls[self.last]),
                host_port(self.urls[index]),
            )
        self.last = self.start = index

    async def connect(self, **kwargs: Any) -> AbstractConnection:
        """A connection to the first address that answers, from ``start`` on; raises the last
        address's error when none does."""
        error: BaseException | None = None
        for index in self.order():
            url = self.urls[index]
            try:
                connection: AbstractConnection = await aio_pika.connect(
                    url, timeout=CONNECT_TIMEOUT, **kwargs
                )
            except UNREACHABLE as exc:
                error = exc
                if len(self.urls) > 1:
                    log.warning(
                        "broker %s unreachable (%s): trying the next address",
                        host_port(url),
                        type(exc).__name__,
                    )
                    self.failed(index)
                continue
            self.connected(index)
            return connection
        assert error is not None
        raise error
