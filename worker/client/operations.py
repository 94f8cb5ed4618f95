"""The operations of the wire contract, as a client sees them: which API, which scope field,
whether messages carry ``ids`` or ``items``, and what ``params`` they take.

The client checks a job against this table before anything is published. It is the
contract's table (``CONTRACT.md``, "Request message"), not the worker's: a worker may not
implement every operation yet, and answers those it does not know ``rejected``
(``unknown_operation``). ``tests/unit/test_client_operations.py`` keeps the two in step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

ApiKind = Literal["datocms", "bloomreach"]
ParamsCheck = Callable[[Mapping[str, Any]], str | None]

_ENVIRONMENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_CATALOG = re.compile(r"[^\x00-\x1f\x7f/]{1,256}")


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """One operation of the contract."""

    name: str
    api: ApiKind
    carries: Literal["ids", "items"] = "ids"
    params: ParamsCheck | None = None  # None: the operation takes no params

    @property
    def scope_field(self) -> Literal["environment", "catalog_id"]:
        return "environment" if self.api == "datocms" else "catalog_id"

    @property
    def scope_required(self) -> bool:
        return self.api == "bloomreach"


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


CONTRACT_OPERATIONS: dict[str, OperationSpec] = {
    spec.name: spec
    for spec in (
        OperationSpec("datocms.items.publish", "datocms"),
        OperationSpec("datocms.items.unpublish", "datocms"),
        OperationSpec("datocms.items.destroy", "datocms"),
        OperationSpec("datocms.uploads.destroy", "datocms"),
        OperationSpec("bloomreach.catalog_items.delete", "bloomreach"),
        OperationSpec("datocms.items.move_to_stage", "datocms", params=_stage),
        OperationSpec("datocms.uploads.tag", "datocms", params=_tags),
        OperationSpec("datocms.uploads.set_collection", "datocms", params=_collection),
        OperationSpec("bloomreach.catalog_items.upsert", "bloomreach", carries="items"),
        OperationSpec("bloomreach.catalog_items.update", "bloomreach", carries="items"),
    )
}


def scope_problem(value: str, field: Literal["environment", "catalog_id"]) -> str | None:
    """Why ``value`` cannot be the scope ``field`` (the worker's rules), or None."""
    if field == "environment" and not _ENVIRONMENT.fullmatch(value):
        return "environment must be 1-64 of a-z, 0-9, '_' and '-'"
    if field == "catalog_id" and (not _CATALOG.fullmatch(value) or value in (".", "..")):
        return "catalog_id must be 1-256 characters, no '/' or control characters, not '.' or '..'"
    return None
