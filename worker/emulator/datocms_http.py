"""DatoCMS CMA over HTTP: bulk jobs, job results, read-back and single-record endpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from worker.emulator.datocms import Action, DatoState
from worker.emulator.datocms_params import reader_for
from worker.emulator.faults import FaultBook
from worker.emulator.jsonapi import (
    REQUEST_CONTENT_TYPES,
    BodyError,
    default_error_body,
    error_response,
    item_json,
    json_response,
    not_found,
)
from worker.emulator.jsonapi import invalid as _invalid
from worker.emulator.log import entry_of

MAX_PAGE_LIMIT = 500
DEFAULT_PAGE_LIMIT = 30
VERSIONS = ("current", "published")  # ``version`` of GET /items; "current" by default


@dataclass(frozen=True, slots=True)
class BulkOp:
    type: str
    relationship: str
    item_type: str
    action: Action


BULK_OPS: dict[str, BulkOp] = {
    "/items/bulk/publish": BulkOp("item_bulk_publish_operation", "items", "item", "publish"),
    "/items/bulk/unpublish": BulkOp("item_bulk_unpublish_operation", "items", "item", "unpublish"),
    "/items/bulk/destroy": BulkOp("item_bulk_destroy_operation", "items", "item", "destroy"),
    "/uploads/bulk/destroy": BulkOp(
        "upload_bulk_destroy_operation", "uploads", "upload", "upload_destroy"
    ),
    "/items/bulk/move-to-stage": BulkOp(
        "item_bulk_move_to_stage_operation", "items", "item", "move_to_stage"
    ),
    "/uploads/bulk/tag": BulkOp("upload_bulk_tag_operation", "uploads", "upload", "upload_tag"),
    "/uploads/bulk/set-upload-collection": BulkOp(
        "upload_bulk_set_upload_collection_operation", "uploads", "upload", "upload_set_collection"
    ),
}


def header_environment(request: web.Request) -> str | None:
    return request.headers.get("X-Environment") or None


def bulk_request(raw: bytes, op: BulkOp) -> tuple[list[str], Any]:
    """The ids and the parameter (stage, tags, collection; else None) of a bulk body, or
    BodyError when its shape is wrong."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BodyError(400, "INVALID_FORMAT", {"message": "body is not valid JSON"}) from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or data.get("type") != op.type:
        raise _invalid("data.type", f"must be {op.type}")
    relationships = data.get("relationships")
    related = relationships.get(op.relationship) if isinstance(relationships, dict) else None
    linkage = related.get("data") if isinstance(related, dict) else None
    if not isinstance(linkage, list) or not linkage:
        raise _invalid(f"relationships.{op.relationship}.data", "must be a non-empty list")
    ids = [_linkage_id(element, op) for element in linkage]
    return ids, reader_for(op.action)(data)


def _linkage_id(element: object, op: BulkOp) -> str:
    if not isinstance(element, dict) or element.get("type") != op.item_type:
        raise _invalid(f"relationships.{op.relationship}.data", f"type must be {op.item_type}")
    some_id = element.get("id")
    if not isinstance(some_id, str) or not some_id:
        raise _invalid(f"relationships.{op.relationship}.data", "id must be a non-empty string")
    return some_id


def upload_json(
    upload_id: str, tags: list[str] | None = None, collection: str | None = None
) -> dict[str, Any]:
    linkage = None if collection is None else {"type": "upload_collection", "id": collection}
    return {
        "type": "upload",
        "id": upload_id,
        "attributes": {"filename": f"{upload_id}.bin", "tags": tags or []},
        "relationships": {"upload_collection": {"data": linkage}},
    }


def page_window(query: Any) -> tuple[int, int]:
    """(offset, limit) from page[offset] / page[limit], or BodyError."""
    try:
        limit = int(query.get("page[limit]", DEFAULT_PAGE_LIMIT))
        offset = int(query.get("page[offset]", 0))
    except ValueError:
        raise _invalid("page", "must be integers") from None
    if not 1 <= limit <= MAX_PAGE_LIMIT or offset < 0:
        raise _invalid("page[limit]", f"must be between 1 and {MAX_PAGE_LIMIT}")
    return offset, limit


