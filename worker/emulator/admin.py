"""Admin endpoints under /_emulator, for driving an emulator that runs as its own process.

Every body and answer is JSON; a body that does not validate answers 400
``{"error": "invalid", "details": [...]}``; writes answer ``{"ok": true}``. ``environment``
is a DatoCMS sandbox name (null or absent: the primary environment).

- ``GET /log`` (``?api=``, ``?path_contains=``), ``POST /reset``, ``GET|POST /config``
  (a partial object of ``EmulatorConfig`` fields), ``GET|POST /faults`` (a ``Fault``).
- ``POST /datocms/seed``: ``{"environment", "records": [ids], "status": "draft" | "updated"
  | "published" | null, "stage": str | null, "workflow": str | null, "uploads": [ids],
  "in_use": bool, "tags": [str], "upload_collection": str | null, "missing": [ids]}``; records
  get ``status`` and ``meta.stage`` = ``stage`` in the model workflow ``workflow``; uploads
  get ``tags`` and ``upload_collection``.
- ``POST /datocms/failures``: ``{"ids", "action", "code"}``; ``action`` is one of publish,
  unpublish, destroy, upload_destroy, move_to_stage, upload_tag, upload_set_collection: the
  bulk job counts these ids as failed and the single-record call answers 422 ``code``.
- ``POST /datocms/stages``: ``{"environment", "workflow": str | null, "stages": [str] |
  null}``: the stages of that workflow (null: of records seeded without a workflow);
  ``stages`` null: any stage name exists (the default). A move to another stage fails.
- ``POST /datocms/upload-collections``: ``{"environment", "ids": [str] | null}``: the
  collections that exist (null: any id, the default).
- ``GET /datocms/records/{id}`` -> ``{"id", "status"}``;
  ``GET /datocms/records/{id}/stage`` -> ``{"id", "exists", "stage", "workflow"}``;
  ``GET /datocms/uploads/{id}`` -> ``{"id", "exists"}``;
  ``GET /datocms/uploads/{id}/meta`` -> ``{"id", "exists", "tags", "upload_collection"}``
  (all with ``?environment=``).
- ``POST /bloomreach/item-errors``: ``{"catalog_id", "item_ids", "message"}``: bulk-delete,
  bulk update and partial update answer these items ``errors: {"_global": [message]}``.
- ``GET /bloomreach/deleted/{catalog_id}`` -> ``{"catalog_id", "deleted": [ids]}``.
- ``POST /bloomreach/items``: ``{"catalog_id", "items": [{"item_id", "properties"}]}``:
  these items exist with these properties.
- ``GET /bloomreach/items/{catalog_id}`` -> ``{"catalog_id", "items": {id: properties}}``.
- ``GET /log`` entries carry each request's ``headers`` (names lowercased, credentials cut to
  their scheme), the ``request_id`` of the answer, and its ``body`` when the config flag
  ``log_request_bodies`` is on. ``datocms_async_single_destroy`` (true default, as the API):
  ``DELETE /items/<id>`` answers 202 + a job; false plays a synchronous 200.
- Config flags (``POST /config``) for these operations: ``datocms_unknown_collection``
  ("reject_422" default | "count_failed"), ``datocms_async_upload_update`` (false default),
  ``datocms_item_refusal`` ("count_failed" default | "reject_422": a bulk request holding an
  id the operation would fail, a stage its workflow lacks or a scripted failure, is refused
  whole with 422 and that id's code), ``datocms_job_seconds_by_action`` (``{"publish": 400}``:
  that action's jobs take that long, e.g. longer than the worker's job deadline);
  ``datocms_max_items`` caps move-to-stage, ``datocms_max_uploads`` bulk tag and
  set-upload-collection; the ``bloomreach_*`` caps and variants apply to bulk update and
  partial update as to bulk-delete, under one rate limit per project/catalog.
- ``POST /bloomreach/fields``: ``{"catalog_id", "fields": [str] | null}``: the properties the
  catalog defines (null: any, the default); others fail per item ``errors: {"properties":
  ["Fields ['x'] are not properly defined."]}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from worker import exactjson
from worker.emulator.config import apply_updates
from worker.emulator.datocms import Action, RecordStatus
from worker.emulator.faults import Fault

if TYPE_CHECKING:
    from worker.emulator.server import Emulator

PREFIX = "/_emulator"
FAULTS_HELP = """
- Faults (POST /faults, each hits the next count matching requests, then is gone):
  {"kind": "status" | "slow" | "drop" | "job_failure", "count": 1, "api": "any" | "datocms"
  | "bloomreach", "path_contains": str | null, "status": 503, "delay": 0.0, "headers": {...}
  | null, "body": JSON | null}; status answers that status (with headers and body), slow
  waits delay seconds first, drop closes the connection unanswered, job_failure fails the
  next DatoCMS job (body: its payload). GET /faults lists those pending.
