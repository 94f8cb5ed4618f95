"""docs/asyncapi.yaml: what the message models generate, a valid AsyncAPI 3.0 document, and
schemas that accept the messages the worker and the client really produce (and refuse
others)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from tests.contract.write_asyncapi import DOCUMENT, render
from worker.client import Job
from worker.client import Reply as ClientReply
from worker.client.replies import REPLY_TYPE
from worker.contract import document
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
