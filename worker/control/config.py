"""The control settings (CONTRACT "Settings"), read from the same ``BULKOPS_`` environment.

Kept here until the wiring moves them into ``worker.settings.Settings`` (and the README's
configuration table, whose test lists every field of ``Settings``).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REWRITE_SECONDS = 3600.0
"""How often a reader writes the pauses in force again (well within the stream's retention)."""
RETENTION_MARGIN_SECONDS = 86400.0
"""The stream keeps records this much longer than the cancel TTL (``x-max-age``)."""


class ControlSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BULKOPS_", env_file=".env", extra="ignore")

    control_exchange: str = Field(default="bulkops.control", min_length=1, max_length=200)
    cancel_ttl_seconds: float = Field(default=86400, gt=0, le=30 * 86400)

    @property
    def stream_name(self) -> str:
        return stream_name(self.control_exchange)

    @property
    def max_age_seconds(self) -> int:
        return max_age_seconds(self.cancel_ttl_seconds)


def stream_name(control_exchange: str) -> str:
    return f"{control_exchange}.state"


def max_age_seconds(cancel_ttl_seconds: float) -> int:
    """The stream's retention: the cancel TTL plus a margin (a cancel is never dropped
    before it expires; a pause is written again every ``REWRITE_SECONDS``)."""
    return int(cancel_ttl_seconds + RETENTION_MARGIN_SECONDS + 0.999)
