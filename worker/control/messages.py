"""Control messages: the one validation the CLI, the client and the worker share.

Pure: no broker here. ``parse_control(body, props, targets)`` returns a ``Control`` or a
``ControlInvalid`` (a bounded ``code`` for the metric label and a specific ``reason``);
``control_body(...)`` builds a body and refuses a bad one with ``ControlRefused``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from worker import exactjson
from worker.messages import _SAFE_TEXT, not_json_reason, scope_problem
from worker.registry import APIS, SCOPES

CONTROL_TYPE = "bulkops.control"
"""AMQP ``type`` of a control message (readers do not require it; publishers set it)."""
SENTINEL_TYPE = "bulkops.control.sentinel"
"""AMQP ``type`` of a reader's end-of-stream sentinel: every reader ignores it."""
STATUS_REPLY_TYPE = "bulkops.control.status"
"""AMQP ``type`` of a worker's reply to ``status``."""

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_REQUEST_IDS = 10_000
MAX_REASON = 1000
MAX_TARGET = 128
_REASON_TEXT = re.compile(rf"[^\x00-\x1f\x7f-\x9f\u2028\u2029]{{1,{MAX_REASON}}}")
"""A reason: bounded free text without control characters (it reaches the logs)."""

Command = Literal["cancel", "pause", "resume", "status"]
ScopeSel = tuple[str, str | None]
"""A scope field and its value; the value None: the primary (where the field may be absent)."""


