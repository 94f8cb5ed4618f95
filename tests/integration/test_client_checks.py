"""The client refuses, before publishing anything, every request the worker would not send in
full: an unknown operation, a missing or misplaced scope, ids where items belong (and the
reverse), bad params, invalid ids or items. Checked against a real queue: its depth stays 0,
and a request the worker would take does arrive there."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection

from tests.integration.harness import AMQP_URL
from worker.client import Chunk, Client, Job, JobError

pytestmark = pytest.mark.integration

ITEMS = [{"id": "sku-1", "properties": {"price": 1}}]


@pytest.fixture
async def queue() -> AsyncIterator[tuple[AbstractConnection, str]]:
    name = f"bulkops.test.client.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, arguments={"x-queue-type": "quorum"}, durable=True)
        try:
            yield connection, name
        finally:
            await channel.queue_delete(name)


async def depth(connection: AbstractConnection, name: str) -> int:
    channel = await connection.channel()
    queue = await channel.declare_queue(name, passive=True)
    await channel.close()
    return queue.declaration_result.message_count or 0


BAD: list[tuple[str, Job, Chunk, str]] = [
    ("unknown operation", Job("datocms.items.explode", "main"), Chunk(ids=["a"]),
     "unknown operation 'datocms.items.explode'"),
    ("missing scope", Job("bloomreach.catalog_items.delete", "shop"), Chunk(ids=["a"]),
     "needs a catalog_id"),
    ("misplaced scope", Job("datocms.items.publish", "main", catalog_id="products"),
     Chunk(ids=["a"]), "catalog_id does not apply"),
    ("misplaced scope, Bloomreach", Job("bloomreach.catalog_items.delete", "shop",
     environment="e1", catalog_id="c"), Chunk(ids=["a"]), "environment does not apply"),
    ("ids where items belong", Job("bloomreach.catalog_items.upsert", "shop", catalog_id="c"),
     Chunk(ids=["a"]), "takes items, not ids"),
    ("items where ids belong", Job("datocms.items.publish", "main"), Chunk(items=ITEMS),
     "takes ids, not items"),
    ("neither ids nor items", Job("datocms.items.publish", "main"), Chunk(), "exactly one"),
    ("bad params", Job("datocms.uploads.tag", "main", params={"tags": []}), Chunk(ids=["a"]),
     "1 to 100 non-empty"),
    ("params not taken", Job("datocms.items.publish", "main", params={"x": 1}),
     Chunk(ids=["a"]), "takes no params"),
    ("invalid id", Job("bloomreach.catalog_items.delete", "shop", catalog_id="c"),
     Chunk(ids=["ok", "has/slash"]), "1 of 2 ids would be rejected: 'has/slash'"),
    ("empty id", Job("datocms.items.publish", "main"), Chunk(ids=["ok", ""]),
     "would be rejected"),
    ("invalid item", Job("bloomreach.catalog_items.upsert", "shop", catalog_id="c"),
     Chunk(items=[*ITEMS, {"id": "sku-2"}]), "invalid_item"),
    ("too many ids", Job("datocms.items.publish", "main"),
     Chunk(ids=[f"i{n}" for n in range(10_001)]), "10000"),
]  # fmt: skip


@pytest.mark.parametrize(("job", "chunk", "problem"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_publish_raises_JobError_and_publishes_nothing(
    queue: tuple[AbstractConnection, str], job: Job, chunk: Chunk, problem: str
) -> None:
    connection, name = queue
    client = await Client.create(connection, name)
    with pytest.raises(JobError) as raised:
        await client.publish(job, chunk)
    assert problem in str(raised.value)
    assert await depth(connection, name) == 0


@pytest.mark.parametrize(("job", "chunk", "problem"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_submit_raises_JobError_and_publishes_nothing(
    queue: tuple[AbstractConnection, str], job: Job, chunk: Chunk, problem: str
) -> None:
    connection, name = queue
    client = await Client.create(connection, name)
    answers: list[Any] = []
    with pytest.raises(JobError) as raised:
        async for answer in client.submit(job, [chunk]):
            answers.append(answer)  # pragma: no cover - nothing is published, nothing answers
    assert problem in str(raised.value)
    assert answers == []
    assert await depth(connection, name) == 0


async def test_a_request_the_worker_would_take_is_published(
    queue: tuple[AbstractConnection, str],
) -> None:
    """The checks let through what they should: the same queue receives a valid request."""
    connection, name = queue
    client = await Client.create(connection, name)
    await client.publish(Job("bloomreach.catalog_items.upsert", "shop", catalog_id="c"),
                         Chunk(items=ITEMS))  # fmt: skip
    await client.publish(Job("datocms.uploads.tag", "main", params={"tags": ["x"]}),
                         Chunk(ids=["a", "b"]))  # fmt: skip
    assert await depth(connection, name) == 2
