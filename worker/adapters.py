"""The interface every API adapter implements, and the per-item result it returns.

An adapter knows one API: what an id costs in a request body, which rate scope a batch
belongs to, and how to carry a batch through to a true outcome for each of its ids.
Adding an operation means adding (or extending) one adapter, not editing the pipeline.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal, Protocol

from worker.batching import BatchKey
from worker.http import RetriesExhausted, ScopedClient
from worker.limiter import Hold
from worker.messages import ErrorInfo
from worker.operations import Operation


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
        info = ErrorInfo("retries_exhausted", f"{exc.attempts} attempts; last: {error}", True)
    else:
        info = error.info()
    return ItemResult("failed", info, exc.attempts, job_id)


class Adapter(Protocol):
    def cost(self, operation: Operation, item_id: str) -> int:
        """Bytes this id adds to a request body (for body-size limits)."""
        ...

    def rate_scope(self, key: BatchKey) -> Hashable:
        """Batches with the same rate scope share one limiter."""
        ...

    async def execute(
        self, key: BatchKey, ids: list[str], client: ScopedClient, hold: Hold | None
    ) -> dict[str, ItemResult]:
        """Send ``ids`` and return a result for every one of them.

        ``hold``: a limiter slot the caller already holds for the first request (spent by
        that request's send), or None.
        """
        ...
