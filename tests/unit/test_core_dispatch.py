"""When a batch goes (worker/pipeline/decisions.py), on a fake clock: no broker, no network,
no event loop. The coalescer is the real one; times are plain numbers. Last, the pace the
dispatcher gives those decisions while draining or handing a scope over (the real engine,
its takeover wait keeping it from sending)."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from worker.batching import BatchKey, Coalescer
from worker.limiter import Limiter, Limiters, Rate
from worker.messages import Request, parse_request
from worker.metrics import Metrics
from worker.pipeline.decisions import Pace, Step, decide
from worker.pipeline.dispatch import Dispatcher, Scope
from worker.pipeline.engine import Engine
from worker.pipeline.requests import Tracked
from worker.pipeline.settlement import Settlement
from worker.registry import OPERATIONS
from worker.settings import Settings

OP = dataclasses.replace(OPERATIONS["datocms.items.publish"], max_items=3)
KEY = BatchKey(OP.name, "main", None)
OTHER = BatchKey("datocms.items.unpublish", "main", None)
BIG = BatchKey("datocms.items.destroy", "main", None)  # batches of 100
PACE = Pace(linger=0.3, scarce=False, max_inflight=2)
SCARCE = dataclasses.replace(PACE, scarce=True)


def no_room_asked() -> float:
    raise AssertionError("the limiter is asked only once a batch is due and may run")


def room() -> float:
    return 0.0


def add(c: Coalescer, at: float, *ids: str, key: BatchKey = KEY) -> None:
    op = OP if key == KEY else dataclasses.replace(OPERATIONS[key.operation], max_items=3)
    if key == BIG:
        op = dataclasses.replace(OPERATIONS[key.operation], max_items=100)
    for item_id in ids:
        c.add(op, key, item_id, object(), at)


def test_nothing_pending_sleeps_until_woken_and_forgets_the_key() -> None:
    c = Coalescer()
    keys = {KEY}
    assert decide(c, keys, 5.0, PACE, 0, no_room_asked) == Step(None)
    assert keys == set()


def test_a_batch_that_is_not_full_lingers_from_its_oldest_id() -> None:
    c = Coalescer()
    add(c, 10.0, "a")
    add(c, 10.2, "b")
    assert decide(c, {KEY}, 10.1, PACE, 0, no_room_asked) == Step(None, pytest.approx(0.2))
    assert decide(c, {KEY}, 10.3, PACE, 0, room) == Step(KEY)


def test_a_full_batch_goes_at_once() -> None:
    c = Coalescer()
    add(c, 10.0, "a", "b", "c")
    assert decide(c, {KEY}, 10.0, PACE, 0, room) == Step(KEY)


def test_flushing_for_a_drain_or_a_hand_over_does_not_linger() -> None:
    c = Coalescer()
    add(c, 10.0, "a")
    flushing = dataclasses.replace(PACE, linger=0.0)
    assert decide(c, {KEY}, 10.0, flushing, 0, room) == Step(KEY)


def test_max_inflight_waits_for_a_batch_to_finish_without_asking_the_limiter() -> None:
    c = Coalescer()
    add(c, 10.0, "a", "b", "c")
    assert decide(c, {KEY}, 10.0, PACE, 2, no_room_asked) == Step(None)
    assert decide(c, {KEY}, 10.0, PACE, 1, room) == Step(KEY)


def test_a_due_batch_waits_for_the_limiter_and_keeps_growing() -> None:
    """No room: nothing is taken, so the ids that come meanwhile join the same request."""
    now = [100.0]
    limiter = Limiter(Rate(2, 10.0), clock=lambda: now[0])
    for _ in range(2):
        limiter.log.record(now[0])  # the window's two requests went at t=100
    c = Coalescer()
    add(c, 100.0, "a")
    now[0] = 101.0
    assert decide(c, {KEY}, now[0], PACE, 0, limiter.room_in) == Step(None, 9.0)
    add(c, 104.0, "b", "c")
    now[0] = 110.0
    assert decide(c, {KEY}, now[0], PACE, 0, limiter.room_in) == Step(KEY)
    assert [item.id for item in c.take(KEY, now=now[0])] == ["a", "b", "c"]


def test_a_scarce_scope_waits_while_ids_keep_joining_at_most_four_lingers() -> None:
    """Less than one request a second: a due batch that is not full waits until no id joined
    for one linger, and at most four lingers after it began forming."""
    c = Coalescer()
    add(c, 0.0, "a")
    add(c, 0.2, "b")
    assert decide(c, {KEY}, 0.3, SCARCE, 0, no_room_asked) == Step(None, pytest.approx(0.2))
    assert decide(c, {KEY}, 0.5, SCARCE, 0, room) == Step(KEY)  # quiet for a linger
    c = Coalescer()
    for n in range(12):  # one id every 0.1 s: never quiet for 0.3 s
        add(c, n / 10, f"i{n}", key=BIG)
    assert decide(c, {BIG}, 1.1, SCARCE, 0, no_room_asked) == Step(None, pytest.approx(0.1))
    assert decide(c, {BIG}, 1.2, SCARCE, 0, room) == Step(BIG)  # four lingers: it goes


def test_the_key_due_first_goes_and_the_oldest_on_a_tie() -> None:
    c = Coalescer()
    add(c, 10.0, "a")
    add(c, 10.1, "x", key=OTHER)
    assert decide(c, {KEY, OTHER}, 10.35, PACE, 0, room) == Step(KEY)
    c = Coalescer()
    add(c, 10.1, "a")
    add(c, 10.0, "x", key=OTHER)
    assert decide(c, {KEY, OTHER}, 11.0, PACE, 0, room) == Step(OTHER)  # both due: oldest
    c = Coalescer()
    add(c, 10.0, "a")
    add(c, 10.2, "x", "y", "z", key=OTHER)
    assert decide(c, {KEY, OTHER}, 10.2, PACE, 0, room) == Step(OTHER)  # full beats lingering


@given(
    arrivals=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=6),
    now_after=st.floats(0, 2, allow_nan=False),
    linger=st.floats(0, 1, allow_nan=False),
    inflight=st.integers(0, 3),
    wait_for_room=st.sampled_from([0.0, 0.5]),
)
def test_a_batch_goes_exactly_when_full_or_lingered_with_a_free_slot_and_room(
    arrivals: list[float], now_after: float, linger: float, inflight: int, wait_for_room: float
) -> None:
    arrivals = sorted(arrivals)
    c = Coalescer()
    for n, at in enumerate(arrivals):
        add(c, at, f"i{n}")
    now = arrivals[-1] + now_after
    pace = Pace(linger=linger, scarce=False, max_inflight=2)
    step = decide(c, {KEY}, now, pace, inflight, lambda: wait_for_room)
    due = 0.0 if len(arrivals) >= OP.max_items else max(0.0, arrivals[0] + linger - now)
    if due > 0:
        assert step == Step(None, due)
    elif inflight >= pace.max_inflight:
        assert step == Step(None)
    elif wait_for_room > 0:
        assert step == Step(None, wait_for_room)
    else:
        assert step == Step(KEY)


async def test_a_drain_or_a_hand_over_stops_lingering_where_it_applies() -> None:
    """The dispatcher's pace: the configured linger, none for a scope being handed over (the
    others keep theirs), none anywhere once draining."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        partitions=2,
        linger_seconds=0.3,
        targets={
            "main": {"kind": "datocms", "api_token": "t"},
            "shop": {
                "kind": "bloomreach",
                "base_url": "http://127.0.0.1:9",
                "api_key_id": "k",
                "api_secret": "s",
                "project_id": "p",
            },
        },
    )
    kinds = {"main": "datocms", "shop": "bloomreach"}
    dato = b'{"operation": "datocms.items.publish", "target": "main", "ids": ["a"]}'
    bloom = (
        b'{"operation": "bloomreach.catalog_items.delete", "target": "shop", '
        b'"catalog_id": "c", "ids": ["x"]}'
    )
    async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tasks:
        engine = Engine(
            settings, Metrics(CollectorRegistry()), http, _no_publish(), tasks, Limiters(0.0)
        )
        for partition, body in enumerate((dato, bloom)):
            request = parse_request(body, None, kinds)
            assert isinstance(request, Request)
            engine.accept(Tracked(_Delivery(), request, None, None, 1, partition=partition))
        scopes = {s.partition: s for s in engine.scopes.values()}
        dispatcher = engine.dispatcher
        assert [dispatcher.pace(scopes[p]).linger for p in (0, 1)] == [0.3, 0.3]
        assert dispatcher.pace(scopes[1]).scarce and not dispatcher.pace(scopes[0]).scarce
        engine.hand_over(0)
        assert [dispatcher.pace(scopes[p]).linger for p in (0, 1)] == [0.0, 0.3]
        engine.begin_drain()
        assert [dispatcher.pace(scopes[p]).linger for p in (0, 1)] == [0.0, 0.0]
        engine.cancel()


