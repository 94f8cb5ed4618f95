"""An in-process fake of the search index's HTTP API: deletes documents in bulk, answers per
document (a locked document fails), and records every request."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class FakeSearchIndex:
    def __init__(self, api_key: str, locked: frozenset[str] = frozenset()) -> None:
        self.api_key = api_key
        self.locked = locked
        self.requests: list[tuple[str, list[str]]] = []  # (index, ids)
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def _delete(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Api-Key") != self.api_key:
            return web.json_response({"error": "unauthorized"}, status=401)
        ids: list[str] = orjson.loads(await request.read())
        self.requests.append((request.match_info["index"], ids))
        results: list[dict[str, Any]] = [
            {"id": i, "ok": False, "code": "DOC_LOCKED", "message": "document is locked"}
            if i in self.locked
            else {"id": i, "ok": True}
            for i in ids
        ]
        return web.json_response({"results": results})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/indexes/{index}/docs/delete", self._delete)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
