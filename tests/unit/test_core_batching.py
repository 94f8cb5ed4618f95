"""Coalescing and per-id order (worker/batching.py): pure, no clock, no I/O."""

from __future__ import annotations

from collections import defaultdict
from itertools import groupby

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from worker.apis.base import Operation
from worker.batching import BatchKey, Coalescer, Item
from worker.registry import OPERATIONS

PUBLISH = OPERATIONS["datocms.items.publish"]
UNPUBLISH = OPERATIONS["datocms.items.unpublish"]
DELETE = OPERATIONS["bloomreach.catalog_items.delete"]
PUB_KEY = BatchKey(operation=PUBLISH.name, target="main", scope=None)
UNPUB_KEY = BatchKey(operation=UNPUBLISH.name, target="main", scope=None)
DEL_KEY = BatchKey(operation=DELETE.name, target="shop", scope="cat")


def add(
    c: Coalescer,
    op: Operation,
    key: BatchKey,
    item_id: str,
    now: float = 1.0,
    cost: int = 0,
    waiter: object = None,
) -> Item:
    return c.add(op, key, item_id, waiter if waiter is not None else object(), now, cost)


def ids(batch: list[Item]) -> list[str]:
    return [item.id for item in batch]


def test_take_returns_oldest_first_and_empties_the_key() -> None:
    """Items come out in the order they became ready; an empty key disappears."""
    c = Coalescer()
    for n, item_id in enumerate(["c", "a", "b"]):
        add(c, PUBLISH, PUB_KEY, item_id, now=float(n + 1))
    assert ids(c.take(PUB_KEY)) == ["c", "a", "b"]
    assert c.size(PUB_KEY) == 0
    assert list(c.keys()) == []
    assert c.take(PUB_KEY) == []


def test_batch_never_exceeds_max_items() -> None:
    """450 DatoCMS ids leave as 200, 200, 50."""
    c = Coalescer()
    for n in range(450):
        add(c, PUBLISH, PUB_KEY, f"i{n}")
    sizes = [len(c.take(PUB_KEY)) for _ in range(3)]
    assert sizes == [200, 200, 50]
    first = [f"i{n}" for n in range(200)]
    c2 = Coalescer()
    for item_id in first:
        add(c2, PUBLISH, PUB_KEY, item_id)
    assert ids(c2.take(PUB_KEY)) == first


def test_bloomreach_batch_never_exceeds_body_bytes() -> None:
    """Costs are summed with the body overhead; the batch stops before max_body_bytes."""
    c = Coalescer()
    cost = 3_000_000
    for n in range(4):
        add(c, DELETE, DEL_KEY, f"i{n}", cost=cost)
    assert c.is_full(DEL_KEY)
    first = c.take(DEL_KEY)
    assert ids(first) == ["i0", "i1", "i2"]  # 2 + 3 * 3 MB <= 10 MB, a fourth would not fit
    assert sum(i.cost for i in first) + 2 <= DELETE.max_body_bytes
    assert ids(c.take(DEL_KEY)) == ["i3"]


def test_single_item_larger_than_the_body_limit_is_still_taken_alone() -> None:
    """An oversized item cannot block its queue: it leaves alone (the API will judge it)."""
    c = Coalescer()
    add(c, DELETE, DEL_KEY, "huge", cost=DELETE.max_body_bytes + 1)
    add(c, DELETE, DEL_KEY, "small", cost=10)
    assert ids(c.take(DEL_KEY)) == ["huge"]
    assert ids(c.take(DEL_KEY)) == ["small"]


def test_bloomreach_count_limit_applies_too() -> None:
    """10,001 tiny ids leave as 10,000 and 1."""
    c = Coalescer()
    for n in range(10_001):
        add(c, DELETE, DEL_KEY, f"i{n}", cost=1)
    assert len(c.take(DEL_KEY)) == 10_000
    assert len(c.take(DEL_KEY)) == 1


