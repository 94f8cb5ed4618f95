"""``bulkops dlq list`` and ``bulkops dlq replay``: the dead-letter queue, seen and emptied.

Listing takes messages with ``basic.get`` (manual ack), holds them unacked so that each is
seen once, and gives them all back at the end with one ``basic.nack(multiple, requeue)``:
a quorum queue delivers returned messages again first, in their order, so nothing is lost
or reordered for good. A return is a redelivery: the message's ``x-delivery-count`` goes up
by one per listing on RabbitMQ before 4.3 (4.3 counts ``basic.reject`` only, not
``basic.nack``). The DLQ has no dead-letter target, so a ``delivery-limit`` on it (RabbitMQ
4.0 to 4.2 set 20 by default) would drop a message listed that often: the listing shows the
count, and the README says how to lift the limit there.

Replay republishes each message to the request queue on a confirming channel (``mandatory``)
and acks its dead letter only after the broker confirmed the copy: a crash in between leaves
the message in both queues, never in neither. A bundle (partitioned mode: requests the
router forwarded together, ``worker/bundles.py``) is unbundled: each of its requests goes
back to the request queue on its own, in order, as it was first published, and the router
routes it again; a malformed bundle cannot be and stays.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from worker.bundles import Part, decode
from worker.cli.common import BROKER_ERRORS, EXIT_OK, ClientSettings, CliError, connect, say
from worker.client import BrokerError, queue_exists
from worker.wirenames import (
    BUNDLE_TYPE,
    MARKER_HEADER,
    ORIGIN_HEADER,
    PRIORITY_SUFFIX,
    REASON_HEADER,
)

WORKER_HEADERS = frozenset({REASON_HEADER, ORIGIN_HEADER})
BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
GET_TIMEOUT = 10.0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("dlq", help="list or replay dead-lettered requests")
    actions = parser.add_subparsers(dest="dlq_action", required=True)
    listing = actions.add_parser(
        "list", help="show dead letters (reason, operation, target, request_id, ids)"
    )
    listing.add_argument("--limit", type=int, default=100, help="at most N (default 100; 0: all)")
    listing.add_argument("--json", action="store_true", help="one JSON object per message")
    replay = actions.add_parser("replay", help="move dead letters back to the request queue")
    replay.add_argument("--limit", type=int, default=0, help="at most N (default 0: all)")
    replay.add_argument("--reason", help="only those whose reason contains this text")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What a person needs to know of a dead-lettered request."""

    reason: str
    operation: str
    target: str
    request_id: str
    ids: int | None  # ids or items the message carries; None when unreadable
    deliveries: int  # x-delivery-count: how often it was returned to the DLQ
    bundle: int | None = None  # a bundle: the requests it carries (0: malformed)

    @classmethod
    def of(
        cls,
        body: bytes,
        headers: Mapping[str, Any],
        message_id: str | None,
        type_: str | None = None,
    ) -> DeadLetter:
        if type_ == BUNDLE_TYPE:
            parts = decode(body)
            count = len(parts) if isinstance(parts, list) else 0
            return cls(
                reason=reason_of(headers),
                operation="bundle",
                target="-",
                request_id=_text(message_id),
                ids=None,
                deliveries=int(headers.get("x-delivery-count") or 0),
                bundle=count,
            )
        data = _json_object(body)
        values = data.get("ids", data.get("items"))
        return cls(
            reason=reason_of(headers),
            operation=_text(data.get("operation")),
            target=_text(data.get("target")),
            request_id=_text(data.get("request_id") or message_id),
            ids=len(values) if isinstance(values, list) else None,
            deliveries=int(headers.get("x-delivery-count") or 0),
        )

    def line(self) -> str:
        if self.bundle is not None:
            what = f"{self.bundle} requests" if self.bundle else "malformed"
            return (
                f"{self.request_id}  bundle ({what})  deliveries={self.deliveries}"
                f"  reason: {self.reason}"
            )
        ids = "-" if self.ids is None else str(self.ids)
        return (
            f"{self.request_id}  {self.operation}  {self.target}  ids={ids}"
            f"  deliveries={self.deliveries}  reason: {self.reason}"
        )


def reason_of(headers: Mapping[str, Any]) -> str:
    """The worker's reason header, else the broker's own dead-lettering reason."""
    reason = headers.get(REASON_HEADER)
    if reason:
        return _text(reason)
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return f"dead-lettered by the broker: {_text(deaths[0].get('reason'))}"
    return "-"


def origin_lane(headers: Mapping[str, Any], request_queue: str) -> str:
    """The lane a dead letter goes back to: the priority lane when it came from there (the
    worker's ``x-bulkops-original-queue`` header, else the broker's ``x-death`` queue), the
    request queue otherwise (a partition queue's dead letter too: the router routes it)."""
    origin = headers.get(ORIGIN_HEADER)
    deaths = headers.get("x-death")
    if not origin and isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        origin = deaths[0].get("queue")
    priority = request_queue + PRIORITY_SUFFIX
    came_from = _text(origin) or ""
    # The priority lane itself, or a partition's priority queue (<rq>.p<i>.priority).
    urgent = came_from == priority or (
        came_from.startswith(request_queue + ".p") and came_from.endswith(PRIORITY_SUFFIX)
    )
    return priority if urgent else request_queue


