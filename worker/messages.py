"""Request messages in, outcome and reply messages out: parsing, validation, their bodies.

Pure: no broker here. ``parse_request`` turns a raw body into either a ``Request`` whose ids
are split into sendable and rejected, or an ``Invalid`` that says why the message as a whole
cannot be processed (and which ids, if any, could still be read to answer them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from worker import exactjson
from worker.apis.base import Operation, Payload
from worker.batching import same_payload
from worker.errors import ErrorCode, ErrorInfo
from worker.outcomes import (
    REPLY_TYPE,
    STATUSES,
    Heading,
    Outcome,
    Reply,
    ReplyItem,
    Scope,
    Status,
    outcome_message_id,
    published,
    reply_message_id,
    routing_operation,
    utc_now,
)
from worker.registry import OPERATIONS, SCOPES

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_IDS = 10_000
_SAFE_TEXT = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no spaces


def scope_problem(value: str, field: str) -> str | None:
    """Why ``value`` cannot be the scope ``field`` of a request, or None (clients check the
    same rules before publishing). Each API's area declares its field's rule."""
    declared = SCOPES.get(field)
    return None if declared is None else declared.rule(value)


def _check_scope(value: str | None, info: ValidationInfo) -> str | None:
    problem = (
        None if value is None or info.field_name is None else scope_problem(value, info.field_name)
    )
    if problem is not None:
        raise ValueError(problem)
    return value


class _RequestHead(BaseModel):
    """The fields before the scope fields (``RequestBody`` adds every API's scope field)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        # Exactly one of the two (checked in ``parse_request``, said here for the schema).
        json_schema_extra={"oneOf": [{"required": ["ids"]}, {"required": ["items"]}]},
    )

    operation: str = Field(max_length=128)
    target: str = Field(max_length=128)

    if TYPE_CHECKING:  # added by ``RequestBody`` after the scope fields
        ids: list[Any] | None
        items: list[Any] | None
        params: Any
        request_id: str | None

    def readable_ids(self) -> tuple[str, ...]:
        """The ids that can be read, from ``ids`` and ``items`` alike."""
        return _unique_strings([*(self.ids or []), *_item_ids(self.items)])

    def scope(self) -> Scope:
        """The scope fields the body gives, as (field, value) pairs."""
        given = ((name, getattr(self, name, None)) for name in SCOPES)
        return tuple((name, value) for name, value in given if value is not None)

    @field_validator("request_id", check_fields=False)
    @classmethod
    def _request_id(cls, value: str | None) -> str | None:
        if value is not None and not _SAFE_TEXT.fullmatch(value):
            raise ValueError("request_id must be 1-256 printable ASCII characters without spaces")
        return value


_SCOPE_FIELDS: dict[str, Any] = {name: (str | None, None) for name in SCOPES}
_SCOPE_RULES: dict[str, Any] = {"_scope": field_validator(*SCOPES)(_check_scope)}
RequestBody: type[_RequestHead] = create_model(
    "RequestBody",
    __base__=_RequestHead,
    __doc__="The JSON body of a request message, as the contract defines it.",
    __validators__=_SCOPE_RULES,
    **_SCOPE_FIELDS,
    ids=(list[Any] | None, Field(default=None, min_length=1, max_length=MAX_IDS)),
    items=(list[Any] | None, Field(default=None, min_length=1, max_length=MAX_IDS)),
    params=(Any, None),  # checked by the operation (a wrong one rejects every item)
    request_id=(str | None, None),
)
"""The JSON body of a request message: ``_RequestHead`` and every API's scope field."""


@dataclass(frozen=True, slots=True)
class Rejection:
    id: str
    reason: str
    code: str = ErrorCode.INVALID_ID

    def error(self) -> ErrorInfo:
        return ErrorInfo(self.code, self.reason, False)


@dataclass(frozen=True, slots=True)
class Request:
    """A valid request: ``ids`` will be sent (each once, in order); ``rejected`` will not."""

    request_id: str
    operation: Operation
    target: str
    scope: str | None
    ids: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    # Every distinct id (rejected ones by their key) in message order, when rejections break
    # it up; None: the message order is ``ids`` itself (the common case, kept cheap).
    order: tuple[str, ...] | None = None
    # Per id, the item's data (the item without its "id"), for operations that carry items.
    payloads: Mapping[str, Payload] | None = None
    params: Mapping[str, Any] | None = None  # the operation's params, if it takes any

    def payload(self, item_id: str) -> Payload | None:
        return None if self.payloads is None else self.payloads.get(item_id)

    @property
    def distinct_ids(self) -> tuple[str, ...]:
        """Every distinct id of the message, in message order (what a reply lists)."""
        return self.ids if self.order is None else self.order


