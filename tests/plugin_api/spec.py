"""What the worker knows of the search index: its scope, one batch operation, its limits."""

from __future__ import annotations

import re

from tests.plugin_api.target import KIND, SearchTarget
from worker.apis.base import ApiSpec, BatchKey, Operation, RateScope, ScopeField

_INDEX = re.compile(r"[a-z][a-z0-9-]{0,31}")
DELETE = "searchidx.docs.delete"


def _index(value: str) -> str | None:
    return None if _INDEX.fullmatch(value) else "index must be 1-32 of a-z, 0-9 and '-'"


def rate_scope(key: BatchKey) -> RateScope:
    return (KIND, key.target)


SCOPE = ScopeField("index", _index, "search index (required for the search index)")

SPEC = ApiSpec(
    kind=KIND,
    scope=SCOPE,
    title="Search index",
    target=SearchTarget,
    operations=(
        Operation(name=DELETE, api=KIND, scope_field=SCOPE.name, scope_required=True, max_items=50),
    ),
    rate_scope=rate_scope,
    adapter_module="tests.plugin_api.adapter",
    known_codes=frozenset({"DOC_LOCKED"}),
)
