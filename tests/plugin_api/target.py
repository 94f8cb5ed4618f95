"""The search index's targets."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import SecretStr, field_validator

from worker.apis.base import TargetBase, clean_secret

KIND = "searchidx"


class SearchTarget(TargetBase):
    default_rate: ClassVar[str] = "20/1s"
    first_rate_default: ClassVar[str] = "20/1s"

    kind: Literal["searchidx"]
    api_key: SecretStr

    _key = field_validator("api_key")(clean_secret)
