"""The first consumption time a request without an AMQP timestamp carries into a hold queue
(``x-bulkops-consumed-at``, finding 10 of issue 23's review): written on a move, read back
only from a hold queue, and never trusted beyond what it can be."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from worker.broker.continuing import held_headers
from worker.broker.session import first_consumed, taken_back
from worker.messages import Request
from worker.pipeline.requests import Tracked
from worker.wirenames import CONSUMED_AT_HEADER


def message(headers: dict[str, Any] | None = None, stamped: bool = False) -> Any:
    stamp = datetime(2026, 1, 1, tzinfo=UTC) if stamped else None
    return SimpleNamespace(headers=headers, timestamp=stamp)


def test_a_move_without_a_timestamp_carries_its_first_consumption() -> None:
    headers = held_headers(message({"a": 1, CONSUMED_AT_HEADER: 5.0}), False, 1234.5)
    assert headers == {"a": 1, "x-bulkops-lane": "main", CONSUMED_AT_HEADER: 1234}


def test_a_move_with_a_timestamp_carries_none() -> None:
    headers = held_headers(message({CONSUMED_AT_HEADER: 5.0}, stamped=True), True, 1234.5)
    assert headers == {"x-bulkops-lane": "priority"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(90.5, 90.5), ("90.5", 90.5), (b"90", 90.0), (200.0, 100.0), (math.nan, 100.0),
     (math.inf, 100.0), (-1.0, 100.0), (True, 100.0), ("x", 100.0), (None, 100.0)],
)  # fmt: skip
def test_only_a_valid_past_time_is_read(value: Any, expected: float) -> None:
    assert first_consumed(message({CONSUMED_AT_HEADER: value}), 100.0) == expected


def test_the_header_counts_only_from_a_hold_queue() -> None:
    req: Request = SimpleNamespace()  # type: ignore[assignment]
    fresh = Tracked(None, req, None, None, 1, consumed_at=100.0)  # type: ignore[arg-type]
    taken_back(fresh, message({CONSUMED_AT_HEADER: 10.0}), held=False)
    assert (fresh.held, fresh.published_at) == (False, 100.0)  # a publisher cannot backdate
    back = Tracked(None, req, None, None, 1, consumed_at=100.0)  # type: ignore[arg-type]
    taken_back(back, message({CONSUMED_AT_HEADER: 10.0}), held=True)
    assert (back.held, back.published_at) == (True, 10.0)


def test_the_consumed_at_header_survives_the_wire_exactly() -> None:
    """Through pamqp's header table encoding and back: a float would go out as a 32-bit
    float (an epoch time off by up to a minute: what made a scope cancel miss a held message
    now and then); whole seconds as an integer come back exact."""
    from pamqp import decode, encode

    consumed = 1_796_500_000.7
    headers = held_headers(message({}), False, consumed)
    _, back = decode.field_table(encode.field_table(headers))
    assert back[CONSUMED_AT_HEADER] == 1_796_500_000
    assert first_consumed(message(back), consumed) == 1_796_500_000
