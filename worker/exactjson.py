"""JSON whose integers stay exact at any size.

orjson (fast, used everywhere) reads an integer beyond 64 bits as a float and refuses to
write one. Catalog properties are the user's data and must reach the API as sent, so where
data passes through (request messages in, request bodies out), these fall back to the
standard library for exactly that case, and cost nothing otherwise.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# An integer beyond 64 bits has at least 19 digits (-2**63 - 1 has 19, 2**64 has 20).
_LONG_DIGITS = re.compile(rb"\d{19,}")


def loads(data: bytes) -> Any:
    """Like ``orjson.loads`` (same errors), with integers of any size kept exact."""
    value = orjson.loads(data)
    if _LONG_DIGITS.search(data) is None:
        return value
    try:
        # The same document (orjson accepted it: valid UTF-8 and JSON, no NaN), read again by
        # the standard library, whose integers have no size limit; floats read the same.
        return json.loads(data)
    except RecursionError:  # deeper than the standard library reads: refused downstream
        return value


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Like ``orjson.dumps`` (compact, UTF-8), writing integers of any size exactly."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
    text = json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys, allow_nan=False
    )
    return text.encode()
