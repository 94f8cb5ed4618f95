"""DatoCMS single-record reads and updates: a record's stage, an upload's tags and collection.

The CMA has no single-record "move to stage" endpoint, but a record's update
(``PUT /items/<id>``) takes ``meta.stage`` (the item update schema of
``datocms/js-rest-api-clients`` lists ``meta.stage: string | null``), and an upload's update
(``PUT /uploads/<id>``) takes ``attributes.tags`` and ``relationships.upload_collection``.
Both answer synchronously here with the resource, or with the precise error: 404 NOT_FOUND,
422 INVALID_FIELD (a stage the record's workflow lacks, an unknown collection), or the code
scripted with ``set_failure`` for ``move_to_stage`` / ``upload_tag`` /
``upload_set_collection`` (e.g. ITEM_LOCKED). The upload update "might" answer 202 with a
job, the docs say: ``datocms_async_upload_update`` plays that (202 + a job whose result
carries the upload, or the error's status and payload).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from worker.emulator.datocms_http import DatoHttp, upload_json
from worker.emulator.datocms_params import MISSING, collection_param, tags_param
from worker.emulator.jsonapi import (
    BodyError,
    error_body,
    invalid,
    item_json,
    json_response,
    not_found,
)
from worker.emulator.log import entry_of

STAGE_FIELD = "meta.stage"


def update_data(raw: bytes, kind: str, some_id: str) -> dict[str, Any]:
    """The ``data`` object of an update body for resource ``kind``, or BodyError."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BodyError(400, "INVALID_FORMAT", {"message": "body is not valid JSON"}) from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or data.get("type") != kind:
        raise invalid("data.type", f"must be {kind}")
    if data.get("id", some_id) != some_id:
        raise invalid("data.id", "must match the id in the path")
    return data


def stage_of(data: dict[str, Any]) -> Any:
    """``meta.stage`` when the body sets it, else MISSING."""
    meta = data.get("meta")
    if not isinstance(meta, dict) or "stage" not in meta:
        return MISSING
    stage = meta["stage"]
    if stage is not None and (not isinstance(stage, str) or not stage):
        raise invalid(STAGE_FIELD, "must be null or a non-empty string")
    return stage


Outcome = tuple[int, Any]  # (HTTP status, JSON body): an answer, or a job's result


def refused(code: str, some_id: str, field: str) -> Outcome:
    if code == "NOT_FOUND":
        return 404, error_body("NOT_FOUND")
    details: dict[str, Any] = {"id": some_id}
    if code == "INVALID_FIELD":
        details = {"field": field, "code": "VALIDATION_INVALID"}
    return 422, error_body(code, details)


def refusal(code: str, some_id: str, field: str) -> web.Response:
    return json_response(*refused(code, some_id, field))


