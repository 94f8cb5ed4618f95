"""Scripted misbehaviour: each fault hits the next ``count`` matching requests, then is gone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

FaultKind = Literal["status", "slow", "drop", "job_failure"]
FaultApi = Literal["any", "datocms", "bloomreach"]


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    count: int = 1
    api: FaultApi = "any"
    path_contains: str | None = None
    status: int = 503
    delay: float = 0.0
    headers: dict[str, str] | None = None
    body: Any = None  # JSON value (or str/bytes sent as is); for job_failure the payload

    def matches(self, api: str, path: str) -> bool:
        if self.api not in ("any", api):
            return False
        return self.path_contains is None or self.path_contains in path


class FaultBook:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.count > 0:
            self._faults.append(dataclasses.replace(fault))

    def take(self, api: str, path: str, *, job: bool = False) -> Fault | None:
        """Use up one count of the first matching fault (job faults only when ``job``)."""
        for fault in self._faults:
            if (fault.kind == "job_failure") == job and fault.matches(api, path):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def pending(self) -> list[Fault]:
        return list(self._faults)

    def clear(self) -> None:
        self._faults.clear()
