"""The worker's one settings object, read from the environment (prefix ``BULKOPS_``).

Built once in ``__main__`` and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*s\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``requests`` per ``seconds``: the most a rate scope may send in any window."""

    requests: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        match = _RATE.match(text)
        if not match:
            raise ValueError(f"rate_limit must look like '60/3s', got {text!r}")
        rate = cls(int(match.group(1)), float(match.group(2)))
        if rate.requests < 1 or rate.seconds <= 0:
            raise ValueError(f"rate_limit must be positive, got {text!r}")
        return rate

    def __str__(self) -> str:
        return f"{self.requests}/{self.seconds:g}s"


DEFAULT_RATES = {"datocms": "60/3s", "bloomreach": "5/10s"}


class _Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    rate_limit: str | None = None
    # Smaller batches than the API allows, if wanted (e.g. to bound one request's blast
    # radius); None: the API's maximum.
    max_batch_items: int | None = Field(default=None, ge=1, le=10_000)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            Rate.parse(value)
        return value

    @property
    def rate(self) -> Rate:
        return Rate.parse(self.rate_limit or DEFAULT_RATES[self.kind])  # type: ignore[attr-defined]


def _clean_secret(value: SecretStr) -> SecretStr:
    """Secrets mounted from files often end in a newline: strip surrounding white space, and
    refuse control characters inside (they would break the HTTP header)."""
    text = value.get_secret_value().strip()
    if not text or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("must be non-empty, without control characters")
    return SecretStr(text)


class DatoCMSTarget(_Target):
    """A DatoCMS project reached with one API token; its rate limit is per token."""

    kind: Literal["datocms"]
    base_url: str = "https://site-api.datocms.com"
    api_token: SecretStr

    _token = field_validator("api_token")(_clean_secret)


class BloomreachTarget(_Target):
    """A Bloomreach Engagement project; its rate limit is per catalog."""

    kind: Literal["bloomreach"]
    api_key_id: SecretStr
    api_secret: SecretStr

    _credentials = field_validator("api_key_id", "api_secret")(_clean_secret)
    project_id: str

    @field_validator("project_id")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if not value or "/" in value or value in (".", ".."):
            raise ValueError("project_id must be a non-empty string without '/', not '.' or '..'")
        return value


Target = Annotated[DatoCMSTarget | BloomreachTarget, Field(discriminator="kind")]


class Settings(BaseSettings):
    """Everything the worker can be told. See the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="BULKOPS_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    request_queue: str = "bulkops.requests"
    dead_letter_queue: str = "bulkops.requests.dlq"
    results_exchange: str = "bulkops.results"
    http_port: int = Field(default=9464, ge=0, le=65535)
    http_host: str = "0.0.0.0"  # noqa: S104 - a pod's metrics port listens on all interfaces
    targets: dict[str, Target] = Field(default_factory=dict)

    # Tuning. Defaults suit the APIs' documented limits.
    prefetch: int = Field(default=4000, ge=1, le=65535)
    linger_seconds: float = Field(default=0.3, ge=0, le=60)
    max_inflight_batches: int = Field(default=64, ge=1, le=1000)
    max_attempts: int = Field(default=6, ge=1, le=50)
    retry_budget_seconds: float = Field(default=300, gt=0, le=1200)
    backoff_base_seconds: float = Field(default=0.5, gt=0, le=60)
    backoff_max_seconds: float = Field(default=30, gt=0, le=600)
    http_timeout_seconds: float = Field(default=30, gt=0, le=300)
    job_deadline_seconds: float = Field(default=300, gt=0, le=1200)
    job_poll_initial_seconds: float = Field(default=0.5, gt=0, le=60)
    job_poll_max_seconds: float = Field(default=5, gt=0, le=120)
    rate_limit_margin_seconds: float = Field(default=0.05, ge=0, le=10)
    drain_timeout_seconds: float = Field(default=60, gt=0, le=3600)
    # With nothing delivered and nothing in flight for this long, the broker session is
    # renewed: a consumer the broker dropped silently must not leave the worker idle.
    consumer_idle_renew_seconds: float = Field(default=120, ge=0.5, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Scaling out (see worker/partitions.py): 0 keeps the single-replica topology.
    partitions: int = Field(default=0, ge=0, le=256)
    partition_exchange: str = "bulkops.partitions"
    # Every so often a replica that owns more than its share of the partitions (partitions /
    # replicas, rounded up) hands one on; 0 never does (the first replica keeps them all).
    partition_rebalance_seconds: float = Field(default=15, ge=0, le=3600)

    # Which per-item outcomes go to the results exchange: every one, only `failed` and
    # `rejected`, or none. Replies and metrics are the same in every mode.
    item_outcomes: Literal["all", "failures", "none"] = "all"
    # How often the depth of the unrouted-outcome parking queue is read for its gauge.
    unrouted_sample_seconds: float = Field(default=15, gt=0, le=3600)

    @field_validator("targets")
    @classmethod
    def _target_names(cls, value: dict[str, Target]) -> dict[str, Target]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name):
                raise ValueError(f"target name {name!r}: use 1-63 of a-z, 0-9, '_' and '-'")
        return value

    @model_validator(mode="after")
    def _budgets_fit_consumer_timeout(self) -> Settings:
        # RabbitMQ takes back deliveries unacked for 30 minutes (consumer_timeout).
        worst = self.retry_budget_seconds + self.job_deadline_seconds + self.linger_seconds
        if worst >= 25 * 60:
            raise ValueError(
                "retry_budget_seconds + job_deadline_seconds must stay well under "
                "RabbitMQ's 30-minute consumer timeout"
            )
        return self
