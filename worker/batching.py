"""Coalescing ids into batches, keeping per-item order. Pure: no clock, no I/O.

Every consumed id becomes an ``Item`` in the batch queue of its key (operation, target, scope,
params). Items on the same (target, scope, id) form a chain: only the head of a chain may be
sent, the others wait until it is done, so operations on one id take effect in consumption
order even across batches. A request for an id whose chain tail has the same key and payload
and is not yet sent joins that item instead (sent once, every requester answered).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from worker import exactjson
from worker.apis.base import BatchKey, Operation, Payload

__all__ = ["BatchKey", "Coalescer", "Item", "OrderKey", "withdraw"]

OrderKey = tuple[str, str | None, str]  # target, scope, id


@dataclass(eq=False, slots=True)
class Item:
    """One id (with its payload, if the operation has one) to send once for one operation,
    on behalf of one or more requesters."""

    key: BatchKey
    operation: Operation
    id: str
    cost: int
    consumed_at: float
    waiters: list[Any] = field(default_factory=list)  # the requests this item answers
    ready_at: float | None = None
    sent: bool = False
    attempts: int = 0
    payload: Payload | None = None  # the item's data, opaque here (the adapter reads it)
    urgent: bool = False  # from the priority lane, or waiting ahead of an item that is

    @property
    def order_key(self) -> OrderKey:
        return (self.key.target, self.key.scope, self.id)


class _Queue:
    """Items of one batch key that may be sent now, oldest first: the priority lane's
    (``urgent``) and the backlog's (``items``)."""

    __slots__ = ("bytes", "items", "last_push", "taken_at", "urgent")

    def __init__(self) -> None:
        self.items: deque[Item] = deque()
        self.urgent: deque[Item] = deque()
        self.bytes = 0
        self.last_push = 0.0
        self.taken_at = 0.0  # when a batch was last taken from here

    def push(self, item: Item, now: float) -> None:
        (self.urgent if item.urgent else self.items).append(item)
        self.bytes += item.cost
        self.last_push = now

    def __len__(self) -> int:
        return len(self.items) + len(self.urgent)

    def first(self) -> Item:
        return self.urgent[0] if self.urgent else self.items[0]

    def promote(self, item: Item) -> None:
        """A ready backlog item goes to the priority lane's side (it waits ahead of an
        urgent one on its id)."""
        self.items.remove(item)  # identity: Item compares by identity (eq=False)
        self.urgent.append(item)


Chain = Item | deque[Item]  # one item alone (the common case), or several, oldest first


