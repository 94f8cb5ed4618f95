"""Bounded retries (worker/http.py RetryPolicy) with an injected sleep: no real waiting."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry

from worker.errors import ApiError
from worker.http import RetriesExhausted, RetryPolicy, ScopedClient
from worker.limiter import Limiter, Rate
from worker.metrics import Metrics

TRANSIENT = ApiError("http_503", "HTTP 503", True, 503)
PERMANENT = ApiError("unauthorized", "HTTP 401", False, 401)


class Sleeps:
    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def policy(
    max_attempts: int = 4, budget: float = 1000.0, base: float = 0.5, cap: float = 4.0
) -> tuple[RetryPolicy, Sleeps]:
    sleeps = Sleeps()
    return RetryPolicy(max_attempts, budget, base, cap, sleep=sleeps), sleeps


def failing(
    errors: list[ApiError], result: str = "ok"
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


async def test_success_first_time_is_one_attempt_no_sleep() -> None:
    """No error: the result and attempts == 1."""
    retry, sleeps = policy()
    call, _ = failing([])
    assert await retry.run(call) == ("ok", 1)
    assert sleeps.pauses == []


async def test_retryable_errors_are_retried_until_success() -> None:
    """Two transient failures then success: three attempts, two bounded pauses."""
    retry, sleeps = policy(base=0.5, cap=4.0)
    call, calls = failing([TRANSIENT, TRANSIENT])
    seen: list[ApiError] = []
    assert await retry.run(call, on_retry=seen.append) == ("ok", 3)
    assert len(calls) == 3
    assert seen == [TRANSIENT, TRANSIENT]
    assert len(sleeps.pauses) == 2
    assert 0 <= sleeps.pauses[0] <= 0.5
    assert 0 <= sleeps.pauses[1] <= 1.0


async def test_retryable_errors_stop_at_max_attempts() -> None:
    """Always failing: exactly max_attempts sends, max_attempts - 1 pauses, then
    RetriesExhausted with the attempts count and the last error."""
    retry, sleeps = policy(max_attempts=4)
    call, calls = failing([TRANSIENT] * 10)
    with pytest.raises(RetriesExhausted) as info:
        await retry.run(call)
    assert info.value.attempts == 4
    assert info.value.error is TRANSIENT
    assert not info.value.permanent
    assert len(calls) == 4
    assert len(sleeps.pauses) == 3
    assert all(0 <= p <= 4.0 for p in sleeps.pauses)


async def test_permanent_error_stops_at_once() -> None:
    """A permanent error is not retried: one attempt, no pause."""
    retry, sleeps = policy()
    call, calls = failing([TRANSIENT, PERMANENT, TRANSIENT])
    with pytest.raises(RetriesExhausted) as info:
        await retry.run(call)
    assert info.value.attempts == 2
    assert info.value.error is PERMANENT
    assert info.value.permanent
    assert len(calls) == 2
    assert len(sleeps.pauses) == 1


async def test_server_wait_is_honoured() -> None:
    """A 429 asking for 7 s is not retried sooner, whatever the jitter."""
    retry, sleeps = policy(base=0.1, cap=0.2)
    limited = ApiError("RATE_LIMIT_EXCEEDED", "HTTP 429", True, 429, wait=7.0)
    call, _ = failing([limited, limited])
    assert await retry.run(call) == ("ok", 3)
    assert sleeps.pauses == [7.0, 7.0]


async def test_a_server_wait_beyond_the_budget_gives_up_without_sleeping() -> None:
    """If the next pause would overrun the retry budget, stop now."""
    retry, sleeps = policy(budget=5.0)
    limited = ApiError("RATE_LIMIT_EXCEEDED", "HTTP 429", True, 429, wait=60.0)
    call, calls = failing([limited])
    with pytest.raises(RetriesExhausted) as info:
        await retry.run(call)
    assert info.value.attempts == 1
    assert len(calls) == 1
    assert sleeps.pauses == []


async def test_max_attempts_one_means_no_retry() -> None:
    """max_attempts=1: a transient error is final."""
    retry, sleeps = policy(max_attempts=1)
    call, _ = failing([TRANSIENT])
    with pytest.raises(RetriesExhausted) as info:
        await retry.run(call)
    assert info.value.attempts == 1
    assert sleeps.pauses == []


async def test_non_api_exceptions_propagate_unchanged() -> None:
    """Only ApiError is the retry policy's business."""
    retry, sleeps = policy()

    async def boom() -> str:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await retry.run(boom)
    assert sleeps.pauses == []


@pytest.mark.parametrize(
    ("ceiling", "stated", "limit"), [(None, "120", 120), (None, "20", 20), (60, "120", 60)]
)
async def test_a_stated_limit_is_adopted_and_shown_in_the_allowed_gauge(
    ceiling: int | None, stated: str, limit: int
) -> None:
    """An answer's X-RateLimit-Limit becomes the limiter's limit (an explicit ceiling caps
    it) before X-RateLimit-Remaining is read against it; the allowed gauge follows."""

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"X-RateLimit-Limit": stated, "X-RateLimit-Remaining": str(int(stated) - 1)}
        return httpx.Response(200, headers=headers, json={})

    registry = CollectorRegistry()
    start = Rate(ceiling or 30, 3.0)
    limiter = Limiter(start, follow_stated=True, ceiling=Rate(ceiling, 3.0) if ceiling else None)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = ScopedClient(http, limiter, Metrics(registry), "main")
        await client.send("x", "GET", "http://api.test/items", headers={})
    assert limiter.rate == Rate(limit, 3.0)
    # MockTransport emits no trace events, so our own request is not counted; the remaining
    # count read against the new limit adds what the server counts beyond ours.
    assert limiter.used() == max(0, limit - (int(stated) - 1))
    if limit != start.requests:
        gauge = "bulkops_rate_limit_allowed_requests"
        assert registry.get_sample_value(gauge, {"target": "main"}) == limit
