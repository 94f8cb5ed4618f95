"""Several replicas, one rate limit per scope: partitioned by scope, one owner each.

The emulator runs as its own process here (driven through its admin endpoints): with three
workers, RabbitMQ and the test on two cores, an emulator inside the test process would stamp
arrivals late whenever the test's own loop is busy, and the breach check would be measuring
that, not the workers.
"""

from __future__ import annotations

import asyncio
import collections
import json
import statistics
from typing import Any

import pytest

from tests.integration.harness import (
    EmulatorProcess,
    Proc,
    Rig,
    emulator_process,
    free_port,
    ids,
    start_worker,
)
from worker.broker.partitions import partition_of
from worker.messages import Request, parse_request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DATO_RATE = (20, 6.0)
BLOOM_RATE = (4, 4.0)


def utilisation(times: list[float], limit: int, window: float) -> float:
    """How fast each slot of the limit is used again. A sliding window lets request i+limit
    go one window after request i; under backlog a worker that uses the whole limit sends
    it right then. The median gap (robust to the end of the backlog, where demand stops)
    against the window: 1.0 is every slot used the moment it frees."""
    ts = sorted(times)
    gaps = [ts[i + limit] - ts[i] for i in range(len(ts) - limit)]
    assert gaps, "too few requests to measure"
    return window / statistics.median(gaps)


def until_last_bulk(entries: list[dict[str, Any]], marker: str) -> list[float]:
    """Arrival times of the requests sent while bulk requests were still going out."""
    last = max(e["t"] for e in entries if marker in e["path"])
    return [e["t"] for e in entries if e["t"] <= last]


async def replica(env: dict[str, str]) -> Proc:
    return await start_worker({**env, "BULKOPS_HTTP_PORT": str(free_port())})


async def partitioned_env(
    r: Rig, emulator: EmulatorProcess, partitions: int, prefetch: int = 500, dato_batch: int = 50
) -> dict[str, str]:
    """Worker settings for the remote emulator, partitioned. The rig declared the request
    queue for one replica; partitioned mode declares it single-active-consumer, and RabbitMQ
    refuses to change a queue's arguments, so it goes first."""
    await r.channel.queue_delete(r.request_queue)
    await r.channel.queue_delete(r.request_queue + ".priority")  # single-active too
    settings = r.settings()
    targets = {
        # Small batches (50 and 250 ids) so that a backlog of a few limiter windows costs few
        # outcomes: what is measured is requests against the limit, not items.
        "main": settings.targets["main"].model_copy(
            update={
                "base_url": emulator.base_url, "rate_limit": "20/6s", "max_batch_items": dato_batch
            }
        ),
        "shop": settings.targets["shop"].model_copy(
            update={"base_url": emulator.base_url, "rate_limit": "4/4s", "max_batch_items": 250}
        ),
    }
    # A replica taking a scope over waits out the drain timeout of the one it may take it
    # from: kept short here.
    return r.env(
        targets=targets, partitions=partitions, prefetch=prefetch, linger_seconds=0.3,
        drain_timeout_seconds=3,
        partition_rebalance_seconds=1,
    )


def backlog() -> list[dict[str, Any]]:
    """Enough for the limiters to be the bottleneck for a few windows: 2,000 DatoCMS ids
    (40 full requests of 50 and their polls, at 20 requests per 6 s) and 3,000 Bloomreach ids for one
    catalog (12 full requests of 250, at 1 request/s), a small second catalog; ids touched
    twice come first, so that their ordered hand-over does not stretch the measured span."""
    dato = [{"operation": "datocms.items.publish", "target": "main", "environment": f"e{n % 2}",
             "ids": ids(f"d{n}x", 25)} for n in range(80)]
    bloom = [{"operation": "bloomreach.catalog_items.delete", "target": "shop",
              "catalog_id": "cat-0", "ids": ids(f"b{n}x", 25)} for n in range(120)]
    small = [{"operation": "bloomreach.catalog_items.delete", "target": "shop",
              "catalog_id": "cat-1", "ids": ids("small", 100)}]
    twice = [
        {"operation": "datocms.items.publish", "target": "main", "ids": ["flip-1", "flip-2"]},
        {"operation": "datocms.items.unpublish", "target": "main", "ids": ["flip-1"]},
        {"operation": "datocms.items.unpublish", "target": "main", "ids": ["flip-2"]},
        {"operation": "datocms.items.publish", "target": "main", "ids": ["flip-2"]},
    ]
    return twice + dato[:40] + bloom + small + dato[40:]


