"""The reply to a request message that carries ``reply_to`` (CONTRACT "Replies"), as a client
reads it. Tolerant: fields a later worker adds are ignored."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class Reply(BaseModel):
    """The one answer to a request message: every distinct id of it, in message order."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    request_id: str
    operation: str | None
    target: str | None
    environment: str | None = None
    catalog_id: str | None = None
    counts: Counts
    items: list[ReplyItem]
    finished_at: str
    error: ErrorBody | None = Field(
        default=None,
        description="set only when the message was refused as a whole (dead-lettered)",
    )
