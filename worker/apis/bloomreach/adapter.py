"""Bloomreach Engagement adapter: catalog bulk delete, upsert and partial update, answers
mapped back in order.

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
from dataclasses import dataclass
from urllib.parse import quote

import orjson

from worker import exactjson
from worker.apis.adapters import (
    ItemResult,
    Sendable,
    Tuning,
    failure,
    retry_policy,
)
from worker.apis.base import BatchKey, Operation, Payload
from worker.apis.bloomreach.operations import ACTIONS, Action
from worker.apis.bloomreach.target import BloomreachTarget
from worker.apis.bloomreach.wire import OTHER_FORM, WIRE_FORMS, map_answer, parse_json
from worker.errors import ApiError
from worker.http import RetriesExhausted, RetryPolicy, ScopedClient
from worker.limiter import Hold

TOO_LARGE = frozenset({400, 413})  # 400 as documented, 413 as a proxy in front may answer
# A whole request refused for what some of its elements hold (400: the docs' "invalid" reads
# either way; 409/422: not documented, plausible): split in halves to isolate them.
SPLIT = TOO_LARGE | {409, 422}
# Extra requests one batch may cost in halves (the catalog allows 5 per 10 s): enough to cut
# a batch into 16 parts; parts still refused then fail with the refusal.
SPLIT_REQUESTS = 30

log = logging.getLogger("bulkops.bloomreach")


@dataclass(frozen=True, slots=True)
class _Batch:
    """One batch on its way: where it goes, through which client, and its results so far."""

    key: BatchKey
    action: Action
    url: str
    client: ScopedClient
    results: dict[str, ItemResult]
    payloads: dict[str, Payload | None]
    split_left: list[int]  # extra requests left for halves (one counter, shared)

    def body(self, form: str, ids: list[str]) -> tuple[str, bytes]:
        """(method, body) of a request for ``ids``: bulk-delete in ``form``, else the
        operation's elements with their payloads."""
        if self.action.method is None:
            method, render = WIRE_FORMS[form]
            return method, render(ids)
        elements = [self.action.element(i, self.payloads[i]) for i in ids]
        return self.action.method, exactjson.dumps(elements)


def halves(ids: list[str], fits: Callable[[list[str]], bool]) -> list[list[str]]:
    """``ids`` split in halves, again and again, until every part ``fits`` (or is one id;
    parts keep the ids' order)."""
    if len(ids) < 2 or fits(ids):
        return [ids]
    half = len(ids) // 2
    return halves(ids[:half], fits) + halves(ids[half:], fits)


class Bloomreach:
    """Adapter for the catalog item operations of one Bloomreach project."""

    def __init__(self, target: BloomreachTarget, retry: RetryPolicy) -> None:
        self.target = target
        self.retry = retry
        pair = f"{target.api_key_id.get_secret_value()}:{target.api_secret.get_secret_value()}"
        self._auth = "Basic " + base64.b64encode(pair.encode()).decode()
        configured = target.delete_format
        self.form: str = "delete-ids" if configured == "auto" else configured
        self._switched = False
        # The smallest body (bytes) refused with 413: kept for the process (a lesson of the
        # target, issue 26), in bytes, so that one 413 of a few large items does not cap
        # every later request of small ones at a few items.
        self.refused_bytes: int | None = None

    def cost(self, operation: Operation, item_id: str, payload: Payload | None) -> int:
        action = ACTIONS[operation.name]
        if action.method is None:  # bulk-delete: the larger of the two forms' elements
            return len(orjson.dumps({"item_id": item_id})) + 1
        # The element with its properties (and upsert flag), and its comma.
        return len(exactjson.dumps(action.element(item_id, payload))) + 1

    def url(self, catalog_id: str, action: Action) -> str:
        project = quote(self.target.project_id, safe="")
        catalog = quote(catalog_id, safe="")
        path = f"/data/v2/projects/{project}/catalogs/{catalog}/{action.path}"
        return self.target.base_url + path

    async def execute(
        self, key: BatchKey, items: Sequence[Sendable], client: ScopedClient, hold: Hold | None
    ) -> dict[str, ItemResult]:
        assert key.scope is not None, "catalog_id is validated before batching"
        ids = [item.id for item in items]
        action = ACTIONS[key.operation]
        payloads = {item.id: item.payload for item in items}
        url = self.url(key.scope, action)
        batch = _Batch(key, action, url, client, {}, payloads, [SPLIT_REQUESTS])
        refused = self.refused_bytes
        if refused is None:
            parts = [ids]
        else:
            parts = halves(ids, lambda part: len(batch.body(self.form, part)[1]) < refused)
        holds = [hold] + [None] * (len(parts) - 1)  # the held slot goes to the first part
        await asyncio.gather(*(self._send(batch, p, h) for p, h in zip(parts, holds, strict=True)))
        return batch.results

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

    async def _send(self, batch: _Batch, ids: list[str], hold: Hold | None) -> None:
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        form = self.form
        method, body = batch.body(form, ids)
        client, results = batch.client, batch.results

        async def call() -> dict[str, ItemResult]:
            nonlocal hold
            taken, hold = hold, None  # the held slot is for the first send only
            response = await client.send(
                batch.action.endpoint, method, batch.url, headers=headers, content=body, hold=taken
            )
            return map_answer(ids, parse_json(response.content))

        def on_retry(error: ApiError) -> None:
            client.count_retry(batch.key.operation, error)

        try:
            answered, attempts = await self.retry.run(call, on_retry)
        except RetriesExhausted as exc:
            if not await self._refused(exc, form, batch, ids):
                for item_id in ids:
                    results[item_id] = failure(exc)
            return
        for item_id, result in answered.items():
            results[item_id] = ItemResult(result.status, result.error, attempts)

    async def _refused(
        self, exc: RetriesExhausted, form: str, batch: _Batch, ids: list[str]
    ) -> bool:
        """A refusal the adapter can work around: the other wire form (405), or halves (too
        large, or refused for some elements; within the batch's ``SPLIT_REQUESTS``). True
        when the ids were sent again, and so have their results."""
        status = exc.error.status
        if status == 405 and batch.action.method is None and self.other_form_after_405(form):
            await self._send(batch, ids, None)
            return True
        if status in SPLIT and len(ids) > 1 and batch.split_left[0] >= 2:
            if status == 413:
                size = len(batch.body(form, ids)[1])
                self.refused_bytes = min(self.refused_bytes or size, size)
            batch.split_left[0] -= 2
            half = len(ids) // 2
            await asyncio.gather(
                self._send(batch, ids[:half], None), self._send(batch, ids[half:], None)
            )
            return True
        return False


def make_adapter(target: BloomreachTarget, tuning: Tuning) -> Bloomreach:
    return Bloomreach(target, retry_policy(tuning))
