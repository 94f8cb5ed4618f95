"""The pipeline between the broker edges: accept requests, dispatch batches per rate scope,
turn results into outcomes, settle each request message once all its outcomes are confirmed.

One dispatcher task per rate scope sends a batch when ``worker/pipeline/decisions.py`` says
so: when one of its keys is full, or when the oldest item has lingered and the limiter has
room. While the limiter has no room nothing is taken, so batches keep growing: under backlog
every request is full.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import httpx

from worker.apis.base import Adapter, ItemResult, Operation
from worker.batching import BatchKey, Coalescer, Item
from worker.errors import ErrorCode, ErrorInfo
from worker.http import ScopedClient
from worker.limiter import Hold, Limiter, Limiters
from worker.messages import Outcome, Reply, ReplyItem, Request, utc_now
from worker.metrics import Metrics
from worker.pipeline.decisions import Pace, decide
from worker.registry import code_label, make_adapter, rate_scope
from worker.settings import Settings

log = logging.getLogger("bulkops.engine")


_SEQ = itertools.count()


class Delivery(Protocol):
    """The broker's handle on one consumed message."""

    async def ack(self) -> None: ...

    async def nack(self, requeue: bool) -> None: ...


@dataclass(eq=False, slots=True)
class Tracked:
    """One consumed request message and how many of its outcomes are still unconfirmed."""

    delivery: Delivery
    request: Request
    correlation_id: str | None
    timestamp: float | None  # the message's own timestamp (epoch seconds), if it had one
    remaining: int
    started: bool = False
    settled: bool = False
    partition: int | None = None  # partitioned mode: the partition queue it came from
    seq: int = field(default_factory=lambda: next(_SEQ))  # consumption order
    reply_to: str | None = None  # AMQP reply_to: one reply once every id has its outcome
    # With a reply_to: the results of the ids that did not succeed, for the reply (the
    # succeeded ones are implied, so a healthy message of 10,000 ids holds nothing here).
    answers: dict[str, ItemResult] = field(default_factory=dict)

    def note(self, item_id: str, result: ItemResult) -> None:
        if self.reply_to is not None and result.status != "succeeded":
            self.answers[item_id] = result

    def reply(self) -> Reply:
        """The reply: every distinct id of the message in message order."""
        req, answers = self.request, self.answers
        items = []
        for item_id in req.distinct_ids:
            result = answers.get(item_id)
            if result is None:
                items.append(ReplyItem(item_id, "succeeded"))
            else:
                items.append(ReplyItem(item_id, result.status, result.error))
        scope_env, scope_cat = self._scopes()
        return Reply(
            request_id=req.request_id,
            operation=req.operation.name,
            target=req.target,
            environment=scope_env,
            catalog_id=scope_cat,
            items=tuple(items),
            finished_at=utc_now(),
        )

    def _scopes(self) -> tuple[str | None, str | None]:
        req = self.request
        scope_env = req.scope if req.operation.scope_field == "environment" else None
        scope_cat = req.scope if req.operation.scope_field == "catalog_id" else None
        return scope_env, scope_cat

    def outcome(self, item_id: str, result: ItemResult, batch_id: str | None) -> Outcome:
        req = self.request
        scope_env, scope_cat = self._scopes()
        return Outcome(
            req.request_id,
            req.operation.name,
            req.target,
            scope_env,
            scope_cat,
            item_id,
            result.status,
            result.error,
            result.attempts,
            batch_id,
            result.job_id,
            utc_now(),
        )


class Answer(NamedTuple):
    """One item's result for one requester, before it is published (per the outcome mode)
    and counted."""

    tracked: Tracked
    item_id: str
    result: ItemResult
    batch_id: str | None

    def outcome(self) -> Outcome:
        return self.tracked.outcome(self.item_id, self.result, self.batch_id)


Publish = Callable[[list[Answer]], Awaitable[None]]


@dataclass(eq=False)
class _Scope:
    """One rate scope: its limiter and client, the batch keys that share it, in-flight count."""

    limiter: Limiter
    client: ScopedClient
    partition: int | None = None
    keys: set[BatchKey] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: int = 0
    flush: bool = False  # being handed over: send what stays without lingering
    batches: set[asyncio.Task[None]] = field(default_factory=set)  # running or publishing
    dispatcher: asyncio.Task[None] | None = None

    @property
    def scarce(self) -> bool:
        """Less than one request a second (Bloomreach's 5 per 10 s): every request counts."""
        rate = self.limiter.rate
        return rate.requests / rate.seconds < 1.0

    async def sleep(self, timeout: float | None) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancel that
        # lands as the wake-up does, and the dispatcher would run on after being retired.
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wake.wait()


