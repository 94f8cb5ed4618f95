"""Bundles, pure (no aio-pika): the wire form of requests forwarded together to a partition.

In partitioned mode the router forwards consecutive requests bound for one partition as one
message (``worker/broker/bundles.py``): AMQP ``type`` ``bulkops.bundle``, persistent, body
a JSON document listing each request's original body (a string: the router parsed it, so it
is UTF-8 JSON) and the properties a plain forward keeps (``copy_of``)::

    {"bundle": 1, "parts": [{"body": "...", "message_id": "...", "headers": {...}, ...}]}

Header values keep their AMQP types: JSON's own (text, numbers, booleans, null) as they are,
the others as a one-key object: ``{"b": base64}`` bytes, ``{"d": epoch seconds}`` a
timestamp, ``{"n": "1.5"}`` a decimal, ``{"a": [...]}`` an array, ``{"t": {...}}`` a table.
Reading is strict: anything else is a malformed bundle, dead-lettered with the reason.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

VERSION = 1
MAX_PARTS = 10_000  # a bundle read with more parts is malformed
# Bodies per bundle at most (their JSON): a bundle stays well under RabbitMQ 4.x's 16 MiB and
# the 4 MiB every forwarded message keeps under; a larger request goes alone.
MAX_BUNDLE_BYTES = 1024 * 1024
TEXT_FIELDS = ("message_id", "correlation_id", "reply_to", "type", "app_id", "content_type",
               "content_encoding")  # fmt: skip
FIELDS = frozenset({"body", "headers", "timestamp", "priority", *TEXT_FIELDS})


@dataclass(frozen=True, slots=True)
class Part:
    """One request of a bundle: its body and the properties its plain forward would keep."""

    body: bytes
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    type: str | None = None
    app_id: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    timestamp: datetime.datetime | None = None
    priority: int | None = None
    headers: dict[str, Any] = field(default_factory=dict)


def encode_part(part: Part) -> bytes | None:
    """One part's JSON, or None when it cannot go in a bundle (its body is not UTF-8)."""
    try:
        text = part.body.decode()
    except UnicodeDecodeError:
        return None
    data: dict[str, Any] = {"body": text}
    for name in TEXT_FIELDS:
        value = getattr(part, name)
        if value is not None:
            data[name] = value
    if part.timestamp is not None:
        data["timestamp"] = int(part.timestamp.timestamp())
    if part.priority is not None:
        data["priority"] = part.priority
    if part.headers:
        data["headers"] = {str(k): _header(v) for k, v in part.headers.items()}
    return orjson.dumps(data)


def encode(parts: list[bytes]) -> bytes:
    """A bundle's body from its parts' JSON (``encode_part``), in order."""
    return b'{"bundle":%d,"parts":[%s]}' % (VERSION, b",".join(parts))


def decode(body: bytes) -> list[Part] | str:
    """The parts of a bundle's body, in order; a reason (text) when it is malformed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "malformed bundle: not JSON"
    if not isinstance(data, dict) or set(data) != {"bundle", "parts"}:
        return "malformed bundle: an object with exactly `bundle` and `parts` expected"
    if data["bundle"] != VERSION or isinstance(data["bundle"], bool):
        return f"malformed bundle: version {data['bundle']!r}, {VERSION} expected"
    parts = data["parts"]
    if not isinstance(parts, list) or not 1 <= len(parts) <= MAX_PARTS:
        return f"malformed bundle: `parts` must be a list of 1 to {MAX_PARTS} parts"
    out = []
    for n, raw in enumerate(parts):
        part = _part(raw)
        if isinstance(part, str):
            return f"malformed bundle: part {n}: {part}"
        out.append(part)
    return out


def _part(raw: object) -> Part | str:
    if not isinstance(raw, dict):
        return "an object expected"
    unknown = set(raw) - FIELDS
    if unknown:
        return f"unknown field {sorted(unknown)[0]!r}"
    body = raw.get("body")
    if not isinstance(body, str):
        return "`body` must be a string"
    texts: dict[str, str | None] = {}
    for name in TEXT_FIELDS:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            return f"`{name}` must be a string"
        texts[name] = value
    stamp = raw.get("timestamp")
    if stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool) or stamp < 0):
        return "`timestamp` must be whole epoch seconds"
    priority = raw.get("priority")
    if priority is not None and (
        not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 255
    ):
        return "`priority` must be 0 to 255"
    headers = raw.get("headers", {})
    if not isinstance(headers, dict):
        return "`headers` must be an object"
    try:
        table = {k: _value(v) for k, v in headers.items()}
        when = None if stamp is None else datetime.datetime.fromtimestamp(stamp, datetime.UTC)
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        return f"`headers`: {exc}" if not isinstance(exc, OverflowError) else "bad timestamp"
    return Part(body.encode(), timestamp=when, priority=priority, headers=table, **texts)


def _header(value: Any) -> Any:
    """A header value as JSON (the module's tagged forms for the types JSON lacks)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime.datetime):
        return {"d": int(value.timestamp())}
    if isinstance(value, decimal.Decimal):
        return {"n": str(value)}
    if isinstance(value, Mapping):
        return {"t": {str(k): _header(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"a": [_header(v) for v in value]}
    return str(value)  # no other type comes out of an AMQP header table


def _value(value: Any) -> Any:
    """A header value read back (``_header``'s inverse); ValueError when malformed."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "b" and isinstance(inner, str):
            try:
                return base64.b64decode(inner, validate=True)
            except binascii.Error:
                raise ValueError("bad base64 in a header value") from None
        if tag == "d" and isinstance(inner, int) and not isinstance(inner, bool):
            return datetime.datetime.fromtimestamp(inner, datetime.UTC)
        if tag == "n" and isinstance(inner, str):
            try:
                return decimal.Decimal(inner)
            except decimal.InvalidOperation:
                raise ValueError("bad decimal in a header value") from None
        if tag == "a" and isinstance(inner, list):
            return [_value(v) for v in inner]
        if tag == "t" and isinstance(inner, dict):
            return {k: _value(v) for k, v in inner.items()}
    raise ValueError("a header value of unknown form")
