"""Sliding-window rate limiting (worker/limiter.py): arithmetic on a fake clock."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.strategies import margins, rates
from worker.apis.bloomreach.target import BloomreachTarget
from worker.apis.datocms.target import DatoCMSTarget
from worker.limiter import Limiter, Limiters, Rate, WindowLog

DATO = Rate(60, 3.0)


def send_at(log: WindowLog, ready: float) -> float:
    """When a request ready at ``ready`` goes out, as Limiter.acquire decides it."""
    t = ready
    for _ in range(100):
        wait = log.delay(t)
        if wait <= 0:
            log.record(t)
            return t
        t += wait
    raise AssertionError(f"no slot found from {ready}")


def schedule(rate: Rate, margin: float, arrivals: list[float]) -> tuple[WindowLog, list[float]]:
    log = WindowLog(rate, margin)
    sends: list[float] = []
    for arrival in sorted(arrivals):
        ready = max(arrival, sends[-1]) if sends else arrival  # first come, first served
        sends.append(send_at(log, ready))
    return log, sends


def test_sixty_per_three_seconds_uses_the_whole_window_then_waits_for_it() -> None:
    """60/3s: 60 sends at t=0, the 61st at exactly t = 3 + margin."""
    log, sends = schedule(DATO, 0.05, [0.0] * 61)
    assert sends[:60] == [0.0] * 60
    assert sends[60] == pytest.approx(3.05)
    assert log.used(3.05) == 1  # the first 60 left the window exactly then


def test_delay_is_zero_below_the_limit_and_exact_at_it() -> None:
    """delay = time until the oldest send that must leave is out of the window."""
    log = WindowLog(Rate(2, 10.0))
    assert log.delay(0.0) == 0.0
    log.record(1.0)
    assert log.delay(1.0) == 0.0
    log.record(4.0)
    assert log.delay(5.0) == pytest.approx(6.0)  # 1.0 leaves at 11.0
    assert log.delay(11.0) == 0.0  # half-open: a send at 1.0 no longer counts at 11.0
    assert log.used(11.0) == 1


def test_margin_widens_the_window() -> None:
    """The margin covers send-to-arrival skew by counting a longer window."""
    log = WindowLog(Rate(1, 10.0), margin=0.5)
    log.record(0.0)
    assert log.window == 10.5
    assert log.delay(10.0) == pytest.approx(0.5)
    assert log.delay(10.5) == 0.0


def test_block_until_holds_every_request_until_the_server_time() -> None:
    """A 429 wait blocks even with room in the window, and never shortens."""
    log = WindowLog(Rate(100, 1.0))
    log.block_until(7.0)
    log.block_until(3.0)  # an earlier hint does not cut the wait
    assert log.delay(2.0) == pytest.approx(5.0)
    assert log.delay(7.0) == 0.0
    assert log.delay(8.0) == 0.0


def test_block_and_window_wait_take_the_longer() -> None:
    """When both the window and a server wait apply, the later one wins."""
    log = WindowLog(Rate(1, 10.0))
    log.record(0.0)
    log.block_until(4.0)
    assert log.delay(1.0) == pytest.approx(9.0)
    log.block_until(20.0)
    assert log.delay(1.0) == pytest.approx(19.0)


def test_observe_remaining_makes_the_log_conservative() -> None:
    """The server counting more than we sent adds phantom sends; fewer changes nothing."""
    log = WindowLog(Rate(10, 3.0))
    for _ in range(2):
        log.record(0.0)
    log.observe_remaining(5, now=1.0)  # server: 5 left, we thought 8
    assert log.used(1.0) == 5
    assert log.delay(1.0) == 0.0
    log.observe_remaining(9, now=1.0)  # server more generous: keep our count
    assert log.used(1.0) == 5
    log.observe_remaining(0, now=2.0)
    assert log.used(2.0) == 10
    assert log.delay(2.0) == pytest.approx(1.0)  # the sends at 0.0 leave at 3.0
    log.observe_remaining(-3, now=2.0)  # nonsense below zero reads as zero
    assert log.used(2.0) == 10


def test_observe_remaining_phantoms_expire_with_the_window() -> None:
    """Phantom sends are dated now and leave one window later."""
    log = WindowLog(Rate(5, 3.0))
    log.observe_remaining(0, now=10.0)
    assert log.delay(10.0) == pytest.approx(3.0)
    assert log.used(13.0) == 0


@settings(max_examples=200, deadline=None)
@given(
    rate=rates,
    margin=margins,
    arrivals=st.lists(st.floats(0.0, 30.0), min_size=1, max_size=60),
)
def test_property_never_more_than_limit_in_any_window(
    rate: Rate, margin: float, arrivals: list[float]
) -> None:
    """Any arrivals, any rate and margin: no half-open window of length seconds + margin
    holds more than `limit` sends, and no request waits when there is room (full use)."""
    _, sends = schedule(rate, margin, arrivals)
    window = rate.seconds + margin
    limit = rate.requests
    assert sends == sorted(sends)
    for i in range(len(sends) - limit):
        assert sends[i + limit] >= sends[i] + window
    for i, (arrival, sent) in enumerate(zip(sorted(arrivals), sends, strict=True)):
        ready = max(arrival, sends[i - 1]) if i else arrival
        if sent > ready:  # waited: only because `limit` sends filled the window before it
            assert i >= limit
            assert sent == pytest.approx(sends[i - limit] + window, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(rate=rates, margin=margins, arrivals=st.lists(st.floats(0.0, 30.0), max_size=40))
def test_property_one_step_delay_is_within_rounding_of_the_window(
    rate: Rate, margin: float, arrivals: list[float]
) -> None:
    """Sending at now + delay(now) without re-checking also respects the window (to 1e-9)."""
    log = WindowLog(rate, margin)
    sends: list[float] = []
    for arrival in sorted(arrivals):
        now = max(arrival, sends[-1]) if sends else arrival
        t = now + log.delay(now)
        log.record(t)
        sends.append(t)
    for i in range(len(sends) - rate.requests):
        assert sends[i + rate.requests] >= sends[i] + log.window - 1e-9


# --- Limiter: real asyncio, fake clock, short waits -----------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_acquire_is_immediate_with_room_and_reports_zero_wait() -> None:
    """Below the limit acquire returns at once and counts the send."""
    clock, waits = FakeClock(), []
    limiter = Limiter(Rate(2, 0.05), clock=clock, on_wait=waits.append)
    assert limiter.has_room()
    await asyncio.wait_for(limiter.acquire(), 1)
    await asyncio.wait_for(limiter.acquire(), 1)
    assert waits == [0.0, 0.0]
    assert limiter.used() == 2
    assert not limiter.has_room()
    assert limiter.room_in() == pytest.approx(0.05)


async def test_acquire_waits_until_the_window_frees_a_slot() -> None:
    """A full window makes acquire wait; it returns once the (fake) clock passes the window,
    and the waited time is reported."""
    clock, waits = FakeClock(), []
    limiter = Limiter(Rate(1, 0.02), clock=clock, on_wait=waits.append)
    await limiter.acquire()
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.03)
    assert not second.done()  # real time passed, but the fake clock did not
    clock.now += 0.02
    await asyncio.wait_for(second, 1)
    assert waits == [0.0, pytest.approx(0.02)]


async def test_acquire_is_first_come_first_served() -> None:
    """Waiters get slots in the order they asked."""
    clock = FakeClock()
    limiter = Limiter(Rate(1, 0.01), clock=clock)
    order: list[int] = []

    async def ask(n: int) -> None:
        await limiter.acquire()
        order.append(n)

    tasks = [asyncio.create_task(ask(n)) for n in range(4)]
    for _ in range(4):
        await asyncio.sleep(0.015)
        clock.now += 0.01
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert order == [0, 1, 2, 3]


async def test_penalize_blocks_acquire_for_the_server_wait() -> None:
    """A server wait (penalize) holds acquire even with room in the window."""
    clock = FakeClock()
    limiter = Limiter(Rate(100, 1.0), clock=clock)
    limiter.penalize(0.02)
    assert not limiter.has_room()
    task = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.03)
    assert not task.done()
    clock.now += 0.02
    await asyncio.wait_for(task, 1)
    assert limiter.used() == 1


async def test_limiter_observe_remaining_uses_its_clock() -> None:
    """observe_remaining on the Limiter counts phantoms at the clock's now."""
    clock = FakeClock()
    limiter = Limiter(Rate(3, 1.0), clock=clock)
    limiter.observe_remaining(0)
    assert limiter.used() == 3
    clock.now += 1.0
    assert limiter.used() == 0
    assert limiter.has_room()


