"""(10) Cancel a 500,000-id Bloomreach delete (issue 23), real limits
(``python -m tests.bench.run --cancel``).

50 request messages of 10,000 ids each (every one with a ``reply_to``) delete 500,000 items
of one catalog: 50 full requests, 5 per 10 s window. Three runs: one worker, the cancel of
all 50 request ids published once the first window's 5 requests were sent; the same with
the cancel published before the worker starts; and 3 partitioned replicas, cancelled after
the first window. Checked against the emulator's request log (request bodies kept): no id
of a cancelled item in any API request, every item answered exactly once (the sent ones with
their true outcome, the rest ``rejected``/``cancelled``), the replies say the same; measured:
the API requests sent after the cancel was confirmed, and the time from the cancel's confirm
to the last answer. Outcomes in the batch format (a few messages instead of 500,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from tests.bench import amqp, procs
from tests.bench.amqp import Names
from tests.bench.priority import _declare
from worker.client import outcome_items
from worker.control.transport import publish_control

DELETE = "bloomreach.catalog_items.delete"
MESSAGES, PER = 50, 10_000


@dataclass
class Answers:
    """Per-item outcomes (whichever format) and replies, as they arrive."""

    status: dict[str, list[str]] = field(default_factory=dict)  # id -> statuses (once: 1)
    codes: dict[str, int] = field(default_factory=dict)  # error code -> items
    items: int = 0
    last: float = 0.0
    replies: int = 0
    replied: dict[str, int] = field(default_factory=dict)  # status -> items, per the replies
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, items: int, replies: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.items < items or self.replies < replies:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def answers(conn: Any, names: Names, reply_queue: str) -> AsyncIterator[Answers]:
    channel = await conn.channel()
    outcomes = await channel.declare_queue(exclusive=True, auto_delete=True)
    await outcomes.bind(names.results, "#")
    replies = await channel.declare_queue(reply_queue, exclusive=True)
    seen = Answers()

    async def on_outcome(message: AbstractIncomingMessage) -> None:
        for item in outcome_items(message.body):
            seen.status.setdefault(item["id"], []).append(item["status"])
            code = (item.get("error") or {}).get("code")
            if code:
                seen.codes[code] = seen.codes.get(code, 0) + 1
            seen.items += 1
        seen.last = time.monotonic()
        seen.changed.set()

    async def on_reply(message: AbstractIncomingMessage) -> None:
        body = orjson.loads(message.body)
        seen.replies += 1
        for status, n in body["counts"].items():
            seen.replied[status] = seen.replied.get(status, 0) + n
        seen.last = time.monotonic()
        seen.changed.set()

    tags = [(outcomes, await outcomes.consume(on_outcome, no_ack=True)),
            (replies, await replies.consume(on_reply, no_ack=True))]  # fmt: skip
    try:
        yield seen
    finally:
        for queue, tag in tags:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        await channel.close()


def bodies(tag: str) -> tuple[list[bytes], list[str]]:
    out, request_ids = [], []
    for n in range(MESSAGES):
        request_id = f"{tag}-{n:02d}"
        ids = [f"{tag}-{n * PER + k:06d}" for k in range(PER)]
        body = {"request_id": request_id, "operation": DELETE, "target": "shop",
                "catalog_id": "cat-1", "ids": ids}  # fmt: skip
        out.append(orjson.dumps(body))
        request_ids.append(request_id)
    return out, request_ids


async def cancel(conn: Any, exchange: str, request_ids: list[str]) -> float:
    """Publish the cancel; returns the monotonic time of the broker's confirm."""
    channel = await conn.channel(publisher_confirms=True)
    try:
        await publish_control(
            channel, {"command": "cancel", "request_ids": request_ids, "reason": "bench"},
            exchange=exchange, app_id="bench",
        )  # fmt: skip
        return time.monotonic()
    finally:
        await channel.close()


