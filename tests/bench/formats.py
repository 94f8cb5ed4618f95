"""(8) Outcome formats (issue 21): the mixed backlog, every outcome published (`all`), in the
`item` and the `batch` format: each API's use of its limit, and the time from the first API
request to the last outcome against the APIs' own time for the same work (first to last API
request). Run: ``uv run python -m tests.bench.run --formats item,batch`` (``--formats-scale
0.25`` for a reduced backlog)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from tests.bench import amqp, procs
from tests.bench.amqp import Names, request_body
from worker.client import outcome_items

DATO_OP = "datocms.items.publish"
PARTITIONS = 6
BLOOM_OP = "bloomreach.catalog_items.delete"


@dataclass
class Items:
    """Per-item outcomes received, whichever format (auto-ack: never throttles)."""

    items: int = 0
    messages: int = 0
    last: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, n: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.items < n:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def collect_items(connection: Any, exchange: str) -> AsyncIterator[Items]:
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, "#")
    seen = Items()

    async def callback(message: AbstractIncomingMessage) -> None:
        items = outcome_items(message.body)
        seen.last = time.monotonic()
        seen.messages += 1
        seen.items += len(items)
        for item in items:
            seen.statuses[item["status"]] = seen.statuses.get(item["status"], 0) + 1
        seen.changed.set()

    tag = await queue.consume(callback, no_ack=True)
    try:
        yield seen
    finally:
        with contextlib.suppress(Exception):
            await queue.cancel(tag)
        await channel.close()


def window_use(times: list[float], limit: int, window: float) -> float:
    """As run.window_use: the least time ``len(times)`` requests take under the limit over
    the time they took (1.0: every slot used the moment it frees)."""
    n = len(times)
    least = ((n - 1) // limit) * window
    span = max(times) - min(times) if times else 0.0
    return least / span if span > 0 and n > limit else float("nan")


def mixed_bodies(dato: int, bloom_per_catalog: int, tag: str, per: int = 100) -> list[bytes]:
    """Single-id DatoCMS publishes, with a Bloomreach message of ``per`` ids (the catalogs
    alternating) spread evenly among them, so both APIs have work from the start."""
    blooms = [
        request_body(BLOOM_OP, [f"{tag}b{k:05d}-{i:03d}" for i in range(per)],
                     catalog_id=f"cat-{k % 2}")
        for k in range(2 * bloom_per_catalog // per)
    ]  # fmt: skip
    datos = [request_body(DATO_OP, [f"{tag}d{k:06d}"]) for k in range(dato)]
    every = max(1, len(datos) // max(1, len(blooms)))
    out: list[bytes] = []
    for k, body in enumerate(datos):
        out.append(body)
        if k % every == 0 and blooms:
            out.append(blooms.pop())
    return out + blooms


async def mixed_backlog(
    conn: Any,
    emu: procs.EmulatorProc,
    fmt: str,
    dato: int,
    bloom_per_catalog: int,
    replicas: int = 1,
) -> dict[str, Any]:
    """The mixed backlog through one worker, or through ``replicas`` partitioned ones (one
    DatoCMS token and two catalogs: three scopes, each owned by one replica at a time)."""
    await emu.reset()
    await emu.configure(
        rate_limits_enabled=True, latency_seconds=0.0, datocms_job_seconds=0.2,
        datocms_rate=(60, 3.0), bloomreach_rate=(5, 10.0),
    )  # fmt: skip
    names = Names.fresh(f"fmt-{fmt}")
    channel = await conn.channel()
    partitioned = {}
    if replicas > 1:
        partitioned = {"partitions": PARTITIONS, "partition_exchange": f"{names.requests}.parts",
                       "partition_rebalance_seconds": 2, "drain_timeout_seconds": 5}  # fmt: skip
    await amqp.declare(channel, names, **partitioned)
    total = dato + 2 * bloom_per_catalog
    await amqp.load(conn, names.requests, mixed_bodies(dato, bloom_per_catalog, fmt))
    env = procs.worker_env(
        names, emu.base_url, item_outcomes="all", outcome_format=fmt, **partitioned
    )
    async with contextlib.AsyncExitStack() as stack:
        outs = await stack.enter_async_context(collect_items(conn, names.results))
        workers = [
            await stack.enter_async_context(procs.worker(procs.fresh_port(env)))
            for _ in range(replicas)
        ]
        await outs.wait_for(total, timeout=1200)
        hwm = max(procs.memory_kb(w.process.pid)["VmHWM"] for w in workers)
    await amqp.delete(channel, names, partitions=PARTITIONS)
    log = await emu.log()
    entries = log["entries"]
    datos = [e for e in entries if e["api"] == "datocms"]
    blooms = [e for e in entries if e["api"] == "bloomreach"]
    uses = {"datocms": window_use([e["t"] for e in datos], 60, 3.0)}
    for catalog in ("cat-0", "cat-1"):
        mine = [e["t"] for e in blooms if f"/catalogs/{catalog}/" in e["path"] and e["items"]]
        uses[f"bloomreach {catalog}"] = window_use(mine, 5, 10.0)
    # DatoCMS: items/s against its ceiling with job polls (as (3) and (6) measure it): 200
    # ids per bulk request, 60 requests per 3 s, less the share of requests that are polls.
    bulk = [e for e in datos if e["method"] != "GET"]
    dato_span = max(e["t"] for e in datos) - min(e["t"] for e in datos)
    effective = 4_000 * len(bulk) / max(1, len(datos))
    dato_ratio = dato / dato_span / effective if dato_span > 0 else float("nan")
    # The APIs' own time for this work: what each limit allows at the least, the slower API.
    least = [dato / effective]
    for catalog in ("cat-0", "cat-1"):
        n = sum(1 for e in blooms if f"/catalogs/{catalog}/" in e["path"] and e["items"])
        least.append(((n - 1) // 5) * 10.0)
    api_seconds = max(least)
    # The first API request of the work (with items): not the worker's start-up checks.
    first = min(e["t"] for e in entries if e["items"])
    spans = {"datocms": [datos[0]["t"] - first, datos[-1]["t"] - first]} if datos else {}
    for catalog in ("cat-0", "cat-1"):
        mine = [e for e in blooms if f"/catalogs/{catalog}/" in e["path"] and e["items"]]
        spans[f"bloomreach {catalog}"] = [[round(e["t"] - first, 2), e["items"]] for e in mine]
    outcome_seconds = outs.last - first
    return {
        "format": fmt, "items": total, "messages": outs.messages, "statuses": outs.statuses,
        "uses": uses, "datocms_ceiling_ratio": dato_ratio, "datocms_items_per_s": dato / dato_span,
        "api_requests_seconds": max(e["t"] for e in entries if e["items"]) - first,
        "api_seconds": api_seconds, "last_outcome_seconds": outcome_seconds,
        "pace": api_seconds / outcome_seconds if outcome_seconds > 0 else float("nan"),
        "429s": sum(e["status"] == 429 for e in entries), "breaches": log["breaches"],
        "hwm_kb": hwm, "spans": spans, "replicas": replicas,
    }  # fmt: skip


async def formats(
    conn: Any,
    emu: procs.EmulatorProc,
    report: Any,
    fmts: tuple[str, ...],
    scale: float,
    replicas: int = 1,
) -> None:
    dato, bloom = int(12_000 * scale), int(60_000 * scale)
    for fmt in fmts:
        where = f", {replicas} partitioned replicas" if replicas > 1 else ""
        print(f"-- (8) {fmt} format: mixed backlog{where}", flush=True)
        facts = await mixed_backlog(conn, emu, fmt, dato, bloom, replicas)
        report.facts[f"format_{fmt}" + (f"_x{replicas}" if replicas > 1 else "")] = facts
        name = f"(8) {fmt}: {dato:,} datocms + 2 x {bloom:,} bloomreach ids, all outcomes{where}"
        least = min(facts["uses"].values())
        ok = least >= 0.9
        # Partitioned (issue 21): DatoCMS at >= 0.85 of its ceiling while both catalogs run.
        dato_target = ">= 0.85" if replicas > 1 and fmt == "batch" else ""
        report.add(f"{name}: datocms items/s vs ceiling with polls",
                   f"{facts['datocms_items_per_s']:,.0f}", "", f"{facts['datocms_ceiling_ratio']:.3f}",
                   dato_target, ("yes" if facts["datocms_ceiling_ratio"] >= 0.85 else "NO")
                   if dato_target else "")  # fmt: skip
        report.add(f"{name}: request-limit use (datocms / cat-0 / cat-1)",
                   " / ".join(f"{u:.3f}" for u in facts["uses"].values()),
                   "least time the limit allows", f"{least:.3f}",
                   ">= 0.9" if fmt == "batch" else "", ("yes" if ok else "NO")
                   if fmt == "batch" else "")  # fmt: skip
        pace = facts["api_requests_seconds"] / facts["last_outcome_seconds"]
        facts["pace_vs_api_work"] = pace
        target = ">= 0.8" if fmt == "batch" else ""
        report.add(f"{name}: APIs' time (first to last work request) vs to last outcome",
                   f"{facts['api_requests_seconds']:.1f} s",
                   f"{facts['last_outcome_seconds']:.1f} s", f"{pace:.3f}", target,
                   ("yes" if pace >= 0.8 else "NO") if target else "")  # fmt: skip
        report.add(f"{name}: least time the limits allow vs to last outcome",
                   f"{facts['api_seconds']:.1f} s", f"{facts['last_outcome_seconds']:.1f} s",
                   f"{facts['pace']:.3f}", "", "")  # fmt: skip
        report.add(f"{name}: outcome messages / 429s / peak RSS",
                   f"{facts['messages']:,} / {facts['429s']} / {facts['hwm_kb'] / 1024:.0f} MB",
                   "", "", "", "")  # fmt: skip
