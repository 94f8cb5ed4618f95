"""The parameters of the DatoCMS bulk operations that carry one, read from ``data``.

Shapes from the CMA reference (HTTP examples) and ``datocms/js-rest-api-clients``:
- move-to-stage: ``data.attributes.stage`` (string, required);
- bulk tag: ``data.attributes.tags`` (list of strings, required; added to each upload's);
- set-upload-collection: ``data.relationships.upload_collection.data`` (required), either
  ``{"type": "upload_collection", "id": "..."}`` or ``null`` (out of any collection).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.emulator.jsonapi import invalid

MISSING = object()


def _member(value: object, name: str) -> Any:
    return value.get(name, MISSING) if isinstance(value, dict) else MISSING


def stage_param(data: dict[str, Any]) -> str:
    stage = _member(_member(data, "attributes"), "stage")
    if not isinstance(stage, str) or not stage:
        raise invalid("attributes.stage", "must be a non-empty string")
    return stage


def tags_param(data: dict[str, Any]) -> list[str]:
    tags = _member(_member(data, "attributes"), "tags")
    if not isinstance(tags, list) or not all(isinstance(tag, str) and tag for tag in tags):
        raise invalid("attributes.tags", "must be a list of non-empty strings")
    return list(dict.fromkeys(tags))


def collection_param(data: dict[str, Any]) -> str | None:
    """The collection id, or None to take the uploads out of their collection."""
    linkage = _member(_member(_member(data, "relationships"), "upload_collection"), "data")
    if linkage is None:
        return None
    some_id = _member(linkage, "id")
    if _member(linkage, "type") != "upload_collection" or not isinstance(some_id, str):
        raise invalid(
            "relationships.upload_collection.data",
            'must be null or {"type": "upload_collection", "id": "..."}',
        )
    return some_id


def no_param(data: dict[str, Any]) -> None:
    return None


ParamReader = Callable[[dict[str, Any]], Any]
PARAMS: dict[str, ParamReader] = {
    "move_to_stage": stage_param,
    "upload_tag": tags_param,
    "upload_set_collection": collection_param,
}


def reader_for(action: str) -> ParamReader:
    return PARAMS.get(action, no_param)
