"""Outcome messages of either format (CONTRACT "Outcome messages"), read one item at a time.

The item format (AMQP type ``bulkops.outcome``) is one item per message; the batch format
(``bulkops.outcomes``, ``BULKOPS_OUTCOME_FORMAT=batch``) holds a batch's shared fields once
and its ``items``. ``outcome_items`` gives, for either, each item as the item format's body
says it, so a reader need not know which format the worker publishes. Pure.
"""

from __future__ import annotations

from typing import Any

import orjson

OUTCOMES_TYPE = "bulkops.outcomes"
_NOT_SHARED = ("items", "part")


def outcome_items(body: bytes | dict[str, Any]) -> list[dict[str, Any]]:
    """The per-item outcomes in one results message's body (an item-format body: itself;
    a batch-format body: each item with the shared fields). Raises ValueError when the body
    is not a JSON object."""
    data = orjson.loads(body) if isinstance(body, bytes) else body
    if not isinstance(data, dict):
        raise ValueError("an outcome body is a JSON object")
    items = data.get("items")
    if not isinstance(items, list):
        return [data]
    shared = {key: value for key, value in data.items() if key not in _NOT_SHARED}
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append({"request_id": item.get("request_id"), **shared, **item})
    return out
