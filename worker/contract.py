"""The wire contract as a machine-readable AsyncAPI 3.0 document (``docs/asyncapi.yaml``).

Built, not written: the payload schemas come from the models that read and write the
messages (the worker's ``RequestBody`` and ``Outcome``, the client's ``Reply``), and the
names from the worker's settings defaults. ``tests/unit/test_contract.py`` fails when the
checked-in document differs from what this builds; regenerate it with
``uv run python -m tests.contract.write_asyncapi``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import ConfigDict, Field, TypeAdapter

from worker.client.operations import CONTRACT_OPERATIONS
from worker.client.replies import REPLY_TYPE, STATUSES, Reply
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
from worker.errors import ErrorInfo
from worker.messages import _SAFE_TEXT, Outcome, RequestBody
from worker.outcomes import OUTCOMES_TYPE, Status
from worker.registry import APIS, SCOPES
from worker.settings import Settings
from worker.wirenames import REASON_HEADER, UNROUTED_MAX_LENGTH, priority_name, unrouted_name

ASYNCAPI_VERSION = "3.0.0"
REF = "#/components/schemas/{model}"
AMQP_BINDING = "0.3.0"


def _outcome_body() -> type:
    """The outcome body's shape: ``Outcome``'s fields with its ``scope`` spelt out as every
    API's scope field (the catalog's ``SCOPES``), as ``Outcome.body`` writes them."""
    fields: list[tuple[str, Any]] = []
    for f in dataclasses.fields(Outcome):
        if f.name == "scope":
            fields += [(name, "str | None") for name in SCOPES]
        else:
            fields.append((f.name, f.type))
    shape = dataclasses.make_dataclass("Outcome", fields, frozen=True, slots=True)
    shape.__module__ = Outcome.__module__
    shape.__doc__ = Outcome.__doc__
    return shape


def _outcomes_body() -> type:
    """The batch format's body (``OutcomeBatch.body``): the shared fields once, then
    ``items`` (``batch_item``)."""
    item = dataclasses.make_dataclass(
        "OutcomesItem",
        [("request_id", str), ("id", str), ("job_id", "str | None"),
         ("error", ErrorInfo | None), ("attempts", int)],
        frozen=True, slots=True,
    )  # fmt: skip
    fields: list[tuple[str, Any]] = [("operation", str), ("target", "str | None")]
    fields += [(name, "str | None") for name in SCOPES]
    fields += [("status", Status), ("batch_id", "str | None"), ("part", int),
               ("finished_at", str), ("items", list.__class_getitem__(item))]  # fmt: skip
    shape = dataclasses.make_dataclass("Outcomes", fields, frozen=True, slots=True)
    for made in (item, shape):
        made.__module__ = __name__
        made.__doc__ = None
    return shape


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


def payload_schemas() -> dict[str, Any]:
    """The JSON Schemas of the payloads, nested definitions hoisted beside them."""
    out: dict[str, Any] = {}
    generated = {
        "Request": RequestBody.model_json_schema(ref_template=REF),
        "Outcome": TypeAdapter(_outcome_body()).json_schema(ref_template=REF),
        "Outcomes": TypeAdapter(_outcomes_body()).json_schema(ref_template=REF),
        "Reply": Reply.model_json_schema(ref_template=REF),
        **_control_schemas(),
        "ControlProperties": _control_properties(),
        "StatusReport": TypeAdapter(_status_body()).json_schema(ref_template=REF),
    }
    for name, schema in generated.items():
        out.update(schema.pop("$defs", {}))
        out[name] = schema
    return out


def _default(field: str) -> str:
    value = Settings.model_fields[field].default
    assert isinstance(value, str)
    return value


def _ref(path: str) -> dict[str, str]:
    return {"$ref": f"#/{path}"}


def _amqp(**fields: Any) -> dict[str, Any]:
    return {"amqp": {**fields, "bindingVersion": AMQP_BINDING}}


def _amqp_channel(kind: str, **fields: Any) -> dict[str, Any]:
    return _amqp(**{"is": kind}, **fields)


def _channels() -> dict[str, Any]:
    requests, dlq = _default("request_queue"), _default("dead_letter_queue")
    queue = {"durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"}
    return {
        "requests": {
            "address": requests,
            "title": "Request queue",
            "description": "Quorum queue the worker consumes (BULKOPS_REQUEST_QUEUE); publish "
            "to the default exchange with this routing key. Dead-letters to the DLQ, with "
            "the reason, past x-delivery-limit (BULKOPS_DELIVERY_LIMIT) deliveries.",
            "messages": {"request": _ref("components/messages/request")},
            "bindings": _amqp_channel("queue", queue={"name": requests, **queue}),
        },
        "priorityRequests": {
            "address": priority_name(Settings.model_construct()),
            "title": "Priority lane",
            "description": "Quorum queue <request queue>.priority: the same messages, "
            "arguments and dead-lettering as the request queue, consumed on a channel of "
            "its own (BULKOPS_PRIORITY_PREFETCH). Its items go ahead of the backlog in every "
            "scope, under the same rate limits; per id, an operation the worker already "
            "holds is never overtaken (see the README, 'The priority lane').",
            "messages": {"request": _ref("components/messages/request")},
            "bindings": _amqp_channel(
                "queue",
                queue={"name": priority_name(Settings.model_construct()), **queue},
            ),
        },
        "results": {
            "address": "{operation}.{status}",
            "title": "Outcomes on the results exchange",
            "description": f"Topic exchange {_default('results_exchange')!r} "
            "(BULKOPS_RESULTS_EXCHANGE): one outcome per item, published mandatory; bind at "
            "least one queue with '#'. An operation the worker does not know is routed as "
            "'invalid'.",
            "parameters": {
                "operation": {"enum": [*sorted(CONTRACT_OPERATIONS), "invalid"]},
                "status": {"enum": list(STATUSES)},
            },
            "messages": {
                "outcome": _ref("components/messages/outcome"),
                "outcomes": _ref("components/messages/outcomes"),
            },
            "bindings": _amqp_channel(
                "routingKey",
                exchange={
                    "name": _default("results_exchange"),
                    "type": "topic",
                    "durable": True,
                    "autoDelete": False,
                    "vhost": "/",
                },
            ),
        },
        "unroutedOutcomes": {
            "address": unrouted_name(Settings.model_construct()),
            "title": "Outcomes no binding matched",
            "description": "A quorum queue bounded to "
            f"{UNROUTED_MAX_LENGTH:,} outcomes (the oldest dropped beyond): an outcome that "
            "matches no binding comes back to the worker's mandatory publish and is parked "
            "here (header x-bulkops-routing-key: its routing key), not lost, and its request "
            "is not held. The fanout exchange of the same name is bound to it, for a policy "
            "giving the results exchange an alternate exchange.",
            "messages": {
                "outcome": _ref("components/messages/outcome"),
                "outcomes": _ref("components/messages/outcomes"),
            },
            "bindings": _amqp_channel(
                "queue",
                queue={"name": unrouted_name(Settings.model_construct()), **queue},
            ),
        },
        "replies": {
            "address": None,
            "title": "Replies",
            "description": "The request's reply_to (a named queue, or "
            "amq.rabbitmq.reply-to), through the default exchange.",
            "messages": {"reply": _ref("components/messages/reply")},
        },
        **_control_channels(queue),
        "deadLetters": {
            "address": dlq,
            "title": "Dead-letter queue",
            "description": "Quorum queue (BULKOPS_DEAD_LETTER_QUEUE) of requests that cannot "
            "be processed, never dropped; see `bulkops dlq list|replay`.",
            "messages": {"deadLetter": _ref("components/messages/deadLetter")},
            "bindings": _amqp_channel("queue", queue={"name": dlq, **queue}),
        },
    }


CONTROL_MESSAGES = ("cancelRequests", "cancelScope", "pause", "resume", "status")
"""The control messages an operator (the CLI, the client) sends, in the document's order."""


