"""The emulator's knobs: one mutable, validated object read afresh on every request."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

UnknownIds = Literal["count_failed", "reject_404", "reject_422"]


class EmulatorConfig(BaseModel):
    """Every field may be changed at runtime; the change applies from the next request."""

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = 0
    seed: int | None = None  # seeds the spurious-429 dice

    datocms_tokens: set[str] = Field(default_factory=lambda: {"dato-token"}, repr=False)
    datocms_rate: tuple[int, float] = (60, 3.0)
    datocms_job_seconds: float = 0.2
    datocms_job_never_finishes: bool = False
    # Jobs of these actions ("publish", "move_to_stage", ...) take this long instead of
    # datocms_job_seconds: a job slower than the worker's deadline, others as usual.
    datocms_job_seconds_by_action: dict[str, float] = Field(default_factory=dict)
    datocms_unknown_ids: UnknownIds = "count_failed"
    datocms_implicit_records: bool = True
    datocms_max_items: int = 200
    datocms_max_uploads: int | None = None
    datocms_primary_environment: str = "main"
    datocms_environments: set[str] | None = None  # None: any sandbox name exists
    # DELETE /items/<id> answers 202 + a job (as the real API does: the reference page's
    # "Returns a Job ID", ``ItemDestroyJobSchema`` in the official client), whose result carries
    # the record or the error (DELETE_RESTRICTION, ...). False: a synchronous 200 (a variant).
    datocms_async_single_destroy: bool = True
    # An upload collection id that does not exist in bulk set-upload-collection (the docs do
    # not say): "reject_422" refuses the whole request (INVALID_FIELD), "count_failed" lets
    # the job count every upload as failed.
    datocms_unknown_collection: Literal["reject_422", "count_failed"] = "reject_422"
    # A bulk request holding an id the operation would fail for (a stage its model's workflow
    # lacks, a failure scripted with set_failure): "count_failed" runs the job and counts it
    # failed; "reject_422" refuses the whole request with 422 and that id's code (the docs
    # do not say which the API does), naming the id in the error's details.
    datocms_item_refusal: Literal["count_failed", "reject_422"] = "count_failed"
    # PUT /uploads/<id> answers 202 + a job (the docs say it "might"), whose result carries
    # the upload or the error. False: a synchronous answer.
    datocms_async_upload_update: bool = False

    bloomreach_key_id: str = "bloom-key"
    bloomreach_secret: str = Field(default="bloom-secret", repr=False)
    bloomreach_project_id: str = "proj-1"
    bloomreach_rate: tuple[int, float] = (5, 10.0)
    bloomreach_max_items: int = 10_000
    bloomreach_max_body_bytes: int = 10 * 1024 * 1024
    bloomreach_string_booleans: bool = False
    bloomreach_retry_after: bool = True
    # Which wire forms bulk-delete accepts: "delete-ids" (DELETE, a list of id strings),
    # "post-objects" (POST, a list of {"item_id"}), or both; the other method answers 405.
    bloomreach_delete_forms: Literal["both", "delete-ids", "post-objects"] = "both"
    # The status of a request over bloomreach_max_items or _max_body_bytes: 400 as the API
    # documents, or 413 as a proxy in front of it may answer.
    bloomreach_oversize_status: Literal[400, 413] = 400

    # Keep each request's body in the log (``LogEntry.body``): for comparing clients' wire
    # forms in tests; off by default (bulk bodies can be megabytes).
    log_request_bodies: bool = False

    rate_limits_enabled: bool = True
    spurious_429_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    latency_seconds: float = Field(default=0.0, ge=0.0)


def apply_updates(config: EmulatorConfig, updates: dict[str, Any]) -> None:
    """Set several fields at once, all or nothing (raises pydantic.ValidationError)."""
    merged = EmulatorConfig.model_validate({**config.model_dump(), **updates})
    for name in updates:
        setattr(config, name, getattr(merged, name))
