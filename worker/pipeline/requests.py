"""The pipeline's records: one consumed request message (``Tracked``) and one item's result
for it (``Answer``), with the outcome and the reply they become."""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from worker.apis.adapters import ItemResult
from worker.messages import Outcome, Reply, ReplyItem, Request, utc_now
from worker.outcomes import Heading

_SEQ = itertools.count()


class Delivery(Protocol):
    """The broker's handle on one consumed message."""

    async def ack(self) -> None: ...

    async def nack(self, requeue: bool) -> None: ...


class Unit(Protocol):
    """Requests that go back to the broker together or not at all (a bundle of them in
    partitioned mode, ``worker.broker.bundles``)."""

    @property
    def bound(self) -> bool:
        """A hand-over must finish all of them (they cannot be forgotten any more)."""
        ...


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
    trace: Any = None  # the consume span's context when tracing is on (worker/tracing.py)
    priority: bool = False  # consumed from the priority lane
    consumed_at: float = field(default_factory=time.time)  # epoch seconds
    # A continuation (worker/pipeline/continuation.py): the ids answered before, not sent
    # again, and the original request body it carries.
    done: frozenset[str] = frozenset()
    source: bytes | None = None
    held: bool = False  # taken in from a hold queue
    continued: bool = False  # being continued: no reply, its continuation answers for it
    unit: Unit | None = None  # partitioned mode: the bundle it came in, if any

    @property
    def published_at(self) -> float:
        """When it was published, as far as the worker can tell: its AMQP timestamp, else
        when the worker consumed it (what a scope cancel is compared with, at intake and
        live alike)."""
        return self.timestamp if self.timestamp is not None else self.consumed_at

    @property
    def pending_ids(self) -> list[str]:
        """Its valid ids not answered before it was taken in (all but ``done``)."""
        done = self.done
        return [i for i in self.request.ids if i not in done] if done else list(self.request.ids)

    @property
    def lane(self) -> str:
        """The lane it came from, as the metrics label it: ``priority`` or ``main``."""
        return "priority" if self.priority else "main"

    def note(self, item_id: str, result: ItemResult) -> None:
        if self.reply_to is not None and result.status != "succeeded":
            self.answers[item_id] = result

    @property
    def heading(self) -> Heading:
        """What each of its outcomes and its reply say about it."""
        req = self.request
        scope = () if req.scope is None else ((req.operation.scope_field, req.scope),)
        return Heading(req.request_id, req.operation.name, req.target, scope)

    def reply(self) -> Reply:
        """The reply: every distinct id of the message in message order."""
        answers = self.answers
        items = []
        for item_id in self.request.distinct_ids:
            result = answers.get(item_id)
            if result is None:
                items.append(ReplyItem(item_id, "succeeded"))
            else:
                items.append(ReplyItem(item_id, result.status, result.error))
        return self.heading.reply(tuple(items), utc_now())

    def outcome(self, item_id: str, result: ItemResult, batch_id: str | None) -> Outcome:
        r = result
        return self.heading.outcome(
            item_id, r.status, r.error, r.attempts, batch_id, r.job_id, utc_now()
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
