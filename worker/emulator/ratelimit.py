"""Sliding-window bookkeeping per rate scope, the yardstick the worker is measured by.

A request arriving at ``now`` breaches when the requests of its scope that arrived in
``(now - window, now]``, itself included, outnumber ``limit``. Breaching requests still count.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateDecision:
    breach: bool
    limit: int
    remaining: int
    reset_seconds: int  # whole seconds until a further request would not breach; 0 if now


class SlidingWindow:
    def __init__(self) -> None:
        self._arrivals: dict[str, deque[float]] = {}

    def hit(self, scope: str, now: float, limit: int, window: float) -> RateDecision:
        """Count one arrival of ``scope`` at ``now`` and judge it."""
        arrivals = self._arrivals.setdefault(scope, deque())
        while arrivals and arrivals[0] <= now - window:
            arrivals.popleft()
        arrivals.append(now)
        count = len(arrivals)
        return RateDecision(
            breach=count > limit,
            limit=limit,
            remaining=max(0, limit - count),
            reset_seconds=_reset_seconds(arrivals, now, limit, window),
        )

    def clear(self) -> None:
        self._arrivals.clear()


def _reset_seconds(arrivals: deque[float], now: float, limit: int, window: float) -> int:
    count = len(arrivals)
    if count < limit:
        return 0
    if limit <= 0:
        return max(1, math.ceil(window))
    # The next request is admitted once arrivals[count - limit] has left the window.
    return max(1, math.ceil(arrivals[count - limit] + window - now))
