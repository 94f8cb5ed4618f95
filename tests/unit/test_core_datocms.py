"""DatoCMS pure helpers (worker/datocms.py): request bodies, read-back, job results."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from worker.apis.datocms.adapter import (
    bulk_body,
    is_done,
    job_of,
    parse_job_result,
    read_back_states,
)
from worker.apis.datocms.operations import ACTIONS
from worker.registry import OPERATIONS


@pytest.mark.parametrize(
    ("operation", "op_type", "relationship", "resource"),
    [
        ("datocms.items.publish", "item_bulk_publish_operation", "items", "item"),
        ("datocms.items.unpublish", "item_bulk_unpublish_operation", "items", "item"),
        ("datocms.items.destroy", "item_bulk_destroy_operation", "items", "item"),
        ("datocms.uploads.destroy", "upload_bulk_destroy_operation", "uploads", "upload"),
    ],
)
def test_bulk_body_matches_the_documented_shape(
    operation: str, op_type: str, relationship: str, resource: str
) -> None:
    """{"data": {"type": op, "relationships": {rel: {"data": [{type, id}...]}}}}, ids in order."""
    body = orjson.loads(bulk_body(ACTIONS[operation], ["b", "a"]))
    assert body == {
        "data": {
            "type": op_type,
            "relationships": {
                relationship: {
                    "data": [{"type": resource, "id": "b"}, {"type": resource, "id": "a"}]
                }
            },
        }
    }


def test_every_datocms_operation_has_an_action() -> None:
    """No operation in the catalogue lacks its API mapping."""
    assert {n for n, op in OPERATIONS.items() if op.api == "datocms"} == set(ACTIONS)


@pytest.mark.parametrize(
    ("operation", "state", "done"),
    [
        ("datocms.items.publish", "published", True),
        ("datocms.items.publish", "updated", False),
        ("datocms.items.publish", "draft", False),
        ("datocms.items.publish", None, False),
        ("datocms.items.unpublish", "draft", True),
        ("datocms.items.unpublish", "published", False),
        ("datocms.items.unpublish", None, False),
        ("datocms.items.destroy", None, True),
        ("datocms.items.destroy", "draft", False),
        ("datocms.uploads.destroy", None, True),
        ("datocms.uploads.destroy", "present", False),
    ],
)
def test_is_done_reads_the_state_the_operation_asked_for(
    operation: str, state: str | None, done: bool
) -> None:
    """publish -> published, unpublish -> draft, destroy -> absent."""
    assert is_done(ACTIONS[operation], state) is done


def test_read_back_states_maps_ids_to_meta_status() -> None:
    """Records' meta.status by id; uploads (no status) read as present; junk is skipped."""
    body = {
        "data": [
            {"id": "a", "type": "item", "meta": {"status": "published"}},
            {"id": "b", "type": "item", "meta": {"status": "draft"}},
            {"id": "u", "type": "upload", "attributes": {}},
            {"id": "n", "meta": None},
            {"id": 5, "meta": {"status": "published"}},
            "junk",
        ]
    }
    expected = {"a": "published", "b": "draft", "u": "present", "n": "present"}
    assert read_back_states(body) == expected


@pytest.mark.parametrize("body", [None, [], "x", {}, {"data": []}])
def test_read_back_states_of_empty_or_odd_bodies_is_empty(body: Any) -> None:
    """Nothing readable: every id counts as absent."""
    assert read_back_states(body) == {}


def job(status: int, payload: Any) -> dict[str, Any]:
    return {
        "data": {
            "type": "job_result",
            "id": "4235",
            "attributes": {"status": status, "payload": payload},
        }
    }


def test_parse_job_result_2xx_gives_counts() -> None:
    """status 200: successful and failed counts from payload.meta."""
    result = parse_job_result(job(200, {"data": [], "meta": {"successful": 20, "failed": 3}}))
    assert (result.status, result.successful, result.failed, result.error) == (200, 20, 3, None)


@pytest.mark.parametrize("payload", [None, {}, {"meta": None}, {"meta": {}}])
def test_parse_job_result_2xx_without_counts_reads_zero(payload: Any) -> None:
    """A success without meta counts: nothing failed."""
    result = parse_job_result(job(202, payload))
    assert (result.successful, result.failed, result.error) == (0, 0, None)


def test_parse_job_result_non_2xx_with_error_payload() -> None:
    """status 422 with a JSON:API error: the API's code, permanent."""
    payload = {
        "data": [
            {
                "type": "api_error",
                "attributes": {"code": "INVALID_FIELD", "details": {"field": "x"}},
            }
        ]
    }
    result = parse_job_result(job(422, payload))
    assert result.error is not None
    assert (result.error.code, result.error.retryable, result.error.status) == (
        "INVALID_FIELD",
        False,
        422,
    )
    assert (result.successful, result.failed) == (0, 0)
    assert '"field":"x"' in result.error.message


def test_parse_job_result_transient_error_is_retryable() -> None:
    """transient: true in the job's error payload means retry the batch."""
    payload = {"data": [{"attributes": {"code": "ITEM_LOCKED", "transient": True}}]}
    result = parse_job_result(job(422, payload))
    assert result.error is not None
    assert (result.error.code, result.error.retryable) == ("ITEM_LOCKED", True)


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (404, False)]
)
def test_parse_job_result_non_2xx_without_error_body(status: int, retryable: bool) -> None:
    """No error payload: http_<status>, retryable for 5xx and 429."""
    result = parse_job_result(job(status, None))
    assert result.error is not None
    assert (result.error.code, result.error.retryable) == (f"http_{status}", retryable)


@pytest.mark.parametrize("body", [{}, {"data": {}}, {"data": {"attributes": {}}}])
def test_parse_job_result_without_status_raises_for_the_caller(body: Any) -> None:
    """A body without attributes.status is unreadable (the poller maps it to a retry)."""
    with pytest.raises((KeyError, TypeError, ValueError)):
        parse_job_result(body)


def test_read_back_states_reads_null_status_of_a_draftless_record_as_published() -> None:
    """Models without drafts: meta.status null, and published is their only state."""
    body = {"data": [{"id": "n", "type": "item", "meta": {"status": None}}]}
    assert read_back_states(body) == {"n": "published"}
    assert is_done(ACTIONS["datocms.items.publish"], read_back_states(body)["n"])


@pytest.mark.parametrize(
    ("status", "body", "job"),
    [
        (202, {"data": {"type": "job", "id": "4235"}}, "4235"),
        (202, {"data": {"type": "job", "id": 77}}, "77"),
        (200, {"data": {"type": "job", "id": "1"}}, None),
        (202, {"data": {"type": "item", "id": "1"}}, None),
        (202, {"data": []}, None),
        (202, b"not json", None),
    ],
)
def test_job_of_recognises_only_202_with_a_job(status: int, body: Any, job: str | None) -> None:
    """Any endpoint may answer 202 + a job; nothing else is taken for one."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    assert job_of(httpx.Response(status, content=content)) == job
