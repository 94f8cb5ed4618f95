"""When a rate scope's next batch goes: a pure decision over the coalescer and plain numbers.

One dispatcher per rate scope asks, each time it wakes, which of the scope's batch keys to
send and when. A key is due when its batch is full, or when its oldest item has lingered
(``linger``; none while flushing for a drain or a hand-over). Where requests are scarce
(less than one a second: every request counts) a due batch that is not full waits on while
ids keep joining it (``Coalescer.still_filling``). Of the due keys the one due first goes,
the oldest on a tie. Then it goes only if the scope has fewer than ``max_inflight`` batches
running, and once its limiter has room: while it has none, nothing is taken, so batches keep
growing, and under backlog every request is full.

The priority lane's items (urgent) go first: a key with urgent items is due at once, the
one whose urgent items are oldest goes before any other, and the cap on batches in flight
does not hold it back. The backlog keeps a share of the scope's requests while both have
work: after ``backlog_every`` requests that carried urgent items only, the next is taken
backlog first (``Step.backlog_first``), past the cap on batches in flight like an urgent
one (the limiter keeps the same share for the polls: ``Limiter.backlog_every``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from worker.batching import BatchKey, Coalescer


@dataclass(frozen=True, slots=True)
class Pace:
    """The scope's pacing: how long a batch that is not full waits, and how many run."""

    linger: float
    scarce: bool
    max_inflight: int
    backlog_every: int = 9  # urgent-only requests in a row before the backlog's turn


@dataclass(frozen=True, slots=True)
class Step:
    """What the dispatcher does next: take ``key``'s batch now (once a slot is held), or,
    with no key, sleep ``wait`` seconds (None: until woken)."""

    key: BatchKey | None
    wait: float | None = None
    urgent: bool = False  # for the priority lane (its slot is taken ahead of others)
    backlog_first: bool = False  # the backlog's turn: its items first in the batch


def next_key(
    coalescer: Coalescer, keys: set[BatchKey], now: float, pace: Pace
) -> tuple[BatchKey | None, float]:
    """The key due first (the oldest on a tie) and in how many seconds (0: now). Keys with
    nothing pending are dropped from ``keys``."""
    best: BatchKey | None = None
    best_due = float("inf")
    for key in list(keys):
        due = coalescer.due_in(key, now, pace.linger)
        if due is None:
            keys.discard(key)
            continue
        if due == 0.0 and pace.scarce:
            due = coalescer.still_filling(key, now, pace.linger)
        if due < best_due or (
            due == best_due and best is not None and coalescer.oldest(key) < coalescer.oldest(best)
        ):
            best, best_due = key, due
    return best, best_due


def decide(
    coalescer: Coalescer,
    keys: set[BatchKey],
    now: float,
    pace: Pace,
    inflight: int,
    room_in: Callable[[], float],
    backlog_turn: bool = False,
) -> Step:
    """The dispatcher's next step; ``room_in`` is the limiter's wait for a free slot (asked
    only once a batch is due and may run). ``backlog_turn``: the backlog's share is due."""
    urgent = _oldest(coalescer, keys, coalescer.urgent_since)
    if urgent is not None:
        # The backlog's turn passes the cap on batches in flight, as urgent batches do:
        # else a flood of urgent jobs that keeps the cap full would starve it for good.
        backlog = _oldest(coalescer, keys, coalescer.backlog_since) if backlog_turn else None
        room = room_in()
        if room > 0:
            return Step(None, room)
        if backlog is not None:
            return Step(backlog, backlog_first=True)
        return Step(urgent, urgent=True)
    key, due = next_key(coalescer, keys, now, pace)
    if key is None:
        return Step(None)
    if due > 0:
        return Step(None, due)
    if inflight >= pace.max_inflight:
        return Step(None)  # woken when a batch finishes
    room = room_in()
    if room > 0:
        return Step(None, room)  # items keep arriving: the batch keeps growing
    return Step(key)


def _oldest(
    coalescer: Coalescer, keys: set[BatchKey], since: Callable[[BatchKey], float | None]
) -> BatchKey | None:
    """The key whose items of one side (``since``: when its oldest became ready, None when
    it has none) are oldest."""
    best: BatchKey | None = None
    best_at = float("inf")
    for key in keys:
        at = since(key)
        if at is not None and at < best_at:
            best, best_at = key, at
    return best
