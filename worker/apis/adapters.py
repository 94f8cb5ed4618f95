"""What adapters share: an item's result, the interface the pipeline drives them through,
the settings they read. Adapter side only: the catalog (``worker.registry``) and the pure
modules never import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from worker.apis.base import BatchKey, Operation, Payload
from worker.errors import ErrorCode, ErrorInfo
from worker.http import RetriesExhausted, RetryPolicy, ScopedClient
from worker.limiter import Hold


@dataclass(frozen=True, slots=True)
class ItemResult:
    status: Literal["succeeded", "failed", "rejected"]
    error: ErrorInfo | None = None
    attempts: int = 1
    job_id: str | None = None


def failure(exc: RetriesExhausted, job_id: str | None = None) -> ItemResult:
    """The outcome of an item whose request failed for good."""
    error = exc.error
    if error.retryable:  # the budget ran out on an error that might have passed
        message = f"{exc.attempts} attempts; last: {error}"
        info = ErrorInfo(ErrorCode.RETRIES_EXHAUSTED, message, True)
    else:
        info = error.info()
    return ItemResult("failed", info, exc.attempts, job_id)


class Sendable(Protocol):
    """One item as an adapter sees it: its id and, where the operation has one, its data."""

    @property
    def id(self) -> str: ...

    @property
    def payload(self) -> Payload | None: ...


class Adapter(Protocol):
    """One target of one API: builds its requests and reads each item's outcome."""

    def cost(self, operation: Operation, item_id: str, payload: Payload | None) -> int:
        """Bytes this item adds to a request body (for body-size limits)."""
        ...

    async def execute(
        self, key: BatchKey, items: Sequence[Sendable], client: ScopedClient, hold: Hold | None
    ) -> dict[str, ItemResult]:
        """Send ``items`` and return a result for every one of them, by id.

        ``hold``: a limiter slot the caller already holds for the first request (spent by
        that request's send), or None.
        """
        ...


class Tuning(Protocol):
    """The settings an adapter reads (the worker's ``Settings`` is one)."""

    @property
    def max_attempts(self) -> int: ...
    @property
    def retry_budget_seconds(self) -> float: ...
    @property
    def backoff_base_seconds(self) -> float: ...
    @property
    def backoff_max_seconds(self) -> float: ...
    @property
    def job_deadline_seconds(self) -> float: ...
    @property
    def job_poll_initial_seconds(self) -> float: ...
    @property
    def job_poll_max_seconds(self) -> float: ...
    @property
    def job_follow_seconds(self) -> float: ...


def retry_policy(tuning: Tuning) -> RetryPolicy:
    return RetryPolicy(
        tuning.max_attempts,
        tuning.retry_budget_seconds,
        tuning.backoff_base_seconds,
        tuning.backoff_max_seconds,
    )
