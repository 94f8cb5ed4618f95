"""The worker's one error vocabulary: its codes, the error an outcome carries, and the tree
of API errors, mapped once from HTTP answers and transport failures.

``ErrorCode`` lists every code the worker itself produces; the metrics label failures by
these codes and by the codes the APIs document (each API area lists its own), everything
else as ``other``. ``ApiError`` carries what the outcome needs (code, message, retryable)
and, for retryable errors, how long the server asked us to wait. Retryable: 429, 5xx,
timeouts, dropped connections, API errors the API marks transient. Everything else is
permanent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import httpx
import orjson

MAX_SERVER_WAIT = 600.0  # a longer wait than this is a broken header, not a plan


class ErrorCode(StrEnum):
    """Every error code the worker produces itself (the APIs' own codes pass through)."""

    # A message refused as a whole (dead-lettered), or an id refused before sending.
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_OPERATION = "unknown_operation"
    UNKNOWN_TARGET = "unknown_target"
    MISSING_SCOPE = "missing_scope"
    INVALID_ID = "invalid_id"
    INVALID_ITEM = "invalid_item"
    INVALID_PARAMS = "invalid_params"
    # An item withdrawn by an operator's cancel before it was sent (CONTRACT "Control").
    CANCELLED = "cancelled"
    # An API answer without a code of its own, by HTTP status (other statuses: ``http_<n>``).
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "NOT_FOUND"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    # Transport and protocol trouble (retryable).
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    UNEXPECTED_RESPONSE = "unexpected_response"
    # How an item's story ended without the API's word on it.
    RETRIES_EXHAUSTED = "retries_exhausted"
    JOB_TIMEOUT = "job_timeout"
    # An operation that waited behind a job whose fate stayed unknown: never sent, since the
    # stale job could still land after it.
    JOB_UNRESOLVED = "job_unresolved"
    INTERNAL_ERROR = "internal_error"


REJECTION_CODES: tuple[ErrorCode, ...] = (
    ErrorCode.TOO_LARGE,
    ErrorCode.NOT_JSON,
    ErrorCode.NOT_OBJECT,
    ErrorCode.INVALID_MESSAGE,
    ErrorCode.UNKNOWN_OPERATION,
    ErrorCode.UNKNOWN_TARGET,
    ErrorCode.MISSING_SCOPE,
    ErrorCode.INVALID_ID,
    ErrorCode.INVALID_ITEM,
    ErrorCode.INVALID_PARAMS,
    ErrorCode.CANCELLED,
)
"""The codes of a ``rejected`` item (never sent): the README lists exactly these."""


def http_code(status: int) -> str:
    """The code of an answer with no code of its own and no name in ``ErrorCode``."""
    return f"http_{status}"


# The error of one item's outcome, as published. (No docstring: the contract document,
# docs/asyncapi.yaml, is generated from this class and would change with it.)
@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    message: str
    retryable: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


@dataclass(slots=True)
class ApiError(Exception):
    code: str
    message: str
    retryable: bool
    status: int | None = None
    wait: float | None = None  # seconds the server asked for

    def info(self) -> ErrorInfo:
        return ErrorInfo(self.code, self.message, self.retryable)

    def __str__(self) -> str:
        return f"{self.code} ({self.status}): {self.message}"


def header_seconds(headers: httpx.Headers, *names: str) -> float | None:
    for name in names:
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue  # an HTTP date in Retry-After: fall back to backoff
        if math.isfinite(seconds):
            return min(max(0.0, seconds), MAX_SERVER_WAIT)
    return None


class ParsedError(NamedTuple):
    """An API's own account of an error, read from its body by that API's parser."""

    code: str
    transient: bool  # the API says trying again may work
    details: str  # for the message (bounded)


ErrorParser = Callable[[Any], ParsedError | None]  # an error body -> its account, or None


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


_BY_STATUS = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
}


def from_response(response: httpx.Response, parse: ErrorParser | None = None) -> ApiError:
    """Classify a non-2xx answer; ``parse`` reads the API's own error body, if it has one."""
    status = response.status_code
    body = _json(response)
    wait = header_seconds(response.headers, "Retry-After", "X-RateLimit-Reset")
    parsed = parse(body) if parse is not None else None
    if parsed is not None:
        code, transient, details = parsed
        retryable = transient or status == 429 or status >= 500
        return ApiError(code, f"HTTP {status}: {code} {details}", retryable, status, wait)
    text = response.text[:300] if body is None else orjson.dumps(body).decode()[:300]
    if status == 429:
        return ApiError(ErrorCode.RATE_LIMIT_EXCEEDED, f"HTTP 429: {text}", True, status, wait)
    if status >= 500:
        return ApiError(http_code(status), f"HTTP {status}: {text}", True, status, wait)
    code = _BY_STATUS.get(status) or http_code(status)
    return ApiError(code, f"HTTP {status}: {text}", False, status)


def from_transport(exc: httpx.TransportError) -> ApiError:
    """The text of a transport error can quote the request (a protocol error names the
    offending header value, e.g. the Authorization header): only connection failures, whose
    text names the host, keep it."""
    if isinstance(exc, httpx.TimeoutException):
        return ApiError(ErrorCode.TIMEOUT, f"{type(exc).__name__}: request timed out", True)
    if isinstance(exc, httpx.ConnectError):
        return ApiError(ErrorCode.CONNECTION_ERROR, f"{type(exc).__name__}: {exc}"[:300], True)
    return ApiError(ErrorCode.CONNECTION_ERROR, f"{type(exc).__name__} (details withheld)", True)


def backoff(
    attempt: int, base: float, cap: float, server_wait: float | None, rng: random.Random
) -> float:
    """Exponential backoff with full jitter, never shorter than the server asked for."""
    jitter = rng.uniform(0, min(cap, base * (2 ** max(0, attempt - 1))))
    return max(server_wait or 0.0, jitter)


def retry_reason(exc: ApiError) -> str:
    if exc.status == 429:
        return "rate_limited"
    if exc.status is not None and exc.status >= 500:
        return "server_error"
    if exc.code in (ErrorCode.TIMEOUT, ErrorCode.CONNECTION_ERROR):
        return str(exc.code)
    return "transient"