def _message_refs(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _ref(f"components/messages/{name}") for name in names}


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


def _api_names() -> str:
    return " and ".join(spec.title for spec in APIS.values())


def _reply(channel: str, message: str, asker: str) -> dict[str, Any]:
    """An operation's reply: to the reply_to property of what it received."""
    return {
        "address": {
            "location": "$message.header#/reply_to",
            "description": f"the AMQP reply_to property of the {asker}",
        },
        "channel": _ref(f"channels/{channel}"),
        "messages": [_ref(f"channels/{channel}/messages/{message}")],
    }


def _operations() -> dict[str, Any]:
    control = [_ref(f"channels/control/messages/{name}") for name in CONTROL_MESSAGES]
    return {
        "consumeRequests": {
            "action": "receive",
            "title": "The worker consumes requests and answers each one that has reply_to",
            "channel": _ref("channels/requests"),
            "messages": [_ref("channels/requests/messages/request")],
            "bindings": _amqp(ack=True),
            "reply": _reply("replies", "reply", "request"),
        },
        "consumePriorityRequests": {
            "action": "receive",
            "title": "The worker consumes the priority lane ahead of the backlog, and answers "
            "each request that has reply_to",
            "channel": _ref("channels/priorityRequests"),
            "messages": [_ref("channels/priorityRequests/messages/request")],
            "bindings": _amqp(ack=True),
            "reply": _reply("replies", "reply", "request"),
        },
        "publishOutcomes": {
            "action": "send",
            "title": "One outcome per item, confirmed before the request is acked",
            "channel": _ref("channels/results"),
            "messages": [
                _ref("channels/results/messages/outcome"),
                _ref("channels/results/messages/outcomes"),
            ],
            "bindings": _amqp(deliveryMode=2, mandatory=True),
        },
        "sendControl": {
            "action": "send",
            "title": "An operator (bulkops cancel|pause|resume|status, the client's "
            "ControlClient) sends a control message, confirmed by the broker",
            "channel": _ref("channels/control"),
            "messages": control,
            "bindings": _amqp(deliveryMode=2, mandatory=True),
        },
        "receiveControl": {
            "action": "receive",
            "title": "Every worker reads the control stream and answers each status (with "
            "reply_to) read live",
            "channel": _ref("channels/controlState"),
            "messages": [
                _ref(f"channels/controlState/messages/{name}")
                for name in (*CONTROL_MESSAGES, "controlSentinel")
            ],
            "bindings": _amqp(ack=True),
            "reply": _reply("statusReplies", "statusReply", "status message"),
        },
        "writeControlState": {
            "action": "send",
            "title": "A worker publishes its end-of-stream sentinel when it starts reading, "
            "and the pauses in force again (with the rewrite headers)",
            "channel": _ref("channels/control"),
            "messages": [
                _ref("channels/control/messages/controlSentinel"),
                _ref("channels/control/messages/pause"),
            ],
            "bindings": _amqp(deliveryMode=2),
        },
        "deadLetterRequests": {
            "action": "send",
            "title": "Messages that cannot be processed, with the reason in a header",
            "channel": _ref("channels/deadLetters"),
            "messages": [_ref("channels/deadLetters/messages/deadLetter")],
            "bindings": _amqp(deliveryMode=2, mandatory=True),
        },
    }


