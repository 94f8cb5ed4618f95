"""Bloomreach Engagement adapter: catalog bulk delete, answers mapped back in order.

The answer is a list with one element per request element. ``success`` (boolean, or the
strings "True"/"False" in some examples) means queued by the API. A request refused as a
whole with 400 (body too large, too many items) or 413 (what a proxy answers for too large)
is split in halves and sent again. After a 413 the adapter splits batches of that size
before sending them: the real per-request cap may be 5,000 items (a production integration
caps there), and each refusal costs one of the catalog's 5 requests per 10 s.

The docs name bulk-delete's path but neither its method nor its body: ``delete_format``
picks ``DELETE`` with id strings or ``POST`` with ``{"item_id"}`` objects; ``auto`` starts
with the first and switches to the second, once per target, when the API answers 405.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from worker.apis.base import (
    BatchKey,
    ItemResult,
    Operation,
    Payload,
    Sendable,
    Tuning,
    failure,
    retry_policy,
)
from worker.apis.bloomreach.operations import DELETE as OPERATION
from worker.errors import ApiError, ErrorInfo
from worker.http import RetriesExhausted, RetryPolicy, ScopedClient
from worker.limiter import Hold
from worker.settings import BloomreachTarget

TOO_LARGE = frozenset({400, 413})  # 400 as documented, 413 as a proxy in front may answer

log = logging.getLogger("bulkops.bloomreach")


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


def halves(ids: list[str], below: int) -> list[list[str]]:
    """``ids`` split in halves, again and again, until every part is shorter than ``below``
    (parts keep the ids' order)."""
    if len(ids) < below or len(ids) < 2:
        return [ids]
    half = len(ids) // 2
    return halves(ids[:half], below) + halves(ids[half:], below)


class Bloomreach:
    """Adapter for catalog item deletion in one Bloomreach project."""

    def __init__(self, target: BloomreachTarget, retry: RetryPolicy) -> None:
        self.target = target
        self.retry = retry
        pair = f"{target.api_key_id.get_secret_value()}:{target.api_secret.get_secret_value()}"
        self._auth = "Basic " + base64.b64encode(pair.encode()).decode()
        configured = target.delete_format
        self.form: str = "delete-ids" if configured == "auto" else configured
        self._switched = False
        self.refused_size: int | None = None  # the smallest request refused with 413

    def cost(self, operation: Operation, item_id: str, payload: Payload | None) -> int:
        # The larger of the two forms' elements, and its comma.
        return len(orjson.dumps({"item_id": item_id})) + 1

    def url(self, catalog_id: str) -> str:
        project = quote(self.target.project_id, safe="")
        catalog = quote(catalog_id, safe="")
        path = f"/data/v2/projects/{project}/catalogs/{catalog}/items/bulk-delete"
        return self.target.base_url + path

    async def execute(
        self, key: BatchKey, items: Sequence[Sendable], client: ScopedClient, hold: Hold | None
    ) -> dict[str, ItemResult]:
        assert key.scope is not None, "catalog_id is validated before batching"
        ids = [item.id for item in items]
        results: dict[str, ItemResult] = {}
        url = self.url(key.scope)
        parts = halves(ids, self.refused_size) if self.refused_size else [ids]
        holds = [hold] + [None] * (len(parts) - 1)  # the held slot goes to the first part
        sends = (self._send(url, p, client, h, results) for p, h in zip(parts, holds, strict=True))
        await asyncio.gather(*sends)
        return results

    def other_form_after_405(self, sent: str) -> bool:
        """A 405 answered the form ``sent``: whether to send again in the form now in use.

        ``auto`` switches once per target (a batch that raced the switch just resends); an
        explicit form, or a 405 to both forms, is final."""
        if self.target.delete_format != "auto":
            return False
        if sent != self.form:
            return True  # another batch switched meanwhile
        if self._switched:
            return False  # both forms answered 405
        self.form, self._switched = OTHER_FORM[sent], True
        log.warning(
            "bulk-delete of project %s answered 405 to %s: switching to %s",
            self.target.project_id,
            sent,
            self.form,
        )
        return True

    async def _send(
        self,
        url: str,
        ids: list[str],
        client: ScopedClient,
        hold: Hold | None,
        results: dict[str, ItemResult],
    ) -> None:
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        form = self.form
        method, render = WIRE_FORMS[form]
        body = render(ids)
        first = [hold]

        async def call() -> dict[str, ItemResult]:
            taken, first[0] = first[0], None
            response = await client.send(
                "catalog_bulk_delete", method, url, headers=headers, content=body, hold=taken
            )
            return map_answer(ids, _json(response.content))

        try:
            answered, attempts = await self.retry.run(
                call, lambda error: client.count_retry(OPERATION, error)
            )
        except RetriesExhausted as exc:
            if not await self._refused(exc, form, url, ids, client, results):
                for item_id in ids:
                    results[item_id] = failure(exc)
            return
        for item_id, result in answered.items():
            results[item_id] = ItemResult(result.status, result.error, attempts)

    async def _refused(
        self,
        exc: RetriesExhausted,
        form: str,
        url: str,
        ids: list[str],
        client: ScopedClient,
        results: dict[str, ItemResult],
    ) -> bool:
        """A refusal the adapter can work around: the other wire form (405), or halves (too
        large). True when the ids were sent again, and so have their results."""
        status = exc.error.status
        if status == 405 and self.other_form_after_405(form):
            await self._send(url, ids, client, None, results)
            return True
        if status in TOO_LARGE and len(ids) > 1:
            if status == 413:
                self.refused_size = min(self.refused_size or len(ids), len(ids))
            half = len(ids) // 2
            await asyncio.gather(
                self._send(url, ids[:half], client, None, results),
                self._send(url, ids[half:], client, None, results),
            )
            return True
        return False


def make_adapter(target: BloomreachTarget, tuning: Tuning) -> Bloomreach:
    return Bloomreach(target, retry_policy(tuning))


def _json(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise ApiError("unexpected_response", "answer is not JSON", True) from exc
