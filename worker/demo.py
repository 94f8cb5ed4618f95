"""``python -m worker demo``: the emulator, the worker and sample traffic on the local RabbitMQ.

Prints each outcome as it arrives, then what the APIs saw: how few, how full the requests
were, and that no rate limit was breached.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import sys
import uuid
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import CollectorRegistry

from worker.addresses import Addresses
from worker.app import run
from worker.broker import declare_topology, unrouted_name
from worker.emulator import Emulator, EmulatorConfig
from worker.settings import Settings

SAMPLE_IDS = 300


def _traffic() -> list[dict[str, Any]]:
    dato = {"target": "cms"}
    shop = {"target": "shop", "operation": "bloomreach.catalog_items.delete"}
    msgs: list[dict[str, Any]] = [
        {**dato, "operation": "datocms.items.publish", "ids": [f"article-{n:03d}"]}
        for n in range(SAMPLE_IDS)
    ]
    msgs += [
        {**dato, "operation": "datocms.items.publish", "ids": ["locked-page"]},
        {**dato, "operation": "datocms.items.unpublish", "ids": ["article-000"]},
        {
            **dato,
            "operation": "datocms.items.destroy",
            "environment": "staging",
            "ids": ["old-1", "old-2", "restricted-1"],
        },
        {**dato, "operation": "datocms.uploads.destroy", "ids": ["img-1", "img-in-use"]},
        {**shop, "catalog_id": "products", "ids": [f"sku-{n}" for n in range(500)]},
        {**shop, "catalog_id": "products", "ids": ["has/slash", "sku-broken"]},
        {"operation": "datocms.items.explode", "target": "cms", "ids": ["x"]},
    ]
    return msgs + _sync()


def _sync() -> list[dict[str, Any]]:
    """A small sync: a product feed upserts, updates and deletes catalog items; a content
    pipeline moves records through a workflow stage, tags uploads and files them. One
    failure of each kind: a property the catalog lacks, an update of a missing item, a
    locked record, a tag refused, an item without properties, params that are wrong."""
    feed = {"target": "shop", "catalog_id": "feed"}
    upserts = [
        {"id": f"p-{n}", "properties": {"title": f"Product {n}", "price": n}} for n in range(10)
    ]
    upserts.append({"id": "p-colour", "properties": {"colour": "red"}})
    return [
        {**feed, "operation": "bloomreach.catalog_items.upsert", "items": upserts},
        {
            **feed,
            "operation": "bloomreach.catalog_items.update",
            "items": [
                {"id": "p-1", "properties": {"price": 99}},
                {"id": "p-missing", "properties": {"price": 1}},
                {"id": "p-2"},
            ],
        },
        {**feed, "operation": "bloomreach.catalog_items.delete", "ids": ["p-9"]},
        {
            "target": "cms",
            "operation": "datocms.items.move_to_stage",
            "params": {"stage": "review"},
            "ids": ["page-1", "page-2", "page-locked"],
        },
        {
            "target": "cms",
            "operation": "datocms.uploads.tag",
            "params": {"tags": ["summer"]},
            "ids": ["img-2", "img-3", "img-locked"],
        },
        {
            "target": "cms",
            "operation": "datocms.uploads.set_collection",
            "params": {"upload_collection": "campaign"},
            "ids": ["img-2", "img-3"],
        },
        {
            "target": "cms",
            "operation": "datocms.uploads.tag",
            "params": {"tags": []},
            "ids": ["img-4"],
        },
    ]


SYNC_ITEMS = 11 + 3 + 1 + 3 + 3 + 2 + 1


def _seed(emulator: Emulator) -> None:
    emulator.datocms.set_failure(["locked-page"], "publish", "ITEM_LOCKED")
    emulator.datocms.set_failure(["restricted-1"], "destroy", "DELETE_RESTRICTION")
    emulator.datocms.seed_uploads(["img-in-use"], in_use=True)
    emulator.bloomreach.set_item_error("products", ["sku-broken"], "Item cannot be deleted")
    emulator.bloomreach.catalog.set_fields("feed", ["title", "price"])
    emulator.datocms.seed_records(["page-1", "page-2", "page-locked"], stage="draft")
    emulator.datocms.set_failure(["page-locked"], "move_to_stage", "ITEM_LOCKED")
    emulator.datocms.seed_uploads(["img-2", "img-3", "img-4", "img-locked"], tags=["stock"])
    emulator.datocms.set_failure(["img-locked"], "upload_tag", "INSUFFICIENT_PERMISSIONS")


DEMO_SECONDS = 25.0  # the whole demo, worker start to last outcome; it normally takes ~10 s
PREFERRED_PORT = 9464


def free_port(preferred: int = PREFERRED_PORT, host: str = "127.0.0.1") -> int:
    """``preferred`` when nothing listens on it, else a port the system has free."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            bound: int = probe.getsockname()[1]
            return bound
    raise OSError("no free port")  # pragma: no cover - binding port 0 does not fail


