"""Bloomreach Engagement adapter: catalog bulk delete, answers mapped back in order.

The answer is a list with one element per request element. ``success`` (boolean, or the
strings "True"/"False" in some examples) means queued by the API. A request refused as a
whole with 400 (body too large, too many items) is split in halves and sent again.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Hashable
from typing import Any
from urllib.parse import quote

import orjson

from worker.adapters import ItemResult, failure
from worker.batching import BatchKey
from worker.errors import ApiError
from worker.http import RetriesExhausted, RetryPolicy, ScopedClient
from worker.limiter import Hold
from worker.messages import ErrorInfo
from worker.operations import Operation
from worker.settings import BloomreachTarget

OPERATION = "bloomreach.catalog_items.delete"


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
        raise ApiError("unexpected_response", f"expected {len(ids)} answers, got {got}", True)
    results: dict[str, ItemResult] = {}
    for item_id, element in zip(ids, body, strict=True):
        ok = isinstance(element, dict) and truthy(element.get("success"))
        results[item_id] = (
            ItemResult("succeeded") if ok else ItemResult("failed", item_error(element))
        )
    return results


def delete_body(ids: list[str]) -> bytes:
    return orjson.dumps([{"item_id": item_id} for item_id in ids])


class Bloomreach:
    """Adapter for catalog item deletion in one Bloomreach project."""

    def __init__(self, target: BloomreachTarget, retry: RetryPolicy) -> None:
        self.target = target
        self.retry = retry
        pair = f"{target.api_key_id.get_secret_value()}:{target.api_secret.get_secret_value()}"
        self._auth = "Basic " + base64.b64encode(pair.encode()).decode()

    def cost(self, operation: Operation, item_id: str) -> int:
        return len(orjson.dumps({"item_id": item_id})) + 1  # the element and its comma

    def rate_scope(self, key: BatchKey) -> Hashable:
        return ("bloomreach", key[1], key[2])  # the limit is per catalog

    def url(self, catalog_id: str) -> str:
        project = quote(self.target.project_id, safe="")
        catalog = quote(catalog_id, safe="")
        path = f"/data/v2/projects/{project}/catalogs/{catalog}/items/bulk-delete"
        return self.target.base_url + path

    async def execute(
        self, key: BatchKey, ids: list[str], client: ScopedClient, hold: Hold | None
    ) -> dict[str, ItemResult]:
        assert key[2] is not None, "catalog_id is validated before batching"
        results: dict[str, ItemResult] = {}
        await self._send(self.url(key[2]), ids, client, hold, results)
        return results

    async def _send(
        self,
        url: str,
        ids: list[str],
        client: ScopedClient,
        hold: Hold | None,
        results: dict[str, ItemResult],
    ) -> None:
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        body = delete_body(ids)
        first = [hold]

        async def call() -> dict[str, ItemResult]:
            taken, first[0] = first[0], None
            response = await client.send(
                "catalog_bulk_delete", "POST", url, headers=headers, content=body, hold=taken
            )
            return map_answer(ids, _json(response.content))

        try:
            answered, attempts = await self.retry.run(
                call, lambda error: client.count_retry(OPERATION, error)
            )
        except RetriesExhausted as exc:
            if exc.error.status == 400 and len(ids) > 1:
                half = len(ids) // 2
                await asyncio.gather(
                    self._send(url, ids[:half], client, None, results),
                    self._send(url, ids[half:], client, None, results),
                )
                return
            for item_id in ids:
                results[item_id] = failure(exc)
            return
        for item_id, result in answered.items():
            results[item_id] = ItemResult(result.status, result.error, attempts)


def _json(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ApiError("unexpected_response", "answer is not JSON", True) from exc
