"""What every API area provides, and the one interface the pipeline drives them through.

The pipeline knows batch keys, items and results; an API area knows its targets, its
operations, its wire format and how to carry a batch through to a true outcome per item.
``worker.registry`` (the catalog) collects the areas' ``ApiSpec``s: everything outside
``worker/apis`` reads API facts there. This module is pure (no HTTP, no limiter, no
adapter): what adapters share is in ``worker.apis.adapters``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from worker import exactjson
from worker.rates import Rate

Payload = Mapping[str, Any]  # an item's data (JSON-able), opaque to the pipeline
ParamsCheck = Callable[[Mapping[str, Any]], str | None]  # why params are wrong, or None
IdRule = Callable[[str], str | None]  # why an id cannot be sent to this API, or None
ItemRule = Callable[[Mapping[str, Any]], str | None]  # why an item's data is wrong, or None
RateScope = tuple[str, ...]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ID_LENGTH = 1024


class TargetBase(BaseModel):
    """What every API's target has: where it is, and how fast it may be driven. Each API
    area subclasses it with its ``kind``, credentials and rate facts (class variables)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The API's documented limit, the limit to start with before any answer states one (the
    # most conservative documented reading), and whether every answer states the limit in
    # force (for the worker to adopt). Set by each API's target model.
    default_rate: ClassVar[str]
    first_rate_default: ClassVar[str]
    limit_stated: ClassVar[bool] = False

    if TYPE_CHECKING:  # each API's model declares it (a Literal), after the fields below
        kind: str

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
        return Rate.parse(self.rate_limit or self.default_rate)

    @property
    def first_rate(self) -> Rate:
        """The limit to start with: an explicit ``rate_limit``, else the most conservative
        documented reading (raised or lowered by the API's own statement, see ``Limiter``).

        Where answers state the limit, an explicit one is a ceiling over the stated one, and
        before the first answer neither it nor the conservative reading may be passed: the
        fewer requests over the longer window (a sliding window of that length with that
        count keeps both)."""
        conservative = Rate.parse(self.first_rate_default)
        if self.rate_limit is None:
            return conservative
        explicit = Rate.parse(self.rate_limit)
        if not self.limit_stated:
            return explicit
        return Rate(
            min(explicit.requests, conservative.requests),
            max(explicit.seconds, conservative.seconds),
        )

    @property
    def stated_window(self) -> float:
        """The window the API's stated limit counts in (its documented one)."""
        return Rate.parse(self.default_rate).seconds

    @property
    def states_limit(self) -> bool:
        """Whether the API's answers state the limit in force, for the worker to adopt."""
        return self.limit_stated


def clean_secret(value: SecretStr) -> SecretStr:
    """Secrets mounted from files often end in a newline: strip surrounding white space, and
    refuse control characters inside (they would break the HTTP header)."""
    text = value.get_secret_value().strip()
    if not text or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("must be non-empty, without control characters")
    return SecretStr(text)


class BatchKey(NamedTuple):
    """What items must share to go in one API request. Equal keys coalesce."""

    operation: str
    target: str
    scope: str | None  # the operation's scope field (environment, catalog id), if any
    params: str | None = None  # the operation's parameters as canonical JSON, if any

    @property
    def labels(self) -> tuple[str, str]:
        """(operation, target): the metrics' labels of this key."""
        return self.operation, self.target


def params_key(params: Mapping[str, Any] | None) -> str | None:
    """An operation's params as a ``BatchKey`` holds them: canonical JSON (keys sorted), so
    equal params make equal keys whatever order they were written in."""
    if params is None:
        return None
    return exactjson.dumps(params, sort_keys=True).decode()


@dataclass(frozen=True, slots=True)
class ScopeField:
    """An API's scope field, declared by its area: its name in request, outcome and reply
    bodies (a string, or null where it does not apply), in the CLI (``--name-with-dashes``)
    and as the client's ``Job`` argument; and the rule a value must follow."""

    name: str
    rule: Callable[[str], str | None]  # why a value cannot be this scope, or None
    help: str  # the CLI flag's help
    absent: str = ""  # what an absent value means, if it may be absent (e.g. "primary")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class Operation:
    """One row of an API's operations table.

    ``executed``: False for a contract row the worker does not carry out yet: clients may
    validate jobs for it, the worker answers it ``unknown_operation``.
    """

    name: str
    api: str
    scope_field: str  # the name of its API's ``ScopeField``
    scope_required: bool
    max_items: int
    max_body_bytes: int | None = None
    id_rule: IdRule | None = None
    carries: Literal["ids", "items"] = "ids"
    params: ParamsCheck | None = None  # None: the operation takes no params
    # For operations that carry items: why an item's data (the item without its "id") is
    # wrong, or None.
    item_rule: ItemRule | None = None
    executed: bool = True

    def id_problem(self, value: object) -> str | None:
        """Why ``value`` cannot be sent as an id of this operation, or None if it can."""
        if not isinstance(value, str) or not value:
            return "id must be a non-empty string"
        if len(value) > MAX_ID_LENGTH:
            return f"id is longer than {MAX_ID_LENGTH} characters"
        if _CONTROL.search(value):
            return "id contains control characters"
        return self.id_rule(value) if self.id_rule is not None else None

    def params_problem(self, given: bool, params: object) -> str | None:
        """Why ``params`` (``given``: the message has the field) are wrong, or None."""
        if self.params is None:
            return f"{self.name} takes no params" if given else None
        if not given or params is None:
            return f"{self.name} requires params"
        if not isinstance(params, dict):
            return "params must be a JSON object"
        return self.params(params)

    def item_problem(self, data: Mapping[str, Any]) -> str | None:
        """Why an item's data (the item without its "id") cannot be sent, or None."""
        return self.item_rule(data) if self.item_rule is not None else None


@dataclass(frozen=True, slots=True)
class ApiSpec:
    """Everything the rest of the worker may know about one API."""

    kind: str  # the targets' ``kind``
    scope: ScopeField  # the scope field of its operations
    title: str  # its name in prose
    target: type[TargetBase]  # the model of this API's targets (credentials, rate facts)
    operations: tuple[Operation, ...]
    rate_scope: Callable[[BatchKey], RateScope]  # batches of one rate scope share a limit
    # The module that builds this API's adapter: its ``make_adapter(target, tuning)``. Named,
    # not imported, so that the catalog stays pure; ``worker.apis.factory`` imports it.
    adapter_module: str
    known_codes: frozenset[str] = frozenset()  # the API's documented error codes (labels)
    # API requests that follow each bulk request at least (a job polled once, say): for
    # estimates (``submit --dry-run``).
    follow_ups: int = 0
