"""Settlement: the one owner of "this request is answered".

Whether a request was refused at intake (``refuse``: a message dead-lettered as a whole) or
its items were answered by an API or rejected one by one (``answer``), its outcomes and its
reply are built here (through ``Heading``), counted here (``item_outcomes``,
``item_failures``, ``end_to_end``), published through the broker's outlet, and its ack is
queued here, each once. The broker edge asks (``answer``, ``refuse``, ``give_back``,
``abandon``); it never sets a request's state.

An outcome the mode does not publish counts at once; a published one only once the broker
has confirmed it: a request is settled only after every outcome it publishes is confirmed,
and acked only after its reply is confirmed (or dropped).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TypeVar

from worker.errors import ErrorCode
from worker.messages import Invalid, Outcome, Reply, published, routing_operation, utc_now
from worker.metrics import Metrics
from worker.outcomes import OutcomeBatch, batch_item, parts
from worker.pipeline.requests import Answer, Delivery, Tracked
from worker.registry import code_label

T = TypeVar("T")
PUBLISH_CHUNK = 64

CANCELLED = str(ErrorCode.CANCELLED)
_Counts = collections.Counter[tuple[str, str, str, str | None]]


def chunks(items: list[T]) -> Iterator[list[T]]:
    """Slices of PUBLISH_CHUNK: confirms stay pipelined within one, and deliveries get the
    event loop between them (a batch of 10,000 outcomes does not stall intake, and a message
    of 100,000 readable ids does not put 100,000 publishes in flight at once)."""
    for start in range(0, len(items), PUBLISH_CHUNK):
        yield items[start : start + PUBLISH_CHUNK]


class Outlet(Protocol):
    """Where answers go: the broker's confirmed publisher."""

    async def outcome(
        self, outcome: Outcome, correlation_id: str | None, trace: Any = None
    ) -> None: ...

    async def outcomes(self, batch: OutcomeBatch, trace: Any = None) -> None: ...

    async def reply(
        self, reply: Reply, reply_to: str, correlation_id: str | None, trace: Any = None
    ) -> bool: ...


