"""The Bloomreach adapter without a broker: adapter, ScopedClient and the emulator in-process,
over real HTTP. What it proves: each id gets its own answer element's outcome, a request
refused as too large (400, or 413 from a proxy) is split until it fits, and ``auto`` switches
the bulk-delete wire form when the API answers 405."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.unit.adapter_support import Sent, Sleeps, statuses
from worker.apis.adapters import ItemResult
from worker.apis.base import BatchKey
from worker.apis.bloomreach.adapter import Bloomreach
from worker.apis.bloomreach.target import BloomreachTarget
from worker.emulator import Emulator, EmulatorConfig
from worker.http import RetryPolicy, ScopedClient
from worker.limiter import Limiter, Rate
from worker.metrics import Metrics

DELETE = "bloomreach.catalog_items.delete"
CATALOG = "products"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(rate_limits_enabled=False)) as emulator:
        yield emulator


def make_adapter(emu: Emulator, delete_format: str = "auto") -> Bloomreach:
    target = BloomreachTarget(
        kind="bloomreach",
        base_url=emu.base_url,
        api_key_id="bloom-key",  # type: ignore[arg-type]
        api_secret="bloom-secret",  # type: ignore[arg-type]
        project_id="proj-1",
        delete_format=delete_format,  # type: ignore[arg-type]
    )
    return Bloomreach(target, RetryPolicy(3, 60.0, 0.01, 0.05, sleep=Sleeps()))


async def execute(adapter: Bloomreach, ids: list[str]) -> dict[str, ItemResult]:
    async with httpx.AsyncClient() as http:
        client = ScopedClient(http, Limiter(Rate(1000, 1.0)), Metrics(CollectorRegistry()), "shop")
        key = BatchKey(operation=DELETE, target="shop", scope=CATALOG)
        return await adapter.execute(key, [Sent(i) for i in ids], client, None)


def deletes(emu: Emulator) -> list[tuple[str, int, int]]:
    """(method, status, items) of each bulk-delete request, in order."""
    return [(e.method, e.status, e.items) for e in emu.requests("bloomreach", "bulk-delete")]


async def test_each_id_gets_its_own_answer_element(emu: Emulator) -> None:
    """Answers are paired with ids by position: the failing element's message is that id's
    error code, the others succeed, in one request."""
    emu.bloomreach.set_item_error(CATALOG, ["sku-2"], "Item cannot be deleted")
    results = await execute(make_adapter(emu), ["sku-1", "sku-2", "sku-3"])
    assert statuses(results) == {
        "sku-1": ("succeeded", None),
        "sku-2": ("failed", "Item cannot be deleted"),
        "sku-3": ("succeeded", None),
    }
    assert results["sku-2"].error is not None and not results["sku-2"].error.retryable
    assert len(deletes(emu)) == 1
    assert sorted(emu.bloomreach.deleted(CATALOG)) == ["sku-1", "sku-3"]


async def test_string_booleans_are_read_as_booleans(emu: Emulator) -> None:
    """Some documented examples answer ``"success": "True"``: still a success."""
    emu.config = EmulatorConfig(rate_limits_enabled=False, bloomreach_string_booleans=True)
    results = await execute(make_adapter(emu), ["sku-1"])
    assert statuses(results) == {"sku-1": ("succeeded", None)}


@pytest.mark.parametrize("status", [400, 413])
async def test_a_request_refused_as_too_large_is_split_in_halves(
    emu: Emulator, status: int
) -> None:
    """Over the API's cap (4 items here) the request is refused whole; the adapter halves
    it until each part fits, and every id is answered."""
    emu.config = EmulatorConfig(
        rate_limits_enabled=False,
        bloomreach_max_items=4,
        bloomreach_oversize_status=status,  # type: ignore[arg-type]
    )
    ids = [f"sku-{n}" for n in range(10)]
    results = await execute(make_adapter(emu), ids)
    assert {s for s, _ in statuses(results).values()} == {"succeeded"}
    assert sorted(emu.bloomreach.deleted(CATALOG)) == sorted(ids)
    sent = deletes(emu)
    assert [n for _, answer, n in sent if answer == 200] == [2, 3, 2, 3]
    assert sum(1 for _, answer, _ in sent if answer == status) == 3  # 10, then 5 and 5


async def test_after_a_413_batches_of_that_size_are_split_before_sending(emu: Emulator) -> None:
    """A 413 teaches the adapter the size a proxy refuses: the next batch of that size goes
    out in parts at once, without spending a request on another refusal."""
    emu.config = EmulatorConfig(
        rate_limits_enabled=False, bloomreach_max_items=4, bloomreach_oversize_status=413
    )
    adapter = make_adapter(emu)
    await execute(adapter, [f"a-{n}" for n in range(6)])
    before = len(deletes(emu))
    results = await execute(adapter, [f"b-{n}" for n in range(6)])
    assert {s for s, _ in statuses(results).values()} == {"succeeded"}
    assert [(s, n) for _, s, n in deletes(emu)[before:]] == [(200, 3), (200, 3)]


async def test_a_413_lesson_is_a_body_size_not_an_item_count(emu: Emulator) -> None:
    """A proxy refusing bodies over 200 bytes: a batch of 8 long ids is refused and split;
    the lesson kept is the refused body's size, so a later batch of 8 short ids (a body
    well under it) goes out whole in one request, not capped at the long batch's count."""
    emu.config = EmulatorConfig(
        rate_limits_enabled=False, bloomreach_max_body_bytes=200, bloomreach_oversize_status=413
    )
    adapter = make_adapter(emu)
    long_ids = [f"{'x' * 40}-{n}" for n in range(8)]
    await execute(adapter, long_ids)
    assert sum(1 for _, status, _ in deletes(emu) if status == 413) >= 1
    before = len(deletes(emu))
    results = await execute(adapter, [f"s{n}" for n in range(8)])
    assert {s for s, _ in statuses(results).values()} == {"succeeded"}
    assert [(s, n) for _, s, n in deletes(emu)[before:]] == [(200, 8)]


async def test_auto_switches_to_post_objects_on_a_405_and_stays(emu: Emulator) -> None:
    """The API takes only POST with objects: ``auto`` sends DELETE first, gets 405, resends
    as POST, and the next batch goes as POST at once."""
    emu.config = EmulatorConfig(rate_limits_enabled=False, bloomreach_delete_forms="post-objects")
    adapter = make_adapter(emu)
    first = await execute(adapter, ["sku-1", "sku-2"])
    second = await execute(adapter, ["sku-3"])
    assert {s for s, _ in statuses(first | second).values()} == {"succeeded"}
    assert [(m, s) for m, s, _ in deletes(emu)] == [("DELETE", 405), ("POST", 200), ("POST", 200)]


async def test_an_explicit_form_answered_405_fails_for_good(emu: Emulator) -> None:
    """``delete-ids`` configured and refused with 405: no switch, every id fails with the
    405's code, not retryable."""
    emu.config = EmulatorConfig(rate_limits_enabled=False, bloomreach_delete_forms="post-objects")
    results = await execute(make_adapter(emu, "delete-ids"), ["sku-1", "sku-2"])
    assert statuses(results) == {"sku-1": ("failed", "http_405"), "sku-2": ("failed", "http_405")}
    assert [(m, s) for m, s, _ in deletes(emu)] == [("DELETE", 405)]