class ControlRefused(ValueError):
    """A control message that breaks the contract's rules (the CLI and client refuse it)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ControlProps:
    """What the AMQP properties say of a control message."""

    message_id: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    timestamp: datetime | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    rewrite_of: str | None = None  # a reader's rewrite of the pause with this message id


@dataclass(frozen=True, slots=True)
class Control:
    """A valid control message. ``scope``: None for the whole target (or no target);
    ``at``: the AMQP timestamp (epoch seconds) if it had one, else its arrival."""

    command: Command
    at: float
    target: str | None = None
    scope: ScopeSel | None = None
    request_ids: tuple[str, ...] = ()
    reason: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    message_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    rewrite_of: str | None = None  # a rewrite of the pause first sent with this message id

    @property
    def sender(self) -> dict[str, str | None]:
        return {"user_id": self.user_id, "app_id": self.app_id}


@dataclass(frozen=True, slots=True)
class ControlInvalid:
    """A control message that breaks the rules: workers log it, count it (``code``, bounded)
    and ignore it."""

    code: str
    reason: str
    message_id: str | None = None


class _Head(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    command: str = Field(max_length=32)
    target: str | None = Field(default=None, min_length=1, max_length=MAX_TARGET)
    request_ids: list[str] | None = Field(default=None, min_length=1, max_length=MAX_REQUEST_IDS)
    reason: str | None = Field(default=None, max_length=MAX_REASON)


_SCOPE_FIELDS: dict[str, Any] = {
    name: (str | None, Field(default=None, max_length=256)) for name in SCOPES
}
ControlBody: type[_Head] = create_model(
    "ControlBody",
    __base__=_Head,
    __doc__="The JSON body of a control message (every API's scope field may be given).",
    **_SCOPE_FIELDS,
)

_COMMANDS = ("cancel", "pause", "resume", "status")


def _schema_reason(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
        for err in exc.errors()[:5]
    )
    return f"control message does not fit the schema: {problems}"[:1000]


def parse_control(
    body: bytes,
    props: ControlProps | None = None,
    targets: Mapping[str, str] | None = None,
    arrival: float | None = None,
) -> Control | ControlInvalid:
    """Validate a control message. ``targets`` (name -> API kind), when given, must hold the
    target and the scope field must be its API's; ``arrival`` (epoch seconds) stands for
    the time when the message has no AMQP timestamp."""
    props = props or ControlProps()
    try:
        return _parse(body, props, targets, arrival)
    except ControlRefused as exc:
        return ControlInvalid(exc.code, exc.reason, props.message_id)


def _parse(
    body: bytes, props: ControlProps, targets: Mapping[str, str] | None, arrival: float | None
) -> Control:
    if len(body) > MAX_BODY_BYTES:
        raise ControlRefused("too_large", f"body is {len(body)} bytes, over {MAX_BODY_BYTES}")
    try:
        data = exactjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ControlRefused("not_json", not_json_reason(body, exc)) from None
    if not isinstance(data, dict):
        raise ControlRefused("not_object", "body must be a JSON object")
    command = data.get("command")
    if command not in _COMMANDS:
        raise ControlRefused(
            "unknown_command",
            f"command must be one of {', '.join(_COMMANDS)}, not {str(command)[:64]!r}",
        )
    try:
        parsed = ControlBody.model_validate(data)
    except ValidationError as exc:
        raise ControlRefused("invalid_message", _schema_reason(exc)) from None
    given = [name for name in SCOPES if name in parsed.model_fields_set]
    if parsed.request_ids is not None:
        for request_id in parsed.request_ids:
            if not _SAFE_TEXT.fullmatch(request_id):
                raise ControlRefused(
                    "invalid_request_id",
                    f"request id {request_id[:64]!r} is not 1-256 printable ASCII characters "
                    "without spaces",
                )
    if parsed.reason is not None and not _REASON_TEXT.fullmatch(parsed.reason):
        raise ControlRefused(
            "invalid_reason",
            f"reason must be 1-{MAX_REASON} printable characters without control characters "
            "(no newlines)",
        )
    _check_fields(command, parsed, given, props)
    scope = _scope(parsed, given, targets)
    at = _time(command, props, arrival)
    return Control(
        command=command,
        at=at,
        target=parsed.target,
        scope=scope,
        request_ids=tuple(dict.fromkeys(parsed.request_ids or ())),
        reason=parsed.reason,
        user_id=props.user_id,
        app_id=props.app_id,
        message_id=props.message_id,
        reply_to=props.reply_to,
        correlation_id=props.correlation_id,
        rewrite_of=props.rewrite_of if command == "pause" else None,
    )


def _time(command: str, props: ControlProps, arrival: float | None) -> float:
    """A record's time: its AMQP timestamp, never later than its arrival (a sender's clock
    ahead must not stretch a cancel's TTL or move a scope cancel's cut-off). Without a
    timestamp, a pause, resume or status takes its arrival; a cancel is refused: RabbitMQ
    3.10 streams record no arrival time of their own (only ``x-stream-offset``), so every
    read (every restart) would give it a new time, restarting its TTL and moving its
    cut-off."""
    stamp = props.timestamp.timestamp() if props.timestamp is not None else None
    if stamp is not None and not math.isfinite(stamp):
        stamp = None
    if stamp is None:
        if command == "cancel":
            raise ControlRefused(
                "no_timestamp",
                "a cancel needs an AMQP timestamp (the time its TTL and a scope cancel's "
                "cut-off count from); publish it with one, as bulkops cancel does",
            )
        if arrival is None or not math.isfinite(arrival):
            raise ControlRefused("no_time", "the message has no AMQP timestamp and no arrival time")
        return arrival
    if arrival is not None and math.isfinite(arrival):
        return min(stamp, arrival)
    return stamp


def _conflict(reason: str) -> ControlRefused:
    return ControlRefused("conflicting_fields", reason)


def _check_fields(command: str, parsed: _Head, given: list[str], props: ControlProps) -> None:
    if command == "status":
        extra = sorted(parsed.model_fields_set - {"command"})
        if extra:
            raise _conflict(f"status takes no other field ({', '.join(extra)} given)")
        if not props.reply_to:
            raise ControlRefused("no_reply_to", "status needs an AMQP reply_to to answer to")
        return
    if len(given) > 1:
        raise _conflict(f"give at most one scope field, not {' and '.join(given)}")
    if command == "cancel":
        _check_cancel(parsed, given)
        return
    if parsed.request_ids is not None:
        raise _conflict(f"{command} takes a target, not request_ids")
    if parsed.target is None:
        raise ControlRefused("missing_field", f"{command} needs a target")


def _check_cancel(parsed: _Head, given: list[str]) -> None:
    if parsed.request_ids is not None and parsed.target is not None:
        raise _conflict("cancel takes request_ids or a target (with a scope), not both")
    if parsed.request_ids is None and parsed.target is None:
        raise ControlRefused("missing_field", "cancel needs request_ids or a target")
    if parsed.request_ids is not None and given:
        raise _conflict(f"{given[0]} does not go with request_ids (give a target)")


def _scope(parsed: _Head, given: list[str], targets: Mapping[str, str] | None) -> ScopeSel | None:
    if parsed.target is not None and targets is not None:
        kind = targets.get(parsed.target)
        if kind is None:
            raise ControlRefused("unknown_target", f"unknown target {parsed.target!r}")
        own = APIS[kind].scope.name if kind in APIS else None
        if given and given[0] != own:
            raise ControlRefused(
                "invalid_scope", f"{given[0]} does not apply to target {parsed.target!r}"
            )
    if not given:
        return None
    name = given[0]
    value = getattr(parsed, name)
    if value is None:
        if not SCOPES[name].absent:
            raise ControlRefused("invalid_scope", f"{name} cannot be null")
        return (name, None)
    problem = scope_problem(value, name)
    if problem is not None:
        said = problem if problem.startswith(name) else f"{name}: {problem}"
        raise ControlRefused("invalid_scope", said)
    return (name, value)


def control_body(
    command: str,
    *,
    target: str | None = None,
    request_ids: list[str] | tuple[str, ...] | None = None,
    reason: str | None = None,
    scope: ScopeSel | None = None,
    reply_to: str | None = None,
    targets: Mapping[str, str] | None = None,
) -> bytes:
    """The body of a control message, validated: raises ``ControlRefused`` for a bad one.
    ``scope``: (field, value) with value None for the primary; None for the whole target."""
    data: dict[str, Any] = {"command": command}
    if target is not None:
        data["target"] = target
    if request_ids is not None:
        data["request_ids"] = list(request_ids)
    if reason is not None:
        data["reason"] = reason
    if scope is not None:
        data[scope[0]] = scope[1]
    body = orjson.dumps(data)
    check(body, ControlProps(reply_to=reply_to), targets)
    return body


def check(
    body: bytes, props: ControlProps | None = None, targets: Mapping[str, str] | None = None
) -> Control:
    """The control message ``body`` is, or ``ControlRefused`` saying why it is refused."""
    props = props or ControlProps()
    if props.timestamp is None:  # the CLI and the client publish with one (now)
        props = dataclasses.replace(props, timestamp=datetime.now(UTC))
    parsed = parse_control(body, props, targets)
    if isinstance(parsed, ControlInvalid):
        raise ControlRefused(parsed.code, parsed.reason)
    return parsed
