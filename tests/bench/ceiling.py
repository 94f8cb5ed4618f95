"""The broker ceiling: a plain aio-pika consumer doing only the broker work the worker does.

For each request message it publishes one confirmed outcome per id to the results exchange
(bodies shaped like the worker's), pipelined, and acks with ``multiple=True`` whenever a
contiguous run of delivery tags is settled. No validation, batching or API calls: what a
hand-written consumer could do at best. Run as its own process:
``python -m tests.bench.ceiling QUEUE EXCHANGE COUNT [--prefetch N]``; exits after COUNT
messages are acked, printing its CPU seconds as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractIncomingMessage

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"  # not imported: this process stays lean


class Acks:
    """Settled delivery tags, acked as one ``multiple`` ack per contiguous run."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self.settled: set[int] = set()
        self.upto = 0  # every tag <= upto is settled
        self.acked = 0
        self.flushing = False
        self.done = asyncio.Event()
        self.count = 0
        self.target = 0
        self.pending: set[asyncio.Future[None]] = set()

    def settle(self, tag: int) -> None:
        self.settled.add(tag)
        while self.upto + 1 in self.settled:
            self.settled.discard(self.upto + 1)
            self.upto += 1
        if self.upto > self.acked and not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flushing = False
        upto, self.acked = self.upto, self.upto
        ack = asyncio.ensure_future(self.channel.basic_ack(upto, multiple=True))
        self.pending.add(ack)
        ack.add_done_callback(self.pending.discard)
        if upto >= self.target:
            self.done.set()


async def main(queue_name: str, exchange: str, count: int, prefetch: int) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    publishing = await aio_pika.connect(AMQP_URL)
    async with connection, publishing:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        out = await publishing.channel(publisher_confirms=True)
        raw_out = await out.get_underlay_channel()
        acks = Acks(await channel.get_underlay_channel())
        acks.target = count
        queue = await channel.declare_queue(queue_name, passive=True)

        async def publish(message: AbstractIncomingMessage) -> None:
            request = orjson.loads(message.body)
            op = request["operation"]
            finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            confirms = []
            for item_id in request["ids"]:
                body = orjson.dumps(
                    {
                        "request_id": message.message_id, "operation": op, "target": "bench",
                        "environment": None, "catalog_id": None, "id": item_id,
                        "status": "succeeded", "error": None, "attempts": 1,
                        "batch_id": None, "job_id": None, "finished_at": finished,
                    }
                )  # fmt: skip
                props = aiormq.spec.Basic.Properties(
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=f"{message.message_id}:{op}:{item_id}",
                    correlation_id=message.message_id,
                    message_type="bulkops.outcome",
                )
                confirms.append(
                    raw_out.basic_publish(
                        body, exchange=exchange, routing_key=f"{op}.succeeded",
                        properties=props, mandatory=True,
                    )
                )  # fmt: skip
            if len(confirms) == 1:
                await confirms[0]
            else:
                await asyncio.gather(*confirms)
            assert message.delivery_tag is not None
            acks.settle(message.delivery_tag)

        await queue.consume(publish)
        await acks.done.wait()
    times = os.times()
    print(orjson.dumps({"cpu_seconds": times.user + times.system}).decode(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("queue")
    parser.add_argument("exchange")
    parser.add_argument("count", type=int)
    parser.add_argument("--prefetch", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.queue, args.exchange, args.count, args.prefetch))
    sys.exit(0)
