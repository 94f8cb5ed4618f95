"""The worker's one settings object, read from the environment (prefix ``BULKOPS_``).

Built once in ``__main__`` and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.apis.base import TargetBase
from worker.rates import Rate
from worker.registry import TARGET_MODELS

# ``Rate`` (a target's ``rate_limit``, parsed) is the limiter's; named here too because
# settings are where a rate is written.
__all__ = ["Rate", "Settings", "Target", "described_settings", "unknown_variables"]

# The union of the APIs' target models, told apart by ``kind`` (each API area defines its
# own; the registry lists them). For the type checker, any target.
if TYPE_CHECKING:
    Target = TargetBase
else:
    Target = Annotated[Union[TARGET_MODELS], Field(discriminator="kind")]  # noqa: UP007


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
    # x-delivery-limit of every request queue: a message delivered this many times (session
    # renewals, hand-overs, drains and `bulkops dlq list` count too) is dead-lettered to the
    # DLQ with its reason. RabbitMQ 4.x would otherwise apply its default of 20.
    delivery_limit: int = Field(default=100, ge=1, le=100_000)
    http_port: int = Field(default=9464, ge=0, le=65535)
    http_host: str = "0.0.0.0"  # noqa: S104 - a pod's metrics port listens on all interfaces
    targets: dict[str, Target] = Field(default_factory=dict)

    # Tuning. Defaults suit the APIs' documented limits.
    prefetch: int = Field(default=4000, ge=1, le=65535)
    # The priority lane (`<request queue>.priority`) is consumed on a channel of its own
    # with this prefetch, so urgent messages are taken while the main prefetch is full.
    priority_prefetch: int = Field(default=500, ge=1, le=65535)
    # While both lanes have work in a rate scope, the backlog keeps at least this share of
    # its requests (0.1: after 9 requests of urgent items only, one is taken backlog first).
    priority_backlog_share: float = Field(default=0.1, ge=0.01, le=0.5)
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
    # A job past its deadline is followed this much longer (polls every 4 poll maxima) while
    # the operations behind its ids wait; then its items are answered job_timeout.
    job_follow_seconds: float = Field(default=600, ge=0, le=1200)
    rate_limit_margin_seconds: float = Field(default=0.05, ge=0, le=10)
    drain_timeout_seconds: float = Field(default=60, gt=0, le=3600)
    # With nothing delivered and nothing in flight for this long, the broker session is
    # renewed: a consumer the broker dropped silently must not leave the worker idle.
    consumer_idle_renew_seconds: float = Field(default=120, ge=0.5, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Scaling out (see worker/broker/partitions.py): 0 keeps the single-replica topology.
    partitions: int = Field(default=0, ge=0, le=256)
    partition_exchange: str = "bulkops.partitions"
    # Every so often a replica that owns more than its share of the partitions (partitions /
    # replicas, rounded up) hands one on; 0 never does (the first replica keeps them all).
    partition_rebalance_seconds: float = Field(default=15, ge=0, le=3600)
    # The router forwards up to this many consecutive requests bound for one partition as
    # one message (a bundle, worker/bundles.py); 1 forwards each request on its own.
    partition_bundle_max: int = Field(default=200, ge=1, le=1000)

    # Which per-item outcomes go to the results exchange: every one, only `failed` and
    # `rejected`, or none. Replies and metrics are the same in every mode.
    item_outcomes: Literal["all", "failures", "none"] = "all"
    # How outcomes go out: one message per item (`item`), or per dispatch batch and status
    # (`batch`, AMQP type bulkops.outcomes; CONTRACT "The batch format").
    outcome_format: Literal["item", "batch"] = "item"
    # How often the depth of the unrouted-outcome parking queue is read for its gauge.
    unrouted_sample_seconds: float = Field(default=15, gt=0, le=3600)

    # Operator control (CONTRACT "Control"): the fanout exchange (and its stream
    # `<exchange>.state`) every replica reads, and how long a cancel stays in force.
    control_exchange: str = Field(default="bulkops.control", min_length=1, max_length=200)
    cancel_ttl_seconds: float = Field(default=86400, gt=0, le=30 * 86400)

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
        worst = (
            self.retry_budget_seconds
            + self.job_deadline_seconds
            + self.job_follow_seconds
            + self.linger_seconds
        )
        if worst >= 25 * 60:
            raise ValueError(
                "retry_budget_seconds + job_deadline_seconds + job_follow_seconds must stay "
                "well under RabbitMQ's 30-minute consumer timeout"
            )
        return self


PREFIX = "BULKOPS_"
# Read by the test suite and the commands, not by the worker: never reported as unknown.
_NOT_WORKER = ("BULKOPS_TEST_",)


def unknown_variables(environ: Mapping[str, str]) -> Iterator[tuple[str, str | None]]:
    """Each ``BULKOPS_*`` variable that names no setting, with the closest setting's variable
    (or None): a typo such as ``BULKOPS_ITEM_OUTCOME`` is otherwise ignored in silence.
    Nested variables (``BULKOPS_TARGETS__MAIN__API_TOKEN``) are judged by their first part."""
    known = [PREFIX + name.upper() for name in Settings.model_fields]
    for variable in sorted(environ):
        head = variable.upper().split("__", 1)[0]
        if not head.startswith(PREFIX) or head in known or head.startswith(_NOT_WORKER):
            continue
        close = difflib.get_close_matches(head, known, n=1, cutoff=0.8)
        yield variable, close[0] if close else None


def described_settings() -> Iterator[str]:
    """``BULKOPS_<NAME>  default`` for every setting (secrets shown without credentials)."""
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = _without_credentials(default.get_secret_value())
        shown = "{}" if default == {} else default
        yield f"{PREFIX + name.upper():<42} {shown}"


def _without_credentials(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//***@", url)
