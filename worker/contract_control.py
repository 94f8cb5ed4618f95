"""The control part of the AsyncAPI document (``worker.contract``, issue 23): the control
exchange and its stream, the control messages' schemas as ``worker.control.messages``
accepts them, and the workers' status replies."""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import ConfigDict, Field

from worker.contract_parts import (
    _amqp,
    _amqp_channel,
    _default,
    _message,
    _message_refs,
    _ref,
)
from worker.control.config import DEFAULT_CANCEL_TTL, max_age_seconds, stream_name
from worker.control.messages import (
    _COMMANDS,
    _REASON_TEXT,
    CONTROL_TYPE,
    SENTINEL_TYPE,
    STATUS_REPLY_TYPE,
    ControlBody,
)
from worker.control.transport import APP_HEADER, REWRITE_HEADER, SINCE_HEADER, USER_HEADER
from worker.messages import _SAFE_TEXT
from worker.registry import SCOPES


def _status_body() -> type:
    """A worker's reply to ``status`` (``transport.status_body``): its scopes, the pauses
    (``Pause.describe``) and cancels (``Cancel.describe``) in force, its partitions. The
    nested shapes are closed; the report itself may carry more (``WorkerSnapshot.extra``)."""
    scope_key: Any = Literal[tuple(SCOPES)]
    scope = Annotated[dict[scope_key, str | None], Field(min_length=1, max_length=1)] | None
    said = [("reason", str | None), ("user_id", str | None), ("app_id", str | None),
            ("since", float)]  # fmt: skip
    nested: dict[str, list[tuple[str, Any]]] = {
        "StatusScope": [("target", str), ("scope", scope), ("pending", int),
                        ("in_flight", int), ("paused", bool), ("held", int)],
        "StatusPause": [("target", str), ("scope", scope), *said],
        "StatusCancel": [("request_ids", list[str] | None), ("target", str | None),
                         ("scope", scope), *said, ("expires", float)],
    }  # fmt: skip
    made = {name: dataclasses.make_dataclass(name, fields) for name, fields in nested.items()}
    lists = {name: list.__class_getitem__(shape) for name, shape in made.items()}
    report = dataclasses.make_dataclass(
        "StatusReport",
        [("worker", str), ("at", float), ("scopes", lists["StatusScope"]),
         ("pauses", lists["StatusPause"]), ("cancels", lists["StatusCancel"]),
         ("partitions", list[int] | None)],
    )  # fmt: skip
    for shape in (*made.values(), report):
        shape.__module__ = __name__
        shape.__doc__ = None
        if shape is not report:
            shape.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    return report


def _anchored(pattern: re.Pattern[str]) -> str:
    """A parser's ``fullmatch`` pattern as a JSON Schema ``pattern`` (which searches)."""
    return f"^(?:{pattern.pattern})$"


def _control_schemas() -> dict[str, Any]:
    """The control bodies, one schema per form, as ``worker.control.messages`` accepts them:
    ``ControlBody``'s fields and limits, tightened by the parser's own rules (the command,
    request id and reason patterns, which fields go with which command, at most one scope
    field, a scope field that cannot be absent cannot be null). A field the parser reads as
    absent when null (``target``, ``request_ids``, ``reason``) may be null where it does not
    apply. A scope value also follows its API's rule (as in requests), and a target (and its
    scope field) must be one the worker knows: that is checked by the worker, not here."""
    fields = ControlBody.model_json_schema()["properties"]

    def given(name: str) -> dict[str, Any]:  # the field's non-null form
        return next(s for s in fields[name]["anyOf"] if s["type"] != "null")

    null = {"type": "null"}
    reason = {
        "anyOf": [{**given("reason"), "pattern": _anchored(_REASON_TEXT)}, null],
        "description": "why, for a person: 1-1000 characters, no control characters",
    }
    ids = given("request_ids") | {"items": {"type": "string", "pattern": _anchored(_SAFE_TEXT)}}
    scopes = {
        name: {"anyOf": [given(name), null]} if field.absent else given(name)
        for name, field in SCOPES.items()
    }
    one_scope = {
        "not": {"anyOf": [{"required": list(p)} for p in itertools.combinations(SCOPES, 2)]}
    }

    def body(command: str, title: str, required: str, **properties: Any) -> dict[str, Any]:
        return {
            "title": title,
            "type": "object",
            "properties": {"command": {"type": "string", "const": command}, **properties},
            "required": ["command", *([required] if required else [])],
            "additionalProperties": False,
        }

    def scoped(command: str, title: str) -> dict[str, Any]:
        schema = body(command, title, "target", target=given("target"), **scopes,
                      request_ids=null, reason=reason)  # fmt: skip
        return schema | (one_scope if len(SCOPES) > 1 else {})

    assert set(_COMMANDS) == {"cancel", "pause", "resume", "status"}, "describe the new command"
    schemas = {
        "ControlCancelRequests": body("cancel", "Cancel requests", "request_ids",
                                      request_ids=ids, target=null, reason=reason),
        "ControlCancelScope": scoped("cancel", "Cancel a target, or one scope of it"),
        "ControlPause": scoped("pause", "Pause a target, or one scope of it"),
        "ControlResume": scoped("resume", "Resume a target, or one scope of it"),
        "ControlStatus": body("status", "Ask every worker's status", ""),
    }  # fmt: skip
    # each its own copy: spelt out in the YAML document, not as anchors and aliases
    return {name: orjson.loads(orjson.dumps(schema)) for name, schema in schemas.items()}


