"""What the rest of the worker knows of DatoCMS (read through ``worker.registry``)."""

from __future__ import annotations

from worker.apis.base import ApiSpec, BatchKey, RateScope
from worker.apis.datocms.operations import API, OPERATIONS, SCOPE
from worker.apis.datocms.target import DatoCMSTarget


def rate_scope(key: BatchKey) -> RateScope:
    """One token per target: every environment shares its limit."""
    return (API, key.target)


SPEC = ApiSpec(
    kind=API,
    scope=SCOPE,
    title="DatoCMS",
    target=DatoCMSTarget,
    operations=OPERATIONS,
    rate_scope=rate_scope,
    adapter_module=f"{__package__}.adapter",
    follow_ups=1,  # DatoCMS answers with a job, polled at least once
    known_codes=frozenset(
        {
            "NOT_FOUND",
            "INVALID_FIELD",
            "ITEM_LOCKED",
            "STALE_ITEM_VERSION",
            "UNPUBLISHED_PARENT",
            "UNPUBLISHED_LINK",
            "PUBLISHED_REFERENCES",
            "DELETE_RESTRICTION",
            "UPLOAD_IS_CURRENTLY_IN_USE",
            "INSUFFICIENT_PERMISSIONS",
            "RATE_LIMIT_EXCEEDED",
            "SERVICE_UNAVAILABLE",
            "MAINTENANCE_MODE",
        }
    ),
)
