"""What the rest of the worker knows of Bloomreach (read through ``worker.registry``)."""

from __future__ import annotations

from worker.apis.base import ApiSpec, BatchKey, RateScope
from worker.apis.bloomreach.operations import API, OPERATIONS, SCOPE
from worker.apis.bloomreach.target import BloomreachTarget


def rate_scope(key: BatchKey) -> RateScope:
    """The limit is per catalog."""
    return (API, key.target, key.scope or "")


SPEC = ApiSpec(
    kind=API,
    scope=SCOPE,
    title="Bloomreach",
    target=BloomreachTarget,
    operations=OPERATIONS,
    rate_scope=rate_scope,
    adapter_module=f"{__package__}.adapter",
)
