"""Control constants and the stream's name and retention. The settings themselves
(``BULKOPS_CONTROL_EXCHANGE``, ``BULKOPS_CANCEL_TTL_SECONDS``) are ``Settings.control_exchange``
and ``Settings.cancel_ttl_seconds`` (and the CLI's ``ClientSettings``)."""

from __future__ import annotations

DEFAULT_EXCHANGE = "bulkops.control"
DEFAULT_CANCEL_TTL = 86400.0
REWRITE_SECONDS = 3600.0
"""How often a reader writes the pauses in force again (well within the stream's retention)."""
RETENTION_MARGIN_SECONDS = 86400.0
"""The stream keeps records this much longer than the cancel TTL (``x-max-age``)."""


def stream_name(control_exchange: str) -> str:
    return f"{control_exchange}.state"


def max_age_seconds(cancel_ttl_seconds: float) -> int:
    """The stream's retention: the cancel TTL plus a margin (a cancel is never dropped
    before it expires; a pause is written again every ``REWRITE_SECONDS``)."""
    return int(cancel_ttl_seconds + RETENTION_MARGIN_SECONDS + 0.999)
