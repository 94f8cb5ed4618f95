"""docs/asyncapi.yaml: what the message models generate, a valid AsyncAPI 3.0 document, and
schemas that accept the messages the worker and the client really produce (and refuse
others)."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from tests.contract.write_asyncapi import DOCUMENT, render
from tests.unit import test_control_messages
from tests.unit.test_control_messages import OPTIONAL, REQUIRED
from worker.client import Job
from worker.client import Reply as ClientReply
from worker.client.replies import REPLY_TYPE
from worker.contract import document
from worker.control.messages import (
    CONTROL_TYPE,
    MAX_REQUEST_IDS,
    STATUS_REPLY_TYPE,
    Control,
    ControlInvalid,
    ControlProps,
    control_body,
    parse_control,
)
from worker.control.state import ControlState
from worker.control.transport import ScopeCounts, WorkerSnapshot, status_body
from worker.messages import REPLY_TYPE as WORKER_REPLY_TYPE
from worker.messages import ErrorInfo, Invalid, Outcome, Reply, ReplyItem, parse_request

ASYNCAPI_SCHEMA = Path(__file__).resolve().parents[1] / "contract" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def checked_in() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def payload_validator(doc: dict[str, Any], schema: str) -> jsonschema.Draft202012Validator:
    """A validator of one component schema, its $refs resolved inside the document."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(root)


def test_checked_in_document_is_what_the_message_models_generate(
    checked_in: dict[str, Any],
) -> None:
    """docs/asyncapi.yaml equals what worker/contract.py builds from the models now: a model
    changed without regenerating the document fails here (run
    `uv run python -m tests.contract.write_asyncapi`)."""
    assert checked_in == document(), "regenerate: uv run python -m tests.contract.write_asyncapi"
    assert yaml.safe_load(render(document())) == document(), "YAML round trip loses nothing"


def test_document_validates_against_the_official_asyncapi_3_schema(
    checked_in: dict[str, Any],
) -> None:
    """The document is a valid AsyncAPI 3.0.0 document per the official JSON Schema; the
    same check refuses a broken copy (an operation action that AsyncAPI 3 does not have)."""
    validator = jsonschema.Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))
    errors = [e.message for e in validator.iter_errors(checked_in)]
    assert errors == []
    broken = copy.deepcopy(checked_in)
    broken["operations"]["publishOutcomes"]["action"] = "publish"
    assert not validator.is_valid(broken)


def test_every_reference_in_the_document_resolves(checked_in: dict[str, Any]) -> None:
    """Each $ref points at something in the document (channels, messages, schemas)."""

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    found = refs(checked_in)
    assert len(found) > 10
    for ref in found:
        node: Any = checked_in
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def test_payload_schemas_are_json_schemas(checked_in: dict[str, Any]) -> None:
    """Each payload schema is itself a valid JSON Schema (2020-12, as pydantic writes)."""
    schemas = checked_in["components"]["schemas"]
    assert {"Request", "Outcome", "Reply", "ErrorInfo", "ReplyItem"} <= set(schemas)
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)  # raises SchemaError if not


def test_outcome_schema_accepts_the_worker_outcome_bodies_and_refuses_others(
    checked_in: dict[str, Any],
) -> None:
    """Outcome bodies as the worker writes them (succeeded, failed with an error, rejected
    from an invalid message) fit the Outcome schema; a body without a status or with an
    unknown status does not."""
    validator = payload_validator(checked_in, "Outcome")
    ok = Outcome("r1", "datocms.items.publish", "main", (), "a", "succeeded",
                 None, 1, "b1", "j1", "2026-11-30T12:00:00.000000Z")  # fmt: skip
    failed = Outcome("r1", "datocms.items.publish", "main", (("environment", "env"),), "b", "failed",
                     ErrorInfo("ITEM_LOCKED", "locked", False), 2, "b1", None, "t")  # fmt: skip
    invalid = Invalid("unknown operation 'x'", "unknown_operation", "r2", "x", "main",
                      readable_ids=("c",))  # fmt: skip
    bodies = [orjson.loads(o.body()) for o in (ok, failed, *invalid.outcomes("t"))]
    for body in bodies:
        validator.validate(body)
    without_status = {k: v for k, v in bodies[0].items() if k != "status"}
    assert not validator.is_valid(without_status)
    assert not validator.is_valid({**bodies[0], "status": "done"})