def test_same_id_same_operation_not_yet_sent_is_merged() -> None:
    """Two requests for the same unsent (op, id): one item, both waiters, one pending."""
    c = Coalescer()
    w1, w2 = object(), object()
    first = add(c, PUBLISH, PUB_KEY, "a", waiter=w1)
    second = add(c, PUBLISH, PUB_KEY, "a", waiter=w2)
    assert second is first
    assert first.waiters == [w1, w2]
    assert c.pending == 1
    assert ids(c.take(PUB_KEY)) == ["a"]


def test_same_id_after_it_was_sent_is_a_new_item_that_waits() -> None:
    """Once sent, a repeat is sent again, but only after the first is done."""
    c = Coalescer()
    first = add(c, PUBLISH, PUB_KEY, "a")
    assert c.take(PUB_KEY) == [first]
    second = add(c, PUBLISH, PUB_KEY, "a", now=2.0)
    assert second is not first
    assert c.pending == 2
    assert c.take(PUB_KEY) == []  # not ready while the first is in flight
    assert c.done(first, now=3.0) is second
    assert second.ready_at == 3.0
    assert c.take(PUB_KEY) == [second]
    assert c.done(second, now=4.0) is None
    assert c.pending == 0
    assert list(c.chains()) == []


def test_operations_on_one_id_are_released_in_consumption_order() -> None:
    """publish, unpublish, publish on one id: three items, one at a time, in that order."""
    c = Coalescer()
    p1 = add(c, PUBLISH, PUB_KEY, "a")
    u = add(c, UNPUBLISH, UNPUB_KEY, "a")
    p2 = add(c, PUBLISH, PUB_KEY, "a")
    assert len({id(p1), id(u), id(p2)}) == 3  # not merged across an unpublish
    assert add(c, PUBLISH, PUB_KEY, "a") is p2  # merged with the unsent tail
    assert c.size(UNPUB_KEY) == 0
    assert c.take(PUB_KEY) == [p1]
    assert c.take(UNPUB_KEY) == []
    assert c.done(p1, 2.0) is u
    assert c.take(PUB_KEY) == []
    assert c.take(UNPUB_KEY) == [u]
    assert c.done(u, 3.0) is p2
    assert c.take(PUB_KEY) == [p2]
    assert len(p2.waiters) == 2


def test_same_id_in_other_scope_is_independent() -> None:
    """Order is per (target, scope, id): another environment is not held back."""
    c = Coalescer()
    add(c, PUBLISH, PUB_KEY, "a")
    other_env = BatchKey(operation=PUBLISH.name, target="main", scope="sandbox")
    add(c, PUBLISH, other_env, "a")
    assert ids(c.take(PUB_KEY)) == ["a"]
    assert ids(c.take(other_env)) == ["a"]


def test_a_waiting_item_does_not_hold_back_other_ids_in_its_batch_key() -> None:
    """Only the blocked id waits; others of the same operation still go."""
    c = Coalescer()
    a1 = add(c, UNPUBLISH, UNPUB_KEY, "a")
    add(c, PUBLISH, PUB_KEY, "a")
    add(c, PUBLISH, PUB_KEY, "b")
    assert ids(c.take(PUB_KEY)) == ["b"]
    assert c.take(UNPUB_KEY) == [a1]


def test_done_out_of_order_is_refused() -> None:
    """done() on an item that is not its chain's head is a programming error."""
    c = Coalescer()
    add(c, PUBLISH, PUB_KEY, "a")
    second = add(c, UNPUBLISH, UNPUB_KEY, "a")
    with pytest.raises(AssertionError):
        c.done(second, 1.0)


def test_due_in_counts_the_linger_from_the_oldest_ready_item() -> None:
    """due_in = oldest ready time + linger - now, floored at 0; None when empty."""
    c = Coalescer()
    assert c.due_in(PUB_KEY, 10.0, 0.3) is None
    add(c, PUBLISH, PUB_KEY, "a", now=10.0)
    add(c, PUBLISH, PUB_KEY, "b", now=10.2)
    assert c.due_in(PUB_KEY, 10.1, 0.3) == pytest.approx(0.2)
    assert c.due_in(PUB_KEY, 10.3, 0.3) == 0.0
    assert c.due_in(PUB_KEY, 99.0, 0.3) == 0.0
    assert c.oldest(PUB_KEY) == 10.0
    assert c.oldest(UNPUB_KEY) == float("inf")


