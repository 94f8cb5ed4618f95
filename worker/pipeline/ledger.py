"""The requests taken in and not yet answered, and the counting of their outcomes."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable

from worker.metrics import Metrics
from worker.pipeline.requests import Answer, Tracked
from worker.registry import code_label


class Ledger:
    """Every consumed request the pipeline holds, until its reply and ack are queued."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.tracked: set[Tracked] = set()

    def add(self, tracked: Tracked) -> None:
        self.tracked.add(tracked)

    def record_outcomes(self, answers: Iterable[Answer]) -> list[Tracked]:
        """Count items' outcomes, once confirmed (or, not published in this outcome mode, at
        once). Returns the requests now fully answered: they are settled, and their reply
        and ack are the caller's to send, after which the caller ``forget``s them.

        Metrics are added up per label set and written once per call: a batch of 10,000
        items must not cost 30,000 label lookups."""
        done: list[Tracked] = []
        counts: collections.Counter[tuple[str, str, str, str | None]] = collections.Counter()
        latencies: dict[tuple[str, str], list[float]] = {}
        now = time.time()
        for tracked, item_id, result, _ in answers:
            req = tracked.request
            code = code_label(result.error.code) if result.error is not None else None
            counts[req.operation.name, req.target, result.status, code] += 1
            if tracked.timestamp is not None:
                latency = max(0.0, now - tracked.timestamp)
                latencies.setdefault((req.operation.name, req.target), []).append(latency)
            tracked.note(item_id, result)
            tracked.remaining -= 1
            if tracked.remaining == 0 and not tracked.settled:
                tracked.settled = True
                done.append(tracked)
        self._count(counts, latencies)
        return done

    def _count(
        self,
        counts: collections.Counter[tuple[str, str, str, str | None]],
        latencies: dict[tuple[str, str], list[float]],
    ) -> None:
        metrics = self.metrics
        for (operation, target, status, code), n in counts.items():
            metrics.item_outcomes.labels(operation, target, status).inc(n)
            if code is not None:
                metrics.item_failures.labels(operation, target, code).inc(n)
        for labels, values in latencies.items():
            histogram = metrics.end_to_end.labels(*labels)
            for value in values:
                histogram.observe(value)

    def forget(self, tracked: Tracked) -> None:
        """The request is answered and its ack queued: nothing here holds it any more.
        (Kept until then, so a drain or hand-over waits for its reply.)"""
        self.tracked.discard(tracked)

    def unsettled(self) -> list[Tracked]:
        return sorted((t for t in self.tracked if not t.settled), key=lambda t: t.seq)

    def settle(self, requests: Iterable[Tracked]) -> None:
        """Mark them settled and forget them: they go back to the broker unanswered."""
        for tracked in requests:
            tracked.settled = True
            self.tracked.discard(tracked)