@dataclass(frozen=True, slots=True)
class Invalid:
    """A message that cannot be processed as a whole: dead-lettered with ``reason``."""

    reason: str
    code: str
    request_id: str
    operation: str | None = None
    target: str | None = None
    scope: Scope = ()  # the scope fields the message gave, readable ones
    readable_ids: tuple[str, ...] = field(default=())

    @property
    def heading(self) -> Heading:
        return Heading(self.request_id, self.operation, self.target, self.scope)

    @property
    def error(self) -> ErrorInfo:
        """The reason the message as a whole was refused (each readable id's error too)."""
        return ErrorInfo(self.code, self.reason, False)

    def outcomes(self, finished_at: str) -> list[Outcome]:
        """A ``rejected`` outcome for each id that could be read."""
        heading, error = self.heading, self.error
        return [
            heading.outcome(item_id, "rejected", error, 0, None, None, finished_at)
            for item_id in self.readable_ids
        ]

    def reply(self, finished_at: str) -> Reply:
        """The reply to a dead-lettered message: its readable ids ``rejected`` (maybe none),
        and the reason the message as a whole was refused as the top-level ``error``."""
        error = self.error
        items = tuple(ReplyItem(i, "rejected", error) for i in self.readable_ids)
        return self.heading.reply(items, finished_at, error)


def derive_request_id(body: bytes, message_id: str | None) -> str:
    """The request id when the body has none: the AMQP message_id, else a hash of the body.

    Both survive redelivery, so outcome message ids stay deterministic.
    """
    if message_id and _SAFE_TEXT.fullmatch(message_id):
        return message_id
    return "sha256-" + hashlib.sha256(body).hexdigest()[:32]


def parse_request(
    body: bytes, message_id: str | None, targets: Mapping[str, str]
) -> Request | Invalid:
    """Validate a request body. ``targets`` maps configured target names to their API kind."""
    fallback_id = derive_request_id(body, message_id)
    if len(body) > MAX_BODY_BYTES:
        return Invalid(
            f"body is {len(body)} bytes, over {MAX_BODY_BYTES}", ErrorCode.TOO_LARGE, fallback_id
        )
    try:
        data = exactjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Invalid(not_json_reason(body, exc), ErrorCode.NOT_JSON, fallback_id)
    if not isinstance(data, dict):
        return Invalid("body must be a JSON object", ErrorCode.NOT_OBJECT, fallback_id)
    try:
        parsed = RequestBody.model_validate(data)
    except ValidationError as exc:
        return _schema_invalid(data, exc, fallback_id)
    return _check_request(parsed, fallback_id, targets)


