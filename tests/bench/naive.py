"""The naive consumer: one API request per message, as a user would write it without the
worker (DatoCMS's single-record publish, waiting out a 429 as the API says). Run as its own
process: ``python -m tests.bench.naive QUEUE BASE_URL SECONDS``; prints items done as JSON."""

from __future__ import annotations

import argparse
import asyncio
import time

import aio_pika
import httpx
import orjson

from tests.bench.amqp import AMQP_URL

HEADERS = {"Authorization": "Bearer dato-token", "X-Api-Version": "3", "Accept": "application/json"}


async def main(queue_name: str, base_url: str, seconds: float) -> None:
    done = 0
    throttled = 0
    connection = await aio_pika.connect(AMQP_URL)
    async with connection, httpx.AsyncClient(base_url=base_url) as http:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        queue = await channel.declare_queue(queue_name, passive=True)
        started = time.monotonic()
        async with queue.iterator() as messages:
            async for message in messages:
                for item_id in orjson.loads(message.body)["ids"]:
                    while True:
                        response = await http.put(f"/items/{item_id}/publish", headers=HEADERS)
                        if response.status_code != 429:
                            break
                        throttled += 1
                        await asyncio.sleep(float(response.headers.get("X-RateLimit-Reset", 1)))
                    done += 1
                await message.ack()
                if time.monotonic() - started >= seconds:
                    break
        elapsed = time.monotonic() - started
    print(orjson.dumps({"items": done, "seconds": elapsed, "429s": throttled}).decode())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("queue")
    parser.add_argument("base_url")
    parser.add_argument("seconds", type=float)
    args = parser.parse_args()
    asyncio.run(main(args.queue, args.base_url, args.seconds))
