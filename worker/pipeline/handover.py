"""Letting go of work: the drain on shutdown, and a partition handed on to another replica.

What was not started goes back to the broker, in consumption order; what was started is
finished (or, past a deadline, abandoned unanswered). Per-item order decides what "started"
covers: a request that must stay keeps every earlier operation on its ids too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from worker.batching import Coalescer, Item, withdraw
from worker.metrics import Metrics
from worker.pipeline.continuation import Continuing
from worker.pipeline.dispatch import Dispatcher
from worker.pipeline.requests import Tracked
from worker.pipeline.settlement import Settlement


class Handover:
    """Gives requests back and retires partitions, over the settlement's requests, the
    coalescer and the scopes."""

    def __init__(
        self,
        settlement: Settlement,
        coalescer: Coalescer,
        dispatcher: Dispatcher,
        metrics: Metrics,
    ) -> None:
        self.settlement = settlement
        self.coalescer = coalescer
        self.dispatcher = dispatcher
        self.metrics = metrics

    def begin_drain(self) -> list[Tracked]:
        """Stop lingering; give back every request none of whose ids was sent yet."""
        self.dispatcher.flush = True
        return self.give_back(lambda tracked: True)

    def give_back(self, select: Callable[[Tracked], bool]) -> list[Tracked]:
        """Forget the selected requests none of whose ids was sent yet; the rest of the
        selected go on, without lingering.

        Returns the requests to give back to the broker. A request that must stay (some id
        already sent) keeps every earlier operation on its ids too, so per-item order holds.
        """
        tracked = self.settlement.tracked
        keep = self._keep({t for t in tracked if t.started or not select(t)}, units=True)
        # In consumption order: a quorum queue delivers returned messages first, in the order
        # they came back, so the order of operations on an id survives the hand-back.
        give_back = sorted((t for t in tracked if t not in keep), key=lambda t: t.seq)
        self.settlement.give_back(give_back)
        dropped = self.coalescer.discard_unsent(lambda item: all(w.settled for w in item.waiters))
        self._dropped(dropped)
        self.dispatcher.wake_all()
        return give_back

    def staying(
        self, select: Callable[[Tracked], bool], stays: Callable[[Tracked], bool]
    ) -> set[Tracked]:
        """What ``let_go(select, stays)`` keeps (changes nothing): the requests not selected,
        the started ones that ``stays``, and every request with an operation earlier in a
        chain than one of theirs."""
        tracked = self.settlement.tracked
        return self._keep({t for t in tracked if not select(t) or (t.started and stays(t))})

    def let_go(
        self, select: Callable[[Tracked], bool], stays: Callable[[Tracked], bool]
    ) -> tuple[list[Tracked], list[tuple[Tracked, list[str]]]]:
        """A pause: every selected request not answered leaves, unless it is started and
        ``stays`` (it cannot be continued), or has an operation earlier in a chain than one
        that stays or than one not selected (``staying``). Their unsent items are withdrawn
        from the Coalescer at once.

        Returns (``whole``: none of their ids was sent: forgotten, to be moved as they are;
        ``started``: each with the ids withdrawn from it, kept until its sent items are
        answered, its delivery a ``Continuing`` that settles without a reply). A started
        request with nothing left unsent is not let go: it finishes and replies as usual.
        Both in consumption order."""
        tracked = self.settlement.tracked
        chosen = [t for t in tracked if not t.settled and select(t)]
        keep = self.staying(select, stays)
        leaving = {id(t): t for t in chosen if t not in keep}

        def drop(item: Item, waiter: Tracked) -> bool:
            return id(waiter) in leaving and leaving[id(waiter)] is waiter

        withdrawn: dict[int, list[str]] = {}
        gone: set[int] = set()
        for item, waiter in withdraw(self.coalescer, drop, time.monotonic()):
            withdrawn.setdefault(id(waiter), []).append(item.id)
            if not item.waiters and id(item) not in gone:
                gone.add(id(item))
                self.metrics.pending_items.labels(*item.key.labels).dec()
        whole = sorted((t for t in leaving.values() if not t.started), key=lambda t: t.seq)
        started = sorted(
            (t for t in leaving.values() if t.started and id(t) in withdrawn), key=lambda t: t.seq
        )
        self.settlement.give_back(whole)
        out: list[tuple[Tracked, list[str]]] = []
        for t in started:
            ids = withdrawn[id(t)]
            delivery = t.delivery = Continuing(t.delivery)
            if self.settlement.hold_back(t, len(ids)):  # its sent items were all answered
                delivery.ready.set()
            out.append((t, ids))
        self.dispatcher.wake_all()
        return whole, out

    def _keep(self, keep: set[Tracked], units: bool = False) -> set[Tracked]:
        """``keep`` and every request with an operation earlier in a chain than one of
        theirs (until nothing changes: a kept request may pull in others). ``units``: also
        every request of a unit (a bundle) that is bound or has a request kept: a unit goes
        back to the broker whole (a pause moves requests one by one, so it does not ask)."""
        chains = list(self.coalescer.chains())
        changed = True
        while changed:
            changed = False
            if units:
                kept = {id(t.unit) for t in keep if t.unit is not None}
                for t in self.settlement.tracked:
                    unit = t.unit
                    if unit is not None and t not in keep and (id(unit) in kept or unit.bound):
                        keep.add(t)
                        changed = True
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
        return keep

    def _dropped(self, items: Iterable[Item]) -> None:
        for item in items:
            self.metrics.pending_items.labels(*item.key.labels).dec()

    def hand_over(self, partition: int) -> list[Tracked]:
        """The partition is to be handed on: give back its requests not started, and send
        the ones that stay without lingering."""
        for scope in self.dispatcher.scopes.values():
            if scope.partition == partition:
                scope.flush = True
        return self.give_back(lambda tracked: tracked.partition == partition)

    def busy(self, partition: int) -> bool:
        """Some request of this partition is not answered, or a batch of it is still
        publishing or acking."""
        settlement = self.settlement
        return any(
            t.partition == partition for t in (*settlement.tracked, *settlement.continuing)
        ) or any(s.batches for s in self.dispatcher.scopes.values() if s.partition == partition)

    async def retire(self, partition: int) -> list[Tracked]:
        """The partition is being handed on: forget its scopes (owning it again starts with a
        takeover wait) and its requests still unanswered (they go back to the broker, for the
        next owner), then stop its dispatchers and any batch still running. Returns what was
        still unanswered."""
        tasks = self.dispatcher.retire(partition)
        unanswered = sorted(
            (t for t in self.settlement.tracked if t.partition == partition), key=lambda t: t.seq
        )
        self.settlement.give_back(unanswered)
        gone = {id(t) for t in unanswered}
        dropped = self.coalescer.discard_chains(
            lambda item: all(id(w) in gone or w.settled for w in item.waiters)
        )
        self._dropped(dropped)
        for task in tasks:
            task.cancel()
        if tasks:  # state is settled above: a cancel landing here leaves nothing half done
            await asyncio.wait(tasks)
        return unanswered
