"""The Bloomreach operations: how each maps onto the catalog API (one ``Action`` row each),
and the contract rows not carried out yet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.apis.base import Operation

API = "bloomreach"
DELETE = "bloomreach.catalog_items.delete"


@dataclass(frozen=True, slots=True)
class Action:
    """How one operation maps onto the catalog API."""

    operation: str
    path: str  # under /data/v2/projects/{project_id}/catalogs/{catalog_id}/
    endpoint: str  # metrics label


ACTIONS: dict[str, Action] = {
    DELETE: Action(operation=DELETE, path="items/bulk-delete", endpoint="catalog_bulk_delete"),
}


def id_problem(value: str) -> str | None:
    if "/" in value:
        return "Bloomreach item ids containing '/' cannot be used through the API"
    return None


def _operation(name: str, **fields: Any) -> Operation:
    return Operation(
        name=name,
        api=API,
        scope_field="catalog_id",
        scope_required=True,
        max_items=10_000,
        # 10 MB, read as the smaller of the two meanings so no request is refused for size.
        max_body_bytes=10_000_000,
        id_rule=id_problem,
        **fields,
    )


# Contract rows the worker does not carry out yet (answered ``unknown_operation``).
_PLANNED = (
    _operation("bloomreach.catalog_items.upsert", carries="items", executed=False),
    _operation("bloomreach.catalog_items.update", carries="items", executed=False),
)

OPERATIONS: tuple[Operation, ...] = (*(_operation(name) for name in ACTIONS), *_PLANNED)