class Engine:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        http: httpx.AsyncClient,
        publish: Publish,
        tasks: asyncio.TaskGroup,
        limiters: Limiters | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.http = http
        self.publish = publish
        self.adapters: dict[str, Adapter] = {
            name: make_adapter(target, settings) for name, target in settings.targets.items()
        }
        self.coalescer = Coalescer()
        self.scopes: dict[Hashable, _Scope] = {}
        self._capped: dict[tuple[str, str], Operation] = {}
        self.tracked: set[Tracked] = set()
        self.flush = False  # shutting down: send without lingering
        self.accepting = True
        self._tasks = tasks
        self._running: set[asyncio.Task[None]] = set()
        self._batches: set[asyncio.Task[None]] = set()
        # The process's limiters (see Limiters): a new session keeps what earlier ones sent.
        margin = settings.rate_limit_margin_seconds
        self.limiters = limiters if limiters is not None else Limiters(margin)
        for name, target in settings.targets.items():
            metrics.rate_limit_allowed.labels(name).set(self.limiters.allowed(name, target))

    # -- intake ---------------------------------------------------------------------------

    def accept(self, tracked: Tracked) -> None:
        """Queue a valid request's ids (its rejected ids are answered by the caller)."""
        req = tracked.request
        adapter = self.adapters[req.target]
        key = BatchKey(operation=req.operation.name, target=req.target, scope=req.scope)
        scope = self._scope(key, tracked.partition)
        now = time.monotonic()
        self.tracked.add(tracked)
        op = self._operation(req)
        before = self.coalescer.pending
        for item_id in req.ids:
            payload = req.payload(item_id)
            cost = adapter.cost(op, item_id, payload)
            self.coalescer.add(op, key, item_id, tracked, now, cost, payload)
        # Ids that joined an item already pending add nothing: the gauge counts items.
        self.metrics.pending_items.labels(*key.labels).inc(self.coalescer.pending - before)
        scope.keys.add(key)
        scope.wake.set()

    def _take_over(self, limiter: Limiter, key: BatchKey) -> None:
        """Partitioned, this scope may just have moved from another replica. That one sends
        nothing more for it (a replica closes a partition's channel only once its work for
        it is over or abandoned, and a dead one sends nothing), but its last requests may
        still be in the window: send nothing before one window (and the margin) has
        passed."""
        wait = limiter.log.window
        limiter.penalize(wait)
        log.info(
            "owning rate scope of %s %s: first request in %.1fs", key.operation, key.target, wait
        )

    def _operation(self, req: Request) -> Operation:
        """The operation as this target may send it: its batches capped by ``max_batch_items``."""
        cap = self.settings.targets[req.target].max_batch_items
        op = req.operation
        if cap is None or cap >= op.max_items:
            return op
        capped = dataclasses.replace(op, max_items=cap)
        return self._capped.setdefault((op.name, req.target), capped)

    def _scope(self, key: BatchKey, partition: int | None) -> _Scope:
        scope_of = rate_scope(key)
        scope = self.scopes.get(scope_of)
        if scope is None:
            target = self.settings.targets[key.target]
            gauge = self.metrics.rate_limit_wait.labels(key.target)
            limiter = self.limiters.get(scope_of, key.target, target, gauge.observe)
            if self.settings.partitions:
                self._take_over(limiter, key)
            client = ScopedClient(self.http, limiter, self.metrics, key.target)
            scope = self.scopes[scope_of] = _Scope(limiter, client, partition)
            scope.dispatcher = self._spawn(self._dispatch(scope))
        return scope

    # -- dispatch -------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._tasks.create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def cancel(self) -> None:
        """Stop every dispatcher and batch (the session is over)."""
        for task in list(self._running):
            task.cancel()

    def _pace(self, scope: _Scope) -> Pace:
        linger = 0.0 if self.flush or scope.flush else self.settings.linger_seconds
        return Pace(linger, scope.scarce, self.settings.max_inflight_batches)

    async def _dispatch(self, scope: _Scope) -> None:
        while True:
            step = decide(
                self.coalescer,
                scope.keys,
                time.monotonic(),
                self._pace(scope),
                scope.inflight,
                scope.limiter.room_in,
            )
            if step.key is None:
                await scope.sleep(step.wait)
                continue
            key = step.key
            hold = await scope.limiter.hold()
            items = self.coalescer.take(key, now=time.monotonic())
            if items:
                self._start(scope, key, items, hold)
            else:
                hold.release()
            self._update_rate_gauge(key.target, scope)

    def _update_rate_gauge(self, target: str, scope: _Scope) -> None:
        self.metrics.rate_limit_used.labels(target).set(scope.limiter.used())

    def _start(self, scope: _Scope, key: BatchKey, items: list[Item], hold: Hold) -> None:
        scope.inflight += 1
        now = time.monotonic()
        waited = self.metrics.item_wait.labels(*key.labels)
        for item in items:
            for waiter in item.waiters:
                waiter.started = True
            waited.observe(now - item.consumed_at)
        task = self._spawn(self._run_batch(scope, key, items, hold))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)
        scope.batches.add(task)
        task.add_done_callback(scope.batches.discard)

    async def _run_batch(self, scope: _Scope, key: BatchKey, items: list[Item], hold: Hold) -> None:
        batch_id = uuid.uuid4().hex
        op = items[0].operation
        labels = key.labels
        self.metrics.batch_size.labels(*labels).observe(len(items))
        self.metrics.batch_fill.labels(*labels).observe(len(items) / op.max_items)
        self.metrics.inflight_batches.labels(*labels).inc()
        started = time.monotonic()
        client = scope.client.for_batch()
        try:
            results = await self._execute(client, key, items, hold)
        finally:
            hold.release()  # if the first request never went (a no-op once it did)
            self.metrics.inflight_batches.labels(*labels).dec()
            scope.inflight -= 1
            scope.wake.set()
        self._log_batch(batch_id, key, items, results, started, client.statuses)
        await self._answer(items, results, batch_id)

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

    async def _answer(
        self, items: list[Item], results: dict[str, ItemResult], batch_id: str
    ) -> None:
        now = time.monotonic()
        answers: list[Answer] = []
        for item in items:
            result = results[item.id]
            for waiter in item.waiters:
                if not waiter.settled:
                    answers.append(Answer(waiter, item.id, result, batch_id))
            self._release(item, now)
        if items:
            self.metrics.pending_items.labels(*items[0].key.labels).dec(len(items))
        await self.publish(answers)

    def _release(self, item: Item, now: float) -> None:
        nxt = self.coalescer.done(item, now)
        if nxt is not None:
            scope = self.scopes[rate_scope(nxt.key)]
            scope.keys.add(nxt.key)
            scope.wake.set()

    # -- outcomes and settlement ------------------------------------------------------------

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

    # -- shutdown -------------------------------------------------------------------------

    def begin_drain(self) -> list[Tracked]:
        """Stop lingering; give back every request none of whose ids was sent yet."""
        self.flush = True
        return self.give_back(lambda tracked: True)

    def give_back(self, select: Callable[[Tracked], bool]) -> list[Tracked]:
        """Forget the selected requests none of whose ids was sent yet; the rest of the
        selected go on, without lingering.

        Returns the requests to give back to the broker. A request that must stay (some id
        already sent) keeps every earlier operation on its ids too, so per-item order holds.
        """
        keep = {t for t in self.tracked if t.started or not select(t)}
        chains = list(self.coalescer.chains())
        changed = True
        while changed:
            changed = False
            for chain in chains:
                last = max(
                    (n for n, item in enumerate(chain) if any(w in keep for w in item.waiters)),
                    default=-1,
                )
                for item in chain[: last + 1]:
                    for waiter in item.waiters:
                        if waiter not in keep:
                            keep.add(waiter)
                            changed = True
        # In consumption order: a quorum queue delivers returned messages first, in the order
        # they came back, so the order of operations on an id survives the hand-back.
        give_back = sorted((t for t in self.tracked if t not in keep), key=lambda t: t.seq)
        for tracked in give_back:
            tracked.settled = True
            self.tracked.discard(tracked)
        dropped = self.coalescer.discard_unsent(lambda item: all(w.settled for w in item.waiters))
        for item in dropped:
            self.metrics.pending_items.labels(*item.key.labels).dec()
        for scope in self.scopes.values():
            scope.wake.set()
        return give_back

    def hand_over(self, partition: int) -> list[Tracked]:
        """The partition is to be handed on: give back its requests not started, and send
        the ones that stay without lingering."""
        for scope in self.scopes.values():
            if scope.partition == partition:
                scope.flush = True
        return self.give_back(lambda tracked: tracked.partition == partition)

    def busy(self, partition: int) -> bool:
        """Some request of this partition is not answered, or a batch of it is still
        publishing or acking."""
        return any(t.partition == partition for t in self.tracked) or any(
            scope.batches for scope in self.scopes.values() if scope.partition == partition
        )

    async def retire(self, partition: int) -> list[Tracked]:
        """The partition is being handed on: forget its scopes (owning it again starts with a
        takeover wait) and its requests still unanswered (they go back to the broker, for the
        next owner), then stop its dispatchers and any batch still running. Returns what was
        still unanswered."""
        scopes = {k: s for k, s in self.scopes.items() if s.partition == partition}
        for key in scopes:
            del self.scopes[key]
        unanswered = sorted(
            (t for t in self.tracked if t.partition == partition), key=lambda t: t.seq
        )
        for tracked in unanswered:
            tracked.settled = True
            self.tracked.discard(tracked)
        gone = {id(t) for t in unanswered}
        dropped = self.coalescer.discard_chains(
            lambda item: all(id(w) in gone or w.settled for w in item.waiters)
        )
        for item in dropped:
            self.metrics.pending_items.labels(*item.key.labels).dec()
        tasks = [t for scope in scopes.values() for t in (scope.dispatcher, *scope.batches) if t]
        for task in tasks:
            task.cancel()
        if tasks:  # state is settled above: a cancel landing here leaves nothing half done
            await asyncio.wait(tasks)
        return unanswered

    @property
    def idle(self) -> bool:
        """Nothing accepted is unanswered and no batch is still publishing or acking."""
        return not self.tracked and not self._batches

    def unsettled(self) -> list[Tracked]:
        return sorted((t for t in self.tracked if not t.settled), key=lambda t: t.seq)
