"""The Bloomreach operations, and the contract rows not carried out yet."""

from __future__ import annotations

from typing import Any

from worker.apis.base import Operation

API = "bloomreach"
DELETE = "bloomreach.catalog_items.delete"


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


OPERATIONS: tuple[Operation, ...] = (
    _operation(DELETE),
    # Contract rows the worker does not carry out yet (answered ``unknown_operation``).
    _operation("bloomreach.catalog_items.upsert", carries="items", executed=False),
    _operation("bloomreach.catalog_items.update", carries="items", executed=False),
)