def test_request_schema_accepts_what_the_client_publishes_and_the_worker_parses(
    checked_in: dict[str, Any],
) -> None:
    """A request body the client builds for an ids operation fits the Request schema, and the
    worker parses it as a valid request; a body with both ids missing does not fit."""
    validator = payload_validator(checked_in, "Request")
    body = Job("datocms.items.publish", "main", environment="sandbox-1").body("r-1", ids=["a"])
    validator.validate(orjson.loads(body))
    parsed = parse_request(body, None, {"main": "datocms"})
    assert not isinstance(parsed, Invalid) and parsed.ids == ("a",)
    assert not validator.is_valid({"operation": "datocms.items.publish", "target": "main"})


def test_reply_schema_accepts_a_contract_reply_and_refuses_a_bad_status(
    checked_in: dict[str, Any],
) -> None:
    """The contract's example reply fits the Reply schema; an item with status 'ok' does not."""
    validator = payload_validator(checked_in, "Reply")
    reply = {
        "request_id": "r1", "operation": "datocms.items.publish", "target": "main",
        "environment": None, "catalog_id": None,
        "counts": {"succeeded": 1, "failed": 1, "rejected": 0},
        "items": [
            {"id": "a", "status": "succeeded", "error": None},
            {"id": "b", "status": "failed",
             "error": {"code": "ITEM_LOCKED", "message": "locked", "retryable": False}},
        ],
        "finished_at": "2026-11-30T12:00:00Z",
    }  # fmt: skip
    validator.validate(reply)
    bad = copy.deepcopy(reply)
    bad["items"][0]["status"] = "ok"
    assert not validator.is_valid(bad)


def test_worker_reply_bodies_fit_the_document_and_the_client_reads_every_field(
    checked_in: dict[str, Any],
) -> None:
    """Reply bodies as the worker writes them (a processed message, a message refused as a
    whole) validate against the document's Reply schema, and the client's model reads them
    with no field left over or missing: worker and client agree on the reply."""
    validator = payload_validator(checked_in, "Reply")
    processed = Reply("r1", "datocms.items.publish", "main", (),
                      (ReplyItem("a", "succeeded"),
                       ReplyItem("b", "failed", ErrorInfo("ITEM_LOCKED", "locked"))), "t")  # fmt: skip
    refused = Invalid("not JSON", "not_json", "r2").reply("t")
    for reply in (processed, refused):
        body = orjson.loads(reply.body())
        validator.validate(body)
        parsed = ClientReply.model_validate(body)
        assert parsed.model_dump() == {"error": None, **body}  # top-level error: only if set
    assert ClientReply.model_validate_json(processed.body()).counts.failed == 1
    assert REPLY_TYPE == WORKER_REPLY_TYPE


# -- control (issue 23) ----------------------------------------------------------------------

CONTROL_MESSAGES = ("cancelRequests", "cancelScope", "pause", "resume", "status")
SENT = datetime(2026, 1, 1, tzinfo=UTC)