async def test_a_held_slot_counts_until_spent_and_from_the_moment_it_is_spent() -> None:
    """A hold takes a slot at once (no second request may use it), and the slot's window
    starts when the request really goes: a request held for 2 s frees its slot 2 s later."""
    now = [0.0]
    limiter = Limiter(Rate(1, 10.0), clock=lambda: now[0])
    hold = await limiter.hold()
    assert limiter.room_in() > 0, "the held slot is taken"
    now[0] = 2.0
    assert hold.spend() == 2.0
    now[0] = 11.9
    assert limiter.room_in() == pytest.approx(0.1)
    now[0] = 12.0
    assert limiter.room_in() == 0.0


async def test_a_released_hold_gives_its_slot_back_and_spending_twice_counts_once() -> None:
    """A request that never went frees its slot; release after spend changes nothing."""
    now = [0.0]
    limiter = Limiter(Rate(2, 10.0), clock=lambda: now[0])
    unused = await limiter.hold()
    unused.release()
    used = await limiter.hold()
    used.spend()
    used.spend()
    used.release()
    assert limiter.used() == 1
    assert limiter.room_in() == 0.0


def test_a_stated_limit_is_adopted_up_and_down() -> None:
    """Following the API's statement: 30 -> 120 (a bigger plan) -> 20, each at once; a
    lower limit counts the sends already in the window."""
    now = [0.0]
    limiter = Limiter(Rate(30, 3.0), clock=lambda: now[0], follow_stated=True)
    for _ in range(30):
        limiter.log.record(0.0)
    assert limiter.room_in() > 0
    assert limiter.observe_limit(120) is True
    assert (limiter.rate, limiter.room_in()) == (Rate(120, 3.0), 0.0)
    assert limiter.observe_limit(120) is False
    assert limiter.observe_limit(20) is True
    assert limiter.rate == Rate(20, 3.0) and limiter.room_in() == pytest.approx(3.0)


