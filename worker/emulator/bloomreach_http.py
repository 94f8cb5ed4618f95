"""Bloomreach Engagement catalog bulk-delete over HTTP."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from worker import exactjson
from worker.emulator.bloomreach import BloomState, ItemAnswer
from worker.emulator.config import EmulatorConfig
from worker.emulator.log import entry_of

ITEMS = "/data/v2/projects/{project_id}/catalogs/{catalog_id}/items"
BULK_DELETE = ITEMS + "/bulk-delete"
PARTIAL_UPDATE = ITEMS + "/partial-update"
FORM_METHODS = {
    "both": frozenset({"DELETE", "POST"}),
    "delete-ids": frozenset({"DELETE"}),
    "post-objects": frozenset({"POST"}),
}


Writer = Callable[[str, list[object]], list[ItemAnswer]]


def error_json(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"success": False, "errors": {"_global": [message]}}
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    key_id, sep, secret = decoded.partition(":")
    return (key_id, secret) if sep else None


def parse_items(raw: bytes, config: EmulatorConfig) -> list[object] | tuple[int, str]:
    """The body's elements, or the (status, message) of a whole-request refusal. Too large
    is 400 as documented, or 413 as a proxy may answer (``bloomreach_oversize_status``)."""
    too_large = config.bloomreach_oversize_status
    if len(raw) > config.bloomreach_max_body_bytes:
        return too_large, f"Payload too large: at most {config.bloomreach_max_body_bytes} bytes"
    try:
        body = exactjson.loads(raw)  # properties as sent: integers of any size
    except orjson.JSONDecodeError:
        return 400, "Invalid JSON payload"
    if not isinstance(body, list):
        return 400, "Payload should be a list"
    if len(body) > config.bloomreach_max_items:
        return too_large, f"Too many items: at most {config.bloomreach_max_items}"
    return body


def as_elements(method: str, items: list[object]) -> list[object]:
    """DELETE carries id strings, POST ``{"item_id"}`` objects: the state judges objects (an
    element of the wrong shape stays as it is, and is answered malformed)."""
    if method != "DELETE":
        return items
    return [{"item_id": item} if isinstance(item, str) else item for item in items]


def render(answer: ItemAnswer, string_booleans: bool) -> dict[str, Any]:
    flag: bool | str = answer.success
    if string_booleans:
        flag = "True" if answer.success else "False"
    rendered: dict[str, Any] = {"success": flag, "queued": flag}
    if answer.error is not None:
        rendered["errors"] = {answer.field: [answer.error]}
    return rendered


class BloomHttp:
    def __init__(self, state: BloomState, config: EmulatorConfig) -> None:
        self.state = state
        self.config = config

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(BULK_DELETE, self.bulk_delete),
            web.delete(BULK_DELETE, self.bulk_delete),
            web.put(ITEMS, self.bulk_update),
            web.post(PARTIAL_UPDATE, self.partial_update),
        ]

    def gate(self, request: web.Request) -> web.Response | None:
        credentials = basic_credentials(request.headers.get("Authorization", ""))
        if credentials != (self.config.bloomreach_key_id, self.config.bloomreach_secret):
            return error_json(401, "Unauthorized: invalid API key id or secret")
        if request.match_info["project_id"] != self.config.bloomreach_project_id:
            return error_json(403, "Forbidden: no access to this project")
        if request.content_type != "application/json":
            return error_json(400, "Content-Type must be application/json")
        return None

    def method_refused(self, method: str) -> web.Response | None:
        """One wire form only (``bloomreach_delete_forms``): the other method is 405."""
        accepted = FORM_METHODS[self.config.bloomreach_delete_forms]
        if method in accepted:
            return None
        return error_json(405, "Method not allowed", {"Allow": ", ".join(sorted(accepted))})

    async def bulk_delete(self, request: web.Request) -> web.Response:
        refused = self.method_refused(request.method) or self.gate(request)
        if refused is not None:
            return refused
        items = parse_items(await request.read(), self.config)
        if isinstance(items, tuple):
            return error_json(*items)
        entry_of(request).items = len(items)
        elements = as_elements(request.method, items)
        return self._answer(self.state.delete(request.match_info["catalog_id"], elements))

    async def bulk_update(self, request: web.Request) -> web.Response:
        """``PUT .../items``: create or replace each item whole."""
        return await self._write(request, self.state.upsert)

    async def partial_update(self, request: web.Request) -> web.Response:
        """``POST .../items/partial-update``: merge properties; create only with upsert."""
        return await self._write(request, self.state.partial_update)

    async def _write(self, request: web.Request, apply: Writer) -> web.Response:
        """The same gate, size caps and answers as bulk-delete (the shared rate limit per
        catalog is the server's: its scope is project/catalog, whatever the path below)."""
        refused = self.gate(request)
        if refused is not None:
            return refused
        items = parse_items(await request.read(), self.config)
        if isinstance(items, tuple):
            return error_json(*items)
        entry_of(request).items = len(items)
        return self._answer(apply(request.match_info["catalog_id"], items))

    def _answer(self, answers: list[ItemAnswer]) -> web.Response:
        strings = self.config.bloomreach_string_booleans
        body = orjson.dumps([render(answer, strings) for answer in answers])
        return web.Response(body=body, content_type="application/json")
