"""Admin endpoints under /_emulator, for driving an emulator that runs as its own process."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from worker.emulator.config import apply_updates
from worker.emulator.datocms import Action, RecordStatus
from worker.emulator.faults import Fault

if TYPE_CHECKING:
    from worker.emulator.server import Emulator

PREFIX = "/_emulator"
_FAULT = TypeAdapter(Fault)
_SECRET_FIELDS = {"datocms_tokens", "bloomreach_secret"}


class SeedRequest(BaseModel):
    environment: str | None = None
    records: list[str] = []
    status: RecordStatus | None = "draft"  # None: a model without drafts (meta.status null)
    uploads: list[str] = []
    in_use: bool = False
    missing: list[str] = []


class FailureRequest(BaseModel):
    ids: list[str]
    action: Action
    code: str


class ItemErrorRequest(BaseModel):
    catalog_id: str
    item_ids: list[str]
    message: str


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


async def _body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text="body is not valid JSON") from None


def _invalid(error: ValidationError) -> web.Response:
    return _json({"error": "invalid", "details": error.errors(include_url=False)}, 400)


class AdminHttp:
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{PREFIX}/log", self.log),
            web.post(f"{PREFIX}/reset", self.reset),
            web.get(f"{PREFIX}/config", self.get_config),
            web.post(f"{PREFIX}/config", self.set_config),
            web.get(f"{PREFIX}/faults", self.faults),
            web.post(f"{PREFIX}/faults", self.inject),
            web.post(f"{PREFIX}/datocms/seed", self.seed),
            web.post(f"{PREFIX}/datocms/failures", self.failures),
            web.get(f"{PREFIX}/datocms/records/{{id}}", self.record),
            web.get(f"{PREFIX}/datocms/uploads/{{id}}", self.upload),
            web.post(f"{PREFIX}/bloomreach/item-errors", self.item_errors),
            web.get(f"{PREFIX}/bloomreach/deleted/{{catalog_id}}", self.deleted),
        ]

    async def log(self, request: web.Request) -> web.Response:
        entries = self.emu.requests(
            api=request.query.get("api"), path_contains=request.query.get("path_contains")
        )
        body = {
            "entries": [entry.to_json() for entry in entries],
            "count": len(entries),
            "breaches": sum(entry.breach for entry in entries),
        }
        return _json(body)

    async def reset(self, request: web.Request) -> web.Response:
        self.emu.reset()
        return _json({"ok": True})

    async def get_config(self, request: web.Request) -> web.Response:
        return _json(self.emu.config.model_dump(exclude=_SECRET_FIELDS))

    async def set_config(self, request: web.Request) -> web.Response:
        updates = await _body(request)
        if not isinstance(updates, dict):
            return _json({"error": "body must be a JSON object"}, 400)
        try:
            apply_updates(self.emu.config, updates)
        except ValidationError as error:
            return _invalid(error)
        return _json(self.emu.config.model_dump(exclude=_SECRET_FIELDS))

    async def faults(self, request: web.Request) -> web.Response:
        return _json([_FAULT.dump_python(fault, mode="json") for fault in self.emu.faults()])

    async def inject(self, request: web.Request) -> web.Response:
        try:
            fault = _FAULT.validate_python(await _body(request))
        except ValidationError as error:
            return _invalid(error)
        self.emu.inject(fault)
        return _json({"ok": True})

    async def seed(self, request: web.Request) -> web.Response:
        try:
            seed = SeedRequest.model_validate(await _body(request))
        except ValidationError as error:
            return _invalid(error)
        dato = self.emu.datocms
        dato.seed_records(seed.records, seed.environment, seed.status)
        dato.seed_uploads(seed.uploads, seed.environment, seed.in_use)
        dato.mark_missing(seed.missing, seed.environment)
        return _json({"ok": True})

    async def failures(self, request: web.Request) -> web.Response:
        try:
            failure = FailureRequest.model_validate(await _body(request))
        except ValidationError as error:
            return _invalid(error)
        self.emu.datocms.set_failure(failure.ids, failure.action, failure.code)
        return _json({"ok": True})

    async def record(self, request: web.Request) -> web.Response:
        record_id = request.match_info["id"]
        status = self.emu.datocms.record_status(record_id, request.query.get("environment"))
        return _json({"id": record_id, "status": status})

    async def upload(self, request: web.Request) -> web.Response:
        upload_id = request.match_info["id"]
        exists = self.emu.datocms.upload_exists(upload_id, request.query.get("environment"))
        return _json({"id": upload_id, "exists": exists})

    async def item_errors(self, request: web.Request) -> web.Response:
        try:
            errors = ItemErrorRequest.model_validate(await _body(request))
        except ValidationError as error:
            return _invalid(error)
        self.emu.bloomreach.set_item_error(errors.catalog_id, errors.item_ids, errors.message)
        return _json({"ok": True})

    async def deleted(self, request: web.Request) -> web.Response:
        catalog_id = request.match_info["catalog_id"]
        return _json({"catalog_id": catalog_id, "deleted": self.emu.bloomreach.deleted(catalog_id)})
