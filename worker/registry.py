"""The catalog: the one place the worker reads facts about the APIs it drives.

Each API area (``worker/apis/<api>``) describes itself in an ``ApiSpec``: its operations
table, target model (with its rates), rate scope rule, documented error codes and the
module of its adapter (built by ``worker.apis.factory``, never imported here: the catalog is
pure). Everything outside those areas asks here: which operations exist, which rate scope a
batch belongs to, which target models settings load, which error codes the metrics label by
name.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping

from worker.apis.base import ApiSpec, BatchKey, Operation, RateScope, ScopeField, TargetBase
from worker.apis.bloomreach.spec import SPEC as BLOOMREACH
from worker.apis.datocms.spec import SPEC as DATOCMS
from worker.errors import ErrorCode

AREAS_ENV = "BULKOPS_API_AREAS"
"""More API areas to load, comma-separated packages each with a ``spec`` module holding its
``SPEC`` (an API added without editing this file: see the README, "Adding an API")."""


def _added_areas() -> tuple[ApiSpec, ...]:
    names = [n.strip() for n in os.environ.get(AREAS_ENV, "").split(",") if n.strip()]
    specs = (getattr(importlib.import_module(f"{name}.spec"), "SPEC", None) for name in names)
    return tuple(spec for spec in specs if isinstance(spec, ApiSpec))


AREAS: tuple[ApiSpec, ...] = (DATOCMS, BLOOMREACH, *_added_areas())
"""The catalog's list of areas, in the order their scope fields appear in bodies."""

APIS: Mapping[str, ApiSpec] = {spec.kind: spec for spec in AREAS}

SCOPES: Mapping[str, ScopeField] = {spec.scope.name: spec.scope for spec in AREAS}
"""Every API's scope field, by name, in the areas' order: each outcome and reply body has
all of them (null but the request's own)."""

TARGET_MODELS: tuple[type[TargetBase], ...] = tuple(spec.target for spec in APIS.values())
"""The target models of the APIs (``Settings.targets`` holds one of them per target)."""

CONTRACT_OPERATIONS: Mapping[str, Operation] = {
    op.name: op for spec in APIS.values() for op in spec.operations
}
"""Every operation of the wire contract, including those the worker does not carry out yet."""

OPERATIONS: Mapping[str, Operation] = {
    name: op for name, op in CONTRACT_OPERATIONS.items() if op.executed
}
"""The operations the worker carries out (any other is answered ``unknown_operation``)."""


def rate_scope(key: BatchKey) -> RateScope:
    """The rate scope of a batch key: batches of one scope share one limiter, and, scaled
    out, one owner. Defined by the operation's API, here and nowhere else."""
    return APIS[OPERATIONS[key.operation].api].rate_scope(key)


KNOWN_CODES: frozenset[str] = frozenset(ErrorCode).union(
    *(spec.known_codes for spec in APIS.values())
)
"""The error codes the metrics label by name: the worker's own and the APIs' documented ones."""


def code_label(code: str) -> str:
    """A failure's ``code`` label: bounded, whatever an API answers."""
    return code if code in KNOWN_CODES else "other"