def test_due_in_is_zero_when_the_batch_is_full() -> None:
    """A full batch goes at once, without lingering."""
    c = Coalescer()
    for n in range(PUBLISH.max_items):
        add(c, PUBLISH, PUB_KEY, f"i{n}", now=5.0)
    assert c.is_full(PUB_KEY)
    assert c.due_in(PUB_KEY, 5.0, 10.0) == 0.0


def test_due_in_uses_release_time_for_an_item_freed_by_done() -> None:
    """An item that waited for its id counts its linger from when it became ready."""
    c = Coalescer()
    first = add(c, PUBLISH, PUB_KEY, "a", now=1.0)
    add(c, UNPUBLISH, UNPUB_KEY, "a", now=1.0)
    c.take(PUB_KEY)
    c.done(first, now=7.0)
    assert c.due_in(UNPUB_KEY, 7.1, 0.3) == pytest.approx(0.2)


def test_due_in_with_an_item_ready_at_time_zero() -> None:
    """A clock that starts at 0.0 (fake clocks, loop.time in tests) must linger the same."""
    c = Coalescer()
    add(c, PUBLISH, PUB_KEY, "a", now=0.0)
    assert c.due_in(PUB_KEY, 5.0, 1.0) == 0.0


def test_discard_unsent_drops_tail_items_and_keeps_sent_ones() -> None:
    """discard_unsent removes unsent chain tails matching the predicate; counts follow."""
    c = Coalescer()
    sent = add(c, PUBLISH, PUB_KEY, "a")
    c.take(PUB_KEY)
    waiting = add(c, UNPUBLISH, UNPUB_KEY, "a")
    ready_b = add(c, PUBLISH, PUB_KEY, "b", cost=5)
    ready_c = add(c, PUBLISH, PUB_KEY, "c", cost=7)
    dropped = c.discard_unsent(lambda item: item.id in {"a", "b"})
    assert {id(i) for i in dropped} == {id(waiting), id(ready_b)}
    assert c.pending == 2
    assert c.take(PUB_KEY) == [ready_c]
    assert c.done(sent, 2.0) is None  # the dropped unpublish is not released
    assert c.take(UNPUB_KEY) == []


def test_discard_unsent_never_drops_an_item_with_a_kept_successor() -> None:
    """Dropping stops at the first kept item from the tail, so order cannot break."""
    c = Coalescer()
    head = add(c, PUBLISH, PUB_KEY, "a")
    tail = add(c, UNPUBLISH, UNPUB_KEY, "a")
    assert c.discard_unsent(lambda item: item is head) == []
    assert [len(chain) for chain in c.chains()] == [2]
    assert c.discard_unsent(lambda item: True) == [tail, head]
    assert c.pending == 0
    assert list(c.keys()) == []
    assert c.size(PUB_KEY) == 0


def test_discard_recomputes_queue_bytes() -> None:
    """After a discard, body-size fullness is computed from the kept items only."""
    c = Coalescer()
    add(c, DELETE, DEL_KEY, "big", cost=DELETE.max_body_bytes)
    add(c, DELETE, DEL_KEY, "small", cost=1)
    assert c.is_full(DEL_KEY)
    c.discard_unsent(lambda item: item.id == "big")
    assert not c.is_full(DEL_KEY)
    assert ids(c.take(DEL_KEY)) == ["small"]


# --- property: random interleavings of add / take / done ------------------------------------

TINY_A = Operation("t.a", "datocms", "environment", False, max_items=3)
TINY_B = Operation("t.b", "datocms", "environment", False, max_items=2)
TINY_BYTES = Operation("t.c", "bloomreach", "catalog_id", True, max_items=4, max_body_bytes=12)
OPS = {op.name: op for op in (TINY_A, TINY_B, TINY_BYTES)}
IDS = ["x", "y", "z"]
SCOPES = ["s1", "s2"]