async def owned(procs: list[Proc]) -> list[int]:
    """Partitions each replica owns (has had deliveries from), from its /metrics."""
    key: tuple[str, frozenset[tuple[str, str]]] = ("bulkops_partitions_owned", frozenset())
    return [int((await p.scrape()).get(key, 0)) for p in procs]


def partition(scope: dict[str, Any], partitions: int) -> int:
    """The partition the worker routes a message of this scope to."""
    body = json.dumps({**scope, "ids": ["x"]}).encode()
    request = parse_request(body, None, {"main": "datocms", "shop": "bloomreach"})
    assert isinstance(request, Request)
    return partition_of(request, partitions)


def busy_partitions(scopes: list[dict[str, Any]], partitions: int) -> int:
    return len({partition(scope, partitions) for scope in scopes})


async def spread(
    r: Rig, procs: list[Proc], scopes: list[dict[str, Any]], partitions: int
) -> tuple[list[int], int]:
    """Feed one small message per scope each second until the partitions they fall in are
    spread and stay so: every one owned by some replica, none owning more than its share.
    Returns the partitions each owns and how many ids were sent."""
    share = -(-partitions // len(procs))
    busy = busy_partitions(scopes, partitions)
    sent = stable = 0
    async with asyncio.timeout(120):
        while stable < 3:
            for n, scope in enumerate(scopes):
                await r.publish({**scope, "ids": [f"warm{sent}-{n}"]})
            sent += 1
            await asyncio.sleep(1)
            counts = await owned(procs)
            stable = stable + 1 if sum(counts) == busy and max(counts) <= share else 0
    return counts, sent * len(scopes)


SCOPES = [
    {"operation": "datocms.items.publish", "target": "main", "environment": "e0"},
    {"operation": "bloomreach.catalog_items.delete", "target": "shop", "catalog_id": "cat-0"},
    {"operation": "bloomreach.catalog_items.delete", "target": "shop", "catalog_id": "cat-1"},
]


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
async def test_replicas_share_each_limit_keep_order_and_answer_everything(
    r: Rig, replicas: int
) -> None:
    """N workers on one queue, partitioned: once the scopes' partitions are spread over the
    replicas, a backlog: 0 breaches in the emulator's log, at least 90% of each limit used
    while there is backlog, every id answered (duplicates only with the same message_id),
    and the ids touched twice end in the state of their last operation."""
    async with emulator_process() as emulator:
        await emulator.configure(
            datocms_rate=DATO_RATE, bloomreach_rate=BLOOM_RATE, datocms_job_seconds=0.2
        )
        env = await partitioned_env(r, emulator, partitions=4)
        procs: list[Proc] = [await replica(env) for _ in range(replicas)]
        try:
            counts, warm = await spread(r, procs, SCOPES, partitions=4)
            print(f"{replicas} replicas own {counts} of the busy partitions")
            await r.results.wait_for(warm, timeout=60, distinct=True)
            start = max(e["t"] for e in await emulator.entries())
            messages = backlog()
            for message in messages[:4]:  # one by one: the order of these is what is tested
                await r.publish(message)
            await r.publish_many(messages[4:])
            expected = warm + sum(len(set(m["ids"])) for m in messages)
            # Distinct ids: a hand-over may repeat outcomes (same message_id), and counting
            # those stopped the workers with the backlog's last requests unanswered.
            outcomes = await r.results.wait_for(expected, timeout=150, distinct=True)
        finally:
            codes = await asyncio.gather(*(p.terminate() for p in procs))
        assert codes == [0] * replicas, [p.stderr_tail() for p in procs]
        log = await emulator.entries()
        assert [e for e in log if e["breach"]] == []
        assert await emulator.record_status("flip-1") == "draft"
        assert await emulator.record_status("flip-2") == "published"
    counts_by_id = collections.Counter(m.message_id for m in r.results.messages)
    assert len(counts_by_id) == expected, "every (request, id) answered"
    assert {o["status"] for o in outcomes} == {"succeeded"}
    log = [e for e in log if e["t"] > start]
    dato = until_last_bulk([e for e in log if e["api"] == "datocms"], "/bulk/")
    cat0 = [e for e in log if "/catalogs/cat-0/" in e["path"]]
    used = utilisation(dato, *DATO_RATE)
    bloom = utilisation([e["t"] for e in cat0], *BLOOM_RATE)
    print(f"{replicas} replicas, limit used while backlogged: datocms {used:.0%}, "
          f"bloomreach {bloom:.0%}")
    assert [e["items"] for e in cat0] == [250] * 12
    assert used >= 0.9
    assert bloom >= 0.9


async def test_partitions_spread_over_the_replicas(r: Rig) -> None:
    """Four replicas, four busy partitions (catalogs picked to fall one in each): the first
    replica owns them all at first, hands on what is over its share, and they settle one
    each; nothing is lost or breached on the way."""
    delete = {"operation": "bloomreach.catalog_items.delete", "target": "shop"}
    by_partition: dict[int, dict[str, Any]] = {}
    for n in range(100):
        scope = {**delete, "catalog_id": f"spread-{n}"}
        by_partition.setdefault(partition(scope, 4), scope)
    assert len(by_partition) == 4
    scopes = list(by_partition.values())
    async with emulator_process() as emulator:
        await emulator.configure(bloomreach_rate=BLOOM_RATE)
        env = await partitioned_env(r, emulator, partitions=4)
        procs = [await replica(env)]
        try:
            for scope in scopes:  # the first replica owns every partition
                await r.publish({**scope, "ids": ["first"]})
            await r.results.wait_for(4, timeout=30)
            assert await owned(procs) == [4]
            procs += [await replica(env) for _ in range(3)]
            counts, warm = await spread(r, procs, scopes, partitions=4)
            await r.results.wait_for(4 + warm, timeout=60)
            handovers = [
                (await p.scrape()).get(
                    ("bulkops_partition_handovers_total", frozenset({("reason", "rebalance")})), 0
                )
                for p in procs
            ]
        finally:
            codes = await asyncio.gather(*(p.terminate() for p in procs))
        assert codes == [0] * 4, [p.stderr_tail() for p in procs]
        log = await emulator.entries()
        assert [e for e in log if e["breach"]] == []
    print(f"owned {counts}, handovers {handovers}")
    assert counts == [1, 1, 1, 1]
    assert handovers[0] >= 3
    answered = collections.Counter(m.message_id for m in r.results.messages)
    assert len(answered) == 4 + warm


async def test_killing_a_replica_hands_its_scopes_to_the_others(r: Rig) -> None:
    """kill -9 of the replica that owns the scopes mid-stream: another takes over its
    partitions, nothing is lost, the limit is still never breached."""
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, datocms_job_seconds=0.3)
        env = await partitioned_env(r, emulator, partitions=2)
        first = await replica(env)
        others = [await replica(env) for _ in range(2)]
        wanted = ids("k", 3000)
        try:
            await r.publish_many([
                {"operation": "datocms.items.publish", "target": "main",
                 "ids": wanted[n:n + 20]}
                for n in range(0, 3000, 20)
            ])
            await r.results.wait_for(200, timeout=30)
            assert (await owned([first, *others]))[0] == 1  # it owns the busy partition
            first.kill()
            # Distinct ids: the killed replica's in-flight ids are answered again (same
            # message_id), so a count of messages would be reached before every id is.
            async with asyncio.timeout(120):
                while {o["id"] for o in r.results.bodies} != set(wanted):
                    r.results.changed.clear()
                    await r.results.changed.wait()
        finally:
            codes = await asyncio.gather(*(p.terminate() for p in others))
            await first.terminate()
        assert codes == [0, 0]
        log = await emulator.entries()
        assert [e for e in log if e["breach"]] == []
    seen = {o["id"] for o in r.results.bodies}
    assert seen == set(wanted), f"lost {len(set(wanted) - seen)}"
    assert await r.queue_depth(r.request_queue) == 0


