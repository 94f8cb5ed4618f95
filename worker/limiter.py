"""Rate limiting: an exact sliding-window log per rate scope.

The APIs count requests in a window (DatoCMS 60 per 3 s per token, Bloomreach 5 per 10 s per
catalog). A sliding log of send times lets the worker use every request of the window and
never one more: a request may go when fewer than ``limit`` requests were sent in the last
``window + margin`` seconds.

The margin covers the difference between when we send and when the API sees the request
arrive, which can be anything up to the request's latency: if request i arrives late (at
most its latency after we sent it) and request i+limit arrives at once, the API sees them
closer than we sent them. So the margin is at least the slowest recent latency of the scope
(capped at one window), which costs about latency/window of the limit.

``WindowLog`` is pure arithmetic over timestamps; ``Limiter`` adds the clock and the waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from worker.settings import Rate


class WindowLog:
    """Send times within the window, plus any wait the server imposed."""

    def __init__(self, rate: Rate, margin: float = 0.0) -> None:
        self.limit = rate.requests
        self.seconds = rate.seconds
        self.base_margin = margin
        self.window = rate.seconds + margin
        self._sent: deque[float] = deque()
        self._blocked_until = 0.0
        self._latencies: deque[float] = deque(maxlen=max(8, 2 * rate.requests))

    def observe_latency(self, seconds: float) -> None:
        """A request of this scope took ``seconds`` from send to answer: widen the margin."""
        self._latencies.append(max(0.0, seconds))
        # Capped at one window: a single stuck request must not stall the scope for long.
        slowest = min(self.seconds, max(self._latencies))
        self.window = self.seconds + max(self.base_margin, slowest)

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
        if len(self._sent) >= self.limit:
            oldest_that_must_leave = self._sent[len(self._sent) - self.limit]
            wait = max(wait, oldest_that_must_leave + self.window - now)
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

    async def acquire(self) -> None:
        """Return when one request may be sent; it is counted as sent."""
        started = self._clock()
        async with self._lock:
            while (wait := self.log.delay(self._clock())) > 0:
                await asyncio.sleep(wait)
            now = self._clock()
            self.log.record(now)
        if self._on_wait is not None:
            self._on_wait(now - started)

    def observe_latency(self, seconds: float) -> None:
        self.log.observe_latency(seconds)

    def assume_full(self) -> None:
        """Start as if a whole window had just been used: for a scope taken over from another
        process, whose recent requests this one cannot know."""
        now = self._clock()
        for _ in range(self.rate.requests):
            self.log.record(now)

    def penalize(self, seconds: float) -> None:
        self.log.block_until(self._clock() + seconds)

    def observe_remaining(self, remaining: int) -> None:
        self.log.observe_remaining(remaining, self._clock())
