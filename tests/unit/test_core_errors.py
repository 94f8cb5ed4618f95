"""The error tree (worker/errors.py): classifying HTTP answers and backoff bounds."""

from __future__ import annotations

import math
import random
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.apis.datocms.wire import parse_error as datocms_error
from worker.errors import ApiError, backoff, from_transport
from worker.errors import from_response as classify
from worker.messages import ErrorInfo


def from_response(response: httpx.Response) -> ApiError:
    """How the DatoCMS adapter classifies an answer: the shared mapping, reading error
    bodies with DatoCMS's parser (other APIs' answers take the same path without one)."""
    return classify(response, datocms_error)


def response(
    status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> httpx.Response:
    content = raw if raw is not None else (b"" if body is None else orjson.dumps(body))
    return httpx.Response(status, headers=headers or {}, content=content)


def dato_error(code: str, transient: bool | None = None, **details: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"code": code, "details": details}
    if transient is not None:
        attributes["transient"] = transient
    return {"data": [{"id": "e1", "type": "api_error", "attributes": attributes}]}


def test_429_with_x_ratelimit_reset_is_retryable_with_that_wait() -> None:
    """DatoCMS 429: retry after X-RateLimit-Reset seconds."""
    err = from_response(
        response(429, dato_error("RATE_LIMIT_EXCEEDED"), {"X-RateLimit-Reset": "4"})
    )
    assert (err.code, err.retryable, err.status) == ("RATE_LIMIT_EXCEEDED", True, 429)
    assert err.wait == 4.0


def test_429_with_retry_after_and_no_body() -> None:
    """Bloomreach 429: Retry-After gives the wait; no body needed."""
    err = from_response(response(429, headers={"Retry-After": "2.5"}))
    assert (err.code, err.retryable, err.wait) == ("RATE_LIMIT_EXCEEDED", True, 2.5)


def test_429_without_any_hint_is_retryable_with_no_server_wait() -> None:
    """Retry-After may be absent: still retryable, backoff decides."""
    err = from_response(response(429, raw=b"Too Many Requests"))
    assert err.retryable and err.wait is None
    assert "Too Many Requests" in err.message


def test_retry_after_as_http_date_is_ignored_for_the_next_header() -> None:
    """An HTTP-date Retry-After cannot be read as seconds: X-RateLimit-Reset is used."""
    headers = {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT", "X-RateLimit-Reset": "3"}
    assert from_response(response(429, headers=headers)).wait == 3.0
    only_date = {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}
    assert from_response(response(429, headers=only_date)).wait is None


def test_negative_wait_reads_as_zero() -> None:
    """A negative wait never makes the worker send early or crash."""
    assert from_response(response(429, headers={"Retry-After": "-5"})).wait == 0.0


def test_non_finite_retry_after_is_not_an_endless_wait() -> None:
    """'inf' is not delay-seconds; taken as a wait it blocks the rate scope forever."""
    wait = from_response(response(429, headers={"Retry-After": "inf"})).wait
    assert wait is None or math.isfinite(wait)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_5xx_is_retryable(status: int) -> None:
    """Server errors are retried; their code names the status; Retry-After is kept."""
    err = from_response(response(status, raw=b"<html>oops</html>", headers={"Retry-After": "1"}))
    assert (err.code, err.retryable, err.status, err.wait) == (f"http_{status}", True, status, 1.0)
    assert "<html>oops</html>" in err.message


def test_datocms_transient_error_is_retryable_whatever_the_status() -> None:
    """transient: true means retry, even on a 4xx."""
    err = from_response(response(422, dato_error("ITEM_LOCKED", transient=True)))
    assert (err.code, err.retryable, err.status) == ("ITEM_LOCKED", True, 422)


def test_datocms_5xx_error_body_is_retryable_with_its_code() -> None:
    """SERVICE_UNAVAILABLE on 503 keeps the API's code and is retried."""
    err = from_response(response(503, dato_error("SERVICE_UNAVAILABLE")))
    assert (err.code, err.retryable) == ("SERVICE_UNAVAILABLE", True)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (422, "INVALID_FIELD"),
        (404, "NOT_FOUND"),
        (403, "INSUFFICIENT_PERMISSIONS"),
        (422, "UNPUBLISHED_PARENT"),
    ],
)
def test_datocms_error_bodies_without_transient_are_permanent(status: int, code: str) -> None:
    """A DatoCMS error body gives the code; without transient it is not retried."""
    err = from_response(response(status, dato_error(code, field="title")))
    assert (err.code, err.retryable, err.status) == (code, False, status)
    assert '"field":"title"' in err.message
    assert err.info() == ErrorInfo(code, err.message, False)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "bad_request"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (404, "NOT_FOUND"),
        (422, "http_422"),
        (409, "http_409"),
    ],
)
@pytest.mark.parametrize("raw", [b"", b"not json", b'{"error": "x"}', b"[1, 2]"])
def test_other_4xx_are_permanent_with_worker_codes(status: int, code: str, raw: bytes) -> None:
    """401/403/404/422 and others without a DatoCMS error body: permanent, no wait."""
    err = from_response(response(status, raw=raw))
    assert (err.code, err.retryable, err.status, err.wait) == (code, False, status, None)
    assert err.message.startswith(f"HTTP {status}")


