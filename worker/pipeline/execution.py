"""Carrying out one batch: its adapter sends it and reads a result per item; the batch's
metrics and its log line. A failure the adapter did not foresee answers every item."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from worker import tracing
from worker.apis.adapters import Adapter, ItemResult
from worker.batching import BatchKey, Item
from worker.errors import ErrorCode, ErrorInfo
from worker.http import ScopedClient
from worker.limiter import Hold
from worker.metrics import Metrics

log = logging.getLogger("bulkops.engine")


class Execution:
    """Runs batches through the adapters of the configured targets."""

    def __init__(self, adapters: Mapping[str, Adapter], metrics: Metrics) -> None:
        self.adapters = adapters
        self.metrics = metrics

    async def run(
        self, batch_id: str, scope: ScopedClient, key: BatchKey, items: list[Item], hold: Hold
    ) -> dict[str, ItemResult]:
        """The batch's result per item id, once its adapter is through with it."""
        op = items[0].operation
        labels = key.labels
        self.metrics.batch_size.labels(*labels).observe(len(items))
        self.metrics.batch_fill.labels(*labels).observe(len(items) / op.max_items)
        self.metrics.inflight_batches.labels(*labels).inc()
        started = time.monotonic()
        client = scope.for_batch(
            tracing.links(t.trace for i in items for t in i.waiters),
            urgent=lambda: any(item.urgent for item in items),
        )
        try:
            results = await self._execute(client, key, items, hold)
        finally:
            self.metrics.inflight_batches.labels(*labels).dec()
        self._log_batch(batch_id, key, items, results, started, client.statuses)
        return results

    async def _execute(
        self, client: ScopedClient, key: BatchKey, items: list[Item], hold: Hold
    ) -> dict[str, ItemResult]:
        try:
            return await self.adapters[key.target].execute(key, items, client, hold)
        except Exception as exc:  # a bug must not leave items unanswered
            log.exception("batch %s failed unexpectedly", key.operation)
            info = ErrorInfo(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}", True)
            return {item.id: ItemResult("failed", info) for item in items}

    def _log_batch(
        self,
        batch_id: str,
        key: BatchKey,
        items: list[Item],
        results: dict[str, ItemResult],
        started: float,
        http_statuses: dict[str, int],
    ) -> None:
        counts: dict[str, int] = {}
        for result in results.values():
            counts[result.status] = counts.get(result.status, 0) + 1
        job_ids = sorted({r.job_id for r in results.values() if r.job_id})
        log.info(
            "batch done",
            extra={
                "fields": {
                    "batch_id": batch_id,
                    "operation": key.operation,
                    "target": key.target,
                    "size": len(items),
                    "http_statuses": http_statuses,
                    "job_ids": job_ids[:5],
                    "duration_s": round(time.monotonic() - started, 3),
                    "outcomes": counts,
                }
            },
        )
