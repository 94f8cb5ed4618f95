"""(9) The priority lane behind a backlog, real limits (``python -m tests.bench.run --priority``).

Behind 30,000 single-id DatoCMS publishes and 120,000 Bloomreach ids on one catalog (in
messages of 100 ids), urgent requests on the priority lane: one DatoCMS unpublish and one
Bloomreach delete of one id every ``spacing`` seconds while the backlog runs. Measured, per
urgent request: publishing to its outcome (targets: DatoCMS 5 s, Bloomreach 13 s: one
window plus the API round trip). Also: the backlog kept going meanwhile, every id answered
once, 0 breaches. Once with one worker, once with 3 partitioned replicas.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aio_pika
import orjson

from tests.bench import amqp, procs
from tests.bench.amqp import Names, request_body
from worker.broker import declare_topology
from worker.broker.partitions import declare_partitions
from worker.settings import Settings

DATO_OP = "datocms.items.publish"
UNPUBLISH = "datocms.items.unpublish"
BLOOM_OP = "bloomreach.catalog_items.delete"
TARGETS = {"datocms": 5.0, "bloomreach": 13.0}


def backlog_bodies(dato: int, bloom: int, per: int = 100) -> list[bytes]:
    """Single-id DatoCMS publishes and ``per``-id Bloomreach deletes on one catalog,
    interleaved so that both scopes are backlogged in the worker at once."""
    dato_bodies = [request_body(DATO_OP, [f"d-{n:07d}"]) for n in range(dato)]
    bloom_ids = [f"b-{n:07d}" for n in range(bloom)]
    bloom_bodies = [
        request_body(BLOOM_OP, bloom_ids[k : k + per], catalog_id="cat-1")
        for k in range(0, bloom, per)
    ]
    every = max(1, len(dato_bodies) // max(1, len(bloom_bodies)))
    out: list[bytes] = []
    for n, body in enumerate(bloom_bodies):
        out += dato_bodies[n * every : (n + 1) * every]
        out.append(body)
    out += dato_bodies[len(bloom_bodies) * every :]
    return out


async def _declare(channel: Any, names: Names, partitions: int) -> None:
    amqp.DECLARED.append(names)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        request_queue=names.requests,
        dead_letter_queue=names.dlq,
        results_exchange=names.results,
        partitions=partitions,
        partition_exchange=f"{names.requests}.partitions",
    )
    await declare_topology(channel, settings)
    if partitions:
        await declare_partitions(channel, settings)


async def _urgent(
    conn: Any, names: Names, count: int, spacing: float
) -> dict[str, tuple[str, float]]:
    """Publish ``count`` urgent pairs on the priority lane; id -> (api, publish time)."""
    channel = await conn.channel(publisher_confirms=True)
    sent: dict[str, tuple[str, float]] = {}
    lane = names.requests + ".priority"
    for n in range(count):
        for api, body in (
            ("datocms", request_body(UNPUBLISH, [f"ud-{n}"])),
            ("bloomreach", request_body(BLOOM_OP, [f"ub-{n}"], catalog_id="cat-1")),
        ):
            item = orjson.loads(body)["ids"][0]
            sent[item] = (api, time.monotonic())
            message = aio_pika.Message(body, content_type="application/json", delivery_mode=2)
            await channel.default_exchange.publish(message, routing_key=lane)
        await asyncio.sleep(spacing)
    await channel.close()
    return sent


async def _handovers(workers: list[Any]) -> float:
    """Partition hand-overs so far, over the replicas."""
    total = 0.0
    for proc in workers:
        samples = await proc.scrape()
        total += sum(v for (name, _), v in samples.items()
                     if name == "bulkops_partition_handovers_total")  # fmt: skip
    return total


async def _settled(workers: list[Any], quiet: float = 5.0, bound: float = 60.0) -> float:
    """With replicas: wait (at most ``bound``) until no partition was handed on for
    ``quiet`` seconds, so urgent requests meet owners in place, not a rebalance. Returns
    the hand-overs so far."""
    last = await _handovers(workers)
    if len(workers) < 2:
        return last
    calm_since = time.monotonic()
    deadline = calm_since + bound
    while time.monotonic() < deadline and time.monotonic() - calm_since < quiet:
        await asyncio.sleep(0.5)
        now = await _handovers(workers)
        if now != last:
            last, calm_since = now, time.monotonic()
    return last


async def priority_phase(
    conn: Any, emu: procs.EmulatorProc, *, dato: int, bloom: int, replicas: int,
    urgent: int, spacing: float,
) -> dict[str, Any]:  # fmt: skip
    await emu.reset()
    await emu.configure(
        rate_limits_enabled=True, latency_seconds=0.0, datocms_job_seconds=0.2,
        datocms_rate=(60, 3.0), bloomreach_rate=(5, 10.0),
    )  # fmt: skip
    partitions = 3 if replicas > 1 else 0
    names = Names.fresh(f"priority-{replicas}")
    channel = await conn.channel()
    await _declare(channel, names, partitions)
    await amqp.load(conn, names.requests, backlog_bodies(dato, bloom))
    settings: dict[str, Any] = {"item_outcomes": "all"}
    if partitions:
        settings |= {"partitions": partitions, "partition_exchange": f"{names.requests}.partitions",
                     "partition_rebalance_seconds": 2, "drain_timeout_seconds": 5}  # fmt: skip
    total = dato + bloom + 2 * urgent
    async with amqp.collect(conn, names.results) as seen:
        workers = [procs.worker(procs.worker_env(names, emu.base_url, **settings))
                   for _ in range(replicas)]  # fmt: skip
        entered = [await w.__aenter__() for w in workers]
        try:
            await seen.wait_for(min(5_000, dato // 4), timeout=300)  # under way, both lanes
            settled = await _settled(entered)  # partitioned: the spreading is over
            before = seen.count
            sent = await _urgent(conn, names, urgent, spacing)
            async with asyncio.timeout(120):
                while not all(i in seen.arrivals for i in sent):
                    await asyncio.sleep(0.05)
            during = seen.count - before
            left = total - seen.count  # backlog still unanswered when the last urgent was
            handovers = await _handovers(entered) - settled
            await seen.wait_for(total, timeout=1200)
        finally:
            for w in reversed(workers):
                await w.__aexit__(None, None, None)
        del entered
    await amqp.delete(channel, names)
    log = await emu.log()
    latencies: dict[str, list[float]] = {"datocms": [], "bloomreach": []}
    for item, (api, at) in sent.items():  # in publishing order
        latencies[api].append(round(seen.arrivals[item] - at, 3))
    return {
        "replicas": replicas, "items": total, "answered": len(seen.arrivals),
        "outcomes": seen.count, "backlog_during_urgent": during,
        "handovers_during_urgent": handovers, "latency": latencies, "backlog_left": left,
        "breaches": log["breaches"],
        "429s": sum(e["status"] == 429 for e in log["entries"]),
    }  # fmt: skip


async def priority(conn: Any, emu: procs.EmulatorProc, report: Any, scale: float) -> None:
    dato, bloom = int(30_000 * scale), int(120_000 * scale)
    for replicas in (1, 3):
        print(f"-- (9) priority lane, {replicas} replica(s)", flush=True)
        facts = await priority_phase(
            conn, emu, dato=dato, bloom=bloom, replicas=replicas, urgent=13, spacing=2.0
        )
        report.facts[f"priority_{replicas}"] = facts
        name = f"(9) priority lane, {replicas} replica(s), behind {dato:,} + {bloom:,} ids"
        for api, values in facts["latency"].items():
            worst, target = max(values), TARGETS[api]
            report.add(f"{name}: {api} urgent publish -> outcome (median / max of {len(values)})",
                       f"{statistics.median(values):.2f} / {worst:.2f} s", "", "",
                       f"<= {target:g} s", "yes" if worst <= target else "NO")  # fmt: skip
        once = facts["answered"] == facts["items"] == facts["outcomes"]
        report.add(f"{name}: backlog answered while urgent ones ran / left after the last "
                   "urgent / every id once",
                   f"{facts['backlog_during_urgent']:,} / {facts['backlog_left']:,} / "
                   f"{facts['answered']:,} of {facts['items']:,}", "", "", "> 0 / - / all once",
                   "yes" if facts["backlog_during_urgent"] > 0 and once else "NO")  # fmt: skip
        report.add(f"{name}: partition hand-overs while urgent ones ran",
                   f"{facts['handovers_during_urgent']:g}", "", "", "", "")  # fmt: skip
        report.add(f"{name}: 429s / breaches", f"{facts['429s']} / {facts['breaches']}", "", "",
                   "0", "yes" if facts["429s"] == facts["breaches"] == 0 else "NO")  # fmt: skip