def _message(name: str, title: str, payload: dict[str, Any], **more: Any) -> dict[str, Any]:
    base = {"name": name, "title": title, "contentType": "application/json", "payload": payload}
    return base | more


def _messages() -> dict[str, Any]:
    correlation = {"location": "$message.header#/correlation_id"}
    return {
        "request": _message(
            "request",
            "A bulk request: ids (or items) of one operation on one target and scope",
            _ref("components/schemas/Request"),
            summary="message_id (else a hash of the body) names the request when the body "
            "has no request_id; persistent.",
        ),
        "outcome": _message(
            "outcome",
            "One item's outcome",
            _ref("components/schemas/Outcome"),
            summary="message_id = <request_id>:<operation>:<id>, the same on redelivery; "
            "correlation_id = the request's correlation_id, else its request_id.",
            correlationId=correlation,
            bindings=_amqp(messageType="bulkops.outcome"),
        ),
        "outcomes": _message(
            "outcomes",
            "One dispatch batch's items of one status (BULKOPS_OUTCOME_FORMAT=batch)",
            _ref("components/schemas/Outcomes"),
            summary="message_id = <batch_id>:<status>:<part> (parts of at most 4 MiB); "
            "items rejected at intake: <request_id>:<operation>:rejected, one per request "
            "message. correlation_id = the batch_id (intake: as for outcomes). Consumers drop "
            "duplicates per item by (request_id, operation, id).",
            correlationId=correlation,
            bindings=_amqp(messageType=OUTCOMES_TYPE),
        ),
        "reply": _message(
            "reply",
            "The answer to one request message: every distinct id, in message order",
            _ref("components/schemas/Reply"),
            summary="message_id = <request_id>:reply; correlation_id as for outcomes.",
            correlationId=correlation,
            bindings=_amqp(messageType=REPLY_TYPE),
        ),
        **_control_messages(),
        "deadLetter": _message(
            "deadLetter",
            "A request that cannot be processed, body and properties unchanged",
            {"description": "the request's body as it was published (it may not be JSON)"},
            headers={
                "type": "object",
                "properties": {
                    REASON_HEADER: {"type": "string", "description": "why, for a person"},
                    "x-bulkops-original-queue": {"type": "string"},
                },
                "required": [REASON_HEADER],
            },
        ),
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


def document() -> dict[str, Any]:
    """The AsyncAPI document of the bulkops wire contract."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "bulkops",
            "version": "0.1.0",
            "description": f"Bulk {_api_names()} operations over RabbitMQ, answered per "
            "item. Generated from the worker's message models by worker/contract.py; the "
            "prose contract is README.md.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "The local RabbitMQ of development and tests "
                "(BULKOPS_AMQP_URL in a deployment).",
            }
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {"messages": _messages(), "schemas": payload_schemas()},
    }
