"""Continuations (worker/pipeline/continuation.py): the body's round trip, a continued
continuation's merge of ``done`` and ``results``, and the final reply covering every id."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from worker.apis.adapters import ItemResult
from worker.errors import ErrorInfo
from worker.messages import Request, parse_request
from worker.pipeline import continuation
from worker.pipeline.requests import Tracked

KINDS = {"main": "datocms", "shop": "bloomreach"}


class Delivery:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def ack(self) -> None:
        self.calls.append("ack")

    async def nack(self, requeue: bool) -> None:
        self.calls.append(("nack", requeue))


def body(**fields: Any) -> bytes:
    return orjson.dumps({"operation": "datocms.items.publish", "target": "main", **fields})


def taken(raw: bytes, cont: continuation.Continuation | None = None) -> Tracked:
    """A request taken in as the session does (a continuation: its done ids skipped)."""
    source = raw if cont is None else cont.request
    req = parse_request(source, "m-1", KINDS)
    assert isinstance(req, Request), req
    done = frozenset() if cont is None else cont.done
    tracked = Tracked(Delivery(), req, None, None, 0, reply_to="replies", done=done,
                      source=None if cont is None else cont.request)  # fmt: skip
    rejected = [r for r in req.rejected if r.id not in done]
    tracked.remaining = len(tracked.pending_ids) + len(rejected)
    if cont is not None:
        tracked.answers.update(cont.results)
    return tracked


FAILED = ItemResult("failed", ErrorInfo("NOT_FOUND", "no such record", False))


def test_the_body_round_trips() -> None:
    raw = body(ids=["a", "b", "c"], request_id="r-1")
    results = {"b": FAILED, "x": ItemResult("rejected", None, 0)}
    encoded = continuation.encode(raw, ["a", "b"], results)
    assert orjson.loads(encoded) == {
        "request": raw.decode(),
        "done": ["a", "b"],
        "results": {
            "b": {"status": "failed",
                  "error": {"code": "NOT_FOUND", "message": "no such record", "retryable": False}},
            "x": {"status": "rejected", "error": None},
        },
    }  # fmt: skip
    decoded = continuation.decode(encoded)
    assert isinstance(decoded, continuation.Continuation)
    assert decoded.request == raw
    assert decoded.done == {"a", "b"}
    assert decoded.results["b"].status == "failed" and decoded.results["b"].error == FAILED.error
    assert decoded.results["x"].status == "rejected" and decoded.results["x"].error is None


def test_malformed_bodies_are_refused_with_a_reason() -> None:
    for bad in (b"nope", b"[]", b'{"request": 1, "done": [], "results": {}}',
                b'{"request": "{}", "done": [1], "results": {}}',
                b'{"request": "{}", "done": [], "results": []}',
                b'{"request": "{}", "done": [], "results": {"a": {"status": "odd"}}}'):  # fmt: skip
        assert isinstance(continuation.decode(bad), str), bad


def test_a_continued_continuation_merges_done_and_results_and_the_reply_lists_every_id() -> None:
    raw = body(ids=["a", "b", "c", "d", "bad id!"])
    first = taken(raw)
    assert first.request.rejected  # "bad id!" is rejected at intake
    first.note("b", FAILED)  # a, b sent and answered; c, d withdrawn at the first pause
    first.note("bad id!", ItemResult("rejected", ErrorInfo("invalid_id", "bad", False), 0))
    one = continuation.decode(continuation.body_of(first, raw, ["c", "d"]))
    assert isinstance(one, continuation.Continuation)
    assert one.done == {"a", "b", "bad id!"} and set(one.results) == {"b", "bad id!"}

    second = taken(b"ignored: the continuation carries the request", one)
    assert second.pending_ids == ["c", "d"] and second.remaining == 2
    second.note("c", ItemResult("failed", ErrorInfo("timeout", "slow", True)))
    two = continuation.decode(continuation.body_of(second, b"{}", ["d"]))  # paused again
    assert isinstance(two, continuation.Continuation)
    assert two.request == raw  # the original request, not the first continuation
    assert two.done == {"a", "b", "c", "bad id!"}
    assert set(two.results) == {"b", "c", "bad id!"}

    last = taken(b"", two)
    assert last.pending_ids == ["d"] and last.remaining == 1
    reply = last.reply()
    assert [(i.id, i.status) for i in reply.items] == [
        ("a", "succeeded"), ("b", "failed"), ("c", "failed"), ("d", "succeeded"),
        ("bad id!", "rejected"),
    ]  # fmt: skip


def test_the_continuing_delivery_signals_on_ack_and_passes_a_nack_on() -> None:
    async def go() -> None:
        original = Delivery()
        wrapped = continuation.Continuing(original)
        await wrapped.ack()
        assert wrapped.ready.is_set() and original.calls == [] and not wrapped.given_back
        other = continuation.Continuing(original)
        await other.nack(True)
        assert other.ready.is_set() and other.given_back and original.calls == [("nack", True)]

    asyncio.run(go())


def test_a_10000_id_request_is_continued_and_a_huge_one_is_not() -> None:
    raw = body(ids=[f"{n:036d}" for n in range(10_000)])
    assert continuation.fits(taken(raw), raw)
    huge = body(ids=[f"{n:064d}" for n in range(10_000)])  # the longest DatoCMS ids
    assert continuation.fits(taken(huge), huge) is False
