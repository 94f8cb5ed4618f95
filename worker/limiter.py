"""Rate limiting: an exact sliding-window log per rate scope.

The APIs count requests in a window (DatoCMS 60 per 3 s per token, Bloomreach 5 per 10 s per
catalog). A sliding log of send times lets the worker use every request of the window and
never one more: a request may go when fewer than ``limit`` requests were sent in the last
``window + margin`` seconds.

The margin covers the difference between when a request's slot is counted and when the API
sees it arrive: if request i arrives late and request i+limit at once, the API sees them
closer than we counted them. A slot is held until the request's first bytes go out and
counted from that moment, so the arrival lies between that moment and the moment the answer
came back. The margin is therefore the slowest recent span from first byte out to answer in
(at least the configured margin, at most one window): a true bound, and a small one, since
the time this process takes to get a request ready is not part of it.

The limit itself may be learnt: DatoCMS states the one in force (plans differ) in
``X-RateLimit-Limit`` on every answer. Without an explicit ``rate_limit`` the worker starts
at the most conservative documented reading and adopts the stated limit, up or down; an
explicit one is a ceiling the stated limit can only lower.

Limiters live as long as the process (``Limiters``), not a broker session: after a
reconnect the new session knows what the old one sent. A process that starts knows nothing
of what an earlier one (killed and restarted at once) sent, so a rate scope's limiter starts
blocked until one window (and the margin) after the process started: by then none of the
earlier process's requests can still be in the API's window.

``WindowLog`` is pure arithmetic over timestamps; ``Limiter`` adds the clock and the waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Protocol, TypeVar, cast

from worker.rates import Rate as Rate

T = TypeVar("T")

HELD_POLL = 0.05


class RatedTarget(Protocol):
    """What a limiter needs of a configured target."""

    @property
    def rate_limit(self) -> str | None: ...
    @property
    def first_rate(self) -> Rate: ...
    @property
    def states_limit(self) -> bool: ...
    @property
    def stated_window(self) -> float: ...


class WindowLog:
    """Send times within the window, plus any wait the server imposed."""

    def __init__(self, rate: Rate, margin: float = 0.0) -> None:
        self.limit = rate.requests
        self.seconds = rate.seconds
        self.base_margin = margin
        self.window = rate.seconds + margin
        self._sent: deque[float] = deque()
        self.held = 0  # slots granted, not yet sent: they count until they are
        self._blocked_until = 0.0
        # The spans that matter are those of the requests still in the window (the one that
        # must leave next is among the last `limit` sent), plus a few answered out of order.
        self._spans: deque[float] = deque(maxlen=rate.requests + 8)

    def set_rate(self, rate: Rate) -> None:
        """The limit in force changed (a lower one takes effect at once: sends already in
        the window count against it); the margin learnt so far is kept."""
        self.window += rate.seconds - self.seconds
        self.limit, self.seconds = rate.requests, rate.seconds
        self._spans = deque(self._spans, maxlen=rate.requests + 8)

    def observe_timing(self, send_delay: float, round_trip: float) -> None:
        """A request of this scope left ``send_delay`` after its slot was counted and was
        answered ``round_trip`` after it left: adjust the margin."""
        self._spans.append(max(0.0, send_delay) + max(0.0, round_trip))
        late = max(self._spans)
        # Capped at one window: a single stuck request must not stall the scope for long.
        self.window = self.seconds + min(self.seconds, max(self.base_margin, late))

    def _expire(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()

    def used(self, now: float) -> int:
        self._expire(now)
        return len(self._sent)

    def delay(self, now: float) -> float:
        """Seconds to wait before a request may be sent at ``now`` (0.0: send now)."""
        self._expire(now)
        wait = max(0.0, self._blocked_until - now)
        must_leave = len(self._sent) + self.held - self.limit  # index of the send to expire
        if must_leave >= len(self._sent):
            return max(wait, HELD_POLL)  # only a held slot being sent can make room
        if must_leave >= 0:
            wait = max(wait, self._sent[must_leave] + self.window - now)
        return wait

    def record(self, now: float) -> None:
        self._sent.append(now)

    def block_until(self, until: float) -> None:
        """The server told us to wait (429 with a reset, or Retry-After)."""
        self._blocked_until = max(self._blocked_until, until)

    def observe_remaining(self, remaining: int, now: float) -> None:
        """Trust the server when it counts more requests than we sent (another client,
        a restart of ours): add the difference as if we had sent them now."""
        self._expire(now)
        ours = self.limit - len(self._sent)
        for _ in range(max(0, ours - max(0, remaining))):
            self._sent.append(now)


class Limiter:
    """Waits for a ``WindowLog`` slot, first come first served."""

    def __init__(
        self,
        rate: Rate,
        margin: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        on_wait: Callable[[float], None] | None = None,
        *,
        follow_stated: bool = False,
        ceiling: Rate | None = None,
        stated_window: float | None = None,
    ) -> None:
        self.rate = rate
        self.log = WindowLog(rate, margin)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._on_wait = on_wait
        self._urgent = 0  # urgent waiters (see ``hold``)
        self._plain = 0  # other waiters
        self._streak = 0  # slots in a row given to urgent waiters while others waited
        # After this many, one other waiter is served before the next urgent one: a flood of
        # urgent requests (and their polls) never starves the backlog's polls completely.
        # The dispatcher sets it from BULKOPS_PRIORITY_BACKLOG_SHARE.
        self.backlog_every = 9
        self.follow_stated = follow_stated  # adopt the limit the API states
        self.ceiling = ceiling  # an explicit limit: never exceeded, whatever is stated
        self.stated_window = stated_window or rate.seconds  # what a stated limit counts in

    def has_room(self) -> bool:
        return not self._lock.locked() and self.log.delay(self._clock()) == 0.0

    def room_in(self) -> float:
        return self.log.delay(self._clock())

    def used(self) -> int:
        return self.log.used(self._clock())

    async def acquire(self) -> float:
        """Return when one request may be sent; it is counted as sent at the time returned."""
        started = self._clock()
        async with self._lock:
            while (wait := self.log.delay(self._clock())) > 0:
                await asyncio.sleep(wait)
            now = self._clock()
            self.log.record(now)
        if self._on_wait is not None:
            self._on_wait(now - started)
        return now

    async def hold(self, urgent: bool = False) -> Hold:
        """Return when one request may be sent, holding its slot until it is: the slot counts
        from now, and as sent from the moment ``Hold.spend`` says it goes. So the window is
        measured from the real send, however long the request takes to get ready.

        ``urgent`` (the priority lane's requests, their polls and reads): served before any
        other waiter; one that is not steps back (to the end of the line) while one is,
        except that after ``backlog_every`` urgent slots in a row the next goes to another."""
        started = self._clock()
        if urgent:
            self._urgent += 1
        else:
            self._plain += 1
        try:
            while not await self._wait_slot(urgent):
                await asyncio.sleep(0)  # stepped back: the urgent waiter goes first
        finally:
            if urgent:
                self._urgent -= 1
            else:
                self._plain -= 1
        if self._on_wait is not None:
            self._on_wait(self._clock() - started)
        return Hold(self)

    async def _wait_slot(self, urgent: bool) -> bool:
        """Hold a slot once it is free (True), unless an urgent waiter came first (False) and
        the other waiters' share is not due (``backlog_every``)."""
        async with self._lock:
            while True:
                share_due = self._streak >= self.backlog_every
                if urgent and share_due and self._plain:
                    return False  # the other waiters' share: one of them goes first
                if not urgent and self._urgent and not share_due:
                    return False
                wait = self.log.delay(self._clock())
                if wait <= 0:
                    self.log.held += 1
                    # Count the urgent slots given while others wait; another's resets it.
                    self._streak = self._streak + 1 if urgent and self._plain else 0
                    return True
                await asyncio.sleep(wait)

    def observe_timing(self, send_delay: float, round_trip: float) -> None:
        self.log.observe_timing(send_delay, round_trip)

    def penalize(self, seconds: float) -> None:
        self.log.block_until(self._clock() + seconds)

    def observe_remaining(self, remaining: int) -> None:
        self.log.observe_remaining(remaining, self._clock())

    def observe_limit(self, stated: int) -> bool:
        """The API stated the limit in force for this window (``X-RateLimit-Limit``): adopt
        it, up or down, capped by the explicit ceiling. True when the limit changed."""
        if not self.follow_stated or stated < 1:
            return False
        rate = Rate(stated, self.stated_window)
        if self.ceiling is not None:
            # Both hold in one sliding window: the fewer requests over the longer window (an
            # explicit 50/1s under a stated 60 per 3 s is 50 per 3 s, never 150).
            rate = Rate(
                min(stated, self.ceiling.requests), max(self.stated_window, self.ceiling.seconds)
            )
        if rate == self.rate:
            return False
        self.log.set_rate(rate)
        self.rate = rate
        return True


class Limiters:
    """The process's limiters by rate scope: they outlive broker sessions.

    The first limiter of a scope in this process is blocked until one window (plus the
    margin) after the process started. An earlier process may have sent up to the limit just
    before it died, and the API counts those requests for a window more; this process cannot
    see them (Bloomreach states nothing, and DatoCMS's count comes only on an answer, which
    a request would have to be risked for). So a restart costs at most one window per scope
    (3 s for DatoCMS, 10 s for a Bloomreach catalog), counted from the start, not from the
    first request: a scope first used later than that waits for nothing."""

    def __init__(self, margin: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.margin = margin
        self._clock = clock
        self.started = clock()
        self._by_scope: dict[Hashable, Limiter] = {}
        self._by_target: dict[str, Limiter] = {}  # the latest made for each target name
        self._kept: dict[str, Any] = {}  # per target name: its adapter (see ``kept``)

    def get(
        self,
        scope: Hashable,
        name: str,
        target: RatedTarget,
        on_wait: Callable[[float], None] | None = None,
    ) -> Limiter:
        limiter = self._by_scope.get(scope)
        if limiter is None:
            limiter = self._by_scope[scope] = self._by_target[name] = self._new(target, on_wait)
        return limiter

    def kept(self, name: str, make: Callable[[], T]) -> T:
        """The process's object for target ``name`` (its adapter), made on first use and kept
        across broker sessions like the limiters: what a target taught (the bulk-delete form
        after a 405, the size that passed after a 413) is not paid for again on a reconnect.
        (The limit a target states lives in its limiters.)"""
        if name not in self._kept:
            self._kept[name] = make()
        return cast(T, self._kept[name])

    def allowed(self, name: str, target: RatedTarget) -> int:
        """The limit in force for a target: its limiters' (they agree), else the first."""
        limiter = self._by_target.get(name)
        return limiter.rate.requests if limiter is not None else target.first_rate.requests

    def _new(self, target: RatedTarget, on_wait: Callable[[float], None] | None) -> Limiter:
        explicit = Rate.parse(target.rate_limit) if target.rate_limit else None
        limiter = Limiter(
            target.first_rate,
            self.margin,
            self._clock,
            on_wait,
            follow_stated=target.states_limit,
            ceiling=explicit,
            stated_window=target.stated_window,
        )
        # The longest window any limit of this target can have: the first one's.
        limiter.log.block_until(self.started + limiter.log.window)
        return limiter


class Hold:
    """A slot of a ``Limiter`` granted and not yet used: spend it when the request goes, or
    release it if the request never goes (released twice or after spending: no effect)."""

    __slots__ = ("_limiter", "done")

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter
        self.done = False

    def spend(self) -> float:
        """The request goes now: count it as sent now; returns that time."""
        now = self._limiter._clock()
        if not self.done:
            self.done = True
            self._limiter.log.held -= 1
            self._limiter.log.record(now)
        return now

    def release(self) -> None:
        if not self.done:
            self.done = True
            self._limiter.log.held -= 1
