"""Handing a partition on (worker/pipeline/handover.py, through the Engine): what is given back, what stays, what is
forgotten. No request is sent: the partitioned takeover wait keeps every dispatcher idle."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client import CollectorRegistry

from worker.limiter import Limiters
from worker.messages import Request, parse_request
from worker.metrics import Metrics
from worker.pipeline.engine import Engine
from worker.pipeline.requests import Tracked
from worker.pipeline.settlement import Settlement
from worker.settings import Settings

KINDS = {"main": "datocms", "shop": "bloomreach"}


def settings() -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        partitions=2,
        linger_seconds=60,
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


class Delivery:
    def __init__(self) -> None:
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nack(self, requeue: bool) -> None:
        self.settled.append("nack")


def tracked(body: bytes, partition: int) -> Tracked:
    request = parse_request(body, None, KINDS)
    assert isinstance(request, Request)
    return Tracked(Delivery(), request, None, None, len(request.ids), partition=partition)


def dato(op: str, *ids: str) -> bytes:
    return f'{{"operation": "datocms.items.{op}", "target": "main", "ids": {list(ids)}}}'.replace(
        "'", '"'
    ).encode()


def bloom(*ids: str) -> bytes:
    body = '{"operation": "bloomreach.catalog_items.delete", "target": "shop", "catalog_id": "c"'
    return (body + f', "ids": {list(ids)}}}').replace("'", '"').encode()


async def test_hand_over_gives_back_only_that_partition_and_keeps_order_closures() -> None:
    registry = CollectorRegistry()
    async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tasks:
        engine = Engine(settings(), Metrics(registry), http, _no_publish(), tasks, Limiters(0.0))
        first = tracked(dato("publish", "a", "b"), 0)
        later = tracked(dato("unpublish", "a"), 0)
        alone = tracked(dato("publish", "c"), 0)
        elsewhere = tracked(bloom("x"), 1)
        for t in (first, later, alone, elsewhere):
            engine.accept(t)
        # "first" went out (as if a batch took it): it stays, and so does nothing after it
        # that must wait for it (its items are sent, the unpublish of "a" is not started).
        first.started = True
        given = engine.hand_over(0)
        assert given == [later, alone]  # consumption order, not started, partition 0 only
        assert engine.busy(0) and engine.busy(1)
        assert engine.tracked == {first, elsewhere}
        unanswered = await engine.retire(0)
        assert unanswered == [first]
        assert not engine.busy(0)
        assert engine.tracked == {elsewhere}
        assert [s.partition for s in engine.scopes.values()] == [1]
        assert engine.coalescer.pending == 1  # "x" alone
        engine.cancel()


async def test_hand_over_keeps_an_earlier_operation_a_started_one_depends_on() -> None:
    """An unstarted request with an operation on an id that a started, later request also
    touches is kept: giving it back would let the later one overtake it."""
    registry = CollectorRegistry()
    async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tasks:
        engine = Engine(settings(), Metrics(registry), http, _no_publish(), tasks, Limiters(0.0))
        earlier = tracked(dato("publish", "a"), 0)
        started = tracked(dato("unpublish", "a", "b"), 0)
        engine.accept(earlier)
        engine.accept(started)
        started.started = True
        assert engine.hand_over(0) == []
        assert engine.tracked == {earlier, started}
        assert all(s.flush for s in engine.scopes.values())
        engine.cancel()


async def test_a_pause_lets_go_of_whole_and_continued_requests_but_not_what_stays_needs() -> None:
    """``Handover.let_go`` (a pause): a started request is continued (all its unsent ids
    withdrawn) and a later unstarted one leaves whole; one that is not selected (a request
    of a stopped drain that keeps what it took) keeps every earlier operation on its ids
    in the worker, as a started one that ``stays`` does."""
    registry = CollectorRegistry()
    async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tasks:
        engine = Engine(settings(), Metrics(registry), http, _no_publish(), tasks, Limiters(0.0))
        handover = engine.handover
        first = tracked(dato("publish", "a", "b"), 0)
        later = tracked(dato("unpublish", "a"), 0)
        for t in (first, later):
            engine.accept(t)
        first.started = True
        assert handover.staying(lambda t: True, lambda t: True) == {first}
        whole, started = handover.let_go(lambda t: True, lambda t: False)
        assert whole == [later]
        assert [(t, sorted(ids)) for t, ids in started] == [(first, ["a", "b"])]
        assert first.continued and first.settled and engine.coalescer.pending == 0

        earlier = tracked(dato("publish", "c"), 1)
        drained = tracked(dato("unpublish", "c"), 1)
        for t in (earlier, drained):
            engine.accept(t)
        assert handover.staying(lambda t: t is not drained, lambda t: False) == {earlier, drained}
        assert handover.let_go(lambda t: t is not drained, lambda t: False) == ([], [])
        assert engine.tracked == {earlier, drained}
        engine.cancel()


class _NoOutlet:
    """Settlement's outlet in a test where nothing may be answered."""

    async def outcome(self, *args: object) -> None:
        raise AssertionError("nothing is answered here")

    async def reply(self, *args: object) -> bool:
        raise AssertionError("nothing is answered here")


def _no_publish() -> Settlement:
    return Settlement("all", Metrics(CollectorRegistry()), _NoOutlet())


async def test_sessions_of_one_process_share_its_limiters() -> None:
    """A new session (a new Engine after a broker reconnect) gets the limiter the last one
    used for a rate scope, with what it sent, instead of a fresh one that would not know."""
    registry = CollectorRegistry()
    limiters = Limiters(0.05)
    async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tasks:
        before = Engine(settings(), Metrics(registry), http, _no_publish(), tasks, limiters)
        before.accept(tracked(dato("publish", "a"), 0))
        (scope,) = before.scopes.values()
        scope.limiter.log.record(time.monotonic())  # as if a request had just gone
        before.cancel()
        after = Engine(
            settings(), Metrics(CollectorRegistry()), http, _no_publish(), tasks, limiters
        )
        after.accept(tracked(dato("publish", "b"), 0))
        (again,) = after.scopes.values()
        assert again.limiter is scope.limiter
        assert again.limiter.used() == 1
        after.cancel()


async def test_sessions_of_one_process_share_its_adapters_and_the_stated_limit() -> None:
    """A new session's Engine gets the adapters the last one used (what a target taught them:
    the bulk-delete form after a 405, the size after a 413) and the limit DatoCMS stated."""
    limiters = Limiters(0.05)
    async with httpx.AsyncClient() as http, asyncio.TaskGroup() as tasks:
        before = Engine(
            settings(), Metrics(CollectorRegistry()), http, _no_publish(), tasks, limiters
        )
        before.accept(tracked(dato("publish", "a"), 0))
        (scope,) = before.scopes.values()
        assert scope.limiter.observe_limit(120)  # as if an answer had stated 120 per 3 s
        shop = before.adapters["shop"]
        before.cancel()
        after = Engine(
            settings(), Metrics(CollectorRegistry()), http, _no_publish(), tasks, limiters
        )
        assert after.adapters == before.adapters and after.adapters["shop"] is shop
        after.accept(tracked(dato("publish", "b"), 0))
        (again,) = after.scopes.values()
        assert again.limiter.rate.requests == 120
        after.cancel()