def _settings(emulator: Emulator, amqp_url: str, run_id: str, http_port: int) -> Settings:
    prefix = f"bulkops.demo.{run_id}"
    return Settings(
        _env_file=None,
        amqp_url=amqp_url,
        request_queue=f"{prefix}.requests",
        dead_letter_queue=f"{prefix}.dlq",
        results_exchange=f"{prefix}.results",
        partition_exchange=f"{prefix}.partitions",
        http_host="127.0.0.1",
        http_port=http_port,
        drain_timeout_seconds=3,  # the demo's bound holds when the worker is stopped early
        targets={
            "cms": {"kind": "datocms", "base_url": emulator.base_url, "api_token": "dato-token"},
            "shop": {
                "kind": "bloomreach",
                "base_url": emulator.base_url,
                "api_key_id": "bloom-key",
                "api_secret": "bloom-secret",
                "project_id": "proj-1",
            },
        },
    )


def run_names(settings: Settings) -> tuple[list[str], list[str]]:
    """(queues, exchanges) a demo run may declare: every ``*_queue`` and ``*_exchange``
    setting (each carries the run's name), the priority lane, and the parking queue and
    exchange of its results exchange."""
    fields = settings.model_dump()
    queues = [v for k, v in fields.items() if k.endswith("_queue") and isinstance(v, str)]
    exchanges = [v for k, v in fields.items() if k.endswith("_exchange") and isinstance(v, str)]
    queues += [unrouted_name(settings), f"{settings.request_queue}.priority"]
    exchanges.append(unrouted_name(settings))
    return queues, exchanges


async def _cleanup(connection: aio_pika.abc.AbstractConnection, settings: Settings) -> None:
    """Delete every queue and exchange of this run (absent ones too: deleting is idempotent),
    each on a channel of its own so that one refusal does not stop the rest."""
    queues, exchanges = run_names(settings)
    for name in queues:
        with contextlib.suppress(Exception):
            async with connection.channel() as channel:
                await channel.queue_delete(name)
    for name in exchanges:
        with contextlib.suppress(Exception):
            async with connection.channel() as channel:
                await channel.exchange_delete(name)


def _line(body: dict[str, Any]) -> str:
    error = body.get("error") or {}
    code = f" {error.get('code')}" if error else ""
    scope = body.get("environment") or body.get("catalog_id") or ""
    return f"{body['status']:>9}  {body['operation']:<32} {scope:<9} {body['id']}{code}"


EXPECTED = SAMPLE_IDS + 1 + 1 + 3 + 2 + 500 + 2 + 1 + SYNC_ITEMS


