"""What the rest of the worker knows of DatoCMS (read through ``worker.registry``)."""

from __future__ import annotations

from worker.apis.base import ApiSpec, BatchKey, RateScope
from worker.apis.datocms.adapter import make_adapter
from worker.apis.datocms.operations import API, OPERATIONS


def rate_scope(key: BatchKey) -> RateScope:
    """One token per target: every environment shares its limit."""
    return (API, key.target)


SPEC = ApiSpec(
    kind=API,
    operations=OPERATIONS,
    rate_scope=rate_scope,
    adapter=make_adapter,
    default_rate="60/3s",
    # The default is 60 per 3 s, but plans differ and the docs' examples show
    # X-RateLimit-Limit: 30: start there until an answer states the limit in force.
    first_rate="30/3s",
    states_limit=True,  # every answer states X-RateLimit-Limit, per the same window
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