async def test_a_replica_stopping_hands_over_without_reordering(r: Rig) -> None:
    """SIGTERM of the owner while it holds a backlog: the operations it gives back reach the
    next owner before any later operation on the same ids. Five rounds over 40 ids,
    publish and unpublish in turn, one message each: every record must end published."""
    async with emulator_process() as emulator:
        await emulator.configure(datocms_rate=DATO_RATE, datocms_job_seconds=0.2)
        env = await partitioned_env(r, emulator, partitions=1, prefetch=30, dato_batch=10)
        first = await replica(env)
        second = await replica(env)
        flips = ids("h", 40)
        rounds = ["publish", "unpublish", "publish", "unpublish", "publish"]
        messages = [
            {"operation": f"datocms.items.{op}", "target": "main", "ids": [record]}
            for op in rounds
            for record in flips
        ]
        try:
            for message in messages:  # one by one: their order is what is tested
                await r.publish(message)
            await r.results.wait_for(20, timeout=30)
            assert await first.terminate() == 0, first.stderr_tail()
            await r.results.wait_for(len(messages), timeout=120, distinct=True)
        finally:
            code = await second.terminate()
            await first.terminate()
        assert code == 0, second.stderr_tail()
        states = {record: await emulator.record_status(record) for record in flips}
        log = await emulator.entries()
        assert [e for e in log if e["breach"]] == []
    assert {k: v for k, v in states.items() if v != "published"} == {}
    assert {o["status"] for o in r.results.bodies} == {"succeeded"}
