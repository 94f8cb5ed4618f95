"""The one place the worker reads facts about the APIs it drives.

Each API area (``worker/apis/<api>``) describes itself in an ``ApiSpec``: its operations
table, rate scope rule, default rates and adapter factory. Everything outside those areas
asks here: which operations exist, which rate scope a batch belongs to, which adapter
serves a target, which error codes the metrics label by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.apis.base import Adapter, ApiSpec, BatchKey, Operation, RateScope, Tuning
from worker.apis.bloomreach.spec import SPEC as BLOOMREACH
from worker.apis.datocms.spec import SPEC as DATOCMS
from worker.errors import ErrorCode

APIS: Mapping[str, ApiSpec] = {spec.kind: spec for spec in (DATOCMS, BLOOMREACH)}

CONTRACT_OPERATIONS: Mapping[str, Operation] = {
    op.name: op for spec in APIS.values() for op in spec.operations
}
"""Every operation of the wire contract, including those the worker does not carry out yet."""

OPERATIONS: Mapping[str, Operation] = {
    name: op for name, op in CONTRACT_OPERATIONS.items() if op.executed
}
"""The operations the worker carries out (any other is answered ``unknown_operation``)."""


def operation(name: str) -> Operation | None:
    """The operation the worker carries out under ``name``, if any."""
    return OPERATIONS.get(name)


def api(kind: str) -> ApiSpec:
    return APIS[kind]


def rate_scope(key: BatchKey) -> RateScope:
    """The rate scope of a batch key: batches of one scope share one limiter, and, scaled
    out, one owner. Defined by the operation's API, here and nowhere else."""
    return APIS[OPERATIONS[key.operation].api].rate_scope(key)


def make_adapter(target: Any, tuning: Tuning) -> Adapter:
    """The adapter for one configured target (any of the APIs' target models)."""
    return APIS[target.kind].adapter(target, tuning)


KNOWN_CODES: frozenset[str] = frozenset(ErrorCode).union(
    *(spec.known_codes for spec in APIS.values())
)
"""The error codes the metrics label by name: the worker's own and the APIs' documented ones."""


def code_label(code: str) -> str:
    """A failure's ``code`` label: bounded, whatever an API answers."""
    return code if code in KNOWN_CODES else "other"