async def demo(amqp_url: str, http_port: int | None = None, seconds: float = DEMO_SECONDS) -> int:
    """Run the demo; 0 when every expected outcome arrived, 1 otherwise. Whatever happens,
    the run's queues and exchanges are deleted before it returns."""
    run_id = uuid.uuid4().hex[:6]
    port = http_port if http_port is not None else free_port()
    emulator = Emulator(EmulatorConfig(datocms_job_seconds=0.5))
    outcomes: list[dict[str, Any]] = []
    async with emulator:
        _seed(emulator)
        settings = _settings(emulator, amqp_url, run_id, port)
        print(f"demo run {run_id}: queues and exchanges bulkops.demo.{run_id}.*")
        connection = await Addresses.parse(amqp_url).connect()
        async with connection:
            try:
                code = await _exchange(connection, settings, emulator, outcomes, seconds)
            finally:
                await _cleanup(connection, settings)
    print(f"removed the queues and exchanges of run {run_id}")
    if code == 0:
        _summary(outcomes, emulator)
    return code


async def _exchange(
    connection: aio_pika.abc.AbstractConnection,
    settings: Settings,
    emulator: Emulator,
    outcomes: list[dict[str, Any]],
    seconds: float,
) -> int:
    channel = await connection.channel()
    await declare_topology(channel, settings)
    done = asyncio.Event()
    await _listen(channel, settings, outcomes, done)
    traffic = _traffic()
    print(f"publishing {len(traffic)} request messages to {settings.request_queue}")
    for body in traffic:
        message = aio_pika.Message(orjson.dumps(body), content_type="application/json")
        await channel.default_exchange.publish(message, settings.request_queue)
    print(
        f"emulator at {emulator.base_url}; worker metrics at "
        f"http://127.0.0.1:{settings.http_port}/metrics while it runs"
    )
    print("outcomes (the first 12, then only those that did not succeed):")
    stopping = asyncio.Event()
    worker = asyncio.create_task(run(settings, stopping, CollectorRegistry()))
    finished = asyncio.create_task(done.wait())
    try:
        await asyncio.wait({worker, finished}, timeout=seconds, return_when="FIRST_COMPLETED")
    finally:
        finished.cancel()
        stopping.set()
    return await _verdict(worker, done, len(outcomes), settings, seconds)


async def _verdict(
    worker: asyncio.Task[int], done: asyncio.Event, got: int, settings: Settings, seconds: float
) -> int:
    if worker.done():
        error = worker.exception()
        print(f"\ndemo failed: the worker stopped early: {error!r}", file=sys.stderr)
        if isinstance(error, OSError):
            print(
                f"(is port {settings.http_port} in use? set BULKOPS_HTTP_PORT to a free port)",
                file=sys.stderr,
            )
        return 1
    try:
        await asyncio.wait_for(worker, settings.drain_timeout_seconds)
    except Exception as exc:  # the demo's verdict is printed below either way
        print(f"demo: the worker did not stop cleanly: {exc!r}", file=sys.stderr)
    if done.is_set():
        return 0
    print(
        f"\ndemo failed: {got} of {EXPECTED} outcomes within {seconds:.0f} s "
        "(is the broker slow or the worker stuck? see the log above)",
        file=sys.stderr,
    )
    return 1


async def _listen(
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    outcomes: list[dict[str, Any]],
    done: asyncio.Event,
) -> None:
    results = await channel.declare_queue(exclusive=True)
    await results.bind(settings.results_exchange, "#")

    async def show(message: AbstractIncomingMessage) -> None:
        body = orjson.loads(message.body)
        outcomes.append(body)
        if len(outcomes) <= 12 or body["status"] != "succeeded":
            print(_line(body), flush=True)
        if len(outcomes) >= EXPECTED:
            done.set()
        await message.ack()

    await results.consume(show)


def _summary(outcomes: list[dict[str, Any]], emulator: Emulator) -> None:
    statuses = collections.Counter(o["status"] for o in outcomes)
    print(f"\n{len(outcomes)} outcomes: {dict(statuses)}")
    calls = collections.Counter(
        f"{e.method} {e.path.split('/items/')[0] if 'catalogs' in e.path else e.path}"
        for e in emulator.log
        if e.api != "admin"
    )
    sizes = [e.items for e in emulator.log if e.items]
    print(f"API requests: {sum(calls.values())}; bulk request sizes: {sizes}")
    print(f"rate-limit breaches seen by the emulator: {len(emulator.breaches())}")
