"""docs/asyncapi.yaml against what the running worker really publishes on the real RabbitMQ:
outcome bodies fit the Outcome schema and are routed by '<operation>.<status>', dead letters
carry the reason header the document names."""

from __future__ import annotations

import asyncio
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from aio_pika.abc import AbstractIncomingMessage

from tests.contract.write_asyncapi import DOCUMENT
from tests.integration.harness import Rig
from worker.client import outcome_items

pytestmark = pytest.mark.integration


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text())
    return loaded


def validator(doc: dict[str, Any], schema: str) -> jsonschema.Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{schema}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(root)


async def test_worker_outcomes_and_dead_letters_fit_the_asyncapi_document(r: Rig) -> None:
    """Succeeded, failed and rejected outcomes of the real worker validate against the
    document's Outcome schema, their routing keys fit the results channel's parameters, and
    a dead letter has the document's required header."""
    doc = document()
    outcomes = validator(doc, "Outcome")
    parameters = doc["channels"]["results"]["parameters"]
    r.emulator.datocms.set_failure(["locked-1"], "publish", "ITEM_LOCKED")
    async with r.worker():
        await r.publish({"operation": "datocms.items.publish", "target": "main",
                         "ids": ["ok-1", "locked-1", "bad id!"]})  # fmt: skip
        await r.publish({"operation": "datocms.items.explode", "target": "main", "ids": ["x"]})
        await r.results.wait_for(4)
        dlq = await r.channel.declare_queue(r.dlq, passive=True)
        letter = await dlq.get(timeout=10, fail=True)
        await letter.ack()
    statuses = set()
    for message, body in zip(r.results.messages, r.results.bodies, strict=True):
        outcomes.validate(body)
        operation, status = message.routing_key.rsplit(".", 1)
        assert operation in parameters["operation"]["enum"]
        assert status in parameters["status"]["enum"]
        statuses.add(body["status"])
    assert statuses == {"succeeded", "failed", "rejected"}
    headers = doc["components"]["messages"]["deadLetter"]["headers"]
    jsonschema.Draft202012Validator(headers).validate(dict(letter.headers))


async def test_worker_replies_fit_the_asyncapi_document(r: Rig) -> None:
    """Replies of the real worker to a processed request and to a dead-lettered one (both
    with reply_to a named queue) validate against the document's Reply schema and carry the
    message type and correlation_id the document names."""
    doc = document()
    replies = validator(doc, "Reply")
    message_type = doc["components"]["messages"]["reply"]["bindings"]["amqp"]["messageType"]
    queue = await r.channel.declare_queue(exclusive=True)
    arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    await queue.consume(arrived.put, no_ack=True)
    async with r.worker():
        await r.publish({"operation": "datocms.items.publish", "target": "main", "ids": ["a"]},
                        reply_to=queue.name, correlation_id="c-ok")  # fmt: skip
        await r.publish(b"{not json", reply_to=queue.name, correlation_id="c-bad")
        async with asyncio.timeout(20):
            got = [await arrived.get() for _ in range(2)]
    by_correlation = {m.correlation_id: m for m in got}
    assert set(by_correlation) == {"c-ok", "c-bad"}
    for message in got:
        replies.validate(orjson.loads(message.body))
        assert message.type == message_type
    assert orjson.loads(by_correlation["c-bad"].body)["error"]["code"] == "not_json"


async def test_worker_batch_outcomes_fit_the_asyncapi_document(r: Rig) -> None:
    """BULKOPS_OUTCOME_FORMAT=batch: the real worker's succeeded, failed and rejected batch
    messages (a dispatch batch's and an intake rejection's) validate against the document's
    Outcomes schema, carry its AMQP type, and are routed by '<operation>.<status>'."""
    doc = document()
    batches = validator(doc, "Outcomes")
    items = validator(doc, "Outcome")
    parameters = doc["channels"]["results"]["parameters"]
    message_type = doc["components"]["messages"]["outcomes"]["bindings"]["amqp"]["messageType"]
    r.emulator.datocms.set_failure(["locked-1"], "publish", "ITEM_LOCKED")
    async with r.worker(r.settings(outcome_format="batch")):
        await r.publish({"operation": "datocms.items.publish", "target": "main",
                         "ids": ["ok-1", "locked-1", "bad id!"]})  # fmt: skip
        await r.publish({"operation": "datocms.items.explode", "target": "main", "ids": ["x"]})
        await r.results.wait_for(4)
    statuses = set()
    for message, body in zip(r.results.messages, r.results.bodies, strict=True):
        batches.validate(body)
        assert message.type == message_type
        operation, status = message.routing_key.rsplit(".", 1)
        assert operation in parameters["operation"]["enum"]
        assert status in parameters["status"]["enum"] and status == body["status"]
        statuses.add(body["status"])
        for item in outcome_items(body):
            items.validate(item)  # read item by item, each is an item-format outcome
    assert statuses == {"succeeded", "failed", "rejected"}