def _control_properties() -> dict[str, Any]:
    """The AMQP properties a worker reads of a control message (by their AMQP names, as the
    document's runtime expressions address reply_to and correlation_id), and the headers of
    a worker's rewrite of a pause."""
    text = {"type": "string"}
    return {
        "title": "ControlProperties",
        "type": "object",
        "properties": {
            "content_type": {"const": "application/json"},
            "delivery_mode": {"const": 2, "description": "persistent"},
            "type": text | {"description": f"{CONTROL_TYPE!r} (readers do not require it)"},
            "message_id": text | {"description": "names the message (a pause: its rewrites "
                                  "name it); absent: its stream offset stands for it"},
            "timestamp": {"type": "integer", "description": "AMQP timestamp (POSIX seconds): "
                          "when it was sent; the record's time is this, never later than its "
                          "arrival. A cancel's TTL and a scope cancel's cut-off count from it."},
            "user_id": text | {"description": "who sent it (the broker checks it is the login)"},
            "app_id": text | {"description": "what sent it"},
            "reply_to": text | {"description": "status: where each worker replies"},
            "correlation_id": text | {"description": "status: copied to each reply"},
            REWRITE_HEADER: text | {"description": "header of a worker's rewrite of a pause in "
                                    "force: the message_id of the pause as first sent"},
            SINCE_HEADER: {"type": "number", "description": "rewrite header: the pause's time"},
            USER_HEADER: text | {"description": "rewrite header: the pause's user_id"},
            APP_HEADER: text | {"description": "rewrite header: the pause's app_id"},
        },
    }  # fmt: skip


CONTROL_MESSAGES = ("cancelRequests", "cancelScope", "pause", "resume", "status")
"""The control messages an operator (the CLI, the client) sends, in the document's order."""