def replay_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers a replayed message keeps: the publisher's, not those dead-lettering added."""
    return {
        key: value
        for key, value in headers.items()
        if key not in WORKER_HEADERS and not key.startswith(BROKER_HEADERS)
    }


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value) if value not in (None, "") else "-"


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    if args.limit < 0:
        raise CliError("--limit must be 0 (all) or more")
    connection = await connect(settings, "dlq")
    async with connection:
        try:
            depth = await queue_exists(connection, settings.dead_letter_queue)
            if args.dlq_action == "list":
                return await _list(connection, settings, depth, args)
            await queue_exists(connection, settings.request_queue)
            return await _replay(connection, settings, depth, args)
        except BrokerError as exc:
            raise CliError(str(exc)) from None
        except BROKER_ERRORS as exc:  # the connection lost mid-way: a usage/connection error
            raise CliError(f"the broker connection failed: {type(exc).__name__}") from None


async def _list(
    connection: AbstractConnection, settings: ClientSettings, depth: int, args: argparse.Namespace
) -> int:
    budget = depth if args.limit == 0 else min(args.limit, depth)
    channel = await connection.channel()
    queue = await channel.get_queue(settings.dead_letter_queue, ensure=False)
    held: AbstractIncomingMessage | None = None
    shown = 0
    try:
        while shown < budget:
            message = await queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT)
            if message is None:
                break
            held = message
            shown += 1
            letter = DeadLetter.of(
                message.body, message.headers or {}, message.message_id, message.type
            )
            print(orjson.dumps(asdict(letter)).decode() if args.json else letter.line(), flush=True)
    finally:
        await _give_back(held)
    say(f"{shown} of {depth} dead letters in {settings.dead_letter_queue} shown; none removed")
    return EXIT_OK


async def _replay(
    connection: AbstractConnection, settings: ClientSettings, depth: int, args: argparse.Namespace
) -> int:
    channel = await connection.channel()
    queue = await channel.get_queue(settings.dead_letter_queue, ensure=False)
    out = await connection.channel(publisher_confirms=True, on_return_raises=True)
    held: AbstractIncomingMessage | None = None
    replayed = skipped = 0
    lanes: dict[str, int] = {}
    try:
        for _ in range(depth):  # never more than were there: a replayed message that comes back
            if args.limit and replayed >= args.limit:
                break
            message = await queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT)
            if message is None:
                break
            if (message.headers or {}).get(MARKER_HEADER):
                await message.ack()  # a partition's marker, dead-lettered: not a request
                print("dropped a partition marker (partitioned mode; not a request)", flush=True)
                continue
            letter = DeadLetter.of(
                message.body, message.headers or {}, message.message_id, message.type
            )
            if args.reason and args.reason.lower() not in letter.reason.lower():
                held, skipped = message, skipped + 1
                continue
            lane = origin_lane(message.headers or {}, settings.request_queue)
            if letter.bundle == 0:
                held, skipped = message, skipped + 1
                print(f"kept {letter.line()}: a malformed bundle cannot be replayed", flush=True)
                continue
            if letter.bundle:
                parts = decode(message.body)
                assert isinstance(parts, list)
                for part in parts:
                    await _send(out, _unbundled(part), lane)
            else:
                await _republish(out, message, lane)
            await message.ack()
            replayed += 1
            lanes[lane] = lanes.get(lane, 0) + 1
            print(f"replayed {letter.line()} to {lane}", flush=True)
    finally:
        await _give_back(held)
    kept = max(depth - replayed, 0)  # every dead letter not replayed stays, examined or not
    unmatched = f", {skipped} of them examined and not matching the reason" if args.reason else ""
    where = ", ".join(f"{lane} ({n})" for lane, n in sorted(lanes.items()))
    if len(lanes) < 2:
        where = next(iter(lanes), settings.request_queue)
    say(f"replayed {replayed} to {where}; {kept} kept in {settings.dead_letter_queue}{unmatched}")
    return EXIT_OK


def _unbundled(part: Part) -> aio_pika.Message:
    """A bundle's request as it was first published (what a plain forward keeps of it)."""
    return aio_pika.Message(
        part.body,
        headers=part.headers,
        content_type=part.content_type,
        content_encoding=part.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=part.priority,
        correlation_id=part.correlation_id,
        reply_to=part.reply_to,
        message_id=part.message_id,
        timestamp=part.timestamp,
        type=part.type,
        app_id=part.app_id,
    )


async def _republish(out: AbstractChannel, message: AbstractIncomingMessage, queue: str) -> None:
    copy = aio_pika.Message(
        message.body,
        headers=replay_headers(message.headers or {}),
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
    await _send(out, copy, queue)


async def _send(out: AbstractChannel, copy: aio_pika.Message, queue: str) -> None:
    try:
        confirmation = await out.default_exchange.publish(copy, queue, mandatory=True)
    except aiormq.exceptions.DeliveryError as exc:
        raise CliError(f"the request queue returned a replayed message: {exc}") from None
    if not isinstance(confirmation, aiormq.spec.Basic.Ack):
        raise CliError(f"a replayed message was not confirmed ({confirmation!r}); it stays")


async def _give_back(held: AbstractIncomingMessage | None) -> None:
    """Return every message still held (all unacked up to the last one held), in order."""
    if held is not None:
        with contextlib.suppress(*_CLOSED):
            await held.nack(multiple=True, requeue=True)


_CLOSED = (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException)
