"""What the rest of the worker knows of Bloomreach (read through ``worker.registry``)."""

from __future__ import annotations

from worker.apis.base import ApiSpec, BatchKey, RateScope
from worker.apis.bloomreach.adapter import make_adapter
from worker.apis.bloomreach.operations import API, OPERATIONS


def rate_scope(key: BatchKey) -> RateScope:
    """The limit is per catalog."""
    return (API, key.target, key.scope or "")


SPEC = ApiSpec(
    kind=API,
    operations=OPERATIONS,
    rate_scope=rate_scope,
    adapter=make_adapter,
    default_rate="5/10s",
    first_rate="5/10s",  # the API states nothing: its documented limit is all there is
)