"""
HELP = (__doc__ or "").split("\n\n", 1)[1] + FAULTS_HELP
"""The admin API for ``bulkops emulator --help`` (and the README)."""
_FAULT = TypeAdapter(Fault)
_SECRET_FIELDS = {"datocms_tokens", "bloomreach_secret"}


class SeedRequest(BaseModel):
    environment: str | None = None
    records: list[str] = []
    status: RecordStatus | None = "draft"  # None: a model without drafts (meta.status null)
    stage: str | None = None
    workflow: str | None = None
    uploads: list[str] = []
    in_use: bool = False
    tags: list[str] = []
    upload_collection: str | None = None
    missing: list[str] = []


class StagesRequest(BaseModel):
    environment: str | None = None
    workflow: str | None = None
    stages: list[str] | None


class CollectionsRequest(BaseModel):
    environment: str | None = None
    ids: list[str] | None


class CatalogItem(BaseModel):
    item_id: str
    properties: dict[str, Any] = {}


class CatalogItemsRequest(BaseModel):
    catalog_id: str
    items: list[CatalogItem]


class FieldsRequest(BaseModel):
    catalog_id: str
    fields: list[str] | None


class FailureRequest(BaseModel):
    ids: list[str]
    action: Action
    code: str


class ItemErrorRequest(BaseModel):
    catalog_id: str
    item_ids: list[str]
    message: str


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=exactjson.dumps(body), content_type="application/json")


async def _body(request: web.Request) -> Any:
    try:
        return exactjson.loads(await request.read() or b"{}")
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
            web.post(f"{PREFIX}/datocms/stages", self.stages),
            web.post(f"{PREFIX}/datocms/upload-collections", self.collections),
            web.get(f"{PREFIX}/datocms/records/{{id}}/stage", self.record_stage),
            web.get(f"{PREFIX}/datocms/uploads/{{id}}/meta", self.upload_meta),
            web.post(f"{PREFIX}/bloomreach/items", self.seed_items),
            web.get(f"{PREFIX}/bloomreach/items/{{catalog_id}}", self.catalog_items),
            web.post(f"{PREFIX}/bloomreach/fields", self.fields),
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
        dato.seed_records(seed.records, seed.environment, seed.status, seed.stage, seed.workflow)
        dato.seed_uploads(
            seed.uploads, seed.environment, seed.in_use, seed.tags, seed.upload_collection
        )
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

    # -- stages, tags, collections, catalog items ------------------------------------------
    async def stages(self, request: web.Request) -> web.Response:
        try:
            body = StagesRequest.model_validate(await _body(request))
        except ValidationError as error:
            return _invalid(error)
        environment = self.emu.datocms.normalize_env(body.environment)
        self.emu.datocms.meta.set_stages(environment, body.workflow, body.stages)
        return _json({"ok": True})

    async def collections(self, request: web.Request) -> web.Response:
        try:
            body = CollectionsRequest.model_validate(await _body(request))
        except ValidationError as error:
            return _invalid(error)
        environment = self.emu.datocms.normalize_env(body.environment)
        self.emu.datocms.meta.set_collections(environment, body.ids)
        return _json({"ok": True})

    async def record_stage(self, request: web.Request) -> web.Response:
        record_id, dato = request.match_info["id"], self.emu.datocms
        exists = dato.record_status(record_id, request.query.get("environment")) is not None
        environment = dato.normalize_env(request.query.get("environment"))
        stage = dato.meta.stage(environment, record_id)
        workflow = dato.meta.workflow(environment, record_id)
        body = {"id": record_id, "exists": exists, "stage": stage, "workflow": workflow}
        return _json(body)

    async def upload_meta(self, request: web.Request) -> web.Response:
        upload_id, dato = request.match_info["id"], self.emu.datocms
        exists = dato.upload_exists(upload_id, request.query.get("environment"))
        environment = dato.normalize_env(request.query.get("environment"))
        tags = dato.meta.tags(environment, upload_id)
        collection = dato.meta.collection(environment, upload_id)
        body = {"id": upload_id, "exists": exists, "tags": tags, "upload_collection": collection}
        return _json(body)

    async def seed_items(self, request: web.Request) -> web.Response:
        try:
            body = CatalogItemsRequest.model_validate(await _body(request))
        except ValidationError as error:
            return _invalid(error)
        items = {item.item_id: item.properties for item in body.items}
        self.emu.bloomreach.catalog.seed(body.catalog_id, items)
        return _json({"ok": True})

    async def catalog_items(self, request: web.Request) -> web.Response:
        catalog_id = request.match_info["catalog_id"]
        items = self.emu.bloomreach.catalog.items(catalog_id)
        return _json({"catalog_id": catalog_id, "items": items})

    async def fields(self, request: web.Request) -> web.Response:
        try:
            body = FieldsRequest.model_validate(await _body(request))
        except ValidationError as error:
            return _invalid(error)
        self.emu.bloomreach.catalog.set_fields(body.catalog_id, body.fields)
        return _json({"ok": True})
