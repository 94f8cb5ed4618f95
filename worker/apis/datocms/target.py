"""A DatoCMS target: one project reached with one API token (its rate limit is per token)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import SecretStr, field_validator

from worker.apis.base import TargetBase, clean_secret


class DatoCMSTarget(TargetBase):
    """A DatoCMS project reached with one API token; its rate limit is per token."""

    default_rate: ClassVar[str] = "60/3s"
    # The default is 60 per 3 s, but plans differ and the docs' examples show
    # X-RateLimit-Limit: 30: start there until an answer states the limit in force.
    first_rate_default: ClassVar[str] = "30/3s"
    limit_stated: ClassVar[bool] = True  # every answer states X-RateLimit-Limit

    kind: Literal["datocms"]
    base_url: str = "https://site-api.datocms.com"
    api_token: SecretStr

    _token = field_validator("api_token")(clean_secret)
