"""DatoCMS-shaped JSON:API answers: error bodies and JSON responses."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web

JSONAPI = "application/vnd.api+json"
# The API takes request bodies of either type (the reference pages' HTTP examples send
# JSONAPI, the official client ``application/json``), and answers ``application/json`` (the
# reference pages' answers; the official client treats any answer whose Content-Type lacks
# ``application/json`` as an error: retried for GET, raised otherwise).
JSON = "application/json"
REQUEST_CONTENT_TYPES = (JSON, JSONAPI)
DOC_URL = "https://www.datocms.com/docs/content-management-api/errors#"

_CODE_BY_STATUS = {
    400: "INVALID_FORMAT",
    401: "INVALID_AUTHORIZATION_HEADER",
    403: "INSUFFICIENT_PERMISSIONS",
    404: "NOT_FOUND",
    409: "STALE_ITEM_VERSION",
    422: "INVALID_FIELD",
    429: "RATE_LIMIT_EXCEEDED",
    503: "SERVICE_UNAVAILABLE",
}


def code_for_status(status: int) -> str:
    if status in _CODE_BY_STATUS:
        return _CODE_BY_STATUS[status]
    return "SERVICE_UNAVAILABLE" if status >= 500 else "INVALID_FIELD"


def error_body(
    code: str, details: dict[str, Any] | None = None, *, transient: bool = False
) -> dict[str, Any]:
    """The CMA's error document: ``api_error`` entities in ``data`` (``id``, ``type``,
    ``attributes.code``, ``.details``, ``.doc_url``, ``.transient`` when true), the shape of
    ``ErrorEntity`` in ``rest-client-utils/src/errors.ts``."""
    attributes: dict[str, Any] = {"code": code, "details": details or {}}
    if transient:
        attributes["transient"] = True
    attributes["doc_url"] = DOC_URL + code
    return {"data": [{"id": uuid.uuid4().hex[:6], "type": "api_error", "attributes": attributes}]}


def json_response(status: int, body: Any, content_type: str = JSON) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type=content_type)


def error_response(
    status: int, code: str, details: dict[str, Any] | None = None, *, transient: bool = False
) -> web.Response:
    return json_response(status, error_body(code, details, transient=transient))


def default_error_body(status: int) -> dict[str, Any]:
    """A plausible error body for ``status``; 429 and 5xx are transient."""
    return error_body(code_for_status(status), transient=status == 429 or status >= 500)


def item_json(item_id: str, status: str | None, stage: str | None = None) -> dict[str, Any]:
    """A record as the CMA answers it (single-record answers, lists, a destroy job's result):
    the official client reads ``relationships.item_type`` of every record it returns."""
    return {
        "type": "item",
        "id": item_id,
        "attributes": {},
        "relationships": {"item_type": {"data": {"type": "item_type", "id": "emulated"}}},
        "meta": {"status": status, "is_valid": True, "stage": stage},
    }


def not_found() -> web.Response:
    """Identical for a missing record, a running job and a lost job."""
    return error_response(404, "NOT_FOUND")


class BodyError(Exception):
    """A request body the API refuses whole: answered with ``response()``."""

    def __init__(self, status: int, code: str, details: dict[str, Any]) -> None:
        super().__init__(code)
        self.status, self.code, self.details = status, code, details

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.details)


def invalid(field: str, message: str) -> BodyError:
    """422 INVALID_FIELD naming the offending field, as the CMA answers a validation error."""
    return BodyError(
        422, "INVALID_FIELD", {"field": field, "code": "VALIDATION_INVALID", "message": message}
    )
