"""The reply to a request message that carries ``reply_to`` (CONTRACT "Replies"), as a client
reads it. Tolerant: fields a later worker adds are ignored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from worker.registry import SCOPES

Status = Literal["succeeded", "failed", "rejected"]
STATUSES: tuple[Status, ...] = ("succeeded", "failed", "rejected")
REPLY_TYPE = "bulkops.reply"


class ErrorBody(BaseModel):
    """Why an item (or a whole message) did not succeed."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    code: str = Field(description="the API's own code where it gives one, else the worker's")
    message: str
    retryable: bool = False


class ReplyItem(BaseModel):
    """One distinct id of the request and what became of it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    status: Status
    error: ErrorBody | None = None


class Counts(BaseModel):
    """Items of the request by status."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    rejected: int = Field(ge=0)


class _ReplyHead(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    request_id: str
    operation: str | None
    target: str | None


# Every API's scope field (``worker.registry.SCOPES``), null but the request's, then the rest.
_SCOPE_FIELDS: dict[str, Any] = {name: (str | None, None) for name in SCOPES}
_ReplyBody: type[_ReplyHead] = create_model(
    "_ReplyBody",
    __base__=_ReplyHead,
    **_SCOPE_FIELDS,
    counts=(Counts, ...),
    items=(list[ReplyItem], ...),
    finished_at=(str, ...),
    error=(
        ErrorBody | None,
        Field(
            default=None,
            description="set only when the message was refused as a whole (dead-lettered)",
        ),
    ),
)


class Reply(_ReplyBody):
    """The one answer to a request message: every distinct id of it, in message order."""

    if TYPE_CHECKING:  # fields of _ReplyBody, for the type checker
        request_id: str
        operation: str | None
        target: str | None
        counts: Counts
        items: list[ReplyItem]
        finished_at: str
        error: ErrorBody | None

        def __getattr__(self, name: str) -> str | None: ...  # a scope field