def _control_channels(queue: dict[str, Any]) -> dict[str, Any]:
    exchange = _default("control_exchange")
    stream = stream_name(exchange)
    names = (*CONTROL_MESSAGES, "controlSentinel")
    fanout = {
        "name": exchange,
        "type": "fanout",
        "durable": True,
        "autoDelete": False,
        "vhost": "/",
    }
    return {
        "control": {
            "address": exchange,
            "title": "Control exchange",
            "description": "Durable fanout exchange (BULKOPS_CONTROL_EXCHANGE) every worker "
            "hears: cancel, pause, resume and status, JSON and persistent, published mandatory "
            "with publisher confirms (the CLI and the client declare it and its stream first, "
            f"so a message sent before any worker runs is kept). Bound to the stream {stream!r}; "
            "a message that breaks the rules is refused by the CLI and the client, and logged, "
            "counted (bulkops_control_invalid_total) and ignored by workers, never "
            "dead-lettered. Workers publish here too: their end-of-stream sentinels and the "
            "pauses in force written again.",
            "messages": _message_refs(names),
            "bindings": _amqp_channel("routingKey", exchange=fanout),
        },
        "controlState": {
            "address": stream,
            "title": "Control stream",
            "description": "Stream <control exchange>.state bound to the control exchange: "
            "the control state kept in RabbitMQ (x-max-age: BULKOPS_CANCEL_TTL_SECONDS plus "
            f"a day, {max_age_seconds(DEFAULT_CANCEL_TTL)}s by default; each worker writes "
            "the pauses in force again hourly so retention never drops one). Every worker "
            "reads it from x-stream-offset 'first' (prefetch required, acks are credit) up to "
            "a sentinel it published and the broker confirmed, before it consumes any "
            "request; cancels stay in force for the cancel TTL from their timestamp, pauses "
            "until resumed. A status older than a minute is not answered.",
            "messages": _message_refs(names),
            "bindings": _amqp_channel("queue", queue={"name": stream, **queue}),
        },
        "statusReplies": {
            "address": None,
            "title": "Status replies",
            "description": "The status message's reply_to (a named queue, or "
            "amq.rabbitmq.reply-to), through the default exchange: one reply per running "
            "worker.",
            "messages": {"statusReply": _ref("components/messages/statusReply")},
        },
    }


def _control_message(
    name: str, title: str, schema: str, summary: str, *required: str
) -> dict[str, Any]:
    """A control message: its body's schema, the AMQP properties a worker reads (``required``
    among them: the ones it refuses the message without)."""
    headers: dict[str, Any] = _ref("components/schemas/ControlProperties")
    if required:
        headers = {"allOf": [headers, {"required": list(required)}]}
    return _message(
        name, title, _ref(f"components/schemas/{schema}"), summary=summary, headers=headers,
        bindings=_amqp(messageType=CONTROL_TYPE),
    )  # fmt: skip


def _control_messages() -> dict[str, Any]:
    scope = (
        "Scope field absent: the whole target; null (where the API's field may be absent): "
        "its primary scope."
    )
    return {
        "cancelRequests": _control_message(
            "cancelRequests",
            "Withdraw every item of these requests not yet sent to an API",
            "ControlCancelRequests",
            "Items not yet part of an API request are answered rejected with error code "
            "cancelled (retryable false), now or when consumed within the cancel TTL; items "
            "sent keep their true outcome. Needs an AMQP timestamp.",
            "timestamp",
        ),
        "cancelScope": _control_message(
            "cancelScope",
            "Withdraw every item of a target, or one scope of it, not yet sent to an API",
            "ControlCancelScope",
            "Whoever published them: items of messages published up to the cancel's "
            f"timestamp. {scope} Needs an AMQP timestamp.",
            "timestamp",
        ),
        "pause": _control_message(
            "pause",
            "Send nothing for a target, or one scope of it, until resumed",
            "ControlPause",
            "Its items wait in hold queues (none lost, per-id order kept), across restarts "
            f"and by every replica. {scope} A worker's rewrite of a pause in force carries "
            f"the headers {REWRITE_HEADER}, {SINCE_HEADER} and the sender's.",
        ),
        "resume": _control_message(
            "resume",
            "End the pause of a target, or of that scope of it",
            "ControlResume",
            f"The held items come back. {scope}",
        ),
        "status": _control_message(
            "status",
            "Ask every running worker what it holds",
            "ControlStatus",
            "Each running worker replies to reply_to with correlation_id.",
            "reply_to",
        ),
        "controlSentinel": _message(
            "controlSentinel",
            "A reader's end-of-stream sentinel: every reader ignores it",
            {"type": "object", "description": "{} (not read)"},
            summary="A worker reads the stream up to its own sentinel (message_id) to know "
            "it has caught up; the others skip it by its type.",
            bindings=_amqp(messageType=SENTINEL_TYPE),
        ),
        "statusReply": _message(
            "statusReply",
            "One worker's status: what it holds per scope, the pauses and cancels in force "
            "(who, why, since when), its partitions",
            _ref("components/schemas/StatusReport"),
            summary="correlation_id = the status message's correlation_id; not persistent. "
            "Times are POSIX seconds; partitions null: not partitioned.",
            correlationId={"location": "$message.header#/correlation_id"},
            bindings=_amqp(messageType=STATUS_REPLY_TYPE),
        ),
    }