class DatoHttp:
    def __init__(self, state: DatoState, faults: FaultBook) -> None:
        self.state = state
        self.faults = faults

    def routes(self) -> list[web.RouteDef]:
        bulk = [web.post(path, self.bulk) for path in BULK_OPS]
        return [
            *bulk,
            web.get("/job-results/{job_id}", self.job_result),
            web.get("/items", self.list_items),
            web.get("/uploads", self.list_uploads),
            web.put("/items/{id}/publish", self.publish_one),
            web.put("/items/{id}/unpublish", self.unpublish_one),
            web.delete("/items/{id}", self.destroy_one),
            web.delete("/uploads/{id}", self.destroy_upload),
        ]

    # -- checks shared by every endpoint -------------------------------------------------
    def gate(self, request: web.Request, *, post: bool = False) -> web.Response | None:
        """Refuse bad credentials, version, content type or environment; else settle due jobs."""
        config = self.state.config
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in config.datocms_tokens:
            return error_response(401, "INVALID_AUTHORIZATION_HEADER")
        if request.headers.get("X-Api-Version") != "3":
            return error_response(400, "INVALID_API_VERSION", {"expected": "3"})
        if post and request.content_type not in REQUEST_CONTENT_TYPES:
            expected = " or ".join(REQUEST_CONTENT_TYPES)
            return error_response(415, "INVALID_CONTENT_TYPE", {"expected": expected})
        environment = self.environment(request)
        known = config.datocms_environments
        if environment is not None and known is not None and environment not in known:
            return error_response(404, "NOT_FOUND", {"environment": environment})
        self.state.settle()
        return None

    def environment(self, request: web.Request) -> str | None:
        return self.state.normalize_env(header_environment(request))

    # -- bulk -------------------------------------------------------------------------------
    async def bulk(self, request: web.Request) -> web.Response:
        op = BULK_OPS[request.path]
        refused = self.gate(request, post=True)
        if refused is not None:
            return refused
        try:
            ids, params = bulk_request(await request.read(), op)
        except BodyError as error:
            return error.response()
        entry_of(request).items = len(ids)
        return self._accept_bulk(request, op, ids, params)

    def _accept_bulk(
        self, request: web.Request, op: BulkOp, ids: list[str], params: Any
    ) -> web.Response:
        config = self.state.config
        limit = config.datocms_max_uploads if op.item_type == "upload" else config.datocms_max_items
        if limit is not None and len(ids) > limit:
            field = f"relationships.{op.relationship}.data"
            details = {"field": field, "code": "VALIDATION_LENGTH", "max": limit}
            return error_response(422, "INVALID_FIELD", details)
        environment = self.environment(request)
        refused = (
            self._refuse_unknown(op, environment, ids)
            or self._refuse_collection(op, environment, params)
            or self._refuse_items(op, environment, ids, params)
        )
        if refused is not None:
            return refused
        failure = self._job_failure(request)
        job = self.state.create_job(op.action, environment, ids, failure, params=params)
        entry_of(request).job_id = job.id
        return json_response(202, {"data": {"type": "job", "id": job.id}})

    def _refuse_unknown(
        self, op: BulkOp, environment: str | None, ids: list[str]
    ) -> web.Response | None:
        mode = self.state.config.datocms_unknown_ids
        if mode == "count_failed":
            return None
        if all(self.state.exists(op.action, environment, some_id) for some_id in ids):
            return None
        if mode == "reject_404":
            return not_found()
        field = f"relationships.{op.relationship}.data"
        return error_response(422, "INVALID_FIELD", {"field": field, "code": "VALIDATION_INVALID"})

    def _refuse_items(
        self, op: BulkOp, environment: str | None, ids: list[str], params: Any
    ) -> web.Response | None:
        """``datocms_item_refusal`` "reject_422": the whole request is refused for the first
        id the operation would fail (its code, the id in the details)."""
        if self.state.config.datocms_item_refusal == "count_failed":
            return None
        for some_id in ids:
            code = self.state.refusal_of(op.action, environment, some_id, params)
            if code is not None:
                field = f"relationships.{op.relationship}.data"
                return error_response(422, code, {"field": field, "id": some_id})
        return None

    def _refuse_collection(
        self, op: BulkOp, environment: str | None, collection: Any
    ) -> web.Response | None:
        """An unknown upload collection: not documented. ``datocms_unknown_collection``
        "reject_422" refuses the request (the collection is one field of the whole request);
        "count_failed" lets the job count every upload as failed."""
        if op.action != "upload_set_collection":
            return None
        mode = self.state.config.datocms_unknown_collection
        if mode == "count_failed" or self.state.meta.collection_exists(environment, collection):
            return None
        field = "relationships.upload_collection.data"
        return error_response(422, "INVALID_FIELD", {"field": field, "code": "VALIDATION_INVALID"})

    def _job_failure(self, request: web.Request) -> tuple[int, Any] | None:
        fault = self.faults.take("datocms", request.path, job=True)
        if fault is None:
            return None
        entry_of(request).fault = fault.kind
        payload = fault.body if fault.body is not None else default_error_body(fault.status)
        return fault.status, payload

    async def job_result(self, request: web.Request) -> web.Response:
        refused = self.gate(request)
        if refused is not None:
            return refused
        job_id = request.match_info["job_id"]
        entry_of(request).job_id = job_id
        result = self.state.job_result(job_id)
        if result is None:
            return not_found()
        return json_response(
            200, {"data": {"type": "job_result", "id": job_id, "attributes": result}}
        )

    # -- read-back --------------------------------------------------------------------------
    async def list_items(self, request: web.Request) -> web.Response:
        refused = self.gate(request)
        if refused is not None:
            return refused
        version = request.query.get("version", "current")
        if version not in VERSIONS:
            return error_response(
                422, "INVALID_FIELD", {"field": "version", "code": "VALIDATION_INCLUSION"}
            )
        environment = self.environment(request)
        wanted = self._wanted_ids(request) or self.state.records_present(environment)
        found = [(i, self.state.record(environment, i)) for i in wanted]
        if version == "published":  # a record never published (or unpublished) has no such
            found = [(i, status) for i, status in found if status != "draft"]
        data = [
            item_json(
                i,
                None if self.state.draftless(environment, i) else status,
                self.state.meta.stage(environment, i),
            )
            for i, status in found
            if status is not None
        ]
        return self._page(request, data)

    async def list_uploads(self, request: web.Request) -> web.Response:
        refused = self.gate(request)
        if refused is not None:
            return refused
        environment = self.environment(request)
        wanted = self._wanted_ids(request) or self.state.uploads_present(environment)
        present = [i for i in wanted if self.state.upload_in_use(environment, i) is not None]
        meta = self.state.meta
        data = [
            upload_json(i, meta.tags(environment, i), meta.collection(environment, i))
            for i in present
        ]
        return self._page(request, data)

    @staticmethod
    def _wanted_ids(request: web.Request) -> list[str]:
        raw = request.query.get("filter[ids]", "")
        return list(dict.fromkeys(part for part in raw.split(",") if part))

    @staticmethod
    def _page(request: web.Request, data: list[dict[str, Any]]) -> web.Response:
        try:
            offset, limit = page_window(request.query)
        except BodyError as error:
            return error.response()
        page = data[offset : offset + limit]
        return json_response(200, {"data": page, "meta": {"total_count": len(data)}})

    # -- single-record ------------------------------------------------------------------------
    async def publish_one(self, request: web.Request) -> web.Response:
        return self._single(request, "publish")

    async def unpublish_one(self, request: web.Request) -> web.Response:
        return self._single(request, "unpublish")

    async def destroy_one(self, request: web.Request) -> web.Response:
        if self.state.config.datocms_async_single_destroy:
            return self._single_job(request, "destroy")
        return self._single(request, "destroy")

    async def destroy_upload(self, request: web.Request) -> web.Response:
        return self._single(request, "upload_destroy")

    def _single_job(self, request: web.Request, action: Action) -> web.Response:
        """The real ``DELETE /items/<id>``: 202 with a job; the job's result tells."""
        refused = self.gate(request)
        if refused is not None:
            return refused
        some_id = request.match_info["id"]
        job = self.state.create_job(action, self.environment(request), [some_id], single=True)
        entry_of(request).job_id = job.id
        return json_response(202, {"data": {"type": "job", "id": job.id}})

    def _single(self, request: web.Request, action: Action) -> web.Response:
        refused = self.gate(request)
        if refused is not None:
            return refused
        some_id = request.match_info["id"]
        environment = self.environment(request)
        before = self.state.record(environment, some_id)
        code = self.state.apply(action, environment, some_id)
        if code == "NOT_FOUND":
            return not_found()
        if code is not None:
            return error_response(422, code, {"id": some_id})
        if action == "upload_destroy":
            return json_response(200, {"data": upload_json(some_id)})
        after = self.state.record(environment, some_id) or before or "draft"
        status = None if self.state.draftless(environment, some_id) else after
        stage = self.state.meta.stage(environment, some_id)
        return json_response(200, {"data": item_json(some_id, status, stage)})
