"""The Bloomreach adapter's upsert and partial update without a broker: adapter, ScopedClient
and the in-process emulator over real HTTP. What it proves: properties reach the catalog
(replace vs merge), the ``upsert`` flag decides whether a missing item is created, per-item
answers (property errors, "does not exist") land on the right id, and an item's ``cost``
counts its properties."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.unit.adapter_support import Sent, statuses
from tests.unit.test_adapter_bloomreach import CATALOG, make_adapter
from worker.apis.adapters import ItemResult
from worker.apis.base import BatchKey, Payload
from worker.apis.bloomreach.adapter import SPLIT_REQUESTS, Bloomreach
from worker.emulator import Emulator, EmulatorConfig, Fault
from worker.http import ScopedClient
from worker.limiter import Limiter, Rate
from worker.metrics import Metrics
from worker.registry import OPERATIONS

UPSERT = "bloomreach.catalog_items.upsert"
UPDATE = "bloomreach.catalog_items.update"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(rate_limits_enabled=False)) as emulator:
        yield emulator


async def run(
    adapter: Bloomreach, operation: str, items: dict[str, Payload]
) -> dict[str, ItemResult]:
    async with httpx.AsyncClient() as http:
        client = ScopedClient(http, Limiter(Rate(1000, 1.0)), Metrics(CollectorRegistry()), "shop")
        key = BatchKey(operation=operation, target="shop", scope=CATALOG)
        sent = [Sent(i, p) for i, p in items.items()]
        return await adapter.execute(key, sent, client, None)


async def test_upsert_replaces_properties_and_creates_missing_items(emu: Emulator) -> None:
    """PUT items: an existing item's properties are replaced whole (old keys gone), a missing
    item is created, both in one request."""
    emu.bloomreach.catalog.seed(CATALOG, {"sku-1": {"price": 1, "color": "red"}})
    results = await run(
        make_adapter(emu),
        UPSERT,
        {"sku-1": {"properties": {"price": 2}}, "sku-2": {"properties": {"price": 3}}},
    )
    assert statuses(results) == {"sku-1": ("succeeded", None), "sku-2": ("succeeded", None)}
    assert emu.bloomreach.catalog.items(CATALOG) == {"sku-1": {"price": 2}, "sku-2": {"price": 3}}
    assert len(emu.requests("bloomreach", "items")) >= 1


async def test_partial_update_merges_and_upsert_flag_decides_creation(emu: Emulator) -> None:
    """POST partial-update: properties not given are kept; a missing item without ``upsert``
    fails with the API's "does not exist" message, with ``upsert: true`` it is created."""
    emu.bloomreach.catalog.seed(CATALOG, {"sku-1": {"price": 1, "color": "red"}})
    results = await run(
        make_adapter(emu),
        UPDATE,
        {
            "sku-1": {"properties": {"price": 2}},
            "gone": {"properties": {"price": 5}, "upsert": False},
            "new": {"properties": {"price": 7}, "upsert": True},
        },
    )
    assert statuses(results) == {
        "sku-1": ("succeeded", None),
        "gone": ("failed", "Item does not exist"),
        "new": ("succeeded", None),
    }
    assert emu.bloomreach.catalog.items(CATALOG) == {
        "sku-1": {"price": 2, "color": "red"},
        "new": {"price": 7},
    }


async def test_property_errors_fail_only_their_item(emu: Emulator) -> None:
    """A property the catalog does not define fails that item with the API's message; the
    other item of the request is written."""
    emu.bloomreach.catalog.set_fields(CATALOG, ["price"])
    results = await run(
        make_adapter(emu),
        UPSERT,
        {"ok": {"properties": {"price": 1}}, "bad": {"properties": {"x": 1}}},
    )
    assert results["ok"].status == "succeeded"
    bad = results["bad"]
    assert bad.status == "failed" and bad.error is not None and "'x'" in bad.error.message
    assert set(emu.bloomreach.catalog.items(CATALOG)) == {"ok"}


def test_cost_counts_the_properties(emu: Emulator) -> None:
    """Body-size limits see the properties: a large value makes a costly item."""
    adapter = make_adapter(emu)
    op = OPERATIONS[UPSERT]
    small = adapter.cost(op, "a", {"properties": {"v": "x"}})
    large = adapter.cost(op, "a", {"properties": {"v": "x" * 10_000}})
    assert large - small == 9_999


async def test_string_booleans_and_a_too_large_upsert_are_handled(emu: Emulator) -> None:
    """Answers with "True"/"False" strings are read as booleans, and an upsert refused as
    too large (here: over 3 items) is split in halves until it fits, every item answered
    and written."""
    emu.config = EmulatorConfig(
        rate_limits_enabled=False, bloomreach_string_booleans=True, bloomreach_max_items=3
    )
    emu.bloomreach.set_item_error(CATALOG, ["bad"], "Item cannot be written")
    items: dict[str, Payload] = {f"i{n}": {"properties": {"n": n}} for n in range(5)}
    items["bad"] = {"properties": {"n": -1}}
    results = await run(make_adapter(emu), UPSERT, items)
    assert statuses(results) == {
        **{f"i{n}": ("succeeded", None) for n in range(5)},
        "bad": ("failed", "Item cannot be written"),
    }
    assert set(emu.bloomreach.catalog.items(CATALOG)) == {f"i{n}" for n in range(5)}


async def test_a_422_refusing_the_whole_upsert_is_split_within_the_budget(emu: Emulator) -> None:
    """The whole upsert is refused (422, not documented) twice: the batch is halved and its
    halves go through; 20 refusals in a row spend the batch's split budget and the parts
    still refused fail with the API's refusal instead of costing more requests."""
    emu.inject(Fault(kind="status", api="bloomreach", path_contains="/items", status=422))
    items: dict[str, Payload] = {f"s{n}": {"properties": {"n": n}} for n in range(8)}
    results = await run(make_adapter(emu), UPSERT, items)
    assert {s for s, _ in statuses(results).values()} == {"succeeded"}
    assert len(emu.requests("bloomreach", "/items")) == 3  # refused, then two halves
    emu.reset()
    emu.inject(Fault(kind="status", api="bloomreach", path_contains="/items", status=422, count=99))
    many: dict[str, Payload] = {f"t{n}": {"properties": {}} for n in range(4000)}
    results = await run(make_adapter(emu), UPSERT, many)
    assert {s for s, _ in statuses(results).values()} == {"failed"}
    assert len(emu.requests("bloomreach", "/items")) == 1 + SPLIT_REQUESTS
