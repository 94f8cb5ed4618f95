"""Outcome and reply messages out: their bodies, routing keys and message ids. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from worker.errors import ErrorInfo
from worker.registry import OPERATIONS, SCOPES

Status = Literal["succeeded", "failed", "rejected"]
Scope = tuple[tuple[str, str], ...]
"""A request's scope as (field, value) pairs: the scope fields it gave (at most one for a
valid request). Bodies carry every API's scope field (``scope_body``), null but these."""


def scope_body(scope: Scope) -> dict[str, str | None]:
    """Every API's scope field (the catalog's ``SCOPES``, in order), null but the given."""
    given = dict(scope)
    return {name: given.get(name) for name in SCOPES}


def routing_operation(operation: str | None) -> str:
    """The operation part of an outcome routing key; untrusted names never reach the key."""
    if operation is not None and operation in OPERATIONS:
        return operation
    return "invalid"


def published(mode: str, status: Status) -> bool:
    """Whether an outcome of this status goes to the results exchange in this outcome mode
    (``BULKOPS_ITEM_OUTCOMES``): ``all``, ``failures`` (failed and rejected) or ``none``."""
    return mode == "all" or (mode == "failures" and status != "succeeded")


def outcome_message_id(request_id: str, operation: str, item_id: str) -> str:
    return f"{request_id}:{operation}:{item_id}"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One item's answer, as published to the results exchange."""

    request_id: str
    operation: str
    target: str | None
    scope: Scope
    id: str
    status: Status
    error: ErrorInfo | None
    attempts: int
    batch_id: str | None
    job_id: str | None
    finished_at: str

    @property
    def routing_key(self) -> str:
        return f"{routing_operation(self.operation)}.{self.status}"

    @property
    def message_id(self) -> str:
        return outcome_message_id(self.request_id, self.operation, self.id)

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "request_id": self.request_id,
                "operation": self.operation,
                "target": self.target,
                **scope_body(self.scope),
                "id": self.id,
                "status": self.status,
                "error": self.error.as_dict() if self.error else None,
                "attempts": self.attempts,
                "batch_id": self.batch_id,
                "job_id": self.job_id,
                "finished_at": self.finished_at,
            }
        )


OUTCOME_TYPE = "bulkops.outcome"
OUTCOMES_TYPE = "bulkops.outcomes"  # the batch format (BULKOPS_OUTCOME_FORMAT=batch)
PART_BYTES = 4 * 1024 * 1024  # no batch-format message is larger (RabbitMQ refuses > 16 MiB)


@dataclass(frozen=True, slots=True)
class OutcomeBatch:
    """One message of the batch format: one dispatch batch's items of one status (or one
    request message's items rejected at intake, ``batch_id`` None), one part of them.

    ``items`` are the items' serialized JSON objects (``request_id``, ``id``, ``job_id``,
    ``error``, ``attempts``); ``key`` is ``<batch_id>`` or ``<request_id>:<operation>``."""

    heading: Heading
    status: Status
    batch_id: str | None
    part: int
    finished_at: str
    items: tuple[bytes, ...]
    correlation_id: str
    tag: str | None = None  # ``cancelled``: an operator's cancel (its own message id)

    @property
    def routing_key(self) -> str:
        return f"{routing_operation(self.heading.operation)}.{self.status}"

    @property
    def message_id(self) -> str:
        if self.batch_id is not None:
            return f"{self.batch_id}:{self.status}:{self.part}"
        tag = self.tag or self.status
        base = f"{self.heading.request_id}:{self.heading.operation or 'invalid'}:{tag}"
        return f"{base}:{self.part}" if self.part else base  # more than 4 MiB: rare

    def body(self) -> bytes:
        head = orjson.dumps(
            {
                "operation": self.heading.operation or "invalid",
                "target": self.heading.target,
                **scope_body(self.heading.scope),
                "status": self.status,
                "batch_id": self.batch_id,
                "part": self.part,
                "finished_at": self.finished_at,
            }
        )
        return head[:-1] + b',"items":[' + b",".join(self.items) + b"]}"


def batch_item(
    request_id: str, item_id: str, job_id: str | None, error: ErrorInfo | None, attempts: int
) -> bytes:
    """One item inside a batch-format message."""
    return orjson.dumps(
        {
            "request_id": request_id,
            "id": item_id,
            "job_id": job_id,
            "error": error.as_dict() if error else None,
            "attempts": attempts,
        }
    )


def parts(items: list[bytes], limit: int = PART_BYTES - 64 * 1024) -> list[tuple[bytes, ...]]:
    """Items split so that no part's items take more than ``limit`` bytes (the shared
    fields fit in what is left of 4 MiB); every part holds at least one item."""
    out: list[tuple[bytes, ...]] = []
    current: list[bytes] = []
    size = 0
    for item in items:
        if current and size + len(item) + 1 > limit:
            out.append(tuple(current))
            current, size = [], 0
        current.append(item)
        size += len(item) + 1
    if current:
        out.append(tuple(current))
    return out


def reply_message_id(request_id: str) -> str:
    return f"{request_id}:reply"


@dataclass(frozen=True, slots=True)
class ReplyItem:
    """One id's answer inside a reply."""

    id: str
    status: Status
    error: ErrorInfo | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "error": self.error.as_dict() if self.error else None,
        }


STATUSES: tuple[Status, ...] = ("succeeded", "failed", "rejected")


@dataclass(frozen=True, slots=True)
class Reply:
    """The one answer to a request message that carries ``reply_to`` (CONTRACT "Replies"):
    every distinct id of the message in message order, with its status and error.

    ``error`` is set only for a message refused as a whole (dead-lettered); the body has a
    top-level ``"error"`` key only then. AMQP: ``message_id`` below, ``type`` REPLY_TYPE.
    """

    request_id: str
    operation: str | None
    target: str | None
    scope: Scope
    items: tuple[ReplyItem, ...]
    finished_at: str
    error: ErrorInfo | None = None

    @property
    def message_id(self) -> str:
        return reply_message_id(self.request_id)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for item in self.items:
            counts[item.status] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "request_id": self.request_id,
            "operation": self.operation,
            "target": self.target,
            **scope_body(self.scope),
            "counts": self.counts(),
            "items": [item.as_dict() for item in self.items],
            "finished_at": self.finished_at,
        }
        if self.error is not None:
            body["error"] = self.error.as_dict()
        return body

    def body(self) -> bytes:
        return orjson.dumps(self.as_dict())


REPLY_TYPE = "bulkops.reply"


@dataclass(frozen=True, slots=True)
class Heading:
    """What every outcome and the reply of one request say about it (request id, operation,
    target, scope): the one builder of both, whether the request was refused at intake or
    answered by an API. ``operation`` is None for a refused message without a readable one
    (its outcomes say ``invalid``, its reply null)."""

    request_id: str
    operation: str | None
    target: str | None
    scope: Scope

    def outcome(
        self,
        item_id: str,
        status: Status,
        error: ErrorInfo | None,
        attempts: int,
        batch_id: str | None,
        job_id: str | None,
        finished_at: str,
    ) -> Outcome:
        return Outcome(
            self.request_id,
            self.operation or "invalid",
            self.target,
            self.scope,
            item_id,
            status,
            error,
            attempts,
            batch_id,
            job_id,
            finished_at,
        )

    def reply(
        self, items: tuple[ReplyItem, ...], finished_at: str, error: ErrorInfo | None = None
    ) -> Reply:
        return Reply(
            request_id=self.request_id,
            operation=self.operation,
            target=self.target,
            scope=self.scope,
            items=items,
            finished_at=finished_at,
            error=error,
        )
