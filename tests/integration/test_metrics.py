"""Operators' view: /metrics, /healthz and /readyz of a real worker process."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.integration.harness import Rig, ids
from worker.emulator import Fault

pytestmark = pytest.mark.integration


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_move_by_exactly_what_happened(r: Rig) -> None:
    """After 300 publishes (one locked), 10 Bloomreach deletes behind one 429, one invalid
    message: every counter moved by exactly that, labels stay bounded."""
    r.emulator.datocms.set_failure(["locked-1"], "publish", "ITEM_LOCKED")
    r.emulator.inject(
        Fault("status", count=1, api="bloomreach", status=429, headers={"Retry-After": "1"})
    )
    await r.publish_many(
        [
            {"operation": "datocms.items.publish", "target": "main", "ids": chunk}
            for chunk in (ids("p", 150), [*ids("q", 149), "locked-1"])
        ]
    )
    await r.publish(
        {
            "operation": "bloomreach.catalog_items.delete",
            "target": "shop",
            "catalog_id": "secret-catalog-name",
            "ids": ids("b", 10),
        }
    )
    await r.publish(b"garbage")
    async with r.worker_process() as proc:
        await r.results.wait_for(310, timeout=60)
        async with httpx.AsyncClient() as client:
            base = f"http://127.0.0.1:{proc.port}"
            assert (await client.get(f"{base}/healthz")).status_code == 200
            assert (await client.get(f"{base}/readyz")).status_code == 200
            text = (await client.get(f"{base}/metrics")).text
        samples = await proc.scrape()
    pub = {"operation": "datocms.items.publish", "target": "main"}
    bloom = {"operation": "bloomreach.catalog_items.delete", "target": "shop"}
    assert value(samples, "bulkops_messages_consumed_total", **pub) == 2
    assert value(samples, "bulkops_messages_consumed_total", **bloom) == 1
    assert (
        value(samples, "bulkops_messages_consumed_total", operation="invalid", target="unknown")
        == 1
    )
    assert value(samples, "bulkops_dead_lettered_messages_total", reason="not_json") == 1
    assert value(samples, "bulkops_item_outcomes_total", **pub, status="succeeded") == 299
    assert value(samples, "bulkops_item_outcomes_total", **pub, status="failed") == 1
    assert value(samples, "bulkops_item_failures_total", **pub, code="ITEM_LOCKED") == 1
    assert value(samples, "bulkops_item_outcomes_total", **bloom, status="succeeded") == 10
    assert value(samples, "bulkops_batch_size_items_count", **pub) == 2
    assert value(samples, "bulkops_batch_size_items_sum", **pub) == 300
    assert value(samples, "bulkops_api_rate_limited_total", target="shop") == 1
    assert (
        value(
            samples,
            "bulkops_api_requests_total",
            target="shop",
            endpoint="catalog_bulk_delete",
            code="429",
        )
        == 1
    )
    assert (
        value(
            samples,
            "bulkops_api_requests_total",
            target="shop",
            endpoint="catalog_bulk_delete",
            code="200",
        )
        == 1
    )
    assert (
        value(
            samples,
            "bulkops_api_requests_total",
            target="main",
            endpoint="items_bulk_publish",
            code="202",
        )
        == 2
    )
    assert value(samples, "bulkops_retries_total", **bloom, reason="rate_limited") == 1
    assert value(samples, "bulkops_pending_items", **pub) == 0
    assert value(samples, "bulkops_rate_limit_allowed_requests", target="main") == 60
    assert value(samples, "bulkops_rate_limit_allowed_requests", target="shop") == 5
    assert value(samples, "bulkops_ready") == 1
    assert value(samples, "bulkops_end_to_end_latency_seconds_count", **pub) == 300
    # Bounded labels: no id, catalog id or credential ever shows up.
    for needle in ("secret-catalog-name", "locked-1", "p00001", "dato-token", "bloom-secret"):
        assert needle not in text
    # One JSON line per batch, with what ops need; no credential in any log line.
    lines = [orjson.loads(line) for line in proc.stderr if line.startswith("{")]
    batches = [line for line in lines if line["msg"] == "batch done"]
    publish = [b for b in batches if b["operation"] == "datocms.items.publish"]
    assert sorted(b["size"] for b in publish) == [100, 200]
    assert all(b["http_statuses"].get("202") == 1 and b["job_ids"] for b in publish)
    assert {"batch_id", "target", "duration_s", "outcomes"} <= publish[0].keys()
    (bloom_batch,) = [b for b in batches if b["target"] == "shop"]
    assert bloom_batch["http_statuses"] == {"429": 1, "200": 1}
    assert not any(s in line for line in proc.stderr for s in ("dato-token", "bloom-secret"))
