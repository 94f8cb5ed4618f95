"""Operator control in the pipeline (CONTRACT "Control", issue 23): cancels at intake and
live, and what a ``status`` reply says the pipeline holds.

The control state itself (``worker.control.state``) is the process's, read from the control
stream; this module asks it about requests and withdraws what a cancel covers from the
Coalescer. Answering stays the settlement's: the withdrawn items go to
``Settlement.answer`` as ``rejected`` with the error code ``cancelled``.
"""

from __future__ import annotations

from collections.abc import Callable

from worker.apis.adapters import ItemResult
from worker.batching import BatchKey, Coalescer, Item
from worker.batching import withdraw as take_off
from worker.control.messages import ScopeSel
from worker.control.state import Cancel, ControlState
from worker.errors import ErrorCode, ErrorInfo
from worker.messages import Request
from worker.metrics import Metrics
from worker.pipeline.requests import Answer, Tracked
from worker.registry import OPERATIONS


def request_scope(req: Request) -> ScopeSel:
    """The request's scope as control messages name it: (scope field, value; None for the
    primary)."""
    return (req.operation.scope_field, req.scope)


def cancel_of(state: ControlState, req: Request, published_at: float, now: float) -> Cancel | None:
    """The cancel in force that withdraws this request's unsent items: one of its request id,
    or one of its scope sent at or after ``published_at``."""
    return state.cancelled(req.request_id, now) or state.scope_cancelled(
        req.target, request_scope(req), published_at, now
    )


def cancel_error(cancel: Cancel) -> ErrorInfo:
    who = cancel.user_id or cancel.app_id
    by = f" by {who}" if who else ""
    why = f": {cancel.reason}" if cancel.reason else ""
    return ErrorInfo(str(ErrorCode.CANCELLED), f"cancelled{by} before it was sent{why}", False)


def cancelled(tracked: Tracked, item_id: str, cancel: Cancel) -> Answer:
    return Answer(tracked, item_id, ItemResult("rejected", cancel_error(cancel), 0), None)


def intake_answers(tracked: Tracked, cancel: Cancel) -> list[Answer]:
    """A consumed request a cancel covers: every valid id answered ``cancelled`` (a
    continuation: those not answered before)."""
    return [cancelled(tracked, item_id, cancel) for item_id in tracked.pending_ids]


def withdraw(
    coalescer: Coalescer, state: ControlState, metrics: Metrics, now: float, clock: float
) -> list[Answer]:
    """Take every unsent item of the requests a cancel in force covers off the Coalescer
    (``now``: the monotonic time for readiness; ``clock``: epoch seconds for the state).
    A request without an AMQP timestamp counts as published when it was consumed, as at
    intake. Returns the answers to publish."""
    found: dict[int, Cancel | None] = {}

    def covers(waiter: Tracked) -> Cancel | None:
        key = id(waiter)
        if key not in found:
            found[key] = (
                None
                if waiter.settled
                else cancel_of(state, waiter.request, waiter.published_at, clock)
            )
        return found[key]

    def drop(item: Item, waiter: Tracked) -> bool:
        return covers(waiter) is not None

    taken = take_off(coalescer, drop, now)
    answers = []
    gone: set[int] = set()
    for item, waiter in taken:
        cancel = covers(waiter)
        assert cancel is not None
        answers.append(cancelled(waiter, item.id, cancel))
        if not item.waiters and id(item) not in gone:
            gone.add(id(item))
            metrics.pending_items.labels(*item.key.labels).dec()
    return answers


def key_paused(state: ControlState) -> Callable[[BatchKey], bool]:
    """For the dispatcher: whether a batch key's scope is paused (cheap while none is)."""

    def paused(key: BatchKey) -> bool:
        if not state.any_paused:
            return False
        op = OPERATIONS.get(key.operation)
        scope = None if op is None else (op.scope_field, key.scope)
        return state.paused(key.target, scope) is not None

    return paused


ScopeKey = tuple[str, ScopeSel | None]


def holdings(coalescer: Coalescer) -> dict[ScopeKey, list[int]]:
    """Per (target, scope): [unsent items, sent items not yet answered] (for ``status``)."""
    out: dict[ScopeKey, list[int]] = {}
    for chain in coalescer.chains():
        for item in chain:
            scope: ScopeSel = (item.operation.scope_field, item.key.scope)
            counts = out.setdefault((item.key.target, scope), [0, 0])
            counts[1 if item.sent else 0] += 1
    return out
