"""The DatoCMS operations that change a field (stage, tags, collection): what their bulk body
adds from ``params``, how a read-back record shows the change, and the single-record update
that tells an item's precise error.

A record's read-back state is JSON text here (the adapter compares strings elsewhere):
``meta.stage``, ``attributes.tags`` or the ``upload_collection`` id.

Tags: the single-record ``PUT /uploads/<id>`` REPLACES an upload's tags, while the bulk tag
endpoint adds. So the single-record body is the tags the read-back showed plus the asked
ones: the same result the bulk operation would have had (a tag written by someone else
between the read-back and this call would be lost; the window is one request long).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

Params = Mapping[str, Any]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loaded(state: str | None) -> Any:
    return None if state is None else orjson.loads(state)


def _linkage(params: Params) -> dict[str, str] | None:
    collection = params.get("upload_collection")
    return None if collection is None else {"type": "upload_collection", "id": collection}


def _section(record: dict[str, Any], name: str) -> dict[str, Any]:
    value = record.get(name)
    return value if isinstance(value, dict) else {}


# -- move to stage ---------------------------------------------------------------------------


def stage_extra(params: Params) -> dict[str, Any]:
    return {"attributes": {"stage": params["stage"]}}


def stage_state(record: dict[str, Any]) -> str:
    return _json(_section(record, "meta").get("stage"))


def stage_done(state: str | None, params: Params) -> bool:
    return state is not None and _loaded(state) == params["stage"]


def stage_single(item_id: str, params: Params, state: str | None) -> dict[str, Any]:
    """The record update that moves one record (its answer is the precise error)."""
    return {"data": {"type": "item", "id": item_id, "meta": {"stage": params["stage"]}}}


# -- tags ------------------------------------------------------------------------------------


def tags_extra(params: Params) -> dict[str, Any]:
    return {"attributes": {"tags": list(params["tags"])}}


def tags_state(record: dict[str, Any]) -> str:
    tags = _section(record, "attributes").get("tags")
    return _json(tags if isinstance(tags, list) else [])


def tags_done(state: str | None, params: Params) -> bool:
    return state is not None and set(params["tags"]) <= set(_loaded(state))


def tags_single(item_id: str, params: Params, state: str | None) -> dict[str, Any]:
    """The upload update with the tags it has plus the asked ones (the update replaces)."""
    existing = _loaded(state) or []
    tags = list(dict.fromkeys([*existing, *params["tags"]]))
    return {"data": {"type": "upload", "id": item_id, "attributes": {"tags": tags}}}


# -- upload collection -----------------------------------------------------------------------


def collection_extra(params: Params) -> dict[str, Any]:
    return {"relationships": {"upload_collection": {"data": _linkage(params)}}}


def collection_state(record: dict[str, Any]) -> str:
    linked = _section(_section(record, "relationships"), "upload_collection").get("data")
    return _json(linked.get("id") if isinstance(linked, dict) else None)


def collection_done(state: str | None, params: Params) -> bool:
    return state is not None and _loaded(state) == params.get("upload_collection")


def collection_single(item_id: str, params: Params, state: str | None) -> dict[str, Any]:
    linkage = {"upload_collection": {"data": _linkage(params)}}
    return {"data": {"type": "upload", "id": item_id, "relationships": linkage}}
