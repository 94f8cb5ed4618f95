"""The pipeline between the broker edges, as the broker session sees it.

``accept`` takes a request's ids in (``Settlement``, ``Coalescer``); per rate scope a
dispatcher decides when a batch goes (``decisions``, ``dispatch``), its adapter carries it
out (``execution``), and its answers go to the ``Settlement``, which publishes, counts,
replies and acks each request once all its outcomes are confirmed. On shutdown or a
partition hand-over, ``handover`` gives back what was not started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable, Hashable

import httpx

from worker.apis.adapters import Adapter
from worker.apis.base import Operation, params_key
from worker.apis.factory import make_adapter
from worker.batching import BatchKey, Coalescer
from worker.limiter import Limiters
from worker.messages import Request
from worker.metrics import Metrics
from worker.pipeline.dispatch import Dispatcher, Scope
from worker.pipeline.execution import Execution
from worker.pipeline.handover import Handover
from worker.pipeline.requests import Tracked
from worker.pipeline.settlement import Settlement
from worker.settings import Settings


class Engine:
    """Intake, dispatch, execution, settlement and hand-over of one broker session."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        http: httpx.AsyncClient,
        settlement: Settlement,
        tasks: asyncio.TaskGroup,
        limiters: Limiters,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        # The process's limiters and adapters (see Limiters): a new session keeps what earlier
        # ones sent and what the targets taught them.
        self.adapters: dict[str, Adapter] = {
            name: limiters.kept(name, functools.partial(make_adapter, target, settings))
            for name, target in settings.targets.items()
        }
        self.limiters = limiters
        for name, target in settings.targets.items():
            metrics.rate_limit_allowed.labels(name).set(self.limiters.allowed(name, target))
        self.coalescer = Coalescer()
        self.settlement = settlement
        self.dispatcher = Dispatcher(
            settings=settings,
            metrics=metrics,
            http=http,
            limiters=self.limiters,
            coalescer=self.coalescer,
            execution=Execution(self.adapters, metrics),
            publish=settlement.answer,
            tasks=tasks,
        )
        self.handover = Handover(settlement, self.coalescer, self.dispatcher, metrics)
        self._capped: dict[tuple[str, str], Operation] = {}

    # -- intake ---------------------------------------------------------------------------

    def accept(self, tracked: Tracked) -> None:
        """Queue a valid request's ids (its rejected ids are answered by the caller)."""
        req = tracked.request
        adapter = self.adapters[req.target]
        key = BatchKey(req.operation.name, req.target, req.scope, params_key(req.params))
        scope = self.dispatcher.scope(key, tracked.partition)
        now = time.monotonic()
        self.settlement.add(tracked)
        op = self._operation(req)
        before = self.coalescer.pending
        ids = tracked.pending_ids  # a continuation: what was not answered before
        for item_id in ids:
            payload = req.payload(item_id)
            cost = adapter.cost(op, item_id, payload)
            self.coalescer.add(op, key, item_id, tracked, now, cost, payload, tracked.priority)
        # Ids that joined an item already pending add nothing: the gauge counts items.
        self.metrics.pending_items.labels(*key.labels).inc(self.coalescer.pending - before)
        self.metrics.lane_items.labels(tracked.lane).inc(len(ids))
        self.dispatcher.ready(scope, key)

    def _operation(self, req: Request) -> Operation:
        """The operation as this target may send it: its batches capped by ``max_batch_items``."""
        cap = self.settings.targets[req.target].max_batch_items
        op = req.operation
        if cap is None or cap >= op.max_items:
            return op
        capped = dataclasses.replace(op, max_items=cap)
        return self._capped.setdefault((op.name, req.target), capped)

    # -- state ----------------------------------------------------------------------------

    @property
    def tracked(self) -> set[Tracked]:
        return self.settlement.tracked

    @property
    def scopes(self) -> dict[Hashable, Scope]:
        return self.dispatcher.scopes

    @property
    def flush(self) -> bool:
        return self.dispatcher.flush

    @flush.setter
    def flush(self, value: bool) -> None:
        self.dispatcher.flush = value

    @property
    def idle(self) -> bool:
        """Nothing accepted is unanswered and no batch is still publishing or acking."""
        settlement = self.settlement
        return not settlement.tracked and not settlement.continuing and not self.dispatcher.batches

    def unsettled(self) -> list[Tracked]:
        return self.settlement.unsettled()

    # -- shutdown and hand-over -------------------------------------------------------------

    def cancel(self) -> None:
        """Stop every dispatcher and batch (the session is over)."""
        self.dispatcher.cancel()

    def begin_drain(self) -> list[Tracked]:
        return self.handover.begin_drain()

    def give_back(self, select: Callable[[Tracked], bool]) -> list[Tracked]:
        return self.handover.give_back(select)

    def hand_over(self, partition: int) -> list[Tracked]:
        return self.handover.hand_over(partition)

    def busy(self, partition: int) -> bool:
        return self.handover.busy(partition)

    async def retire(self, partition: int) -> list[Tracked]:
        return await self.handover.retire(partition)
