"""What the emulator saw: one entry per request, appended on arrival, completed on answer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aiohttp import web

ApiName = Literal["datocms", "bloomreach", "admin"]


@dataclass(slots=True)
class LogEntry:
    t: float  # time.monotonic() at arrival
    api: ApiName
    scope: str  # non-secret label of the rate scope
    method: str
    path: str
    query: str
    status: int = 0  # 0 while unanswered, or when the connection was dropped
    items: int = 0  # ids in a bulk body
    body_bytes: int = 0
    environment: str | None = None
    breach: bool = False
    job_id: str | None = None
    fault: str | None = None  # kind of the scripted fault applied, if any
    request_id: str | None = None  # the X-Request-Id the answer carried (DatoCMS)
    # The request's headers, names lowercased, credentials reduced to their scheme.
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None  # the request body, kept only with config.log_request_bodies

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


ENTRY_KEY = web.RequestKey("emulator_entry", LogEntry)
SECRET_HEADERS = frozenset({"authorization", "cookie"})


def logged_headers(request: web.Request) -> dict[str, str]:
    """The request's headers for the log: a credential keeps only its scheme ("Bearer")."""
    headers = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = value.partition(" ")[0] + " ***" if key in SECRET_HEADERS else value
    return headers


def entry_of(request: web.Request) -> LogEntry:
    """The log entry of the request being served (set by the server's middleware)."""
    return request[ENTRY_KEY]