def test_an_explicit_limit_is_a_ceiling_the_statement_only_lowers() -> None:
    limiter = Limiter(Rate(60, 3.0), follow_stated=True, ceiling=Rate(60, 3.0))
    assert limiter.observe_limit(120) is False and limiter.rate == Rate(60, 3.0)
    assert limiter.observe_limit(30) is True and limiter.rate == Rate(30, 3.0)
    assert limiter.observe_limit(90) is True and limiter.rate == Rate(60, 3.0)


def _most_in_any_window(sends: list[float], seconds: float) -> int:
    return max(sum(1 for t in sends if s <= t < s + seconds) for s in sends)


@pytest.mark.parametrize(
    ("explicit", "stated"), [(Rate(50, 1.0), 60), (Rate(20, 1.0), 30), (Rate(100, 5.0), 60)]
)
def test_an_explicit_limit_and_a_stated_one_both_hold_whatever_their_windows(
    explicit: Rate, stated: int
) -> None:
    """An explicit rate_limit whose window is shorter than the API's 3 s must not let the
    stated count per 3 s be passed (50/1s under a stated 60 per 3 s once sent 150 in 3 s),
    nor the explicit count per its own window."""
    now = [0.0]
    limiter = Limiter(
        explicit, clock=lambda: now[0], follow_stated=True, ceiling=explicit, stated_window=3.0
    )
    limiter.observe_limit(stated)
    sends: list[float] = []
    while now[0] < 12.0:
        if limiter.room_in() == 0.0:
            limiter.log.record(now[0])
            sends.append(now[0])
        else:
            now[0] += 0.01
    assert _most_in_any_window(sends, 3.0) <= stated
    assert _most_in_any_window(sends, explicit.seconds) <= explicit.requests


@pytest.mark.parametrize("stated", [0, -5])
def test_a_limiter_that_does_not_follow_or_a_nonsense_statement_changes_nothing(
    stated: int,
) -> None:
    assert Limiter(Rate(5, 10.0)).observe_limit(50) is False
    assert Limiter(Rate(5, 10.0), follow_stated=True).observe_limit(stated) is False


def targets() -> tuple[DatoCMSTarget, DatoCMSTarget, BloomreachTarget]:
    dato = DatoCMSTarget(kind="datocms", api_token="t")  # type: ignore[arg-type]
    capped = DatoCMSTarget(kind="datocms", api_token="t", rate_limit="100/3s")  # type: ignore[arg-type]
    bloom = BloomreachTarget(
        kind="bloomreach",
        base_url="http://127.0.0.1:9",
        api_key_id="k",  # type: ignore[arg-type]
        api_secret="s",  # type: ignore[arg-type]
        project_id="p",
    )
    return dato, capped, bloom


def test_limiters_start_conservative_and_blocked_one_window_after_the_process_started() -> None:
    """A new process: DatoCMS starts at 30/3s following the stated limit (capped by an
    explicit one), Bloomreach at 5/10s; each scope waits until one window (plus margin)
    after the start, however late it is first used: by then no request of an earlier
    process can be in the window."""
    now = [100.0]
    limiters = Limiters(0.05, clock=lambda: now[0])
    dato, capped, bloom = targets()
    now[0] = 101.0
    first = limiters.get(("datocms", "main"), "main", dato)
    assert (first.rate, first.follow_stated, first.ceiling) == (Rate(30, 3.0), True, None)
    assert first.room_in() == pytest.approx(2.05)
    assert limiters.get(("datocms", "main"), "main", dato) is first, "one per scope"
    other = limiters.get(("datocms", "capped"), "capped", capped)
    # Before an answer states the limit, the explicit one is passed no more than the
    # conservative reading; then the stated one applies, under the explicit ceiling.
    assert (other.rate, other.ceiling) == (Rate(30, 3.0), Rate(100, 3.0))
    assert other.observe_limit(120) and other.rate == Rate(100, 3.0)
    catalog = limiters.get(("bloomreach", "shop", "c"), "shop", bloom)
    assert (catalog.rate, catalog.follow_stated) == (Rate(5, 10.0), False)
    assert catalog.room_in() == pytest.approx(9.05)
    now[0] = 120.0
    late = limiters.get(("bloomreach", "shop", "late"), "shop", bloom)
    assert late.room_in() == 0.0
    assert limiters.allowed("main", dato) == 30
    first.observe_limit(60)
    assert limiters.allowed("main", dato) == 60
    assert limiters.allowed("unused", dato) == 30
