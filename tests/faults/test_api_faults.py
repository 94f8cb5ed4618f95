"""Scenario 4: the APIs misbehave. Every item still ends succeeded or failed with the right
code, none stays unanswered, and the emulator never saw the rate limit exceeded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.faults.ledger import Ledger
from tests.faults.support import FAST, wait_until, worker
from tests.integration.harness import Rig, ids, plain_targets
from worker.emulator import Emulator, Fault

pytestmark = pytest.mark.integration
PUBLISH = "datocms.items.publish"
DELETE = "bloomreach.catalog_items.delete"


def _no_retry_after_storm(emu: Emulator) -> None:
    emu.config.bloomreach_retry_after = False
    emu.inject(Fault("status", count=3, status=429, api="bloomreach"))


CASES: dict[str, tuple[Callable[[Emulator], None], str, str, str | None]] = {
    # name: (set the fault up, operation, expected status, expected error code)
    "5xx burst": (
        lambda e: e.inject(Fault("status", count=4, status=503, api="datocms")),
        PUBLISH,
        "succeeded",
        None,
    ),
    "slow past client timeout": (
        lambda e: e.inject(Fault("slow", count=2, delay=3, path_contains="/bulk/")),
        PUBLISH,
        "succeeded",
        None,
    ),
    "connection dropped": (
        lambda e: e.inject(Fault("drop", count=3, api="datocms")),
        PUBLISH,
        "succeeded",
        None,
    ),
    "429 storm, DatoCMS reset header": (
        lambda e: e.inject(Fault("status", count=4, status=429, api="datocms")),
        PUBLISH,
        "succeeded",
        None,
    ),
    "429 storm, Retry-After": (
        lambda e: e.inject(Fault("status", count=3, status=429, api="bloomreach")),
        DELETE,
        "succeeded",
        None,
    ),
    "429 storm, no Retry-After": (
        lambda e: _no_retry_after_storm(e),
        DELETE,
        "succeeded",
        None,
    ),
    "5xx outlasting the retry budget": (
        lambda e: e.inject(Fault("status", count=10_000, status=503, api="datocms")),
        PUBLISH,
        "failed",
        "retries_exhausted",
    ),
    "job never finishes": (
        lambda e: setattr(e.config, "datocms_job_never_finishes", True),
        PUBLISH,
        "failed",
        "job_timeout",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_api_fault(r: Rig, case: str) -> None:
    setup, operation, status, code = CASES[case]
    r.emulator.config.bloomreach_rate = (5, 1.0)
    setup(r.emulator)
    ledger = Ledger(f"4 {case}", r.results)
    scope: dict[str, Any] = {"catalog_id": "cat-1"} if operation == DELETE else {}
    target = "shop" if operation == DELETE else "main"
    for n in range(3):
        await r.publish(
            ledger.expect(f"f{n}", operation, ids(f"f{n}-", 20), target=target, **scope)
        )
    env = r.env(
        **{**FAST, "job_deadline_seconds": 2, "targets": plain_targets(r.settings(), "5/1s")}
    )
    async with worker(env):
        await ledger.settle(timeout=60)
    ledger.check()
    outcomes = r.results.bodies
    assert {o["status"] for o in outcomes} == {status}, {o["status"] for o in outcomes}
    if code is not None:
        assert {o["error"]["code"] for o in outcomes} == {code}
    assert r.emulator.breaches() == []


async def test_read_back_that_fails(r: Rig) -> None:
    """The job counts failures, then every read-back fails: no item is left unanswered; all
    end failed with retries_exhausted (the worker cannot tell which ones failed)."""
    r.emulator.datocms.set_failure(["rb-00001"], "publish", "ITEM_LOCKED")
    r.emulator.config.datocms_job_seconds = 0.5
    ledger = Ledger("4 read-back fails", r.results)
    await r.publish(ledger.expect("rb", PUBLISH, ids("rb-", 20), target="main"))
    async with worker(r.env(**{**FAST, "retry_budget_seconds": 3})):
        await wait_until(lambda: bool(r.emulator.requests(path_contains="/items/bulk/publish")))
        r.emulator.inject(Fault("status", count=10_000, status=503, path_contains="/items"))
        await ledger.settle(timeout=30)
    ledger.check()
    assert {o["status"] for o in r.results.bodies} == {"failed"}
    assert {o["error"]["code"] for o in r.results.bodies} == {"retries_exhausted"}
    assert r.emulator.breaches() == []


async def test_read_back_that_fails_then_recovers(r: Rig) -> None:
    """Two failed read-backs, then a good one: the precise per-item answer still comes."""
    r.emulator.datocms.set_failure(["rc-00001"], "publish", "ITEM_LOCKED")
    r.emulator.config.datocms_job_seconds = 0.5
    ledger = Ledger("4 read-back fails, then recovers", r.results)
    await r.publish(ledger.expect("rc", PUBLISH, ids("rc-", 20), target="main"))
    async with worker(r.env(**FAST)):
        await wait_until(lambda: bool(r.emulator.requests(path_contains="/items/bulk/publish")))
        r.emulator.inject(
            Fault("status", count=2, status=503, path_contains="/items", api="datocms")
        )
        await ledger.settle(timeout=30)
    ledger.check()
    by_id = {o["id"]: o for o in r.results.bodies}
    assert by_id["rc-00001"]["status"] == "failed"
    assert by_id["rc-00001"]["error"]["code"] == "ITEM_LOCKED"
    assert sum(o["status"] == "succeeded" for o in by_id.values()) == 19
    assert r.emulator.breaches() == []