class _Delivery:
    async def ack(self) -> None:
        return None

    async def nack(self, requeue: bool) -> None:
        return None


class _NoOutlet:
    """Settlement's outlet in a test where nothing may be answered."""

    async def outcome(self, *args: object) -> None:
        raise AssertionError("nothing is answered here: the takeover wait keeps every scope idle")

    async def reply(self, *args: object) -> bool:
        raise AssertionError("nothing is answered here: the takeover wait keeps every scope idle")


def _no_publish() -> Settlement:
    return Settlement("all", Metrics(CollectorRegistry()), _NoOutlet())


class _SlowLimiter:
    """A limiter whose slot comes only when the test says so (a long wait for the window)."""

    def __init__(self) -> None:
        self.rate = Rate(10, 1.0)
        self.backlog_every = 1
        self.asked = asyncio.Event()
        self.grant = asyncio.Event()
        self.released = 0

    def room_in(self) -> float:
        return 0.0

    def used(self) -> int:
        return 0

    async def hold(self, urgent: bool = False) -> object:
        self.asked.set()
        await self.grant.wait()
        limiter = self

        class _Hold:
            def release(self) -> None:
                limiter.released += 1

        return _Hold()


async def test_a_pause_landing_while_the_slot_is_awaited_sends_nothing_of_that_scope() -> None:
    """The key was picked, then its scope was paused while the limiter's slot was awaited:
    the slot goes back and the batch is not taken (its items wait for the resume)."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, linger_seconds=0.0, targets={"main": {"kind": "datocms", "api_token": "t"}}
    )
    coalescer = Coalescer()
    add(coalescer, 0.0, "a", "b", "c")
    paused: set[BatchKey] = set()
    started: list[list[str]] = []
    limiter = _SlowLimiter()
    async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tasks:
        dispatcher = Dispatcher(
            settings=settings,
            metrics=Metrics(CollectorRegistry()),
            http=http,
            limiters=Limiters(0.0),
            coalescer=coalescer,
            execution=None,  # type: ignore[arg-type]
            publish=None,  # type: ignore[arg-type]
            tasks=tasks,
        )
        dispatcher.paused = paused.__contains__
        dispatcher._start = lambda scope, key, items, hold: started.append(  # type: ignore[method-assign]
            [i.id for i in items]
        )
        scope = Scope(limiter, None, None, {KEY})  # type: ignore[arg-type]
        loop = tasks.create_task(dispatcher._dispatch(scope))
        await asyncio.wait_for(limiter.asked.wait(), 2)
        paused.add(KEY)  # the pause lands during the wait for the slot
        limiter.grant.set()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert started == []
        assert limiter.released == 1
        assert coalescer.size(KEY) == 3
        paused.clear()  # resumed: the batch goes
        scope.keys.add(KEY)
        scope.wake.set()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert started == [["a", "b", "c"]]
        loop.cancel()