class Settlement:
    """Every consumed request the pipeline holds, until its reply and ack are queued, and
    the answering of every request, refused or carried out."""

    def __init__(self, mode: str, metrics: Metrics, outlet: Outlet, fmt: str = "item") -> None:
        self.mode = mode  # BULKOPS_ITEM_OUTCOMES: which outcomes are published
        self.format = fmt  # BULKOPS_OUTCOME_FORMAT: one message per item, or per batch
        self.metrics = metrics
        self.outlet = outlet
        self.tracked: set[Tracked] = set()
        # Requests being continued (a pause): answered, their continuation not yet published.
        self.continuing: set[Tracked] = set()

    # -- requests held ---------------------------------------------------------------------

    def add(self, tracked: Tracked) -> None:
        self.tracked.add(tracked)

    def unsettled(self) -> list[Tracked]:
        return sorted((t for t in self.tracked if not t.settled), key=lambda t: t.seq)

    def give_back(self, requests: Iterable[Tracked]) -> None:
        """They go back to the broker unanswered (the caller nacks them): settled, forgotten."""
        for tracked in requests:
            tracked.settled = True
            self.tracked.discard(tracked)

    def hold_back(self, tracked: Tracked, withdrawn: int) -> bool:
        """A started request being continued (a pause): ``withdrawn`` of its items are not
        answered here, it sends no reply, and its delivery's ack only says it is answered
        (``worker.pipeline.continuation.Continuing``). True when nothing of it is left to
        answer: settled now."""
        tracked.remaining -= withdrawn
        tracked.continued = True
        self.continuing.add(tracked)
        if tracked.remaining == 0:
            tracked.settled = True
            self.tracked.discard(tracked)
            return True
        return False

    async def finish(self, tracked: Tracked) -> None:
        """A request taken in with nothing left to answer (a continuation whose ids are all
        done): its reply and ack."""
        tracked.settled = True
        await self._settle([tracked])

    def abandon(self, requests: Iterable[Tracked]) -> None:
        """The drain ran out of time: they will be requeued unanswered, and no answer still
        coming may settle them."""
        for tracked in requests:
            tracked.settled = True

    # -- answering -------------------------------------------------------------------------

    async def answer(self, answers: list[Answer]) -> None:
        """Publish the outcomes this mode publishes and wait for their confirms, count every
        answer, then reply to and ack each request now answered."""
        mode = self.mode
        if mode == "all":
            loud = answers
        else:
            loud = [a for a in answers if published(mode, a.result.status)]
            quiet = [a for a in answers if not published(mode, a.result.status)]
            await self._settle(self._record(quiet))
        outlet = self.outlet
        if self.format == "batch":
            for batches in chunks(list(self._batches(loud))):
                await asyncio.gather(*(outlet.outcomes(b, trace) for b, trace in batches))
            await self._settle(self._record(loud))
            return
        for chunk in chunks(loud):
            await asyncio.gather(
                *(outlet.outcome(a.outcome(), a.tracked.correlation_id, a.tracked.trace)
                  for a in chunk)
            )  # fmt: skip
            await self._settle(self._record(chunk))

    async def refuse(
        self,
        invalid: Invalid,
        delivery: Delivery,
        correlation_id: str | None,
        reply_to: str | None,
        trace: Any,
        target_label: str,
    ) -> None:
        """A message refused as a whole (already dead-lettered by the caller): a ``rejected``
        outcome for each readable id (if the mode publishes them), counted, its reply (with
        the reason as the top-level error), then its ack."""
        outcomes = invalid.outcomes(utc_now()) if published(self.mode, "rejected") else []
        if self.format == "batch" and outcomes:
            items = [batch_item(o.request_id, o.id, None, o.error, 0) for o in outcomes]
            for part, slice_ in enumerate(parts(items)):
                batch = OutcomeBatch(
                    invalid.heading, "rejected", None, part, outcomes[0].finished_at, slice_,
                    correlation_id or invalid.heading.request_id,
                )  # fmt: skip
                await self.outlet.outcomes(batch, trace)
            outcomes = []
        for chunk in chunks(outcomes):
            await asyncio.gather(*(self.outlet.outcome(o, correlation_id, trace) for o in chunk))
        counts: _Counts = collections.Counter()
        labels = (routing_operation(invalid.operation), target_label)
        counts[(*labels, "rejected", code_label(invalid.code))] = len(invalid.readable_ids)
        self._count(counts, {})
        if reply_to:  # dead-lettered, and still answered
            await self.outlet.reply(invalid.reply(utc_now()), reply_to, correlation_id, trace)
        await delivery.ack()

    def _batches(self, answers: list[Answer]) -> Iterator[tuple[OutcomeBatch, Any]]:
        """The batch format's messages for these answers: per dispatch batch and status (items
        rejected at intake: per request message and status), in parts of at most 4 MiB."""
        groups: dict[tuple[str, str, str, str | None], list[Answer]] = {}
        for answer in answers:
            tracked = answer.tracked
            error = answer.result.error
            tag = CANCELLED if not answer.batch_id and error and error.code == CANCELLED else None
            key = (answer.batch_id or "", answer.result.status,
                   "" if answer.batch_id else tracked.request.request_id, tag)  # fmt: skip
            groups.setdefault(key, []).append(answer)
        finished_at = utc_now()
        for (batch_id, _, _, tag), group in groups.items():
            first = group[0]
            heading = first.tracked.heading
            items = [
                batch_item(a.tracked.request.request_id, a.item_id, a.result.job_id,
                           a.result.error, a.result.attempts)
                for a in group
            ]  # fmt: skip
            correlation = batch_id or first.tracked.correlation_id or heading.request_id
            for part, slice_ in enumerate(parts(items)):
                yield (
                    OutcomeBatch(heading, first.result.status, batch_id or None, part,
                                 finished_at, slice_, correlation, tag),
                    first.tracked.trace,
                )  # fmt: skip

    def _record(self, answers: Iterable[Answer]) -> list[Tracked]:
        """Count items' outcomes; the requests now fully answered, settled.

        Metrics are added up per label set and written once per call: a batch of 10,000
        items must not cost 30,000 label lookups."""
        done: list[Tracked] = []
        counts: _Counts = collections.Counter()
        latencies: dict[tuple[str, str, str], list[float]] = {}
        now = time.time()
        for tracked, item_id, result, _ in answers:
            req = tracked.request
            code = code_label(result.error.code) if result.error is not None else None
            counts[req.operation.name, req.target, result.status, code] += 1
            if tracked.timestamp is not None:
                latency = max(0.0, now - tracked.timestamp)
                latencies.setdefault((req.operation.name, req.target, tracked.lane), []).append(
                    latency
                )
            tracked.note(item_id, result)
            tracked.remaining -= 1
            if tracked.remaining == 0 and not tracked.settled:
                tracked.settled = True
                done.append(tracked)
        self._count(counts, latencies)
        return done

    def _count(self, counts: _Counts, latencies: dict[tuple[str, str, str], list[float]]) -> None:
        metrics = self.metrics
        for (operation, target, status, code), n in counts.items():
            metrics.item_outcomes.labels(operation, target, status).inc(n)
            if code is not None:
                metrics.item_failures.labels(operation, target, code).inc(n)
        for (operation, target, lane), values in latencies.items():
            histogram = metrics.end_to_end.labels(operation, target)
            by_lane = metrics.lane_latency.labels(lane)
            for value in values:
                histogram.observe(value)
                by_lane.observe(value)

    async def _settle(self, done: list[Tracked]) -> None:
        """Reply to the answered requests that asked for it (pipelined; each confirmed, or
        dropped when its queue is gone), then queue the ack of each, then forget it (kept
        until then, so a drain or hand-over waits for its reply)."""
        replying = [(t, t.reply_to) for t in done if t.reply_to is not None and not t.continued]
        for chunk in chunks(replying):
            await asyncio.gather(
                *(self.outlet.reply(t.reply(), to, t.correlation_id, t.trace) for t, to in chunk)
            )
        for tracked in done:
            await tracked.delivery.ack()  # queued: the Acker writes it
            self.tracked.discard(tracked)
