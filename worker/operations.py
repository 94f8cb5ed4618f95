"""The operations the worker knows: which API, which scope field, how big a batch may get."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ApiKind = Literal["datocms", "bloomreach"]

# DatoCMS record and upload ids are base64url (22 chars) or numeric strings. Anything else
# cannot be a DatoCMS id, and a ',' would corrupt the `filter[ids]=a,b` read-back.
_DATOCMS_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ID_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    api: ApiKind
    scope_field: Literal["environment", "catalog_id"]
    scope_required: bool
    max_items: int
    max_body_bytes: int | None = None

    def id_problem(self, value: object) -> str | None:
        """Why ``value`` cannot be sent as an id of this operation, or None if it can."""
        if not isinstance(value, str) or not value:
            return "id must be a non-empty string"
        if len(value) > MAX_ID_LENGTH:
            return f"id is longer than {MAX_ID_LENGTH} characters"
        if _CONTROL.search(value):
            return "id contains control characters"
        if self.api == "bloomreach" and "/" in value:
            return "Bloomreach item ids containing '/' cannot be used through the API"
        if self.api == "datocms" and not _DATOCMS_ID.fullmatch(value):
            return "DatoCMS ids are 1-64 characters of A-Z, a-z, 0-9, '_' and '-'"
        return None


_DATO = {"api": "datocms", "scope_field": "environment", "scope_required": False, "max_items": 200}

OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("datocms.items.publish", **_DATO),  # type: ignore[arg-type]
        Operation("datocms.items.unpublish", **_DATO),  # type: ignore[arg-type]
        Operation("datocms.items.destroy", **_DATO),  # type: ignore[arg-type]
        Operation("datocms.uploads.destroy", **_DATO),  # type: ignore[arg-type]
        Operation(
            "bloomreach.catalog_items.delete",
            api="bloomreach",
            scope_field="catalog_id",
            scope_required=True,
            max_items=10_000,
            # 10 MB, read as the smaller of the two meanings so no request is refused for size.
            max_body_bytes=10_000_000,
        ),
    )
}
