"""Bundles (worker/bundles.py, worker/broker/bundles.py): the wire form's round trip and its
strict reading, the router's bundling (sizes, linger, order, plain copies), and a consumed
bundle's settlement from its parts' acks and nacks."""

from __future__ import annotations

import asyncio
import datetime
import decimal
from types import SimpleNamespace
from typing import Any, cast

import aio_pika
import orjson
import pytest
from prometheus_client import CollectorRegistry

from worker.broker import bundles as broker_bundles
from worker.broker.acker import Acker, AmqpDelivery, delivery_of
from worker.broker.bundles import Bundle, BundlePart, Bundler, PartMessage
from worker.bundles import MAX_BUNDLE_BYTES, Part, decode, encode, encode_part
from worker.metrics import Metrics
from worker.wirenames import BUNDLE_TYPE

UTC = datetime.UTC


def consumed(body: bytes, **props: Any) -> Any:
    """A stand-in for a consumed message: the attributes the router and ``copy_of`` read."""
    fields: dict[str, Any] = {
        "body": body, "message_id": None, "correlation_id": None, "reply_to": None,
        "type": None, "app_id": None, "content_type": "application/json",
        "content_encoding": None, "timestamp": None, "priority": None, "headers": {},
        "redelivered": False, "delivery_tag": 7,
    }  # fmt: skip
    fields.update(props)
    return SimpleNamespace(**fields)


def test_a_part_comes_back_with_its_body_and_properties() -> None:
    stamp = datetime.datetime(2026, 12, 5, 6, 0, 1, tzinfo=UTC)
    headers = {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "n": 3, "f": 1.5, "yes": True, "none": None, "raw": b"\x00\xff",
        "when": stamp, "dec": decimal.Decimal("1.25"), "list": [1, "a", b"b"],
        "table": {"inner": {"deep": [stamp]}},
    }  # fmt: skip
    body = '{"operation":"x","ids":["ü\\"\\n","\\u2028"]}'.encode()
    part = Part(
        body, message_id="m-1", correlation_id="c-1", reply_to="amq.rabbitmq.reply-to.x",
        type="t", app_id="app", content_type="application/json", content_encoding="utf-8",
        timestamp=stamp, priority=4, headers=headers,
    )  # fmt: skip
    raw = encode_part(part)
    assert raw is not None
    parts = decode(encode([raw, encode_part(Part(b"{}")) or b""]))
    assert isinstance(parts, list) and len(parts) == 2
    assert parts[0] == part
    assert parts[0].body == body  # byte for byte
    assert parts[1] == Part(b"{}")


def test_a_body_that_is_not_utf8_cannot_be_bundled() -> None:
    assert encode_part(Part(b"\xff\xfe")) is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "exactly `bundle` and `parts`"),
        (b'{"bundle":1,"parts":[],"x":1}', "exactly `bundle` and `parts`"),
        (b'{"bundle":2,"parts":[{"body":"{}"}]}', "version 2"),
        (b'{"bundle":true,"parts":[{"body":"{}"}]}', "version True"),
        (b'{"bundle":1,"parts":[]}', "list of 1 to"),
        (b'{"bundle":1,"parts":{}}', "list of 1 to"),
        (b'{"bundle":1,"parts":[1]}', "part 0: an object expected"),
        (b'{"bundle":1,"parts":[{"body":"{}"},{"body":1}]}', "part 1: `body` must be a string"),
        (b'{"bundle":1,"parts":[{"body":"{}","extra":1}]}', "unknown field 'extra'"),
        (b'{"bundle":1,"parts":[{"body":"{}","message_id":5}]}', "`message_id` must be"),
        (b'{"bundle":1,"parts":[{"body":"{}","timestamp":1.5}]}', "`timestamp`"),
        (b'{"bundle":1,"parts":[{"body":"{}","timestamp":-1}]}', "`timestamp`"),
        (b'{"bundle":1,"parts":[{"body":"{}","priority":256}]}', "`priority`"),
        (b'{"bundle":1,"parts":[{"body":"{}","headers":[]}]}', "`headers` must be an object"),
        (b'{"bundle":1,"parts":[{"body":"{}","headers":{"a":{"z":1}}}]}', "unknown form"),
        (b'{"bundle":1,"parts":[{"body":"{}","headers":{"a":{"b":"!!"}}}]}', "base64"),
        (b'{"bundle":1,"parts":[{"body":"{}","headers":{"a":{"n":"x"}}}]}', "decimal"),
        (b'{"bundle":1,"parts":[{"body":"{}","headers":{"a":{"d":1,"b":""}}}]}', "unknown form"),
    ],
)
def test_a_malformed_bundle_is_refused_with_its_reason(body: bytes, reason: str) -> None:
    result = decode(body)
    assert isinstance(result, str)
    assert result.startswith("malformed bundle")
    assert reason in result