class Coalescer:
    """Holds items until they are taken as batches.

    A chain of one item is the item itself, not a deque: a deque costs about 600 bytes,
    and under a backlog of large messages almost every id is alone in its chain (a
    prefetch of 4,000 messages of 100 ids is 400,000 chains).
    """

    def __init__(self) -> None:
        self._queues: dict[BatchKey, _Queue] = {}
        self._chains: dict[OrderKey, Chain] = {}
        self.pending = 0  # items added and not yet done

    def add(
        self,
        operation: Operation,
        key: BatchKey,
        item_id: str,
        waiter: Any,
        now: float,
        cost: int = 0,
        payload: Payload | None = None,
        urgent: bool = False,
    ) -> Item:
        """Add one requester's id; returns the item that will answer it (maybe an existing one).

        ``cost`` is the bytes the item adds to a request body (for body-size limits).
        ``urgent``: from the priority lane. It still comes after every operation already
        held on its id; those not yet sent become urgent with it (they move ahead together).
        """
        order_key: OrderKey = (key.target, key.scope, item_id)
        chain = self._chains.get(order_key)
        if chain is not None:
            tail = chain if isinstance(chain, Item) else chain[-1]
            if tail.key == key and not tail.sent and same_payload(tail.payload, payload):
                tail.waiters.append(waiter)
                if urgent:
                    self._promote(chain)
                return tail
        item = Item(key, operation, item_id, cost, now, [waiter], payload=payload, urgent=urgent)
        self.pending += 1
        if chain is None:
            self._chains[order_key] = item
            self._make_ready(item, now)
            return item
        if urgent:
            self._promote(chain)
        if isinstance(chain, Item):
            self._chains[order_key] = deque((chain, item))
        else:
            chain.append(item)
        return item

    def _promote(self, chain: Chain) -> None:
        """Every unsent item of the chain becomes urgent (the ready head moves to its
        queue's urgent side); sent ones are in flight and count as urgent for their polls."""
        for item in _items(chain):
            if item.urgent:
                continue
            item.urgent = True
            if not item.sent and item.ready_at is not None:
                queue = self._queues.get(item.key)
                if queue is not None:
                    queue.promote(item)

    def _make_ready(self, item: Item, now: float) -> None:
        item.ready_at = now
        queue = self._queues.get(item.key)
        if queue is None:
            queue = self._queues[item.key] = _Queue()
        queue.push(item, now)

    def keys(self) -> Iterator[BatchKey]:
        return iter(list(self._queues))

    def size(self, key: BatchKey) -> int:
        queue = self._queues.get(key)
        return len(queue) if queue else 0

    def backlog(self, key: BatchKey) -> int:
        """How many of the key's ready items are not urgent."""
        queue = self._queues.get(key)
        return len(queue.items) if queue else 0

    def urgent_since(self, key: BatchKey) -> float | None:
        """When the key's oldest ready urgent item became ready; None when it has none."""
        queue = self._queues.get(key)
        return queue.urgent[0].ready_at or 0.0 if queue and queue.urgent else None

    def backlog_since(self, key: BatchKey) -> float | None:
        """When the key's oldest ready backlog item became ready; None when it has none."""
        queue = self._queues.get(key)
        return queue.items[0].ready_at or 0.0 if queue and queue.items else None

    def is_full(self, key: BatchKey) -> bool:
        queue = self._queues.get(key)
        if queue is None or not len(queue):
            return False
        op = queue.first().operation
        too_big = op.max_body_bytes is not None and queue.bytes >= op.max_body_bytes
        return len(queue) >= op.max_items or too_big

    def due_in(self, key: BatchKey, now: float, linger: float) -> float | None:
        """Seconds until this key's batch should go (0: now), None when it has nothing.
        Urgent items are due at once: they go in the scope's next request."""
        queue = self._queues.get(key)
        if queue is None or not len(queue):
            return None
        if queue.urgent or self.is_full(key):
            return 0.0
        ready_at = queue.items[0].ready_at
        oldest = ready_at if ready_at is not None else now
        return max(0.0, oldest + linger - now)

    def still_filling(self, key: BatchKey, now: float, linger: float) -> float:
        """For a batch that is due but not full: how much longer to wait while ids keep
        joining it (until none joined for a linger), at most 4 lingers after it began
        forming: its oldest id came, or the batch before it was taken (items left behind by
        a full batch have not been the head of anything yet). Worth it where requests are
        scarce: a part-full request there wastes a slot that would have carried a full one
        a moment later. The quiet counts from the last take too: right after a take the
        worker's own loop is busy sending and answering that batch, and intake pauses with
        it, which is no sign that the ids have stopped coming. Never for urgent items."""
        queue = self._queues.get(key)
        if queue is None or not len(queue) or queue.urgent or self.is_full(key):
            return 0.0
        quiet_in = max(queue.last_push, queue.taken_at) + linger - now
        ready_at = queue.items[0].ready_at
        began = max(ready_at if ready_at is not None else now, queue.taken_at)
        cap_in = began + 4 * linger - now
        return max(0.0, min(quiet_in, cap_in))

    def oldest(self, key: BatchKey) -> float:
        queue = self._queues.get(key)
        if queue is None or not len(queue):
            return float("inf")
        ready_at = queue.first().ready_at
        return ready_at if ready_at is not None else 0.0

    def take(
        self,
        key: BatchKey,
        body_overhead: int = 2,
        now: float = 0.0,
        backlog_first: bool = False,
    ) -> list[Item]:
        """Take the largest batch the API allows for ``key``: urgent items first (the backlog
        first when ``backlog_first``: its share of a scope's requests), oldest first within
        each; the rest of the room is filled from the other side."""
        queue = self._queues.get(key)
        if queue is None:
            return []
        queue.taken_at = now
        batch: list[Item] = []
        budget = None
        sides = (queue.items, queue.urgent) if backlog_first else (queue.urgent, queue.items)
        for side in sides:
            while side:
                item = side[0]
                op = item.operation
                if budget is None and op.max_body_bytes is not None:
                    budget = op.max_body_bytes - body_overhead
                full = len(batch) >= op.max_items
                if full or (budget is not None and item.cost > budget and batch):
                    break
                side.popleft()
                queue.bytes -= item.cost
                if budget is not None:
                    budget -= item.cost
                item.sent = True
                batch.append(item)
        if not len(queue):
            del self._queues[key]
        return batch

    def done(self, item: Item, now: float) -> Item | None:
        """``item`` has its outcome; returns the next item on the same id, now ready, if any."""
        order_key = item.order_key
        chain = self._chains[order_key]
        self.pending -= 1
        if isinstance(chain, Item):
            assert chain is item, "items of one id must finish in order"
            del self._chains[order_key]
            return None
        head = chain.popleft()
        assert head is item, "items of one id must finish in order"
        nxt = chain[0]
        if len(chain) == 1:
            self._chains[order_key] = nxt
        self._make_ready(nxt, now)
        return nxt

    def done_unresolved(self, item: Item) -> list[Item]:
        """``item`` has its outcome but its fate at the API is unknown (a job that may still
        apply): the items waiting behind it on its id are taken out with it, never to be
        sent (whatever they did could be undone by the stale job); returns them."""
        order_key = item.order_key
        items = _items(self._chains.pop(order_key))
        assert items[0] is item, "items of one id must finish in order"
        self.pending -= len(items)
        return items[1:]

    def chains(self) -> Iterator[list[Item]]:
        """Each id's items, oldest first (a copy)."""
        return iter([_items(chain) for chain in self._chains.values()])

    def discard_unsent(self, drop: Callable[[Item], bool]) -> list[Item]:
        """Remove unsent items for which ``drop`` is true; each must be at its chain's tail
        (nothing after it kept), or per-item order would break."""
        dropped: list[Item] = []
        for order_key, chain in list(self._chains.items()):
            items = _items(chain)
            while items and not items[-1].sent and drop(items[-1]):
                dropped.append(items.pop())
            self._store(order_key, items)
        self._forget(dropped)
        return dropped

    def discard_chains(self, drop: Callable[[Item], bool]) -> list[Item]:
        """Remove every chain all of whose items ``drop`` accepts, sent or not (their batches
        were abandoned); other chains are left whole."""
        dropped: list[Item] = []
        for order_key, chain in list(self._chains.items()):
            items = _items(chain)
            if all(drop(item) for item in items):
                dropped.extend(items)
                del self._chains[order_key]
        self._forget(dropped)
        return dropped

    def _store(self, order_key: OrderKey, items: list[Item]) -> None:
        if not items:
            del self._chains[order_key]
        elif len(items) == 1:
            self._chains[order_key] = items[0]
        else:
            self._chains[order_key] = deque(items)

    def _forget(self, dropped: list[Item]) -> None:
        gone = {id(item) for item in dropped}
        for key, queue in list(self._queues.items()):
            kept = [item for item in queue.items if id(item) not in gone]
            kept_urgent = [item for item in queue.urgent if id(item) not in gone]
            if len(kept) + len(kept_urgent) != len(queue):
                queue.items = deque(kept)
                queue.urgent = deque(kept_urgent)
                queue.bytes = sum(item.cost for item in kept + kept_urgent)
            if not len(queue):
                del self._queues[key]
        self.pending -= len(dropped)