def runs(seq: list[str]) -> list[tuple[str, int]]:
    return [(op, len(list(group))) for op, group in groupby(seq)]


class CoalescerMachine(RuleBasedStateMachine):
    """Random add/take/done: limits, per-id order, one in flight per id, pending count."""

    def __init__(self) -> None:
        super().__init__()
        self.c = Coalescer()
        self.now = 0.0
        self.added: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.taken: dict[tuple[str, str], list[str]] = defaultdict(list)
        self.in_flight: list[Item] = []
        self.items: dict[int, Item] = {}
        self.finished = 0
        self.waiters = 0

    def tick(self) -> float:
        self.now += 1.0
        return self.now

    @rule(
        op=st.sampled_from(sorted(OPS)),
        scope=st.sampled_from(SCOPES),
        item_id=st.sampled_from(IDS),
        cost=st.integers(1, 6),
    )
    def add(self, op: str, scope: str, item_id: str, cost: int) -> None:
        operation = OPS[op]
        key = BatchKey(operation=op, target="t", scope=scope)
        item = self.c.add(operation, key, item_id, object(), self.tick(), cost)
        assert (item.key, item.id, item.sent) == (key, item_id, False)
        self.items[id(item)] = item
        self.added[(scope, item_id)].append(op)
        self.waiters += 1

    @rule(op=st.sampled_from(sorted(OPS)), scope=st.sampled_from(SCOPES))
    def take(self, op: str, scope: str) -> None:
        key = BatchKey(operation=op, target="t", scope=scope)
        before = self.c.size(key)
        batch = self.c.take(key)
        assert len(batch) <= before
        assert len(batch) <= OPS[op].max_items
        limit = OPS[op].max_body_bytes
        if limit is not None and len(batch) > 1:
            assert sum(item.cost for item in batch) + 2 <= limit
        readies = [item.ready_at for item in batch]
        assert readies == sorted(readies)  # oldest first
        for item in batch:
            assert item.sent and item.key == key
            self.taken[(scope, item.id)].append(op)
            self.in_flight.append(item)

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        item = self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))
        nxt = self.c.done(item, self.tick())
        self.finished += 1
        if nxt is not None:
            assert nxt.order_key == item.order_key
            assert nxt.ready_at == self.now and not nxt.sent

    @invariant()
    def at_most_one_in_flight_per_id(self) -> None:
        keys = [item.order_key for item in self.in_flight]
        assert len(keys) == len(set(keys))

    @invariant()
    def nothing_ready_while_its_id_is_in_flight(self) -> None:
        busy = {item.order_key for item in self.in_flight}
        for chain in self.c.chains():
            assert all(not item.sent for item in chain[1:])
            if chain[0].order_key in busy:
                assert chain[0].sent

    @invariant()
    def pending_is_consistent(self) -> None:
        assert self.c.pending == len(self.items) - self.finished
        assert self.c.pending == sum(len(chain) for chain in self.c.chains())
        assert sum(len(i.waiters) for i in self.items.values()) == self.waiters

    @invariant()
    def taken_is_added_with_consecutive_duplicates_merged(self) -> None:
        for order_key, taken in self.taken.items():
            added = self.added[order_key]
            taken_runs, added_runs = runs(taken), runs(added)
            assert len(taken_runs) <= len(added_runs)
            for (t_op, _), (a_op, _) in zip(taken_runs, added_runs, strict=False):
                assert t_op == a_op
            # every complete run taken so far came from at most as many adds
            for (_, t_len), (_, a_len) in zip(taken_runs[:-1], added_runs, strict=False):
                assert t_len <= a_len

    def teardown(self) -> None:
        # Drain: everything added is eventually taken, in order, one at a time per id.
        for _ in range(1000):
            for item in self.in_flight:
                self.c.done(item, self.tick())
                self.finished += 1
            self.in_flight = []
            for op in OPS:
                for scope in SCOPES:
                    self.take(op, scope)
            if not self.in_flight:
                break
        assert self.c.pending == 0
        assert list(self.c.keys()) == []
        for order_key, added in self.added.items():
            taken_runs, added_runs = runs(self.taken[order_key]), runs(added)
            assert [op for op, _ in taken_runs] == [op for op, _ in added_runs]
            assert all(t <= a for (_, t), (_, a) in zip(taken_runs, added_runs, strict=True))


CoalescerMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
test_property_coalescer_interleavings = CoalescerMachine.TestCase


def test_a_due_batch_still_filling_waits_until_ids_stop_joining() -> None:
    """Past its linger, a part-full batch whose ids keep arriving waits until none joined for
    a linger; never longer than 4 lingers after its oldest id; a full one never waits."""
    c = Coalescer()
    add(c, PUBLISH, PUB_KEY, "a", now=0.0)
    add(c, PUBLISH, PUB_KEY, "b", now=0.9)
    assert c.due_in(PUB_KEY, 1.0, 0.3) == 0.0
    assert c.still_filling(PUB_KEY, 1.0, 0.3) == pytest.approx(0.2)
    assert c.still_filling(PUB_KEY, 1.2, 0.3) == 0.0
    add(c, PUBLISH, PUB_KEY, "c", now=1.19)
    assert c.still_filling(PUB_KEY, 1.19, 0.3) == pytest.approx(0.01)  # capped at 4 lingers
    for n in range(197):
        add(c, PUBLISH, PUB_KEY, f"x{n}", now=1.19)
    assert c.is_full(PUB_KEY)
    assert c.still_filling(PUB_KEY, 1.19, 0.3) == 0.0


def test_items_left_behind_by_a_full_batch_fill_for_4_lingers_from_that_take() -> None:
    """Under a burst, items that queued behind a full batch start their own filling time
    when that batch is taken, not when they arrived: the next request is not sent part
    full just because its ids waited behind the last one."""
    c = Coalescer()
    for n in range(250):
        add(c, PUBLISH, PUB_KEY, f"x{n}", now=0.0)
    assert len(c.take(PUB_KEY, now=2.0)) == 200
    assert c.still_filling(PUB_KEY, 2.2, 0.3) == pytest.approx(0.1)  # quiet counts from take
    add(c, PUBLISH, PUB_KEY, "late", now=2.5)
    assert c.due_in(PUB_KEY, 2.5, 0.3) == 0.0  # its oldest has lingered long enough
    assert c.still_filling(PUB_KEY, 2.5, 0.3) == pytest.approx(0.3)  # still filling
    add(c, PUBLISH, PUB_KEY, "later", now=3.19)
    assert c.still_filling(PUB_KEY, 3.19, 0.3) == pytest.approx(0.01)  # 4 lingers after 2.0


def test_discard_chains_drops_whole_chains_sent_or_not_and_keeps_the_rest() -> None:
    """discard_chains removes every item of a chain it accepts entirely (a sent head too:
    its batch was abandoned), and leaves a chain with one kept item whole."""
    c = Coalescer()
    mine, theirs = object(), object()
    sent = add(c, PUBLISH, PUB_KEY, "a", waiter=mine)
    c.take(PUB_KEY)
    behind = add(c, UNPUBLISH, UNPUB_KEY, "a", waiter=mine)
    other = add(c, PUBLISH, PUB_KEY, "b", waiter=theirs)
    mixed_head = add(c, DELETE, DEL_KEY, "c", waiter=mine)
    add(c, DELETE, DEL_KEY, "d", waiter=mine)
    c.add(DELETE, DEL_KEY, "c", theirs, 1.0)  # joins the unsent item for "c": both waiters
    dropped = c.discard_chains(lambda item: all(w is mine for w in item.waiters))
    assert {i.id for i in dropped} == {"a", "d"}
    assert {id(i) for i in dropped} >= {id(sent), id(behind)}
    assert c.pending == 2
    assert c.take(UNPUB_KEY) == []
    assert c.take(PUB_KEY) == [other]
    assert c.take(DEL_KEY) == [mixed_head]
