"""What the broker-free adapter tests share: an item as sent, recorded retry pauses, and the
results in a comparable form."""

from __future__ import annotations

from dataclasses import dataclass

from worker.apis.adapters import ItemResult
from worker.apis.base import Payload


@dataclass(frozen=True)
class Sent:
    """An item as the pipeline hands it to an adapter: its id and, where it has one, its data."""

    id: str
    payload: Payload | None = None


class Sleeps:
    """Retry pauses, recorded and not waited for."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def statuses(results: dict[str, ItemResult]) -> dict[str, tuple[str, str | None]]:
    return {i: (r.status, r.error.code if r.error else None) for i, r in results.items()}