def withdraw(
    coalescer: Coalescer, drop: Callable[[Item, Any], bool], now: float
) -> list[tuple[Item, Any]]:
    """Take the waiters ``drop`` selects off every unsent item of ``coalescer`` (an
    operator's cancel); returns each (item, waiter) taken off. (A function: the class is
    long enough.)

    An item left without waiters leaves its chain, wherever it is in it (it was never
    sent, so per-id order of the rest holds); when it was its chain's ready head, the
    next item becomes ready. Sent items (in a request, in flight or waiting for a retry)
    are never touched: they keep their true outcome."""
    taken: list[tuple[Item, Any]] = []
    gone: list[Item] = []
    for order_key, chain in list(coalescer._chains.items()):
        items = _items(chain)
        kept: list[Item] = []
        for item in items:
            if not item.sent:
                off = [w for w in item.waiters if drop(item, w)]
                if off:
                    taken.extend((item, w) for w in off)
                    item.waiters = [w for w in item.waiters if not any(w is o for o in off)]
                    if not item.waiters:
                        gone.append(item)
                        continue
            kept.append(item)
        if len(kept) == len(items):
            continue
        coalescer._store(order_key, kept)
        head = kept[0] if kept else None
        if head is not None and not head.sent and head.ready_at is None:
            coalescer._make_ready(head, now)
    coalescer._forget(gone)
    return taken


def _items(chain: Chain) -> list[Item]:
    return [chain] if isinstance(chain, Item) else list(chain)


def same_payload(a: Payload | None, b: Payload | None) -> bool:
    """Equal as the API would see them: the same JSON (Python's ``==`` takes ``true`` for
    ``1`` and ``1.0``, which the API does not)."""
    if a is None or b is None:
        return a is b
    return exactjson.dumps(a, sort_keys=True) == exactjson.dumps(b, sort_keys=True)
