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

``WindowLog`` is pure arithmetic over timestamps; ``Limiter`` adds the clock and the waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from worker.settings import Rate

HELD_POLL = 0.05


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
        recent = rate.requests + 8
        self._spans: deque[float] = deque(maxlen=recent)

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
    ) -> None:
        self.rate = rate
        self.log = WindowLog(rate, margin)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._on_wait = on_wait

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

    async def hold(self) -> Hold:
        """Return when one request may be sent, holding its slot until it is: the slot counts
        from now, and as sent from the moment ``Hold.spend`` says it goes. So the window is
        measured from the real send, however long the request takes to get ready."""
        started = self._clock()
        async with self._lock:
            while (wait := self.log.delay(self._clock())) > 0:
                await asyncio.sleep(wait)
            self.log.held += 1
        if self._on_wait is not None:
            self._on_wait(self._clock() - started)
        return Hold(self)

    def observe_timing(self, send_delay: float, round_trip: float) -> None:
        self.log.observe_timing(send_delay, round_trip)

    def penalize(self, seconds: float) -> None:
        self.log.block_until(self._clock() + seconds)

    def observe_remaining(self, remaining: int) -> None:
        self.log.observe_remaining(remaining, self._clock())


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
