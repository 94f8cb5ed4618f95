"""The wire contract as a machine-readable AsyncAPI 3.0 document (``docs/asyncapi.yaml``).

Built, not written: the payload schemas come from the models that read and write the
messages (the worker's ``RequestBody`` and ``Outcome``, the client's ``Reply``), and the
names from the worker's settings defaults. ``tests/unit/test_contract.py`` fails when the
checked-in document differs from what this builds; regenerate it with
``uv run python -m tests.contract.write_asyncapi``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import TypeAdapter

from worker.client.operations import CONTRACT_OPERATIONS
from worker.client.replies import REPLY_TYPE, STATUSES, Reply
from worker.contract_control import (
    CONTROL_MESSAGES,
    _control_channels,
    _control_messages,
    _control_properties,
    _control_schemas,
    _status_body,
)
from worker.contract_parts import (
    REF,
    _amqp,
    _amqp_channel,
    _default,
    _message,
    _ref,
)
from worker.errors import ErrorInfo
from worker.messages import Outcome, RequestBody
from worker.outcomes import OUTCOMES_TYPE, Status
from worker.registry import APIS, SCOPES
from worker.settings import Settings
from worker.wirenames import REASON_HEADER, UNROUTED_MAX_LENGTH, priority_name, unrouted_name

ASYNCAPI_VERSION = "3.0.0"


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
