"""The benchmark: broker ceiling, worker throughput, API ceilings, naive consumer, latency.

``uv run python -m tests.bench.run [--small]``. Every figure comes from the same run on the
local RabbitMQ and the bundled emulator, and is reported as a ratio to its reference, so a
noisy machine does not mislead. The worker, the emulator and the ceiling consumer each run
as their own process; this process loads the queues and collects the outcomes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson

from tests.bench import amqp, cancel, formats, priority, procs
from tests.bench.amqp import AMQP_URL, Names, request_body

DATO_OP = "datocms.items.publish"
BLOOM_OP = "bloomreach.catalog_items.delete"
UPSERT_OP = "bloomreach.catalog_items.upsert"
STAGE_OP = "datocms.items.move_to_stage"


# The emulator neither limits nor counts down a window (so its X-RateLimit-Remaining does
# not hold back the worker, whose own limiters are set as high by ``unlimited=True``).
UNLIMITED = {
    "rate_limits_enabled": False,
    "latency_seconds": 0.0,
    "datocms_rate": (100_000, 1.0),
    "bloomreach_rate": (100_000, 1.0),
}


@dataclass(frozen=True)
class Plan:
    throughput_items: int = 30_000  # (1) and (2): single-id messages
    memory_backlog: int = 90_000  # queued for the RSS-vs-backlog check (0: skip)
    memory_sample: int = 15_000  # outcomes after which peak RSS is compared
    dato_windows: int = 3  # (3) DatoCMS: measured 3-second windows under backlog
    dato_backlog: int = 20_000
    bloom_windows: int = 1  # (3) Bloomreach: measured 10-second windows under backlog
    bloom_backlog: int = 61_000
    bloom_ids_per_message: int = 100
    naive_seconds: float = 6.0
    latency_seconds: float = 8.0
    latency_rate: float = 50.0
    only_throughput: bool = False  # (1) and (2) only: for profiling
    # (6) outcome modes with replies: Bloomreach on two catalogs in messages of 100 ids, each
    # with a reply_to; DatoCMS single-id messages without. ``all`` gets a smaller Bloomreach
    # backlog: its outcomes go at the broker's pace (about 0.17 of the APIs'), not the APIs'.
    modes: tuple[str, ...] = ("none", "failures", "all")
    mode_bloom_backlog: int = 320_000
    mode_bloom_backlog_all: int = 60_000
    mode_dato_backlog: int = 20_000
    only_modes: bool = False  # (1) and (6) only
    # (7) the sync operations under the same limits: catalog upserts on two catalogs (items
    # with properties, in messages of ``bloom_ids_per_message``) and single-id stage moves.
    sync_bloom_backlog: int = 60_000  # per catalog
    sync_dato_backlog: int = 20_000
    only_sync: bool = False  # (1) and (7) only
    # (8) outcome formats (tests/bench/formats.py): the mixed backlog in each format.
    formats: tuple[str, ...] = ("item", "batch")
    formats_scale: float = 1.0  # of 12,000 DatoCMS + 2 x 60,000 Bloomreach ids
    formats_replicas: int = 1  # (8) through this many partitioned replicas
    only_formats: bool = False  # (1) and (8) only
    # (9) the priority lane behind a backlog (tests/bench/priority.py); off unless asked.
    priority_scale: float = 0.0  # of 30,000 DatoCMS + 120,000 Bloomreach ids
    only_cancel: bool = False  # (10): cancel a 500,000-id delete


SMALL = Plan(
    throughput_items=600,
    memory_backlog=0,
    memory_sample=300,
    dato_windows=0,
    dato_backlog=1_000,
    bloom_windows=0,
    bloom_backlog=2_000,
    naive_seconds=1.0,
    latency_seconds=1.0,
    latency_rate=30.0,
    modes=("failures",),
    mode_bloom_backlog=4_000,
    mode_bloom_backlog_all=4_000,
    mode_dato_backlog=1_000,
    sync_bloom_backlog=2_000,
    sync_dato_backlog=1_000,
    formats=(),  # (8) small: `--small --formats item,batch` (about 25 s)
)


@dataclass
class Row:
    measure: str
    value: str
    reference: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, *cells: str) -> None:
        self.rows.append(Row(*("-" if "nan" in c else c for c in cells)))

    def table(self) -> str:
        head = Row("measure", "value", "reference", "ratio", "target", "met")
        cells = [[c for c in vars(r).values()] for r in [head, *self.rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(6)]
        lines = [
            "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
            for row in cells
        ]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:07d}" for i in range(n)]


def single_id_bodies(operation: str, n: int, prefix: str, **scope: str) -> list[bytes]:
    return [request_body(operation, [i], **scope) for i in ids(prefix, n)]


# -- (1) broker ceiling -------------------------------------------------------------------


async def broker_ceiling(conn: Any, plan: Plan, report: Report) -> float:
    names = Names.fresh("ceiling")
    channel = await conn.channel()
    await amqp.declare(channel, names)
    await amqp.load(conn, names.requests, single_id_bodies(DATO_OP, plan.throughput_items, "c"))
    async with amqp.collect(conn, names.results) as seen:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.bench.ceiling",
            names.requests, names.results, str(plan.throughput_items),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            await seen.wait_for(plan.throughput_items, timeout=300)
            out, _ = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await amqp.delete(channel, names)
    cpu = orjson.loads(out)["cpu_seconds"]
    rate = seen.rate()
    per10k = cpu / plan.throughput_items * 10_000
    report.add("(1) broker ceiling: items/s", f"{rate:,.0f}", "", "", "", "")
    report.add("(1) ceiling CPU s per 10k items", f"{per10k:.2f}")
    return rate


# -- (2) worker, API not limiting -----------------------------------------------------------


async def worker_fast(
    conn: Any, emu: procs.EmulatorProc, plan: Plan, report: Report, ceiling: float
) -> int:
    await emu.reset()
    await emu.configure(**UNLIMITED, datocms_job_seconds=0.0)
    names = Names.fresh("fast")
    channel = await conn.channel()
    await amqp.declare(channel, names)
    n = plan.throughput_items
    await amqp.load(conn, names.requests, single_id_bodies(DATO_OP, n, "f"))
    env = procs.worker_env(names, emu.base_url, unlimited=True, job_poll_initial_seconds=0.05)
    async with amqp.collect(conn, names.results) as seen, procs.worker(env) as proc:
        pid = proc.process.pid
        cpu0 = procs.cpu_seconds(pid)
        await seen.wait_for(min(plan.memory_sample, n), timeout=300)
        hwm_sample = procs.memory_kb(pid)["VmHWM"]
        await seen.wait_for(n, timeout=300)
        cpu = procs.cpu_seconds(pid) - cpu0
        hwm = procs.memory_kb(pid)["VmHWM"]
    await amqp.delete(channel, names)
    rate = seen.rate()
    ratio = rate / ceiling
    missing = n - len(seen.arrivals)
    report.facts |= {"fast_missing": missing, "fast_statuses": seen.statuses}
    report.add("(2) worker, API not limiting: items/s", f"{rate:,.0f}", f"{ceiling:,.0f} (1)",
               f"{ratio:.2f}", ">= 0.6 (aim 0.9)", yes(ratio >= 0.6))  # fmt: skip
    report.add("(2) worker CPU s per 10k items", f"{cpu / n * 10_000:.2f}")
    report.add("(2) worker peak RSS (VmHWM), MB", f"{hwm / 1024:.0f}",
               f"{hwm / 1024 / n * 10_000:.1f} MB per 10k items")  # fmt: skip
    report.facts["hwm_sample_kb"] = hwm_sample
    return hwm_sample


async def memory_backlog(
    conn: Any, emu: procs.EmulatorProc, plan: Plan, report: Report, base_kb: int
) -> None:
    """Peak RSS after the same number of outcomes, with a much larger backlog queued."""
    names = Names.fresh("memory")
    channel = await conn.channel()
    await amqp.declare(channel, names)
    await amqp.load(conn, names.requests, single_id_bodies(DATO_OP, plan.memory_backlog, "m"))
    env = procs.worker_env(names, emu.base_url, unlimited=True, job_poll_initial_seconds=0.05)
    async with amqp.collect(conn, names.results) as seen, procs.worker(env) as proc:
        await seen.wait_for(plan.memory_sample, timeout=300)
        hwm = procs.memory_kb(proc.process.pid)["VmHWM"]
    await amqp.delete(channel, names)
    growth = hwm / base_kb
    report.add(f"memory: peak RSS after {plan.memory_sample:,} outcomes, "
               f"{plan.memory_backlog:,} queued vs {plan.throughput_items:,}",
               f"{hwm / 1024:.0f} MB", f"{base_kb / 1024:.0f} MB", f"{growth:.2f}",
               "~1.0 (bounded by prefetch)", yes(growth < 1.15))  # fmt: skip


# -- (3) worker, API limiting -------------------------------------------------------------


def limited_stats(
    entries: list[dict[str, Any]], limit: int, window: float, windows: int, max_batch: int
) -> dict[str, float]:
    """Over the first ``windows * limit`` requests: the request rate against the limit, the
    items rate, the share of full bulk requests."""
    entries = sorted(entries, key=lambda e: e["t"])
    n = windows * limit
    if windows == 0 or len(entries) <= n:
        measured = entries
        span = 0.0
    else:
        measured = entries[:n]
        span = entries[n]["t"] - entries[0]["t"]
    bulk = [e for e in measured if e["method"] != "GET"]  # job polls and reads are GETs
    items = sum(e["items"] for e in bulk)
    full = sum(e["items"] >= max_batch for e in bulk)
    return {
        "requests": len(measured),
        "bulk": len(bulk),
        "request_ratio": (windows * window / span) if span else float("nan"),
        "items_per_s": items / span if span else float("nan"),
        "full_share": full / len(bulk) if bulk else float("nan"),
    }


async def worker_limited(
    conn: Any, emu: procs.EmulatorProc, report: Report, *, api: str, bodies: list[bytes],
    items: int, limit: int, window: float, windows: int, max_batch: int, broker: float,
    label: str = "", **settings: Any,
) -> None:  # fmt: skip
    await emu.reset()
    await emu.configure(
        rate_limits_enabled=True, latency_seconds=0.0, datocms_job_seconds=0.2,
        datocms_rate=(60, 3.0), bloomreach_rate=(5, 10.0),
    )  # fmt: skip
    names = Names.fresh(f"limited-{api}")
    channel = await conn.channel()
    await amqp.declare(channel, names)
    await amqp.load(conn, names.requests, bodies)
    env = procs.worker_env(names, emu.base_url, **settings)
    async with amqp.collect(conn, names.results) as seen, procs.worker(env):
        await seen.wait_for(items, timeout=300)
    await amqp.delete(channel, names)
    log = await emu.log()
    entries = [e for e in log["entries"] if e["api"] == api]
    stats = limited_stats(entries, limit, window, windows, max_batch)
    throttled = sum(e["status"] == 429 for e in entries)
    ceiling = limit / window * max_batch
    fact = f"limited_{api}" + (f"_{label}" if label else "")
    report.facts[fact] = stats | {"breaches": log["breaches"], "429s": throttled,
                                  "missing": items - len(seen.arrivals)}  # fmt: skip
    name = (f"(7) {label}" if label else f"(3) {api}") + f" {limit}/{window:g}s x {max_batch}"
    ratio = stats["request_ratio"]
    report.add(f"{name}: requests/s vs allowed", f"{stats['requests']} requests",
               f"{limit / window:g}/s", f"{ratio:.3f}", ">= 0.95", yes(ratio >= 0.95))  # fmt: skip
    items_ratio = stats["items_per_s"] / ceiling
    report.add(f"{name}: items/s vs allowed req/s x max batch", f"{stats['items_per_s']:,.0f}",
               f"{ceiling:,.0f}", f"{items_ratio:.3f}", "", "")  # fmt: skip
    if api == "datocms":
        polls = stats["requests"] - stats["bulk"]
        effective = ceiling * stats["bulk"] / max(1, stats["requests"])
        report.add(f"{name}: items/s vs ceiling with {polls} job polls counted",
                   f"{stats['items_per_s']:,.0f}", f"{effective:,.0f}",
                   f"{stats['items_per_s'] / effective:.3f}", ">= 0.95",
                   yes(stats["items_per_s"] / effective >= 0.95))  # fmt: skip
    if api == "datocms" and not label:  # the API would take more than the broker confirms
        report.add(f"{name}: items/s vs broker ceiling (1)", f"{stats['items_per_s']:,.0f}",
                   f"{broker:,.0f} (1)", f"{stats['items_per_s'] / broker:.3f}", "", "")  # fmt: skip
    report.add(f"{name}: full bulk requests", f"{stats['full_share']:.0%} of {stats['bulk']}",
               "", "", "100%", yes(stats["full_share"] == 1.0))  # fmt: skip
    report.add(f"{name}: 429s / breaches", f"{throttled} / {log['breaches']}", "", "", "0",
               yes(throttled == 0 and log["breaches"] == 0))  # fmt: skip
    report.facts[f"items_per_s_{api}" + (f"_{label}" if label else "")] = stats["items_per_s"]


# -- (7) the sync operations under the limits ------------------------------------------------


def upsert_bodies(catalog: str, n: int, per: int) -> list[bytes]:
    """``n`` catalog items with two properties each, in messages of ``per`` items."""
    items = [
        {"id": f"u-{k:07d}", "properties": {"price": k, "title": f"item {k}"}} for k in range(n)
    ]
    return [
        orjson.dumps(
            {
                "operation": UPSERT_OP,
                "target": "shop",
                "catalog_id": catalog,
                "items": items[k : k + per],
            }
        )
        for k in range(0, n, per)
    ]


async def sync_operations(
    conn: Any, emu: procs.EmulatorProc, plan: Plan, report: Report, broker: float
) -> None:
    """Catalog upserts on two catalogs (each its own 5/10s limit: 10 requests per 10 s in
    all) and single-id DatoCMS stage moves, against the same limits as (3)."""
    n = plan.sync_bloom_backlog
    per = plan.bloom_ids_per_message
    bodies = upsert_bodies("cat-1", n, per) + upsert_bodies("cat-2", n, per)
    await worker_limited(
        conn, emu, report, api="bloomreach", bodies=bodies, items=2 * n, limit=10,
        window=10.0, windows=plan.bloom_windows, max_batch=10_000, broker=broker,
        label="upsert, 2 catalogs",
    )  # fmt: skip
    stage = [
        orjson.dumps(
            {"operation": STAGE_OP, "target": "bench", "params": {"stage": "review"}, "ids": [i]}
        )
        for i in ids("s", plan.sync_dato_backlog)
    ]
    await worker_limited(
        conn, emu, report, api="datocms", bodies=stage, items=plan.sync_dato_backlog,
        limit=60, window=3.0, windows=plan.dato_windows, max_batch=200, broker=broker,
        label="datocms stage move",
    )  # fmt: skip


# -- (4) naive consumer -------------------------------------------------------------------


async def naive(conn: Any, emu: procs.EmulatorProc, plan: Plan, report: Report) -> None:
    await emu.reset()
    await emu.configure(
        rate_limits_enabled=True, latency_seconds=0.0, datocms_rate=(60, 3.0)
    )  # fmt: skip
    names = Names.fresh("naive")
    channel = await conn.channel()
    await amqp.declare(channel, names)
    await amqp.load(conn, names.requests, single_id_bodies(DATO_OP, 1000, "n"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.naive", names.requests, emu.base_url,
        str(plan.naive_seconds), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    await amqp.delete(channel, names)
    result = orjson.loads(out)
    rate = result["items"] / result["seconds"]
    worker_rate = report.facts.get("items_per_s_datocms", float("nan"))
    report.add("(4) naive consumer, DatoCMS one request per item: items/s", f"{rate:,.1f}",
               f"{worker_rate:,.0f} (3)", f"(3) is {worker_rate / rate:,.0f}x", "", "")  # fmt: skip
    report.facts["naive"] = result


# -- (5) latency at light load --------------------------------------------------------------


async def latency(conn: Any, emu: procs.EmulatorProc, plan: Plan, report: Report) -> None:
    """Publish-to-outcome time at a light, steady load. The first second is a warm-up, not
    counted: the worker's first batch also opens its HTTP connection and publishing channel.
    The bound is the linger plus two round trips measured in this run: one through the
    broker (publish to consume, p99) taken twice (request in, outcome out), and one to the
    API (p99 of one-id requests on a kept-alive connection)."""
    await emu.reset()
    await emu.configure(**UNLIMITED)
    hops = await amqp.broker_hop(conn)
    hop = statistics.quantiles(hops, n=100)[98]
    api_rtt = statistics.quantiles(await emu.round_trips(), n=100)[98]
    names = Names.fresh("latency")
    channel = await conn.channel(publisher_confirms=False)
    await amqp.declare(channel, names)
    linger = 0.3
    env = procs.worker_env(names, emu.base_url, unlimited=True, linger_seconds=linger)
    warm = int(plan.latency_rate)
    n = warm + int(plan.latency_rate * plan.latency_seconds)
    sent: dict[str, float] = {}
    async with amqp.collect(conn, names.results) as seen, procs.worker(env):
        start = time.monotonic()
        for k, item_id in enumerate(ids("l", n)):
            await asyncio.sleep(max(0.0, start + k / plan.latency_rate - time.monotonic()))
            body = request_body(BLOOM_OP, [item_id], catalog_id="cat-1")
            sent[item_id] = time.monotonic()
            await channel.default_exchange.publish(aio_pika.Message(body), names.requests)
        await seen.wait_for(n, timeout=60)
    await amqp.delete(channel, names)
    waits = [seen.arrivals[i] - t for i, t in sent.items()]
    counted = waits[warm:]
    q = statistics.quantiles(counted, n=100)
    p50, p99 = statistics.median(counted), q[98]
    api = [e for e in (await emu.log())["entries"] if e["api"] == "bloomreach"]
    bound = linger + 2 * hop + api_rtt
    report.add(f"(5) latency at {plan.latency_rate:g} msg/s: p50 / p99 s", f"{p50:.3f} / {p99:.3f}",
               f"linger {linger} + 2 x broker hop {hop * 1000:.1f} ms + API round trip "
               f"{api_rtt * 1000:.1f} ms = {bound:.3f}",
               f"{p99 / bound:.2f}", "p99 < bound", yes(p99 < bound))  # fmt: skip
    report.add("(5) first second (warm-up, not counted): max s", f"{max(waits[:warm]):.3f}")
    report.facts["latency"] = {
        "p50": p50, "p99": p99, "hop_p99": hop, "api_rtt_p99": api_rtt,
        "warmup_max": max(waits[:warm]), "api_requests": len(api),
    }  # fmt: skip


# -- (6) outcome modes: the APIs' limits, with replies ----------------------------------------


def window_use(times: list[float], limit: int, window: float) -> float:
    """The least time these requests can take under ``limit`` per ``window`` (the first
    ``limit`` at once, then ``limit`` per window) over the time they took: 1.0 is every
    slot used the moment it frees."""
    n = len(times)
    least = ((n - 1) // limit) * window
    span = max(times) - min(times) if times else 0.0
    return least / span if span > 0 and n > limit else float("nan")


async def mode_bloomreach(
    conn: Any, emu: procs.EmulatorProc, plan: Plan, report: Report, mode: str
) -> None:
    """Two catalogs, messages of 100 ids with a reply_to each; every request answered."""
    await emu.reset()
    await emu.configure(rate_limits_enabled=True, latency_seconds=0.0, bloomreach_rate=(5, 10.0))
    names = Names.fresh(f"mode-{mode}-bloom")
    channel = await conn.channel()
    await amqp.declare(channel, names)
    total = plan.mode_bloom_backlog_all if mode == "all" else plan.mode_bloom_backlog
    per = plan.bloom_ids_per_message
    bodies = [
        request_body(BLOOM_OP, [f"b{k:05d}-{i:03d}" for i in range(per)], catalog_id=f"cat-{k % 2}")
        for k in range(total // per)
    ]
    reply_to = f"{names.requests}.replies"
    env = procs.worker_env(names, emu.base_url, item_outcomes=mode)
    async with amqp.replies(conn, reply_to) as seen, amqp.collect(conn, names.results) as outs:
        await amqp.load(conn, names.requests, bodies, reply_to=reply_to)
        async with procs.worker(env) as proc:
            await seen.wait_for(len(bodies), timeout=900)
            hwm = procs.memory_kb(proc.process.pid)["VmHWM"]
    await amqp.delete(channel, names)
    entries = [e for e in (await emu.log())["entries"] if e["api"] == "bloomreach"]
    uses, full, sent = [], 0, 0
    for catalog in ("cat-0", "cat-1"):
        mine = [e for e in entries if f"/catalogs/{catalog}/" in e["path"] and e["items"]]
        uses.append(window_use([e["t"] for e in mine], 5, 10.0))
        full += sum(e["items"] >= 10_000 for e in mine)
        sent += len(mine)
    throttled = sum(e["status"] == 429 for e in entries)
    first = min(e["t"] for e in entries)
    rate = total / (seen.last - first)  # from the first request to the last reply
    end_to_end = rate / 10_000  # what two catalogs allow: 2 x 5 x 10,000 ids per 10 s
    name = f"(6) {mode}: bloomreach {total:,} ids, 2 catalogs, replies"
    target, ok = (">= 0.9", min(uses) >= 0.9) if mode != "all" else ("", True)
    report.add(f"{name}: window use per catalog", " / ".join(f"{u:.3f}" for u in uses),
               "least time the limit allows", f"{min(uses):.3f}", target,
               yes(ok) if target else "")  # fmt: skip
    report.add(f"{name}: first request to last reply", f"{rate:,.0f} items/s",
               "10,000 items/s allowed", f"{end_to_end:.3f}", "", "")  # fmt: skip
    report.add(f"{name}: full requests / 429s", f"{full / sent:.0%} of {sent} / {throttled}",
               "", "", ">= 90% / 0", yes(full / sent >= 0.9 and throttled == 0))  # fmt: skip
    report.add(f"{name}: outcomes published / worker peak RSS", f"{outs.count:,} / "
               f"{hwm / 1024:.0f} MB", "", "", "", "")  # fmt: skip
    trace = [(e["path"].split("/catalogs/")[1][:5], round(e["t"] - first, 2), e["items"])
             for e in sorted(entries, key=lambda e: e["t"])]  # fmt: skip
    report.facts[f"mode_{mode}_bloomreach"] = {
        "trace": trace, "first_reply_s": seen.first - first, "last_reply_s": seen.last - first,
        "window_use": uses, "end_to_end": end_to_end, "full": full, "requests": sent,
        "429s": throttled, "missing": total - seen.items, "statuses": seen.statuses,
        "outcomes": outs.count, "hwm_kb": hwm,
    }  # fmt: skip


async def settled_items(proc: Any) -> float:
    samples = await proc.scrape()
    return float(
        sum(v for (name, _), v in samples.items() if name == "bulkops_item_outcomes_total")
    )


async def mode_datocms(
    conn: Any, emu: procs.EmulatorProc, plan: Plan, report: Report, mode: str, broker: float
) -> None:
    """Single-id messages without reply_to (the hardest intake): measured as (3) is."""
    await emu.reset()
    await emu.configure(
        rate_limits_enabled=True, latency_seconds=0.0, datocms_job_seconds=0.2,
        datocms_rate=(60, 3.0),
    )  # fmt: skip
    names = Names.fresh(f"mode-{mode}-dato")
    channel = await conn.channel()
    await amqp.declare(channel, names)
    n = plan.mode_dato_backlog
    await amqp.load(conn, names.requests, single_id_bodies(DATO_OP, n, f"d{mode}"))
    env = procs.worker_env(names, emu.base_url, item_outcomes=mode)
    async with amqp.collect(conn, names.results) as outs, procs.worker(env) as proc:
        async with asyncio.timeout(600):
            while await settled_items(proc) < n:
                await asyncio.sleep(0.2)
    await amqp.delete(channel, names)
    log = await emu.log()
    entries = [e for e in log["entries"] if e["api"] == "datocms"]
    stats = limited_stats(entries, 60, 3.0, plan.dato_windows, 200)
    throttled = sum(e["status"] == 429 for e in entries)
    effective = 4_000 * stats["bulk"] / max(1, stats["requests"])
    ratio = stats["items_per_s"] / effective
    name = f"(6) {mode}: datocms {n:,} single-id messages"
    target = ">= 0.95" if mode == "failures" else ""
    report.add(f"{name}: items/s vs ceiling with polls", f"{stats['items_per_s']:,.0f}",
               f"{effective:,.0f}", f"{ratio:.3f}", target,
               yes(ratio >= 0.95) if target else "")  # fmt: skip
    report.add(f"{name}: vs broker ceiling (1) / full / 429s",
               f"{stats['items_per_s'] / broker:.2f} x / {stats['full_share']:.0%} / {throttled}",
               f"{broker:,.0f} (1)", "", "", "")  # fmt: skip
    report.facts[f"mode_{mode}_datocms"] = stats | {
        "429s": throttled, "breaches": log["breaches"], "outcomes": outs.count, "ratio": ratio,
    }  # fmt: skip


async def modes(
    conn: Any, emu: procs.EmulatorProc, plan: Plan, report: Report, broker: float
) -> None:
    for mode in plan.modes:
        note(f"(6) {mode}: Bloomreach, two catalogs, replies")
        await mode_bloomreach(conn, emu, plan, report, mode)
        note(f"(6) {mode}: DatoCMS single-id")
        await mode_datocms(conn, emu, plan, report, mode, broker)


def note(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


async def main(plan: Plan) -> Report:
    report = Report()
    started = time.monotonic()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection, procs.emulator() as emu:
        try:
            await phases(connection, emu, plan, report)
        except BaseException:
            print(report.table(), file=sys.stderr)  # what was measured before the failure
            raise
        finally:
            channel = await connection.channel()
            for names in amqp.DECLARED:
                await amqp.delete(channel, names)
    report.facts["seconds"] = time.monotonic() - started
    report.facts["machine"] = machine()
    return report


async def phases(connection: Any, emu: procs.EmulatorProc, plan: Plan, report: Report) -> None:
    if plan.only_cancel:
        note("(10) cancel a 500,000-id Bloomreach delete")
        await cancel.cancels(connection, emu, report)
        return
    if plan.priority_scale:
        note("(9) the priority lane behind a backlog")
        await priority.priority(connection, emu, report, plan.priority_scale)
        return
    note("(1) broker ceiling")
    ceiling = await broker_ceiling(connection, plan, report)
    if plan.only_modes:
        await modes(connection, emu, plan, report, ceiling)
        return
    if plan.only_formats:
        await formats.formats(
            connection, emu, report, plan.formats, plan.formats_scale, plan.formats_replicas
        )
        return
    if plan.only_sync:
        note("(7) sync operations under the limits")
        await sync_operations(connection, emu, plan, report, ceiling)
        return
    note("(2) worker, API not limiting")
    base_kb = await worker_fast(connection, emu, plan, report, ceiling)
    if plan.only_throughput:
        return
    if plan.memory_backlog:
        note(f"memory with {plan.memory_backlog:,} queued")
        await memory_backlog(connection, emu, plan, report, base_kb)
    note("(3) DatoCMS under its limit")
    await worker_limited(
        connection, emu, report, api="datocms",
        bodies=single_id_bodies(DATO_OP, plan.dato_backlog, "d"), items=plan.dato_backlog,
        limit=60, window=3.0, windows=plan.dato_windows, max_batch=200, broker=ceiling,
    )  # fmt: skip
    note("(3) Bloomreach under its limit")
    per = plan.bloom_ids_per_message
    bloom_ids = ids("b", plan.bloom_backlog)
    bodies = [
        request_body(BLOOM_OP, bloom_ids[k : k + per], catalog_id="cat-1")
        for k in range(0, len(bloom_ids), per)
    ]
    await worker_limited(
        connection, emu, report, api="bloomreach", bodies=bodies, items=len(bloom_ids),
        limit=5, window=10.0, windows=plan.bloom_windows, max_batch=10_000, broker=ceiling,
    )  # fmt: skip
    note("(4) naive consumer")
    await naive(connection, emu, plan, report)
    note("(5) latency at light load")
    await latency(connection, emu, plan, report)
    await modes(connection, emu, plan, report, ceiling)
    note("(7) sync operations under the limits")
    await sync_operations(connection, emu, plan, report, ceiling)
    note("(8) outcome formats: the mixed backlog")
    await formats.formats(
        connection, emu, report, plan.formats, plan.formats_scale, plan.formats_replicas
    )
    note("done")


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__)
    parser.add_argument("--small", action="store_true", help="a seconds-long smoke version")
    parser.add_argument("--json", help="also write the facts and rows to this file")
    parser.add_argument("--throughput", type=int, help="only (1) and (2), with this many items")
    parser.add_argument("--modes", help="only (1) and (6), for these modes (e.g. none,failures)")
    parser.add_argument("--sync", action="store_true", help="only (1) and (7)")
    parser.add_argument("--formats", help="only (1) and (8), for these formats (item,batch)")
    parser.add_argument("--formats-scale", type=float, default=1.0,
                        help="(8)'s backlog as a share of the issue's (1.0)")  # fmt: skip
    parser.add_argument("--priority", type=float, nargs="?", const=1.0,
                        help="only (9), the priority lane behind a backlog, at this share of "
                        "the issue's backlog (default 1.0)")  # fmt: skip
    parser.add_argument("--cancel", action="store_true",
                        help="only (10), a 500,000-id Bloomreach delete cancelled")  # fmt: skip
    parser.add_argument("--formats-replicas", type=int, default=1,
                        help="(8) through this many partitioned replicas (3: issue 21's row)")  # fmt: skip
    args = parser.parse_args(argv)
    plan = SMALL if args.small else Plan()
    if args.throughput:
        plan = dataclasses.replace(
            plan, throughput_items=args.throughput, memory_sample=args.throughput // 2,
            only_throughput=True,
        )  # fmt: skip
    if args.modes:
        plan = dataclasses.replace(plan, modes=tuple(args.modes.split(",")), only_modes=True)
    if args.sync:
        plan = dataclasses.replace(plan, only_sync=True)
    if args.formats:
        plan = dataclasses.replace(plan, formats=tuple(args.formats.split(",")), only_formats=True)
    if args.formats_scale != 1.0 or args.small:
        scale = 0.05 if args.small and args.formats_scale == 1.0 else args.formats_scale
        plan = dataclasses.replace(plan, formats_scale=scale)
    if args.priority:
        plan = dataclasses.replace(plan, priority_scale=args.priority)
    if args.cancel:
        plan = dataclasses.replace(plan, only_cancel=True)
    if args.formats_replicas != 1:
        plan = dataclasses.replace(plan, formats_replicas=args.formats_replicas)
    report = asyncio.run(main(plan))
    print(report.table())
    print(f"\nmachine: {report.facts['machine']}; took {report.facts['seconds']:.0f} s")
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps({"rows": [vars(r) for r in report.rows], "facts": report.facts},
                                 option=orjson.OPT_INDENT_2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(cli())
