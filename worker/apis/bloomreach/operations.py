"""The Bloomreach operations: how each maps onto the catalog API (one ``Action`` row each)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from worker import exactjson
from worker.apis.base import ItemRule, Operation, Payload, ScopeField

API = "bloomreach"
DELETE = "bloomreach.catalog_items.delete"
UPSERT = "bloomreach.catalog_items.upsert"
UPDATE = "bloomreach.catalog_items.update"
# An item's properties at most: a request of one item must stay under the 10,000,000-byte body
# cap with its id (at most 1,024 characters, escaped), "upsert" and the JSON around them.
MAX_PROPERTIES_BYTES = 10_000_000 - 8_192


@dataclass(frozen=True, slots=True)
class Action:
    """How one operation maps onto the catalog API."""

    operation: str
    path: str  # under /data/v2/projects/{project_id}/catalogs/{catalog_id}/
    endpoint: str  # metrics label
    # The HTTP method, for operations with items; None: bulk-delete (the target's form).
    method: str | None = None
    upsert_flag: bool = False  # whether each element carries "upsert" (partial update)

    def element(self, item_id: str, payload: Payload | None) -> dict[str, Any]:
        """One element of this operation's request body."""
        data = payload or {}
        element: dict[str, Any] = {"item_id": item_id, "properties": data.get("properties", {})}
        if self.upsert_flag:
            element["upsert"] = data.get("upsert", False)
        return element


ACTIONS: dict[str, Action] = {
    DELETE: Action(operation=DELETE, path="items/bulk-delete", endpoint="catalog_bulk_delete"),
    UPSERT: Action(operation=UPSERT, path="items", endpoint="catalog_items_upsert", method="PUT"),
    UPDATE: Action(
        operation=UPDATE,
        path="items/partial-update",
        endpoint="catalog_items_partial_update",
        method="POST",
        upsert_flag=True,
    ),
}


def _item_rule(allowed: frozenset[str]) -> ItemRule:
    def problem(data: Mapping[str, Any]) -> str | None:
        extra = sorted(set(data) - allowed)
        if extra:
            return f"unknown field(s) {', '.join(map(repr, extra))}"
        if "properties" not in data:
            return "'properties' is missing"
        if not isinstance(data["properties"], dict):
            return "'properties' must be a JSON object"
        try:  # as the request body will carry them
            size = len(exactjson.dumps(data["properties"]))
        except (orjson.JSONEncodeError, TypeError):
            return "'properties' cannot be sent as JSON (nested too deep)"
        if size > MAX_PROPERTIES_BYTES:
            return f"'properties' are {size:,} bytes: one item must fit a 10,000,000-byte request"
        if "upsert" in data and not isinstance(data["upsert"], bool):
            return "'upsert' must be true or false"
        return None

    return problem


def id_problem(value: str) -> str | None:
    if "/" in value:
        return "Bloomreach item ids containing '/' cannot be used through the API"
    return None


_CATALOG = re.compile(r"[^\x00-\x1f\x7f/]{1,256}")


def _catalog(value: str) -> str | None:
    # '.' and '..' are path segments: in the URL they would name another resource.
    if not _CATALOG.fullmatch(value) or value in (".", ".."):
        return (
            "catalog_id must be 1-256 characters, no '/' or control characters, and not '.' or '..'"
        )
    return None


SCOPE = ScopeField("catalog_id", _catalog, "Bloomreach catalog (required for Bloomreach)")


def _operation(name: str, **fields: Any) -> Operation:
    return Operation(
        name=name,
        api=API,
        scope_field=SCOPE.name,
        scope_required=True,
        max_items=10_000,
        # 10 MB, read as the smaller of the two meanings so no request is refused for size.
        max_body_bytes=10_000_000,
        id_rule=id_problem,
        **fields,
    )


OPERATIONS: tuple[Operation, ...] = (
    _operation(DELETE),
    _operation(UPSERT, carries="items", item_rule=_item_rule(frozenset({"properties"}))),
    _operation(UPDATE, carries="items", item_rule=_item_rule(frozenset({"properties", "upsert"}))),
)
