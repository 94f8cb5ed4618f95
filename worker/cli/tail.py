"""``bulkops tail [BINDING]``: outcomes as they arrive, one line each."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

import aio_pika.exceptions
import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from worker.cli.common import EXIT_OK, ClientSettings, CliError, connect, say
from worker.client.outcomes import outcome_items
from worker.registry import SCOPES


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "tail",
        help="print outcomes as they arrive",
        description="Binds a private queue to the results exchange and prints each outcome "
        "that arrives, until Ctrl-C.",
    )
    parser.add_argument(
        "binding", nargs="?", default="#", help="routing key pattern, e.g. '*.*.*.failed' (#)"
    )
    parser.add_argument("--json", action="store_true", help="print each outcome body as JSON")


def outcome_lines(body: bytes, as_json: bool = False) -> list[str]:
    """One line per item of an outcome message of either format (the raw text when it is
    not one); ``as_json``: each item's outcome as the item format's JSON body (an item-format
    message: its body as it came)."""
    try:
        data = orjson.loads(body)
        items = outcome_items(data)
    except (orjson.JSONDecodeError, ValueError):
        return [body.decode(errors="replace")]
    if as_json:
        if not isinstance(data.get("items"), list):
            return [body.decode(errors="replace")]
        return [orjson.dumps(item).decode() for item in items]
    return [item_line(item) for item in items]


def outcome_line(body: bytes) -> str:
    """One readable line for an item-format outcome body (the raw text when it is not one)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")
    if not isinstance(data, dict):
        return body.decode(errors="replace")
    return item_line(data)


def item_line(data: dict[str, Any]) -> str:
    """One readable line for one item's outcome."""
    where = str(data.get("target") or "-")
    scope = next((data[name] for name in SCOPES if data.get(name)), None)
    if scope:
        where += f"/{scope}"
    line = f"{data.get('finished_at', '-')}  {data.get('status', '?'):<9}  "
    line += f"{data.get('operation', '?')}  {where}  {data.get('id', '?')}"
    error = data.get("error")
    if isinstance(error, dict):
        line += f"  {error.get('code')}: {error.get('message')}"
    return line


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    connection = await connect(settings, "tail")
    async with connection:
        await _exchange_exists(connection, settings.results_exchange)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=256)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(settings.results_exchange, args.binding)

        async def show(message: AbstractIncomingMessage) -> None:
            print("\n".join(outcome_lines(message.body, args.json)), flush=True)
            await message.ack()

        await queue.consume(show)
        say(f"tailing {settings.results_exchange} ({args.binding}); Ctrl-C to stop")
        return await _until_stopped(connection)


async def _until_stopped(connection: AbstractConnection) -> int:
    stop = asyncio.Event()
    lost = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    connection.close_callbacks.add(lambda *_: lost.set())
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):
            loop.remove_signal_handler(sig)
    if lost.is_set() and not stop.is_set():
        raise CliError("lost the connection to the broker")
    return EXIT_OK


async def _exchange_exists(connection: AbstractConnection, name: str) -> None:
    channel = await connection.channel()
    try:
        await channel.declare_exchange(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        missing = f"results exchange {name!r} does not exist (is the worker deployed?)"
        raise CliError(missing) from None
    finally:
        if not channel.is_closed:
            await channel.close()