def sent_ids(entries: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for entry in entries:
        for item in orjson.loads(entry["body"] or b"[]"):
            out.add(item if isinstance(item, str) else item["item_id"])
    return out


async def _sent(emu: procs.EmulatorProc) -> list[dict[str, Any]]:
    log = await emu.log()
    return [e for e in log["entries"] if e["api"] == "bloomreach" and e["method"] == "DELETE"]


async def cancel_run(conn: Any, emu: procs.EmulatorProc, *, when: str, replicas: int) -> dict:
    """``when``: ``after`` the first window, or ``before`` the worker starts."""
    await emu.reset()
    await emu.configure(
        rate_limits_enabled=True, latency_seconds=0.0, bloomreach_rate=(5, 10.0),
        log_request_bodies=True,
    )  # fmt: skip
    partitions = 3 if replicas > 1 else 0
    names = Names.fresh(f"cancel-{when}-{replicas}")
    channel = await conn.channel()
    await _declare(channel, names, partitions)
    control = f"{names.requests}.control"
    tag = f"c{replicas}{when[0]}"
    messages, request_ids = bodies(tag)
    total = MESSAGES * PER
    reply_queue = f"{names.requests}.bench-replies"
    settings: dict[str, Any] = {"item_outcomes": "all", "outcome_format": "batch",
                                "control_exchange": control}  # fmt: skip
    if partitions:
        settings |= {"partitions": partitions, "partition_exchange": f"{names.requests}.partitions",
                     "partition_rebalance_seconds": 2, "drain_timeout_seconds": 5}  # fmt: skip
    async with answers(conn, names, reply_queue) as seen:
        await amqp.load(conn, names.requests, messages, reply_to=reply_queue)
        confirmed = await cancel(conn, control, request_ids) if when == "before" else 0.0
        workers = [procs.worker(procs.worker_env(names, emu.base_url, **settings))
                   for _ in range(replicas)]  # fmt: skip
        entered = [await w.__aenter__() for w in workers]
        started = time.monotonic()
        try:
            if when == "after":
                async with asyncio.timeout(120):
                    while len(await _sent(emu)) < 5:
                        await asyncio.sleep(0.2)
                confirmed = await cancel(conn, control, request_ids)
            await seen.wait_for(total, MESSAGES, timeout=600)
        finally:
            for w in reversed(workers):
                await w.__aexit__(None, None, None)
        del entered
    await amqp.delete(channel, names)
    with contextlib.suppress(Exception):
        await channel.exchange_delete(control)
        await channel.queue_delete(f"{control}.state")
    await channel.close()
    requests = await _sent(emu)
    sent = sent_ids(requests)
    cancelled = {i for i, s in seen.status.items() if s == ["rejected"]}
    succeeded_not_sent = sum(s == ["succeeded"] and i not in sent for i, s in seen.status.items())
    log = await emu.log()
    # fmt: off
    return {
        "when": when, "replicas": replicas, "items": total,
        "answered_once": sum(len(s) == 1 for s in seen.status.values()),
        "answers": seen.items, "requests": len(requests),
        "requests_after_cancel": sum(e["t"] > confirmed for e in requests),
        "ids_sent": len(sent), "cancelled": len(cancelled), "codes": seen.codes,
        "cancelled_and_sent": len(cancelled & sent),
        "succeeded_not_sent": succeeded_not_sent,
        "replies": seen.replies, "replied": seen.replied,
        "cancel_to_last_answer_s": round(seen.last - max(confirmed, started), 2),
        "breaches": log["breaches"], "429s": sum(e["status"] == 429 for e in log["entries"]),
    }
    # fmt: on


async def cancels(conn: Any, emu: procs.EmulatorProc, report: Any) -> None:
    for when, replicas in (("after", 1), ("before", 1), ("after", 3)):
        print(f"-- (10) cancel {when}, {replicas} replica(s)", flush=True)
        f = await cancel_run(conn, emu, when=when, replicas=replicas)
        report.facts[f"cancel_{when}_{replicas}"] = f
        name = (f"(10) 500,000-id delete cancelled {when} "
                f"{'its first window' if when == 'after' else 'the worker starts'}, "
                f"{replicas} replica(s)")  # fmt: skip
        once = f["answered_once"] == f["items"] == f["answers"]
        replied = sum(f["replied"].values()) == f["items"] and f["replies"] == MESSAGES
        same = f["replied"].get("rejected", 0) == f["cancelled"] == f["codes"].get("cancelled", 0)
        report.add(f"{name}: API requests (after the cancel's confirm) / ids sent / cancelled",
                   f"{f['requests']} ({f['requests_after_cancel']}) / {f['ids_sent']:,} / "
                   f"{f['cancelled']:,}", "", "", "cancelled never sent",
                   "yes" if f["cancelled_and_sent"] == 0 and f["succeeded_not_sent"] == 0
                   else "NO")  # fmt: skip
        report.add(f"{name}: every item answered once / replies agree",
                   f"{f['answered_once']:,} of {f['items']:,} / {f['replies']} replies",
                   "", "", "all once, same counts", "yes" if once and replied and same else "NO")  # fmt: skip
        report.add(f"{name}: cancel confirmed (or worker start) -> last answer",
                   f"{f['cancel_to_last_answer_s']:.2f} s", "", "", "", "")  # fmt: skip
        report.add(f"{name}: 429s / breaches", f"{f['429s']} / {f['breaches']}", "", "", "0",
                   "yes" if f["429s"] == f["breaches"] == 0 else "NO")  # fmt: skip
