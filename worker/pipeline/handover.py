"""Letting go of work: the drain on shutdown, and a partition handed on to another replica.

What was not started goes back to the broker, in consumption order; what was started is
finished (or, past a deadline, abandoned unanswered). Per-item order decides what "started"
covers: a request that must stay keeps every earlier operation on its ids too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from worker.batching import Coalescer, Item
from worker.metrics import Metrics
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
        keep = self._keep({t for t in tracked if t.started or not select(t)})
        # In consumption order: a quorum queue delivers returned messages first, in the order
        # they came back, so the order of operations on an id survives the hand-back.
        give_back = sorted((t for t in tracked if t not in keep), key=lambda t: t.seq)
        self.settlement.give_back(give_back)
        dropped = self.coalescer.discard_unsent(lambda item: all(w.settled for w in item.waiters))
        self._dropped(dropped)
        self.dispatcher.wake_all()
        return give_back

    def kept(self, select: Callable[[Tracked], bool]) -> set[Tracked]:
        """What ``give_back(select)`` would keep (changes nothing)."""
        tracked = self.settlement.tracked
        return self._keep({t for t in tracked if t.started or not select(t)})

    def _keep(self, keep: set[Tracked]) -> set[Tracked]:
        """``keep`` and every request with an operation earlier in a chain than one of
        theirs (until nothing changes: a kept request may pull in others)."""
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
        return any(t.partition == partition for t in self.settlement.tracked) or any(
            s.batches for s in self.dispatcher.scopes.values() if s.partition == partition
        )

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