def test_message_is_bounded_for_huge_bodies() -> None:
    """A megabyte error page does not become a megabyte outcome."""
    err = from_response(response(500, raw=b"x" * 1_000_000))
    assert len(err.message) < 400


@pytest.mark.parametrize(
    "body",
    [None, {}, {"data": []}, {"data": [{}]}, {"data": "x"}, [1], {"data": [{"attributes": {}}]}],
)
def test_datocms_error_returns_none_for_other_shapes(body: Any) -> None:
    """Only a JSON:API error list with a code is read as a DatoCMS error."""
    assert datocms_error(body) is None


def test_datocms_error_reads_the_first_error() -> None:
    """(code, transient, details) from the first element."""
    body = dato_error("ITEM_LOCKED", transient=True, item="1")
    body["data"].append(dato_error("OTHER")["data"][0])
    assert datocms_error(body) == ("ITEM_LOCKED", True, '{"item":"1"}')


def test_api_error_str_has_code_status_and_message() -> None:
    """Logs and outcomes show what happened."""
    assert str(ApiError("ITEM_LOCKED", "m", True, 422)) == "ITEM_LOCKED (422): m"


def test_transport_errors_are_retryable() -> None:
    """Timeouts and dropped connections are retried."""
    timeout = from_transport(httpx.ReadTimeout("slow"))
    dropped = from_transport(httpx.ConnectError("refused"))
    assert (timeout.code, timeout.retryable) == ("timeout", True)
    assert (dropped.code, dropped.retryable) == ("connection_error", True)


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(1, 50),
    base=st.floats(0.001, 5.0),
    cap=st.floats(0.001, 120.0),
    server_wait=st.none() | st.floats(0.0, 100.0),
    seed=st.integers(0, 2**32),
)
def test_property_backoff_is_full_jitter_never_below_the_server_wait(
    attempt: int, base: float, cap: float, server_wait: float | None, seed: int
) -> None:
    """backoff is in [0, min(cap, base*2^(n-1))], raised to the server's wait if longer."""
    pause = backoff(attempt, base, cap, server_wait, random.Random(seed))
    bound = min(cap, base * 2 ** (attempt - 1))
    if server_wait is None:
        assert 0.0 <= pause <= bound
    else:
        assert server_wait <= pause <= max(server_wait, bound)


def test_backoff_spreads_over_the_whole_range() -> None:
    """Full jitter: many draws cover low and high parts of the range."""
    rng = random.Random(1)
    pauses = [backoff(4, 1.0, 100.0, None, rng) for _ in range(500)]
    assert min(pauses) < 1.0 and max(pauses) > 7.0
    assert max(pauses) <= 8.0


def test_backoff_grows_then_caps() -> None:
    """The upper bound doubles per attempt until the cap."""

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    top = Top()
    assert [backoff(n, 0.5, 3.0, None, top) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff(1, 0.5, 3.0, 10.0, top) == 10.0
