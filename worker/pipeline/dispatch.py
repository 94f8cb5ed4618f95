"""Dispatch per rate scope: one dispatcher task per scope takes a batch when
``worker/pipeline/decisions.py`` says so, and starts it; a finished batch's answers go to
the broker side, and the next operation on each of its ids becomes ready.

Batch keys that share a rate scope (the registry says which) share one limiter, one HTTP
client and one dispatcher: they take turns under one limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any

import httpx

from worker.apis.adapters import ItemResult
from worker.batching import BatchKey, Coalescer, Item
from worker.errors import ErrorCode, ErrorInfo
from worker.http import ScopedClient
from worker.limiter import Hold, Limiter, Limiters
from worker.metrics import Metrics
from worker.pipeline.decisions import Pace, Step, decide
from worker.pipeline.execution import Execution
from worker.pipeline.requests import Answer, Publish
from worker.registry import rate_scope
from worker.settings import Settings

log = logging.getLogger("bulkops.engine")

_UNRESOLVED = ErrorInfo(
    ErrorCode.JOB_UNRESOLVED,
    "not sent: an earlier operation's job on this id had no result when followed to its "
    "bound (BULKOPS_JOB_FOLLOW_SECONDS) and may still apply; send again once it has",
    True,
)


@dataclass(eq=False)
class Scope:
    """One rate scope: its limiter and client, the batch keys that share it, in-flight count."""

    limiter: Limiter
    client: ScopedClient
    partition: int | None = None
    keys: set[BatchKey] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: int = 0
    flush: bool = False  # being handed over: send what stays without lingering
    urgent_run: int = 0  # requests in a row of urgent items only while the backlog waited
    batches: set[asyncio.Task[None]] = field(default_factory=set)  # running or publishing

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


class Dispatcher:
    """The rate scopes in use, a dispatcher task for each, and the batches they start."""

    def __init__(
        self,
        *,
        settings: Settings,
        metrics: Metrics,
        http: httpx.AsyncClient,
        limiters: Limiters,
        coalescer: Coalescer,
        execution: Execution,
        publish: Publish,
        tasks: asyncio.TaskGroup,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.http = http
        self.limiters = limiters
        self.coalescer = coalescer
        self.execution = execution
        self.publish = publish
        self.scopes: dict[Hashable, Scope] = {}
        self.flush = False  # shutting down: send without lingering
        self.batches: set[asyncio.Task[None]] = set()  # running or publishing, every scope
        self._tasks = tasks
        self._running: set[asyncio.Task[None]] = set()
        self._loops: dict[Hashable, asyncio.Task[None]] = {}  # each scope's dispatcher
        # Operator control: a batch key whose scope is paused is never taken (None: none is).
        self.paused: Callable[[BatchKey], bool] | None = None

    def scope(self, key: BatchKey, partition: int | None) -> Scope:
        """The key's rate scope; its first use makes it and starts its dispatcher."""
        scope_of = rate_scope(key)
        scope = self.scopes.get(scope_of)
        if scope is None:
            target = self.settings.targets[key.target]
            gauge = self.metrics.rate_limit_wait.labels(key.target)
            limiter = self.limiters.get(scope_of, key.target, target, gauge.observe)
            if self.settings.partitions:
                self._take_over(limiter, key)
            client = ScopedClient(self.http, limiter, self.metrics, key.target)
            scope = self.scopes[scope_of] = Scope(limiter, client, partition)
            self._loops[scope_of] = self._spawn(self._dispatch(scope))
        return scope

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

    @staticmethod
    def ready(scope: Scope, key: BatchKey) -> None:
        """The key has items that may go: its scope's dispatcher looks again."""
        scope.keys.add(key)
        scope.wake.set()

    def wake_all(self) -> None:
        for scope in self.scopes.values():
            scope.wake.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._tasks.create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def cancel(self) -> None:
        """Stop every dispatcher and batch (the session is over)."""
        for task in list(self._running):
            task.cancel()

    def retire(self, partition: int) -> list[asyncio.Task[None]]:
        """Forget the partition's scopes (owning it again starts with a takeover wait);
        returns their dispatchers and batches, for the caller to stop."""
        retired = [k for k, s in self.scopes.items() if s.partition == partition]
        tasks: list[asyncio.Task[None]] = []
        for scope_of in retired:
            scope = self.scopes.pop(scope_of)
            tasks += [self._loops.pop(scope_of), *scope.batches]
        return tasks

    # -- the dispatcher of one scope --------------------------------------------------------

    def pace(self, scope: Scope) -> Pace:
        """The scope's pacing now: no lingering while draining or handing it over."""
        linger = 0.0 if self.flush or scope.flush else self.settings.linger_seconds
        share = self.settings.priority_backlog_share
        every = max(1, round((1 - share) / share))
        scope.limiter.backlog_every = every
        return Pace(linger, scope.scarce, self.settings.max_inflight_batches, every)

    def _decide(self, scope: Scope, room_in: Callable[[], float]) -> Step:
        pace = self.pace(scope)
        turn = scope.urgent_run >= pace.backlog_every
        paused = self.paused
        if paused is None:
            keys = scope.keys
        else:  # a paused scope's keys are not offered (their items wait)
            active = {k for k in scope.keys if not paused(k)}
            keys = set(active)
        step = decide(self.coalescer, keys, time.monotonic(), pace, scope.inflight, room_in, turn)
        if keys is not scope.keys:
            scope.keys -= active - keys  # emptied keys leave the scope, as decide does
        return step

    async def _dispatch(self, scope: Scope) -> None:
        while True:
            step = self._decide(scope, scope.limiter.room_in)
            if step.key is None:
                await scope.sleep(step.wait)
                continue
            hold = await scope.limiter.hold(step.urgent)
            if not step.urgent:
                # The slot is ours: urgent items that came while it was awaited take it.
                again = self._decide(scope, _now)
                if again.key is not None and again.urgent:
                    step = again
            key = step.key
            assert key is not None
            if self.paused is not None and self.paused(key):
                # Paused while the slot was awaited: its items wait; the slot goes back.
                hold.release()
                continue
            items = self.coalescer.take(key, now=time.monotonic(), backlog_first=step.backlog_first)
            if items:
                self._count_turn(scope, items)
                self._start(scope, key, items, hold)
            else:
                hold.release()
            self._update_rate_gauge(key.target, scope)

    def _count_turn(self, scope: Scope, items: list[Item]) -> None:
        """Keep the backlog's share: count requests of urgent items only while it waits."""
        if not all(item.urgent for item in items):
            scope.urgent_run = 0
        elif any(self.coalescer.backlog_since(k) is not None for k in scope.keys):
            scope.urgent_run += 1

    def _update_rate_gauge(self, target: str, scope: Scope) -> None:
        self.metrics.rate_limit_used.labels(target).set(scope.limiter.used())

    # -- one batch ----------------------------------------------------------------------------

    def _start(self, scope: Scope, key: BatchKey, items: list[Item], hold: Hold) -> None:
        scope.inflight += 1
        now = time.monotonic()
        waited = self.metrics.item_wait.labels(*key.labels)
        for item in items:
            for waiter in item.waiters:
                waiter.started = True
            waited.observe(now - item.consumed_at)
        task = self._spawn(self._run_batch(scope, key, items, hold))
        self.batches.add(task)
        task.add_done_callback(self.batches.discard)
        scope.batches.add(task)
        task.add_done_callback(scope.batches.discard)

    async def _run_batch(self, scope: Scope, key: BatchKey, items: list[Item], hold: Hold) -> None:
        batch_id = uuid.uuid4().hex
        try:
            results = await self.execution.run(batch_id, scope.client, key, items, hold)
        finally:
            hold.release()  # if the first request never went (a no-op once it did)
            scope.inflight -= 1
            scope.wake.set()
        await self._answer(items, results, batch_id)

    async def _answer(
        self, items: list[Item], results: dict[str, ItemResult], batch_id: str
    ) -> None:
        now = time.monotonic()
        answers: list[Answer] = []
        stranded: list[Item] = []
        for item in items:
            result = results[item.id]
            for waiter in item.waiters:
                if not waiter.settled:
                    answers.append(Answer(waiter, item.id, result, batch_id))
            if unresolved(result):
                stranded += self.coalescer.done_unresolved(item)
            else:
                self._release(item, now)
        if items:
            self.metrics.pending_items.labels(*items[0].key.labels).dec(len(items))
        answers += self._strand(stranded)
        await self.publish(answers)

    def _strand(self, items: list[Item]) -> list[Answer]:
        """Operations that waited behind a job whose fate stayed unknown: answered
        ``job_unresolved`` (retryable), never sent."""
        if not items:
            return []
        batch_id = uuid.uuid4().hex
        answers: list[Answer] = []
        for item in items:
            result = ItemResult("failed", _UNRESOLVED, 0)
            answers += [Answer(w, item.id, result, batch_id) for w in item.waiters if not w.settled]
            self.metrics.pending_items.labels(*item.key.labels).dec()
        log.warning("%d operations behind unresolved jobs answered job_unresolved", len(items))
        return answers

    def _release(self, item: Item, now: float) -> None:
        nxt = self.coalescer.done(item, now)
        if nxt is not None:
            self.ready(self.scopes[rate_scope(nxt.key)], nxt.key)


def unresolved(result: ItemResult) -> bool:
    """Whether the item's operation may still apply at the API (a job given up unfinished)."""
    return result.error is not None and result.error.code == ErrorCode.JOB_TIMEOUT


def _now() -> float:
    """``room_in`` for a slot already held: there is room."""
    return 0.0