class Sent:
    """What the router published: (routing key, AMQP type, requests it carries)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str | None, list[bytes]]] = []

    async def publish(self, message: aio_pika.Message, key: str) -> None:
        await asyncio.sleep(0)  # a confirm takes a while
        if message.type == BUNDLE_TYPE:
            parts = decode(message.body)
            assert isinstance(parts, list)
            self.messages.append((key, message.type, [p.body for p in parts]))
        else:
            self.messages.append((key, message.type, [message.body]))


async def test_the_router_bundles_per_partition_in_order_up_to_the_maximum() -> None:
    sent = Sent()
    bundler = Bundler(sent.publish, Metrics(CollectorRegistry()), most=3)
    plan = [(i % 2, f'{{"n":{i}}}'.encode()) for i in range(8)]
    await asyncio.gather(*(bundler.forward(p, f"p{p}", consumed(b)) for p, b in plan))
    by_key: dict[str, list[bytes]] = {}
    for key, _, bodies in sent.messages:
        by_key.setdefault(key, []).extend(bodies)
    assert by_key == {f"p{p}": [b for q, b in plan if q == p] for p in (0, 1)}
    sizes = [(key, len(bodies)) for key, _, bodies in sent.messages]
    assert sorted(sizes) == [("p0", 1), ("p0", 3), ("p1", 1), ("p1", 3)]
    # a bundle of one goes as a plain copy; a bundle is typed
    assert all((n == 1) == (kind != BUNDLE_TYPE) for _, kind, bodies in sent.messages
               for n in [len(bodies)])  # fmt: skip


async def test_a_lone_request_goes_after_the_linger_as_a_plain_copy() -> None:
    sent = Sent()
    bundler = Bundler(sent.publish, Metrics(CollectorRegistry()), most=200)
    loop = asyncio.get_running_loop()
    begun = loop.time()
    await bundler.forward(0, "p0", consumed(b"{}", message_id="m-1"))
    assert loop.time() - begun < 0.1
    assert sent.messages == [("p0", None, [b"{}"])]


async def test_a_request_too_large_to_bundle_goes_alone_behind_the_pending_bundle() -> None:
    sent = Sent()
    bundler = Bundler(sent.publish, Metrics(CollectorRegistry()), most=200)
    big = b'{"ids":["' + b"x" * MAX_BUNDLE_BYTES + b'"]}'
    await asyncio.gather(
        bundler.forward(0, "p0", consumed(b'{"n":1}')),
        bundler.forward(0, "p0", consumed(b'{"n":2}')),
        bundler.forward(0, "p0", consumed(big)),
        bundler.forward(0, "p0", consumed(b"\xff")),  # not UTF-8: alone too
        bundler.forward(0, "p0", consumed(b'{"n":3}')),
    )
    assert [(kind, bodies) for _, kind, bodies in sent.messages] == [
        (BUNDLE_TYPE, [b'{"n":1}', b'{"n":2}']),
        (None, [big]),
        (None, [b"\xff"]),
        (None, [b'{"n":3}']),
    ]


async def test_bundles_stay_under_the_byte_bound() -> None:
    sent = Sent()
    bundler = Bundler(sent.publish, Metrics(CollectorRegistry()), most=1000)
    body = b'{"ids":["' + b"y" * (MAX_BUNDLE_BYTES // 5) + b'"]}'
    await asyncio.gather(*(bundler.forward(0, "p0", consumed(body)) for _ in range(12)))
    sizes = [len(bodies) for _, _, bodies in sent.messages]
    assert sum(sizes) == 12 and max(sizes) == 4


async def test_a_failed_publish_fails_every_request_of_its_bundle() -> None:
    async def refuse(message: aio_pika.Message, key: str) -> None:
        raise ConnectionError("gone")

    bundler = Bundler(refuse, Metrics(CollectorRegistry()), most=2)
    results = await asyncio.gather(
        bundler.forward(0, "p0", consumed(b"{}")),
        bundler.forward(0, "p0", consumed(b"[]")),
        return_exceptions=True,
    )
    assert all(isinstance(r, ConnectionError) for r in results)


class Settles:
    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bool | None]] = []

    def ack(self, tag: int) -> None:
        self.frames.append(("ack", tag, None))

    def nack(self, tag: int, requeue: bool) -> None:
        self.frames.append(("nack", tag, requeue))


def unpacked(n: int) -> tuple[Bundle, list[BundlePart], Settles]:
    settles = Settles()
    acker = cast(Acker, settles)
    message = consumed(b"", delivery_tag=42, redelivered=True)
    bundle = Bundle(message, acker, n)
    parts = []
    for _ in range(n):
        pm = PartMessage(Part(b"{}"), message)
        pm.part = BundlePart(pm, acker, bundle)
        parts.append(pm.part)
        assert delivery_of(cast(Any, pm), acker) is pm.part  # the intake settles this one
        assert pm.redelivered and pm.delivery_tag == 42
    return bundle, parts, settles


async def test_a_bundle_is_acked_once_every_part_is_and_it_is_unpacked() -> None:
    bundle, parts, settles = unpacked(3)
    assert bundle.bound  # being taken in
    await parts[1].ack()
    await parts[1].ack()  # once
    await parts[0].ack()
    await parts[2].ack()
    assert settles.frames == []  # still unpacking
    bundle.unpacking = False
    await bundle.check()
    assert settles.frames == [("ack", 42, None)]
    assert bundle.bound


async def test_a_bundle_with_a_part_given_back_is_nacked_whole_once_all_are_settled() -> None:
    bundle, parts, settles = unpacked(3)
    bundle.unpacking = False
    assert not bundle.bound  # nothing answered: a hand-over may forget it whole
    await parts[0].ack()
    assert bundle.bound
    await parts[1].nack(requeue=True)
    assert settles.frames == []
    await parts[2].ack()
    assert settles.frames == [("nack", 42, True)]


def test_a_plain_message_gets_a_delivery_of_its_own() -> None:
    acker = cast(Acker, Settles())
    delivery = delivery_of(consumed(b"{}"), acker)
    assert type(delivery) is AmqpDelivery


def test_the_wire_body_is_one_json_document() -> None:
    raw = [encode_part(Part(b'{"a":1}', message_id="x")) or b"", encode_part(Part(b"[]")) or b""]
    assert orjson.loads(encode(raw)) == {
        "bundle": 1, "parts": [{"body": '{"a":1}', "message_id": "x"}, {"body": "[]"}],
    }  # fmt: skip
    assert broker_bundles.LINGER_SECONDS < 0.01


def test_a_partition_queue_prefetch_counts_bundles() -> None:
    from worker.broker.bundles import qos
    from worker.settings import Settings

    def settings(**kw: Any) -> Settings:
        return Settings(_env_file=None, amqp_url="amqp://x/", targets={}, **kw)  # type: ignore[call-arg]

    plain = settings()
    assert qos(plain, None, "") == plain.prefetch  # the router's
    assert qos(plain, None, ".priority") == plain.priority_prefetch
    assert qos(plain, 0, ".priority") == plain.priority_prefetch
    assert qos(plain, 0, "") == 200  # bundles: 200 of up to 200 requests
    assert qos(settings(prefetch=30), 0, "") == 30
    assert qos(settings(partition_bundle_max=1), 3, "") == plain.prefetch
    assert qos(settings(prefetch=65535, partition_bundle_max=100), 0, "") == 656
