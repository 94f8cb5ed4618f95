"""The DatoCMS operations: how each maps onto the API.

Adding an ids-only bulk operation is one ``Action`` row (plus its tests): the adapter reads
the row for the bulk request, the job, the read-back and the single-record fallback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.apis.base import Operation, ScopeField
from worker.apis.datocms import changes

API = "datocms"
MAX_ITEMS = 200

# DatoCMS record and upload ids are base64url (22 chars) or numeric strings. Anything else
# cannot be a DatoCMS id, and a ',' would corrupt the `filter[ids]=a,b` read-back.
_DATOCMS_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def id_problem(value: str) -> str | None:
    if not _DATOCMS_ID.fullmatch(value):
        return "DatoCMS ids are 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"
    return None


@dataclass(frozen=True, slots=True)
class Action:
    """How one operation maps onto the DatoCMS API."""

    operation: str
    bulk_path: str
    op_type: str
    resource: str  # "item" or "upload"
    single_method: str
    single_path: str  # with {id}
    done_when: str | None  # read-back status meaning done; None: done when absent
    endpoint: str  # metrics label
    # Operations with params (see ``changes``): what the bulk body adds, the read-back state
    # of a record, whether that state shows the change, and the single-record update's body.
    bulk_extra: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None
    state_of: Callable[[dict[str, Any]], str] | None = None
    done: Callable[[str | None, Mapping[str, Any]], bool] | None = None
    single_body: Callable[[str, Mapping[str, Any], str | None], dict[str, Any]] | None = None

    @property
    def relationship(self) -> str:
        return f"{self.resource}s"


ACTIONS: dict[str, Action] = {
    action.operation: action
    for action in (
        Action(
            operation="datocms.items.publish",
            bulk_path="/items/bulk/publish",
            op_type="item_bulk_publish_operation",
            resource="item",
            single_method="PUT",
            single_path="/items/{id}/publish",
            done_when="published",
            endpoint="items_bulk_publish",
        ),
        Action(
            operation="datocms.items.unpublish",
            bulk_path="/items/bulk/unpublish",
            op_type="item_bulk_unpublish_operation",
            resource="item",
            single_method="PUT",
            single_path="/items/{id}/unpublish",
            done_when="draft",
            endpoint="items_bulk_unpublish",
        ),
        Action(
            operation="datocms.items.destroy",
            bulk_path="/items/bulk/destroy",
            op_type="item_bulk_destroy_operation",
            resource="item",
            single_method="DELETE",
            single_path="/items/{id}",
            done_when=None,
            endpoint="items_bulk_destroy",
        ),
        Action(
            operation="datocms.uploads.destroy",
            bulk_path="/uploads/bulk/destroy",
            op_type="upload_bulk_destroy_operation",
            resource="upload",
            single_method="DELETE",
            single_path="/uploads/{id}",
            done_when=None,
            endpoint="uploads_bulk_destroy",
        ),
        Action(
            operation="datocms.items.move_to_stage",
            bulk_path="/items/bulk/move-to-stage",
            op_type="item_bulk_move_to_stage_operation",
            resource="item",
            # No single-record move: the record update's ``meta.stage`` is it.
            single_method="PUT",
            single_path="/items/{id}",
            done_when=None,
            endpoint="items_bulk_move_to_stage",
            bulk_extra=changes.stage_extra,
            state_of=changes.stage_state,
            done=changes.stage_done,
            single_body=changes.stage_single,
        ),
        Action(
            operation="datocms.uploads.tag",
            bulk_path="/uploads/bulk/tag",
            op_type="upload_bulk_tag_operation",
            resource="upload",
            single_method="PUT",
            single_path="/uploads/{id}",
            done_when=None,
            endpoint="uploads_bulk_tag",
            bulk_extra=changes.tags_extra,
            state_of=changes.tags_state,
            done=changes.tags_done,
            single_body=changes.tags_single,
        ),
        Action(
            operation="datocms.uploads.set_collection",
            bulk_path="/uploads/bulk/set-upload-collection",
            op_type="upload_bulk_set_upload_collection_operation",
            resource="upload",
            single_method="PUT",
            single_path="/uploads/{id}",
            done_when=None,
            endpoint="uploads_bulk_set_upload_collection",
            bulk_extra=changes.collection_extra,
            state_of=changes.collection_state,
            done=changes.collection_done,
            single_body=changes.collection_single,
        ),
    )
}


def _only(params: Mapping[str, Any], key: str) -> str | None:
    extra = sorted(set(params) - {key})
    if key not in params:
        return f"params must have {key!r}"
    if extra:
        return f"params take only {key!r}, not {', '.join(map(repr, extra))}"
    return None


def _stage(params: Mapping[str, Any]) -> str | None:
    problem = _only(params, "stage")
    if problem is None and not (isinstance(params["stage"], str) and params["stage"]):
        problem = "params.stage must be a non-empty string"
    return problem


def _tags(params: Mapping[str, Any]) -> str | None:
    problem = _only(params, "tags")
    if problem is not None:
        return problem
    tags = params["tags"]
    good = isinstance(tags, list) and 1 <= len(tags) <= 100
    if not good or not all(isinstance(t, str) and t for t in tags):
        return "params.tags must be a list of 1 to 100 non-empty strings"
    return None


def _collection(params: Mapping[str, Any]) -> str | None:
    problem = _only(params, "upload_collection")
    value = params.get("upload_collection")
    if problem is None and value is not None and not (isinstance(value, str) and value):
        problem = "params.upload_collection must be an id string or null"
    return problem


_ENVIRONMENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _environment(value: str) -> str | None:
    if not _ENVIRONMENT.fullmatch(value):
        return "environment must be 1-64 of a-z, 0-9, '_' and '-'"
    return None


SCOPE = ScopeField(
    "environment", _environment, "DatoCMS environment (primary if absent)", absent="primary"
)


def _operation(name: str, **fields: Any) -> Operation:
    return Operation(
        name=name,
        api=API,
        scope_field=SCOPE.name,  # optional: the primary environment if absent
        scope_required=False,
        max_items=MAX_ITEMS,  # the uploads' bulk endpoints document none: the items' cap
        id_rule=id_problem,
        **fields,
    )


_PARAMS = {
    "datocms.items.move_to_stage": _stage,
    "datocms.uploads.tag": _tags,
    "datocms.uploads.set_collection": _collection,
}

OPERATIONS: tuple[Operation, ...] = tuple(
    _operation(name, params=_PARAMS.get(name)) for name in ACTIONS
)
