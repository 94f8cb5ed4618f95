"""Rate limiting: the sliding window arithmetic, and its enforcement and logging over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.emulator import Emulator, EmulatorConfig
from worker.emulator.ratelimit import SlidingWindow

HEADERS = {"Authorization": "Bearer dato-token", "X-Api-Version": "3"}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(datocms_tokens={"dato-token", "other"})) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emu.base_url, headers=HEADERS) as http:
        yield http


def test_window_is_half_open_so_a_request_exactly_one_window_later_is_not_a_breach() -> None:
    window = SlidingWindow()
    assert not window.hit("s", 0.0, 2, 3.0).breach
    assert not window.hit("s", 1.0, 2, 3.0).breach
    assert not window.hit("s", 3.0, 2, 3.0).breach  # 0.0 is outside (0.0, 3.0]
    assert window.hit("other", 3.0, 2, 3.0).remaining == 1  # scopes are independent


def test_breaches_count_too_and_reset_is_the_wait_until_a_request_would_pass() -> None:
    window = SlidingWindow()
    window.hit("s", 0.0, 2, 3.0)
    window.hit("s", 1.0, 2, 3.0)
    decision = window.hit("s", 2.0, 2, 3.0)
    assert decision.breach and decision.remaining == 0
    assert decision.reset_seconds == 2  # 1.0 and 2.0 must leave a slot: at 4.0
    assert window.hit("probe", 0.0, 2, 3.0).reset_seconds == 0
    assert not window.hit("s", 4.0, 2, 3.0).breach


@given(
    st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=60), st.integers(1, 5)
)
def test_breach_matches_a_brute_force_count_of_the_window(times: list[float], limit: int) -> None:
    arrivals = sorted(times)
    window = SlidingWindow()
    for index, now in enumerate(arrivals):
        in_window = sum(1 for earlier in arrivals[: index + 1] if now - 3.0 < earlier <= now)
        assert window.hit("s", now, limit, 3.0).breach == (in_window > limit)


async def test_61st_request_inside_3_seconds_is_429_with_reset_and_logged_as_breach(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    responses = await asyncio.gather(*(client.get("/job-results/1") for _ in range(60)))
    assert all(r.status_code == 404 for r in responses)
    assert sorted(int(r.headers["X-RateLimit-Remaining"]) for r in responses) == list(range(60))
    response = await client.get("/items")
    assert response.status_code == 429
    assert response.json()["data"][0]["attributes"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert 1 <= int(response.headers["X-RateLimit-Reset"]) <= 3
    assert response.headers["X-RateLimit-Limit"] == "60"
    assert [e.path for e in emu.breaches()] == ["/items"]
    assert emu.breaches()[0].status == 429
    other = await client.get("/items", headers={"Authorization": "Bearer other"})
    assert other.status_code == 200  # the scope is the token
    assert emu.log[-1].scope != emu.log[0].scope and "other" not in emu.log[-1].scope


async def test_request_spaced_by_the_window_is_not_a_breach(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.config.datocms_rate = (2, 0.3)
    assert (await client.get("/items")).status_code == 200
    assert (await client.get("/items")).status_code == 200
    await asyncio.sleep(0.31)
    assert (await client.get("/items")).status_code == 200
    assert emu.breaches() == []


async def test_rate_limits_disabled_answers_normally_but_still_logs_breaches(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.config.rate_limits_enabled = False
    emu.config.datocms_rate = (1, 3.0)
    statuses = [(await client.get("/items")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert len(emu.breaches()) == 2


async def test_spurious_429_below_the_limit_is_not_a_breach(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    emu.config.spurious_429_probability = 1.0
    response = await client.get("/items")
    assert response.status_code == 429 and "X-RateLimit-Reset" in response.headers
    assert emu.breaches() == []
