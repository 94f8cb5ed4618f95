"""Continuations: what is left of a request partly sent when its scope was paused (issue 23).

At a live pause the worker withdraws the unsent items of such a request, waits for its sent
ones to be answered (their outcomes published as usual), and then, instead of replying,
publishes a continuation to the scope's hold queue and acks the original. The continuation
is a message of AMQP ``type`` ``bulkops.continuation`` with the original's properties and the
body::

    {"request": "<the original request body, as a string>",
     "done": ["<id already answered, incl. ids rejected at intake>", ...],
     "results": {"<id>": {"status": "failed" | "rejected", "error": {...} | null}, ...}}

``results`` holds the answers that did not succeed (what the final reply lists besides the
implied successes; only kept for a request with a ``reply_to``). Taken in from a hold queue,
it becomes a request whose ``done`` ids are not sent again and whose one reply, at the end,
lists every id. A continuation can be continued again (``done`` and ``results`` grow).
Anywhere but a hold queue it is refused (dead-lettered).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.apis.adapters import ItemResult
from worker.errors import ErrorInfo
from worker.pipeline.requests import Delivery, Tracked

MAX_BYTES = 4 * 1024 * 1024  # a continuation larger than this (estimated) is not made
# Bytes an id's result may take in ``results``, for the estimate of what is still to come
# (an API's error message is short; a longer one only makes the message larger than the
# estimate, far below what RabbitMQ accepts).
_RESULT_BOUND = 256
_STATUSES = ("succeeded", "failed", "rejected")


@dataclass(frozen=True, slots=True)
class Continuation:
    """A continuation's body, parsed."""

    request: bytes  # the original request body
    done: frozenset[str] = frozenset()
    results: Mapping[str, ItemResult] = field(default_factory=dict)


def encode(request: bytes, done: Iterable[str], results: Mapping[str, ItemResult]) -> bytes:
    """The continuation's body (``done`` in the order given)."""
    return orjson.dumps(
        {
            "request": request.decode("utf-8"),
            "done": list(done),
            "results": {item_id: _dict(result) for item_id, result in results.items()},
        }
    )


def decode(body: bytes) -> Continuation | str:
    """The parsed continuation, or why it is malformed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return f"continuation body is not JSON: {exc}"
    if not isinstance(data, dict):
        return "continuation body must be a JSON object"
    request, done, results = data.get("request"), data.get("done"), data.get("results")
    if not isinstance(request, str):
        return 'continuation "request" must be a string (the original request body)'
    if not isinstance(done, list) or not all(isinstance(i, str) for i in done):
        return 'continuation "done" must be an array of ids'
    if not isinstance(results, dict):
        return 'continuation "results" must be an object'
    parsed: dict[str, ItemResult] = {}
    for item_id, entry in results.items():
        result = _result(entry)
        if result is None:
            return f'continuation "results" entry for {item_id!r} is malformed'
        parsed[item_id] = result
    return Continuation(request.encode("utf-8"), frozenset(done), parsed)


def _result(entry: Any) -> ItemResult | None:
    if not isinstance(entry, dict) or entry.get("status") not in _STATUSES:
        return None
    error = entry.get("error")
    if error is None:
        return ItemResult(entry["status"], None, 0)
    if not isinstance(error, dict):
        return None
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not isinstance(message, str):
        return None
    return ItemResult(entry["status"], ErrorInfo(code, message, error.get("retryable") is True), 0)


def body_of(tracked: Tracked, original: bytes, withdrawn: Iterable[str]) -> bytes:
    """The continuation of ``tracked`` once everything of it but ``withdrawn`` is answered:
    ``done`` = what was done before (a continuation continued) and every id of it now
    answered, in message order; ``results`` = its non-succeeded answers (earlier ones
    included: they were taken in with it). ``original``: the consumed message's body."""
    request = original if tracked.source is None else tracked.source
    left = set(withdrawn)
    done = [i for i in tracked.request.distinct_ids if i not in left]
    return encode(request, done, tracked.answers)


def fits(tracked: Tracked, original: bytes) -> bool:
    """Whether its continuation stays under ``MAX_BYTES`` (estimated before its last answers
    are in: every id done, the results so far, and every id not answered yet failing with an
    error of ``_RESULT_BOUND`` bytes). A 10,000-id request of 36-character ids: ~3 MiB."""
    request = original if tracked.source is None else tracked.source
    size = len(orjson.dumps(request.decode("utf-8")))
    ids = tracked.request.distinct_ids
    size += sum(len(i) + 3 for i in ids)
    size += len(orjson.dumps({k: _dict(r) for k, r in tracked.answers.items()}))
    size += sum(len(i) + _RESULT_BOUND for i in tracked.pending_ids)
    return size + 64 <= MAX_BYTES


def _dict(result: ItemResult) -> dict[str, Any]:
    return {"status": result.status,
            "error": None if result.error is None else result.error.as_dict()}  # fmt: skip


class Continuing:
    """The delivery of a request being continued: the settlement's ``ack`` (all its sent
    items answered) only says so (``ready``): the hold queue's mover publishes the
    continuation in consumption order, then acks ``original``. A ``nack`` (given back by a
    drain that ran out of time) is passed on: no continuation then."""

    __slots__ = ("given_back", "original", "ready")

    def __init__(self, original: Delivery) -> None:
        self.original = original
        self.ready = asyncio.Event()
        self.given_back = False

    async def ack(self) -> None:
        self.ready.set()

    async def nack(self, requeue: bool) -> None:
        self.given_back = True
        await self.original.nack(requeue)
        self.ready.set()
