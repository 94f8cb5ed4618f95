"""The Bloomreach wire format: the bulk-delete bodies (both forms) and the per-item answers.

Pure: no I/O here (the adapter sends and awaits).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from worker.apis.adapters import ItemResult
from worker.errors import ApiError, ErrorCode, ErrorInfo


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return value is True or value == 1


def item_error(element: Any) -> ErrorInfo:
    """The API's per-item message, used as the error code (it gives no other)."""
    messages: list[str] = []
    errors = element.get("errors") if isinstance(element, dict) else None
    if isinstance(errors, dict):
        for value in errors.values():
            messages.extend(str(v) for v in (value if isinstance(value, list) else [value]))
    elif errors:
        messages.append(str(errors))
    text = "; ".join(messages)[:500] or "success: false without an error message"
    return ErrorInfo(text[:200], text, False)


def map_answer(ids: list[str], body: Any) -> dict[str, ItemResult]:
    """Pair each id with its answer element (same order). Raises when the shapes differ."""
    if not isinstance(body, list) or len(body) != len(ids):
        got = len(body) if isinstance(body, list) else type(body).__name__
        raise ApiError(
            ErrorCode.UNEXPECTED_RESPONSE, f"expected {len(ids)} answers, got {got}", True
        )
    results: dict[str, ItemResult] = {}
    for item_id, element in zip(ids, body, strict=True):
        ok = isinstance(element, dict) and truthy(element.get("success"))
        results[item_id] = (
            ItemResult("succeeded") if ok else ItemResult("failed", item_error(element))
        )
    return results


def delete_body(ids: list[str]) -> bytes:
    """The ``post-objects`` form: ``[{"item_id": "a"}, ...]``."""
    return orjson.dumps([{"item_id": item_id} for item_id in ids])


def delete_ids_body(ids: list[str]) -> bytes:
    """The ``delete-ids`` form: ``["a", ...]``."""
    return orjson.dumps(ids)


WIRE_FORMS: dict[str, tuple[str, Callable[[list[str]], bytes]]] = {
    "delete-ids": ("DELETE", delete_ids_body),
    "post-objects": ("POST", delete_body),
}
OTHER_FORM = {"delete-ids": "post-objects", "post-objects": "delete-ids"}


def parse_json(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ApiError(ErrorCode.UNEXPECTED_RESPONSE, "answer is not JSON", True) from exc
