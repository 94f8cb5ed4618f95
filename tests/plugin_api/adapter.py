"""The search index's adapter: one POST per batch, one answer per document."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from tests.plugin_api.target import SearchTarget
from worker.apis.adapters import ItemResult, Sendable, Tuning, failure, retry_policy
from worker.apis.base import BatchKey, Operation, Payload
from worker.errors import ErrorInfo
from worker.http import RetriesExhausted, RetryPolicy, ScopedClient
from worker.limiter import Hold


class SearchIndex:
    def __init__(self, target: SearchTarget, retry: RetryPolicy) -> None:
        self.target = target
        self.retry = retry

    def cost(self, operation: Operation, item_id: str, payload: Payload | None) -> int:
        return len(item_id) + 3

    async def execute(
        self, key: BatchKey, items: Sequence[Sendable], client: ScopedClient, hold: Hold | None
    ) -> dict[str, ItemResult]:
        ids = [item.id for item in items]
        url = f"{self.target.base_url}/indexes/{key.scope}/docs/delete"
        headers = {"X-Api-Key": self.target.api_key.get_secret_value()}

        async def call() -> dict[str, ItemResult]:
            nonlocal hold
            taken, hold = hold, None
            response = await client.send(
                "docs.delete", "POST", url, headers=headers, content=orjson.dumps(ids), hold=taken
            )
            answers = orjson.loads(response.content)["results"]
            return {
                a["id"]: ItemResult("succeeded")
                if a["ok"]
                else ItemResult("failed", ErrorInfo(a["code"], a["message"], False))
                for a in answers
            }

        try:
            answered, attempts = await self.retry.run(call, lambda error: None)
        except RetriesExhausted as exc:
            return {item_id: failure(exc) for item_id in ids}
        return {i: ItemResult(r.status, r.error, attempts) for i, r in answered.items()}


def make_adapter(target: SearchTarget, tuning: Tuning) -> SearchIndex:
    return SearchIndex(target, retry_policy(tuning))
