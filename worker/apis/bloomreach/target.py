"""A Bloomreach target: one Engagement project (its rate limit is per catalog)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import SecretStr, field_validator

from worker.apis.base import TargetBase, clean_secret


class BloomreachTarget(TargetBase):
    """A Bloomreach Engagement project; its rate limit is per catalog."""

    default_rate: ClassVar[str] = "5/10s"
    # The API states nothing: its documented limit is all there is.
    first_rate_default: ClassVar[str] = "5/10s"

    kind: Literal["bloomreach"]
    api_key_id: SecretStr
    api_secret: SecretStr

    _credentials = field_validator("api_key_id", "api_secret")(clean_secret)
    project_id: str

    @field_validator("project_id")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if not value or "/" in value or value in (".", ".."):
            raise ValueError("project_id must be a non-empty string without '/', not '.' or '..'")
        return value

    # The docs leave bulk-delete's method and body open: "delete-ids" is DELETE with a list of
    # id strings (what a production integration sends), "post-objects" POST with
    # [{"item_id"}]; "auto" starts with delete-ids and switches once on a 405.
    delete_format: Literal["auto", "delete-ids", "post-objects"] = "auto"