# The control bodies tests/unit/test_control_messages.py shows the parser accepting (and the
# null fields it reads as absent); each is parsed again below, so none can drift into an
# invalid one unnoticed.
VALID_CONTROL: list[dict[str, Any]] = [
    {"command": "cancel", "request_ids": ["r1", "r2"], "reason": "wrong list"},
    {"command": "cancel", "request_ids": ["r", "r", "s"]},
    {"command": "cancel", "request_ids": ["r"] * MAX_REQUEST_IDS, "reason": None},
    {"command": "cancel", "request_ids": ["x" * 256, "~!#"], "target": None},
    {"command": "pause", "target": "shop", REQUIRED: "products"},
    {"command": "resume", "target": "shop", REQUIRED: "products"},
    {"command": "status"},
    {"command": "pause", "target": "cms"},
    {"command": "pause", "target": "cms", OPTIONAL: None},
    {"command": "pause", "target": "cms", OPTIONAL: "staging"},
    {"command": "cancel", "target": "shop", REQUIRED: "c1", "reason": "stop"},
    {"command": "cancel", "target": "shop"},
    {"command": "cancel", "target": "t" * 128, OPTIONAL: None},
    {"command": "pause", "target": "t", "reason": "Vendor's maintenance — ünïcode 1/2"},
    {"command": "pause", "target": "t", "request_ids": None, "reason": None},
    {"command": "resume", "target": "t", REQUIRED: "c" * 256},
    orjson.loads(control_body("pause", target="cms", scope=(OPTIONAL, None), reason="outage")),
    orjson.loads(control_body("cancel", request_ids=["r1"])),
    orjson.loads(control_body("status", reply_to="q")),
]


def control_payloads(doc: dict[str, Any]) -> dict[str, jsonschema.Draft202012Validator]:
    """Each control message's payload validator, by message name."""
    messages = doc["components"]["messages"]
    return {
        name: payload_validator(doc, messages[name]["payload"]["$ref"].rsplit("/", 1)[1])
        for name in CONTROL_MESSAGES
    }


