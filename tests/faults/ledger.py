"""The ledger: every outcome message id expected, every one seen, and what the difference means.

A scenario says which items it published (``expect``), may mark which items were in flight
when a fault hit (``snapshot_inflight``: only those may be answered twice), and at the end
``check`` counts published, answered, lost (must be 0), duplicated (within the bound) and the
time to recover, records the row for the session's table, and asserts.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from tests.integration.harness import Results
from worker.client import OUTCOMES_TYPE, outcome_items
from worker.messages import outcome_message_id

ROWS: list[LedgerRow] = []


@dataclass(frozen=True)
class LedgerRow:
    scenario: str
    published: int
    answered: int
    lost: int
    duplicated: int
    bound: int
    unexpected: int
    recover_s: float | None

    def line(self) -> str:
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f}s"
        return (
            f"{self.scenario:<48} {self.published:>9} {self.answered:>9} {self.lost:>5} "
            f"{self.duplicated:>6} <= {self.bound:<6} {self.unexpected:>5} {recover:>8}"
        )


HEADER = (
    f"{'scenario':<48} {'published':>9} {'answered':>9} {'lost':>5} "
    f"{'dup':>6}    {'bound':<6} {'unexp':>5} {'recover':>8}"
)


@dataclass
class Ledger:
    scenario: str
    results: Results
    expected: dict[str, str] = field(default_factory=dict)  # outcome message_id -> request_id
    by_request: dict[str, list[str]] = field(default_factory=dict)
    allowed: set[str] = field(default_factory=set)  # message ids that may be answered twice
    bound: int = 0  # how many duplicates the faults allow: the in-flight items, per fault
    fault_over: float | None = None
    recovered: float | None = None
    # Outcome message ids counted off ``results`` (e.g. by a counting queue, for outcomes too
    # many to keep as messages); they count as seen, their bodies are the counter's to check.
    counted: collections.Counter[str] = field(default_factory=collections.Counter)

    def expect(
        self, request_id: str, operation: str, ids: list[str], **fields: Any
    ) -> dict[str, Any]:
        """Count these items as published; returns the request body to publish."""
        mids = [outcome_message_id(request_id, operation, i) for i in dict.fromkeys(ids)]
        for mid in mids:
            self.expected[mid] = request_id
        self.by_request.setdefault(request_id, []).extend(mids)
        return {"operation": operation, "ids": ids, "request_id": request_id, **fields}

    def seen(self) -> collections.Counter[str]:
        seen = collections.Counter(mid for m in self.results.messages for mid in item_ids(m))
        return seen + self.counted

    def answered(self) -> int:
        seen = self.seen()
        return sum(1 for mid in self.expected if mid in seen)

    def snapshot_inflight(self, recent: int = 0) -> int:
        """Mark as in flight every request not fully answered now, plus the requests of the
        last ``recent`` outcomes (their acks may not have reached the broker). Returns how
        many items may now be answered twice."""
        seen = self.seen()
        inflight: set[str] = set()
        for mids in self.by_request.values():
            if any(mid not in seen for mid in mids):
                inflight.update(mids)
        tail = self.results.messages[-recent:] if recent else []
        for message in tail:
            for mid in item_ids(message):
                request_id = self.expected.get(mid)
                if request_id is not None:
                    inflight.update(self.by_request[request_id])
        self.allowed |= inflight
        self.bound += len(inflight)
        return len(inflight)

    def allow_inflight(self, items: int) -> None:
        """A fault hit while at most ``items`` items were held unacked (prefetch-bound), which
        ones the test cannot tell: any may repeat, but no more than ``items`` of them."""
        self.allowed.update(self.expected)
        self.bound += items

    def mark_fault_over(self) -> None:
        self.fault_over = time.monotonic()

    async def settle(self, timeout: float = 60.0, grace: float = 0.5) -> None:
        """Wait until every expected item is answered, then ``grace`` for late duplicates."""
        results = self.results
        self.recovered = None
        try:
            async with asyncio.timeout(timeout):
                while self.answered() < len(self.expected):
                    results.changed.clear()
                    await results.changed.wait()
        except TimeoutError:
            return  # check() reports what is missing
        self.recovered = time.monotonic()
        await asyncio.sleep(grace)

    def row(self) -> LedgerRow:
        seen = self.seen()
        answered = sum(1 for mid in self.expected if mid in seen)
        dups = {mid: n - 1 for mid, n in seen.items() if n > 1}
        recover = None
        if self.fault_over is not None and self.recovered is not None:
            recover = max(0.0, self.recovered - self.fault_over)
        return LedgerRow(
            self.scenario,
            len(self.expected),
            answered,
            len(self.expected) - answered,
            sum(dups.values()),
            self.bound,
            sum(1 for mid in seen if mid not in self.expected),
            recover,
        )

    def check(self) -> LedgerRow:
        row = self.row()
        ROWS.append(row)
        seen = self.seen()
        lost = [mid for mid in self.expected if mid not in seen]
        assert not lost, f"{row.lost} items lost, e.g. {lost[:5]}"
        assert row.unexpected == 0, "outcomes for items nobody published"
        for message in self.results.messages:  # a repeat is recognisable: same message_id
            body = orjson.loads(message.body)
            if message.type == OUTCOMES_TYPE:  # per item: (request_id, operation, id)
                assert message.message_id == batch_message_id(body), message.message_id
                continue
            mid = outcome_message_id(body["request_id"], body["operation"], body["id"])
            assert message.message_id == mid, (message.message_id, mid)
        dup_ids = {mid for mid, n in seen.items() if n > 1}
        outside = dup_ids - self.allowed
        assert not outside, f"duplicates of items that were not in flight: {sorted(outside)[:5]}"
        assert row.duplicated <= row.bound, f"{row.duplicated} duplicates, bound {row.bound}"
        return row


def item_ids(message: AbstractIncomingMessage) -> list[str]:
    """The per-item identities a results message answers: its message_id (the item format),
    or ``<request_id>:<operation>:<id>`` of each item of a batch-format message."""
    if message.type != OUTCOMES_TYPE:
        return [str(message.message_id)]
    return [
        outcome_message_id(i["request_id"], i["operation"], i["id"])
        for i in outcome_items(message.body)
    ]


def batch_message_id(body: dict[str, Any]) -> str:
    """What a batch-format message's message_id must be (CONTRACT "The batch format")."""
    if body["batch_id"] is not None:
        return f"{body['batch_id']}:{body['status']}:{body['part']}"
    first = body["items"][0]
    base = f"{first['request_id']}:{body['operation']}:{body['status']}"
    return f"{base}:{body['part']}" if body["part"] else base
