"""A rate limit as configured and documented: ``requests`` per ``seconds`` (pure: the
catalog and the settings read it; ``worker.limiter`` enforces it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*s\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``requests`` per ``seconds``: the most a rate scope may send in any window."""

    requests: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = _RATE.match(text)
        if not match:
            raise ValueError(f"rate_limit must look like '60/3s', got {text!r}")
        rate = cls(int(match.group(1)), float(match.group(2)))
        if rate.requests < 1 or rate.seconds <= 0:
            raise ValueError(f"rate_limit must be positive, got {text!r}")
        return rate

    def __str__(self) -> str:
        return f"{self.requests}/{self.seconds:g}s"