def control_headers(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    root = {**doc["components"]["messages"][name]["headers"], "components": doc["components"]}
    return jsonschema.Draft202012Validator(root)


def fitting(doc: dict[str, Any], body: Any) -> list[str]:
    return [name for name, v in control_payloads(doc).items() if v.is_valid(body)]


def control_message_of(control: Control) -> str:
    """The document's message name for a parsed control message."""
    if control.command == "cancel":
        return "cancelRequests" if control.request_ids else "cancelScope"
    return control.command


def amqp_properties(props: ControlProps) -> dict[str, Any]:
    """The AMQP properties as the document names them (timestamp: POSIX seconds)."""
    out = {k: v for k, v in dataclasses.asdict(props).items() if v is not None}
    out.pop("rewrite_of", None)
    if props.timestamp is not None:
        out["timestamp"] = int(props.timestamp.timestamp())
    return out


@pytest.mark.parametrize("body", VALID_CONTROL, ids=lambda b: str(b)[:60])
def test_every_control_message_the_parser_accepts_fits_exactly_one_control_schema(
    checked_in: dict[str, Any], body: dict[str, Any]
) -> None:
    """Each body the worker's parser accepts (with the properties the CLI and the client
    publish) validates against exactly one control message's payload, that message's
    command, and its properties against that message's headers schema."""
    props = ControlProps(message_id="m1", user_id="guest", app_id="bulkops", timestamp=SENT,
                         type=CONTROL_TYPE, reply_to="amq.gen-q", correlation_id="c1")  # fmt: skip
    parsed = parse_control(orjson.dumps(body), props, arrival=SENT.timestamp())
    assert isinstance(parsed, Control), parsed
    (name,) = fitting(checked_in, body)
    assert name == control_message_of(parsed)
    message = checked_in["components"]["messages"][name]
    assert message["bindings"]["amqp"]["messageType"] == CONTROL_TYPE
    control_headers(checked_in, name).validate(amqp_properties(props))


REJECTIONS = test_control_messages.test_every_rejection_has_its_code_and_a_specific_reason
BODY_RULES = [
    pytest.param(data, id=code + ":" + str(data)[:40])
    for data, code, _ in REJECTIONS.pytestmark[0].args[1]
    # a scope value's API rule ('a/b' as a catalog) is the worker's, not the schema's;
    # no_reply_to is a property rule (below)
    if not isinstance(data, bytes) and code not in ("invalid_scope", "no_reply_to")
]


@pytest.mark.parametrize("data", BODY_RULES)
def test_control_bodies_the_parser_refuses_fit_no_control_schema(
    checked_in: dict[str, Any], data: Any
) -> None:
    """The parser's refusals of test_control_messages.py (unknown command, missing target,
    extra field, too many ids, a bad request id or reason, request_ids with a target or a
    scope, two scope fields, status with a field) fit none of the document's schemas."""
    assert fitting(checked_in, data) == []


def test_control_schemas_refuse_what_the_parser_refuses_beyond_its_table(
    checked_in: dict[str, Any],
) -> None:
    """A scope field that cannot be absent cannot be null; a reason with a control character
    or empty; a status without reply_to and a cancel without timestamp (properties)."""
    for body in (
        {"command": "pause", "target": "shop", REQUIRED: None},
        {"command": "pause", "target": "t", "reason": "a\nb"},
        {"command": "cancel", "request_ids": ["r"], "reason": ""},
        {"command": "cancel", "request_ids": ["r"], "reason": "nel\x85"},
        {"command": "resume", "target": None},
        {"command": "pause", "target": "t", "x": 1},
        {"command": "Pause", "target": "t"},
    ):
        assert isinstance(parse(body), ControlInvalid), body
        assert fitting(checked_in, body) == [], body
    status = control_headers(checked_in, "status")
    assert not status.is_valid({"type": CONTROL_TYPE})
    assert status.is_valid({"reply_to": "q"})
    cancel = control_headers(checked_in, "cancelRequests")
    assert not cancel.is_valid({"type": CONTROL_TYPE, "app_id": "x"})
    assert isinstance(parse({"command": "cancel", "request_ids": ["r"]}, timestamp=None),
                      ControlInvalid)  # fmt: skip
    assert control_headers(checked_in, "pause").is_valid({})


def parse(body: dict[str, Any], **props: Any) -> Control | ControlInvalid:
    props.setdefault("timestamp", SENT)
    return parse_control(orjson.dumps(body), ControlProps(**props), arrival=SENT.timestamp())


def test_status_reply_schema_accepts_what_a_worker_answers_and_refuses_others(
    checked_in: dict[str, Any],
) -> None:
    """status_body of a worker holding scopes, with a pause, a cancel by ids and a scope
    cancel in force, partitioned or not, validates against StatusReport; a reply without its
    worker, or with a scope naming an unknown field, does not."""
    state = ControlState(3600)
    for body in (
        {"command": "pause", "target": "cms", OPTIONAL: None, "reason": "outage"},
        {"command": "pause", "target": "shop"},
        {"command": "cancel", "request_ids": ["r1"], "reason": "wrong"},
        {"command": "cancel", "target": "shop", REQUIRED: "c1"},
    ):
        parsed = parse(body, user_id="ops", app_id="bulkops-cli", message_id="m")
        assert isinstance(parsed, Control)
        state.apply(parsed)
    scopes = (ScopeCounts("cms", (OPTIONAL, None), 3, 1, False, 2), ScopeCounts("shop", None, 1))
    validator = payload_validator(checked_in, "StatusReport")
    for snapshot in (WorkerSnapshot("w1", scopes, (0, 2)), WorkerSnapshot("w2"),
                     WorkerSnapshot("w3", scopes, None, {"version": "1"})):  # fmt: skip
        report = orjson.loads(status_body(snapshot, state, SENT.timestamp() + 1))
        validator.validate(report)
    assert len(report["pauses"]) == 2 and len(report["cancels"]) == 2
    assert not validator.is_valid({k: v for k, v in report.items() if k != "worker"})
    bad = copy.deepcopy(report)
    bad["scopes"][0]["scope"] = {"project": "x"}
    assert not validator.is_valid(bad)
    reply = checked_in["components"]["messages"]["statusReply"]
    assert reply["bindings"]["amqp"]["messageType"] == STATUS_REPLY_TYPE
