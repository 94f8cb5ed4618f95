"""docs/asyncapi.yaml against what the running worker really publishes on the real RabbitMQ:
outcome bodies fit the Outcome schema and are routed by '<operation>.<status>', dead letters
carry the reason header the document names."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import jsonschema
import orjson
import pytest
import yaml
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from tests.contract.write_asyncapi import DOCUMENT
from tests.integration.cli import bulkops
from tests.integration.harness import AMQP_URL, Rig
from worker.client import ControlClient, outcome_items
from worker.control.config import stream_name
from worker.control.transport import publish_control

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


CONTROL_FORMS = ("cancelRequests", "cancelScope", "pause", "resume", "status")


def amqp_properties(message: AbstractIncomingMessage) -> dict[str, Any]:
    """A message's AMQP properties (and headers) as the document names them."""
    props = {
        "content_type": message.content_type,
        "delivery_mode": int(message.delivery_mode) if message.delivery_mode else None,
        "type": message.type,
        "message_id": message.message_id,
        "timestamp": int(message.timestamp.timestamp()) if message.timestamp else None,
        "user_id": message.user_id,
        "app_id": message.app_id,
        "reply_to": message.reply_to,
        "correlation_id": message.correlation_id,
    }
    headers = {k: v for k, v in (message.headers or {}).items() if k != "x-stream-offset"}
    return {k: v for k, v in {**props, **headers}.items() if v is not None}


def headers_validator(doc: dict[str, Any], message: str) -> jsonschema.Draft202012Validator:
    root = {**doc["components"]["messages"][message]["headers"], "components": doc["components"]}
    return jsonschema.Draft202012Validator(root)


async def read_stream(stream: str, wanted: set[str]) -> list[AbstractIncomingMessage]:
    """The control stream from its first record until every message id in ``wanted``."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        return await _read(await connection.channel(), stream, wanted)


async def _read(
    channel: AbstractChannel, stream: str, wanted: set[str]
) -> list[AbstractIncomingMessage]:
    await channel.set_qos(prefetch_count=100)
    queue = await channel.declare_queue(stream, passive=True)
    got: list[AbstractIncomingMessage] = []
    arrived = asyncio.Event()

    async def take(message: AbstractIncomingMessage) -> None:
        got.append(message)
        arrived.set()
        await message.ack()

    await queue.consume(take, arguments={"x-stream-offset": "first"})
    async with asyncio.timeout(20):
        while not wanted <= {m.message_id for m in got}:
            arrived.clear()
            await arrived.wait()
    return got


async def test_control_messages_and_status_replies_fit_the_asyncapi_document(r: Rig) -> None:
    """Control messages published by bulkops' own code (the client's ControlClient and the
    bulkops CLI) to the real control exchange, read back from its stream, each fit exactly
    one control message of the document (payload, properties, AMQP type); the worker's
    sentinel fits the sentinel message; the running worker's status replies (through the
    client, and to a reply queue of the test's own) fit StatusReport with the document's
    type and correlation_id. The exchange is a fanout and the stream is <exchange>.state."""
    doc = document()
    messages = doc["components"]["messages"]
    payloads = {name: validator(doc, messages[name]["payload"]["$ref"].rsplit("/", 1)[1])
                for name in CONTROL_FORMS}  # fmt: skip
    settings = r.settings()
    exchange = settings.control_exchange
    channel_doc = doc["channels"]["control"]
    assert channel_doc["bindings"]["amqp"]["exchange"]["type"] == "fanout"
    assert doc["channels"]["controlState"]["address"] == stream_name(channel_doc["address"])
    reports = validator(doc, "StatusReport")
    reply_queue = await r.channel.declare_queue(exclusive=True)
    arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    await reply_queue.consume(arrived.put, no_ack=True)
    sent: set[str] = set()
    async with r.worker(settings):
        async with ControlClient.connect(AMQP_URL, exchange=exchange) as control:
            sent.add(await control.cancel(["r1", "r2"], reason="wrong list"))
            sent.add(await control.cancel_scope("shop", catalog_id="c1", reason="stop"))
            sent.add(await control.pause("main", environment=None, reason="outage"))
            sent.add(await control.pause("shop", catalog_id="products"))
            sent.add(await control.resume("shop", catalog_id="products"))
            via_client = await control.status(timeout=10, expect=1)
        ran = await bulkops("pause", "shop", "--catalog-id", "c2", env=r.env(), timeout=30)
        assert ran.code == 0, ran.stderr
        async with await aio_pika.connect(AMQP_URL) as connection:
            confirms = await connection.channel(publisher_confirms=True)
            sent.add(await publish_control(confirms, {"command": "status"}, exchange=exchange,
                                           reply_to=reply_queue.name, correlation_id="c-status",
                                           declare=False))  # fmt: skip
        async with asyncio.timeout(20):
            reply = await arrived.get()
    assert len(via_client) == 1
    reports.validate(via_client[0])
    assert reply.correlation_id == "c-status"
    assert reply.type == messages["statusReply"]["bindings"]["amqp"]["messageType"]
    report = orjson.loads(reply.body)
    reports.validate(report)
    assert {p["target"] for p in report["pauses"]} == {"main", "shop"}
    assert len(report["cancels"]) == 2
    records = await read_stream(stream_name(exchange), sent)
    forms: list[str] = []
    sentinels = 0
    for record in records:
        props = amqp_properties(record)
        body = orjson.loads(record.body)
        if record.type == messages["controlSentinel"]["bindings"]["amqp"]["messageType"]:
            jsonschema.Draft202012Validator(messages["controlSentinel"]["payload"]).validate(body)
            sentinels += 1
            continue
        fits = [name for name, v in payloads.items() if v.is_valid(body)]
        assert len(fits) == 1, (body, fits)
        assert record.type == messages[fits[0]]["bindings"]["amqp"]["messageType"]
        headers_validator(doc, fits[0]).validate(props)
        forms.append(fits[0])
    assert sorted(forms) == sorted(
        ["cancelRequests", "cancelScope", "pause", "pause", "resume", "status", "pause",
         "status"]
    ), forms  # fmt: skip
    assert sentinels >= 1  # the worker's, when it started reading
