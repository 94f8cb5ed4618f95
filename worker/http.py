"""HTTP I/O to the APIs: every request passes its rate scope's limiter, is measured, and
teaches the limiter what the server said (remaining budget, 429 waits).

``send`` makes exactly one request and raises ``ApiError`` for anything but 2xx; retrying is
the caller's decision (see ``retry``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from worker import tracing
from worker.errors import (
    ApiError,
    ErrorParser,
    backoff,
    from_response,
    from_transport,
    header_seconds,
    retry_reason,
)
from worker.limiter import Hold, Limiter
from worker.metrics import Metrics

T = TypeVar("T")
log = logging.getLogger("bulkops.http")


def _never() -> bool:
    return False


class ScopedClient:
    """One rate scope of one target: a shared httpx client plus this scope's limiter."""

    def __init__(
        self, http: httpx.AsyncClient, limiter: Limiter, metrics: Metrics, target: str
    ) -> None:
        self.http = http
        self.limiter = limiter
        self.metrics = metrics
        self.target = target
        self.statuses: dict[str, int] = {}  # HTTP status (or "error") -> requests, for logs
        self.trace_links: tuple[Any, ...] = ()  # its batch's request messages (tracing)
        # Whether the batch's requests (polls and reads too) take their slots first: it
        # carries priority-lane items (asked at each request: an item may become urgent).
        self.urgent: Callable[[], bool] = _never

    def for_batch(
        self, trace_links: tuple[Any, ...] = (), urgent: Callable[[], bool] | None = None
    ) -> ScopedClient:
        """The same scope (limiter, client) with its own count of answers, for one batch;
        ``trace_links``: the links of its requests' spans (``tracing.links``)."""
        client = ScopedClient(self.http, self.limiter, self.metrics, self.target)
        client.trace_links = trace_links
        if urgent is not None:
            client.urgent = urgent
        return client

    async def send(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        hold: Hold | None = None,
        errors: ErrorParser | None = None,
    ) -> httpx.Response:
        """One request; ``errors`` reads the API's own error bodies (see ``from_response``)."""
        # The slot is held until the request's first bytes go out, and counted as sent from
        # that moment: however long this process takes to get there (a busy event loop, a
        # new connection), the window is measured from the real send.
        hold = hold if hold is not None else await self.limiter.hold(self.urgent())
        started = time.monotonic()
        timing: dict[str, float] = {}

        async def trace(name: str, info: dict[str, Any]) -> None:
            if name.endswith("send_request_headers.started") and "slot" not in timing:
                timing["slot"] = hold.spend()
            elif name.endswith("send_request_body.complete"):
                timing["sent"] = time.monotonic()
            elif name.endswith("receive_response_headers.complete"):
                timing["answered"] = time.monotonic()

        try:
            with tracing.api_request(endpoint, method, self.target, self.trace_links):
                response = await self.http.request(
                    method,
                    url,
                    headers=headers,
                    content=content,
                    params=params,
                    extensions={"trace": trace},
                )
        except httpx.TransportError as exc:
            self._count(endpoint, "error", started)
            raise from_transport(exc) from exc
        finally:
            hold.release()  # no bytes went out: the slot was never used (no-op once spent)
        self._count(endpoint, str(response.status_code), started)
        if {"slot", "sent", "answered"} <= timing.keys():
            sent = timing["sent"]
            self.limiter.observe_timing(sent - timing["slot"], timing["answered"] - sent)
        self._learn(response)
        if response.is_success:
            return response
        raise from_response(response, errors)

    def count_retry(self, operation: str, error: ApiError) -> None:
        self.metrics.retries.labels(operation, self.target, retry_reason(error)).inc()

    def _count(self, endpoint: str, code: str, started: float) -> None:
        self.statuses[code] = self.statuses.get(code, 0) + 1
        self.metrics.api_requests.labels(self.target, endpoint, code).inc()
        self.metrics.api_latency.labels(self.target, endpoint).observe(time.monotonic() - started)

    def _learn(self, response: httpx.Response) -> None:
        # The limit first: the remaining budget is read against the limit in force.
        stated = _header_int(response.headers, "X-RateLimit-Limit")
        if stated is not None and self.limiter.observe_limit(stated):
            self.metrics.rate_limit_allowed.labels(self.target).set(self.limiter.rate.requests)
            log.info(
                "target %s: rate limit now %s (the API states %d)",
                self.target,
                self.limiter.rate,
                stated,
            )
        remaining = _header_int(response.headers, "X-RateLimit-Remaining")
        if remaining is not None:
            self.limiter.observe_remaining(remaining)
        if response.status_code == 429:
            self.metrics.rate_limited.labels(self.target).inc()
            wait = header_seconds(response.headers, "Retry-After", "X-RateLimit-Reset")
            # No hint: sit out a whole window, the safest reading of "too many".
            self.limiter.penalize(wait if wait is not None else self.limiter.rate.seconds)


def _header_int(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None or not value.strip().lstrip("-").isdigit():
        return None
    return int(value)


class RetryPolicy:
    """Bounded retries: at most ``max_attempts`` sends and ``budget`` seconds in all."""

    def __init__(
        self,
        max_attempts: int,
        budget: float,
        base: float,
        cap: float,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.budget = budget
        self.base = base
        self.cap = cap
        self._rng = random.Random()
        self._sleep = sleep or asyncio.sleep

    def pause(self, attempt: int, error: ApiError) -> float:
        return backoff(attempt, self.base, self.cap, error.wait, self._rng)

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        on_retry: Callable[[ApiError], None] | None = None,
    ) -> tuple[T, int]:
        """Run ``call`` until it succeeds or fails permanently; returns (result, attempts).

        Raises the last ``ApiError`` when it is permanent or the budget is spent (then with
        ``code`` kept and ``retries_exhausted`` recorded by the caller).
        """
        deadline = time.monotonic() + self.budget
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call(), attempt
            except ApiError as exc:
                pause = self.pause(attempt, exc)
                out_of_budget = time.monotonic() + pause > deadline
                if not exc.retryable or attempt >= self.max_attempts or out_of_budget:
                    raise RetriesExhausted(exc, attempt) from exc
                if on_retry is not None:
                    on_retry(exc)
                await self._sleep(pause)


class RetriesExhausted(Exception):
    """The call failed for good: ``error`` is the last error, ``attempts`` how many sends."""

    def __init__(self, error: ApiError, attempts: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts

    @property
    def permanent(self) -> bool:
        return not self.error.retryable