def not_json_reason(body: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why a body is not JSON, in words (orjson says "expected 'true'" or "invalid literal")."""
    if not body.strip():
        return "body is not JSON: it is empty"
    where = f"line {exc.lineno}, column {exc.colno}"
    if "UTF-8" in exc.msg:
        return f"body is not JSON: it is not UTF-8 text ({where})"
    if "end of data" in exc.msg:
        return f"body is not JSON: it ends before the JSON value is complete ({where})"
    return f"body is not JSON: at {where} there is text that is not valid JSON"


def _check_request(
    body: _RequestHead, fallback_id: str, targets: Mapping[str, str]
) -> Request | Invalid:
    request_id = body.request_id or fallback_id

    def invalid(reason: str, code: str) -> Invalid:
        ids = body.readable_ids()  # only for a message refused as a whole
        return Invalid(
            reason=reason,
            code=code,
            request_id=request_id,
            operation=body.operation,
            target=body.target,
            scope=body.scope(),
            readable_ids=ids,
        )

    operation = OPERATIONS.get(body.operation)
    if operation is None:
        return invalid(f"unknown operation {body.operation!r}", ErrorCode.UNKNOWN_OPERATION)
    kind = targets.get(body.target)
    if kind is None:
        return invalid(f"unknown target {body.target!r}", ErrorCode.UNKNOWN_TARGET)
    if kind != operation.api:
        return invalid(f"target {body.target!r} is a {kind} target", ErrorCode.UNKNOWN_TARGET)
    given = dict(body.scope())
    others = [name for name in given if name != operation.scope_field]
    if others:
        return invalid(f"{others[0]} does not apply to {operation.name}", ErrorCode.INVALID_MESSAGE)
    scope = given.get(operation.scope_field)
    if scope is None and operation.scope_required:
        return invalid(
            f"{operation.scope_field} is required for {operation.name}", ErrorCode.MISSING_SCOPE
        )
    if (body.ids is None) == (body.items is None):
        return invalid("a message carries exactly one of ids and items", ErrorCode.INVALID_MESSAGE)
    wrong = "items" if body.ids is None else "ids"
    if wrong != operation.carries:
        return invalid(
            f"{operation.name} takes {operation.carries}, not {wrong}", ErrorCode.INVALID_MESSAGE
        )
    entries = (
        _id_entries(operation, body.ids or [])
        if body.items is None
        else _item_entries(operation, body.items)
    )
    problem = operation.params_problem("params" in body.model_fields_set, body.params)
    if problem is not None:  # the message is readable: every item answered, none sent
        entries = [
            _Entry(e.key, f"invalid params: {problem}", ErrorCode.INVALID_PARAMS) for e in entries
        ]
    params = body.params if operation.params is not None and problem is None else None
    return _split(entries, request_id, operation, body.target, scope, params)


@dataclass(frozen=True, slots=True)
class _Entry:
    """One element of ``ids`` or ``items``: its key, and why it cannot be sent (or None)."""

    key: str
    problem: str | None = None
    code: str = ErrorCode.INVALID_ID
    payload: Payload | None = None


def _key_of(value: object) -> str:
    return value if isinstance(value, str) else exactjson.dumps(value).decode()[:256]


def _id_entries(operation: Operation, raw: list[Any]) -> list[_Entry]:
    return [_Entry(_key_of(value), operation.id_problem(value)) for value in raw]


def _item_entry(operation: Operation, element: object) -> _Entry:
    if not isinstance(element, dict):
        return _Entry(_key_of(element), "an item must be a JSON object", ErrorCode.INVALID_ITEM)
    item_id = element.get("id")
    key = _key_of(item_id)
    problem = operation.id_problem(item_id)
    if problem is not None:
        return _Entry(key, problem)
    data = {k: v for k, v in element.items() if k != "id"}
    problem = operation.item_problem(data)
    if problem is not None:
        return _Entry(key, f"invalid item {item_id!r}: {problem}", ErrorCode.INVALID_ITEM)
    return _Entry(key, payload=data)


def _item_entries(operation: Operation, raw: list[Any]) -> list[_Entry]:
    """The items, each id once in effect: an id given twice with different data (as JSON),
    or once invalid, is rejected in every copy (no copy is sent, none goes unanswered)."""
    entries = [_item_entry(operation, element) for element in raw]
    invalid = {e.key: e for e in reversed(entries) if e.problem is not None}
    payloads: dict[str, Payload | None] = {}
    conflicting: set[str] = set()
    for entry in entries:
        if entry.problem is None and not same_payload(
            payloads.setdefault(entry.key, entry.payload), entry.payload
        ):
            conflicting.add(entry.key)
    if not conflicting and not invalid.keys() & payloads.keys():
        return entries
    reason = "the message has this id more than once, with different data"
    return [
        invalid.get(e.key)
        or (
            _Entry(e.key, f"invalid item {e.key!r}: {reason}", ErrorCode.INVALID_ITEM)
            if e.key in conflicting
            else e
        )
        for e in entries
    ]


def _split(
    entries: list[_Entry],
    request_id: str,
    operation: Operation,
    target: str,
    scope: str | None,
    params: Mapping[str, Any] | None,
) -> Request:
    good: dict[str, Payload | None] = {}
    rejected: dict[str, Rejection] = {}
    for entry in entries:
        if entry.problem is None:
            good.setdefault(entry.key, entry.payload)
        else:
            rejected.setdefault(entry.key, Rejection(entry.key, entry.problem, entry.code))
    interleaved = bool(rejected)
    for key in good:  # a non-string id whose key is also a valid id: that id answers it
        rejected.pop(key, None)
    order = None
    if interleaved:  # the interleaving of good and rejected ids, for the reply
        keys = dict.fromkeys(entry.key for entry in entries)
        order = tuple(k for k in keys if k in good or k in rejected)
    payloads = None if operation.carries == "ids" else {k: v or {} for k, v in good.items()}
    return Request(
        request_id,
        operation,
        target,
        scope,
        tuple(good),
        tuple(rejected.values()),
        order,
        payloads,
        params,
    )


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _item_ids(items: object) -> list[Any]:
    if not isinstance(items, list):
        return []
    return [item.get("id") for item in items if isinstance(item, dict)]


def _unique_strings(values: object) -> tuple[str, ...]:
    if not isinstance(values, list):
        return ()
    return tuple(dict.fromkeys(v for v in values if isinstance(v, str) and v))


def _schema_invalid(data: dict[str, Any], exc: ValidationError, fallback_id: str) -> Invalid:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
        for err in exc.errors()[:5]
    )
    text = {k: v for k, v in data.items() if isinstance(v, str) and len(v) <= 256}
    request_id = text.get("request_id", "")
    if not _SAFE_TEXT.fullmatch(request_id):
        request_id = fallback_id
    return Invalid(
        f"message does not fit the schema: {problems}"[:1000],
        ErrorCode.INVALID_MESSAGE,
        request_id,
        text.get("operation"),
        text.get("target"),
        tuple((name, text[name]) for name in SCOPES if name in text),
        _unique_strings([*(_list(data.get("ids"))), *_item_ids(data.get("items"))]),
    )


__all__ = [
    "REPLY_TYPE",
    "STATUSES",
    "ErrorInfo",
    "Invalid",
    "Outcome",
    "Reply",
    "ReplyItem",
    "Request",
    "Status",
    "outcome_message_id",
    "parse_request",
    "published",
    "reply_message_id",
    "routing_operation",
    "utc_now",
]
