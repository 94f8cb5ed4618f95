"""The DatoCMS wire format: bulk bodies, job results, read-back answers and error bodies.

Pure: no I/O here (the adapter sends and awaits).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from worker.apis.datocms.operations import Action
from worker.errors import ApiError, ParsedError, http_code


def parse_error(body: Any) -> ParsedError | None:
    """(code, transient, details) of the first JSON:API error in a DatoCMS body."""
    try:
        first = body["data"][0]["attributes"]
        code = str(first["code"])
    except (KeyError, IndexError, TypeError):
        return None
    details = orjson.dumps(first.get("details") or {}).decode()[:500]
    return ParsedError(code, bool(first.get("transient")), details)


# Statuses of a refusal that is about the request itself, never about some of its items:
# its shape (400), credentials (401, 403), method (405), size or pace (413, 429).
_WHOLE_REQUEST = frozenset({400, 401, 403, 405, 413, 429})


def item_refusal(error: ApiError) -> bool:
    """Whether a bulk request (or its job) refused as a whole may have been refused because
    of some of its items (absent ids, a stage one model's workflow lacks, a locked record):
    a permanent 4xx that is not about the request's shape, credentials or limits. The
    adapter isolates those items and sends the rest (``isolation``)."""
    status = error.status
    return (
        not error.retryable
        and status is not None
        and 400 <= status < 500
        and status not in _WHOLE_REQUEST
    )


def bulk_body(action: Action, ids: list[str], params: Mapping[str, Any] | None = None) -> bytes:
    members = [{"type": action.resource, "id": item_id} for item_id in ids]
    relationships: dict[str, Any] = {action.relationship: {"data": members}}
    data: dict[str, Any] = {"type": action.op_type}
    if action.bulk_extra is not None:
        extra = action.bulk_extra(params or {})
        if "attributes" in extra:
            data["attributes"] = extra["attributes"]
        relationships.update(extra.get("relationships", {}))
    data["relationships"] = relationships
    return orjson.dumps({"data": data})


def is_done(action: Action, state: str | None, params: Mapping[str, Any] | None = None) -> bool:
    """Whether a record in read-back ``state`` (None: absent) shows the operation applied."""
    if action.done is not None:
        return action.done(state, params or {})
    if action.done_when is None:
        return state is None
    return state == action.done_when


def read_back_states(
    body: Any, state_of: Callable[[dict[str, Any]], str] | None = None
) -> dict[str, str]:
    """id -> meta.status from a list answer. Records of models without drafts have
    ``meta.status: null``: published is their only state. Uploads have no status: "present".
    ``state_of``: the state as an operation with params reads it (see ``changes``)."""
    states: dict[str, str] = {}
    for record in body.get("data", []) if isinstance(body, dict) else []:
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            meta = record.get("meta")
            if state_of is not None:
                states[record["id"]] = state_of(record)
                continue
            if record.get("type") == "item" and isinstance(meta, dict):
                states[record["id"]] = str(meta.get("status") or "published")
            else:
                states[record["id"]] = "present"
    return states


def job_of(response: httpx.Response) -> str | None:
    """The job id when the answer is ``202`` + ``{"data": {"type": "job", "id"}}``, else None.

    The async-jobs page warns that any endpoint may turn asynchronous (``DELETE /items/<id>``
    already has): such an answer says nothing about the outcome, its job result does."""
    if response.status_code != 202:
        return None
    try:
        data = orjson.loads(response.content)["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if isinstance(data, dict) and data.get("type") == "job" and data.get("id") is not None:
        return str(data["id"])
    return None


@dataclass(frozen=True, slots=True)
class JobResult:
    status: int
    successful: int
    failed: int
    error: ApiError | None
    payload: Any = None  # what the operation would have answered synchronously


def parse_job_result(body: Any) -> JobResult:
    """Read ``GET /job-results/<id>``; a non-2xx status carries a JSON:API error payload."""
    attributes = body["data"]["attributes"]
    status = int(attributes["status"])
    payload = attributes.get("payload") or {}
    if 200 <= status < 300:
        meta = (payload.get("meta") if isinstance(payload, dict) else None) or {}
        successful, failed = int(meta.get("successful", 0)), int(meta.get("failed", 0))
        return JobResult(status, successful, failed, None, payload)
    parsed = parse_error(payload)
    code, transient, details = parsed or (http_code(status), False, "")
    retryable = transient or status >= 500 or status == 429
    error = ApiError(code, f"job status {status}: {code} {details}", retryable, status)
    return JobResult(status, 0, 0, error)


def json_or_none(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