class DatoSingleHttp:
    """``GET|PUT /items/<id>`` and ``GET|PUT /uploads/<id>``, over DatoHttp's checks."""

    def __init__(self, dato: DatoHttp) -> None:
        self.dato = dato
        self.state = dato.state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/items/{id}", self.get_item),
            web.put("/items/{id}", self.update_item),
            web.get("/uploads/{id}", self.get_upload),
            web.put("/uploads/{id}", self.update_upload),
        ]

    def _item(self, environment: str | None, item_id: str) -> web.Response:
        status = self.state.record(environment, item_id)
        if status is None:
            return not_found()
        if self.state.draftless(environment, item_id):
            status = None
        stage = self.state.meta.stage(environment, item_id)
        return json_response(200, {"data": item_json(item_id, status, stage)})

    def _upload(self, environment: str | None, upload_id: str) -> web.Response:
        if self.state.upload_in_use(environment, upload_id) is None:
            return not_found()
        meta = self.state.meta
        tags = meta.tags(environment, upload_id)
        collection = meta.collection(environment, upload_id)
        return json_response(200, {"data": upload_json(upload_id, tags, collection)})

    async def get_item(self, request: web.Request) -> web.Response:
        refused = self.dato.gate(request)
        if refused is not None:
            return refused
        return self._item(self.dato.environment(request), request.match_info["id"])

    async def get_upload(self, request: web.Request) -> web.Response:
        refused = self.dato.gate(request)
        if refused is not None:
            return refused
        return self._upload(self.dato.environment(request), request.match_info["id"])

    async def update_item(self, request: web.Request) -> web.Response:
        """Only ``meta.stage`` is played; other attributes are accepted and ignored."""
        refused = self.dato.gate(request, post=True)
        if refused is not None:
            return refused
        item_id, environment = request.match_info["id"], self.dato.environment(request)
        try:
            stage = stage_of(update_data(await request.read(), "item", item_id))
        except BodyError as error:
            return error.response()
        if stage is not MISSING:
            code = self._move(environment, item_id, stage)
            if code is not None:
                return refusal(code, item_id, STAGE_FIELD)
        return self._item(environment, item_id)

    def _move(self, environment: str | None, item_id: str, stage: str | None) -> str | None:
        if stage is not None:
            return self.state.apply("move_to_stage", environment, item_id, stage)
        if self.state.record(environment, item_id) is None:
            return "NOT_FOUND"
        code = self.state.scripted_failure("move_to_stage", item_id)
        if code is None:  # null: out of any stage
            self.state.meta.seed_record(
                environment, item_id, None, self.state.meta.workflow(environment, item_id)
            )
        return code

    async def update_upload(self, request: web.Request) -> web.Response:
        """Synchronous, or 202 + a job whose result carries the upload or the error
        (``datocms_async_upload_update``: the docs say a job "might" be returned)."""
        refused = self.dato.gate(request, post=True)
        if refused is not None:
            return refused
        upload_id, environment = request.match_info["id"], self.dato.environment(request)
        try:
            data = update_data(await request.read(), "upload", upload_id)
            tags = tags_param(data) if _has(data, "attributes", "tags") else None
            has_collection = _has(data, "relationships", "upload_collection")
            collection = collection_param(data) if has_collection else MISSING
        except BodyError as error:
            return error.response()

        def update() -> Outcome:
            return self._update_upload(environment, upload_id, tags, collection)

        if not self.state.config.datocms_async_upload_update:
            return json_response(*update())
        job = self.state.create_job("upload_tag", environment, [upload_id], deferred=update)
        entry_of(request).job_id = job.id
        return json_response(202, {"data": {"type": "job", "id": job.id}})

    def _update_upload(
        self, environment: str | None, upload_id: str, tags: list[str] | None, collection: Any
    ) -> Outcome:
        outcome = self._refuse_upload(environment, upload_id, tags, collection)
        if outcome is not None:
            return outcome
        if tags is not None:
            self.state.meta.replace_tags(environment, upload_id, tags)
        if collection is not MISSING:
            self.state.apply("upload_set_collection", environment, upload_id, collection)
        meta = self.state.meta
        linked = meta.collection(environment, upload_id)
        return 200, {"data": upload_json(upload_id, meta.tags(environment, upload_id), linked)}

    def _refuse_upload(
        self, environment: str | None, upload_id: str, tags: list[str] | None, collection: Any
    ) -> Outcome | None:
        """Check everything before changing anything: the update applies whole or not."""
        if self.state.upload_in_use(environment, upload_id) is None:
            return refused("NOT_FOUND", upload_id, "")
        scripted = self.state.scripted_failure
        if tags is not None and (code := scripted("upload_tag", upload_id)) is not None:
            return refused(code, upload_id, "attributes.tags")
        if collection is MISSING:
            return None
        field = "relationships.upload_collection.data"
        code = scripted("upload_set_collection", upload_id)
        if code is None and not self.state.meta.collection_exists(environment, collection):
            code = "INVALID_FIELD"
        return None if code is None else refused(code, upload_id, field)


def _has(data: dict[str, Any], section: str, name: str) -> bool:
    part = data.get(section)
    return isinstance(part, dict) and name in part
