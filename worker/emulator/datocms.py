"""DatoCMS state: records, uploads, scripted failures and bulk jobs, per environment.

No I/O here. Jobs complete lazily: every observation (HTTP or Python) first settles the jobs
whose time has come, in due order, so a read-back after a result is available sees its effects.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.emulator.config import EmulatorConfig
from worker.emulator.datocms_meta import META_ACTIONS, MetaState
from worker.emulator.jsonapi import error_body, item_json

Action = Literal[
    "publish",
    "unpublish",
    "destroy",
    "upload_destroy",
    "move_to_stage",
    "upload_tag",
    "upload_set_collection",
]
RecordStatus = Literal["draft", "updated", "published"]
ACTIONS: tuple[Action, ...] = ("publish", "unpublish", "destroy", "upload_destroy", *META_ACTIONS)
UPLOAD_ACTIONS: frozenset[Action] = frozenset(
    {"upload_destroy", "upload_tag", "upload_set_collection"}
)
IN_USE = "UPLOAD_IS_CURRENTLY_IN_USE"
NOT_FOUND = "NOT_FOUND"


@dataclass(slots=True)
class _Environment:
    records: dict[str, str] = field(default_factory=dict)  # id -> status
    uploads: dict[str, bool] = field(default_factory=dict)  # id -> in use
    missing_records: set[str] = field(default_factory=set)  # destroyed or marked missing
    missing_uploads: set[str] = field(default_factory=set)
    # Records of models without a draft system: always published, read back with
    # meta.status null.
    draftless: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Job:
    id: str
    action: Action
    environment: str | None
    ids: list[str]
    due: float
    failure: tuple[int, Any] | None = None  # (operation status, error payload)
    result: dict[str, Any] | None = None
    single: bool = False  # a single-record operation: its result is the record or the error
    params: Any = None  # the stage, the tags, or the upload collection id (None: none)
    # A single-resource update run when the job is due: its (status, payload) is the result.
    deferred: Callable[[], tuple[int, Any]] | None = None


class DatoState:
    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._envs: dict[str | None, _Environment] = {}
        self._failures: dict[tuple[Action, str], str] = {}
        self._jobs: dict[str, Job] = {}
        self._pending: list[tuple[float, int, str]] = []
        self._job_ids = itertools.count(4235)
        self.meta = MetaState()  # stages, tags, collections

    # -- Python API for tests -------------------------------------------------------------
    def seed_records(
        self,
        ids: Iterable[str],
        environment: str | None = None,
        status: RecordStatus | None = "draft",
        stage: str | None = None,
        workflow: str | None = None,
    ) -> None:
        """``status`` None: records of a model without drafts (published, ``meta.status``
        null). ``stage``: their ``meta.stage``; ``workflow``: the workflow of their model."""
        env = self._env(environment)
        for item_id in ids:
            self.meta.seed_record(self.normalize_env(environment), item_id, stage, workflow)
            env.records[item_id] = status or "published"
            env.missing_records.discard(item_id)
            if status is None:
                env.draftless.add(item_id)
            else:
                env.draftless.discard(item_id)

    def seed_uploads(
        self,
        ids: Iterable[str],
        environment: str | None = None,
        in_use: bool = False,
        tags: Iterable[str] = (),
        collection: str | None = None,
    ) -> None:
        env = self._env(environment)
        tags = list(tags)
        for upload_id in ids:
            self.meta.seed_upload(self.normalize_env(environment), upload_id, tags, collection)
            env.uploads[upload_id] = in_use
            env.missing_uploads.discard(upload_id)

    def mark_missing(self, ids: Iterable[str], environment: str | None = None) -> None:
        """These record and upload ids are absent, even with implicit records on."""
        env = self._env(environment)
        for missing_id in ids:
            env.records.pop(missing_id, None)
            env.uploads.pop(missing_id, None)
            env.missing_records.add(missing_id)
            env.missing_uploads.add(missing_id)

    def set_failure(self, ids: Iterable[str], action: Action, code: str) -> None:
        """``action`` fails for these ids (in every environment) with API error ``code``."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        for failing_id in ids:
            self._failures[(action, failing_id)] = code

    def scripted_failure(self, action: Action, some_id: str) -> str | None:
        """The code ``set_failure`` gave ``action`` for this id, if any."""
        return self._failures.get((action, some_id))

    def clear_failure(self, ids: Iterable[str], action: Action) -> None:
        for failing_id in ids:
            self._failures.pop((action, failing_id), None)

    def record_status(self, id: str, environment: str | None = None) -> str | None:
        self.settle()
        return self.record(self.normalize_env(environment), id)

    def upload_exists(self, id: str, environment: str | None = None) -> bool:
        self.settle()
        return self.upload_in_use(self.normalize_env(environment), id) is not None

    def reset(self) -> None:
        self._envs.clear()
        self.meta.reset()
        self._failures.clear()
        self._jobs.clear()
        self._pending.clear()

    # -- lookups ----------------------------------------------------------------------------
    def normalize_env(self, environment: str | None) -> str | None:
        return None if environment == self.config.datocms_primary_environment else environment

    def record(self, environment: str | None, item_id: str) -> str | None:
        env = self._env(environment)
        status = env.records.get(item_id)
        if status is None and self._implicit(env.missing_records, item_id):
            return "draft"
        return status

    def draftless(self, environment: str | None, item_id: str) -> bool:
        return item_id in self._env(environment).draftless

    def upload_in_use(self, environment: str | None, upload_id: str) -> bool | None:
        """None when absent, else whether the upload is in use."""
        env = self._env(environment)
        in_use = env.uploads.get(upload_id)
        if in_use is None and self._implicit(env.missing_uploads, upload_id):
            return False
        return in_use

    def exists(self, action: Action, environment: str | None, some_id: str) -> bool:
        if action in UPLOAD_ACTIONS:
            return self.upload_in_use(environment, some_id) is not None
        return self.record(environment, some_id) is not None

    def records_present(self, environment: str | None) -> list[str]:
        return list(self._env(environment).records)

    def uploads_present(self, environment: str | None) -> list[str]:
        return list(self._env(environment).uploads)

    def refusal_of(
        self, action: Action, environment: str | None, some_id: str, params: Any = None
    ) -> str | None:
        """The code ``action`` would fail an existing id with (scripted, or a stage its
        model's workflow lacks), without applying it; None when it would apply."""
        code = self._failures.get((action, some_id))
        if code is None and action == "move_to_stage":
            key = self.normalize_env(environment)
            if not self.meta.stage_exists(key, some_id, params):
                code = "INVALID_FIELD"
        return code

    # -- effects ----------------------------------------------------------------------------
    def apply(
        self, action: Action, environment: str | None, some_id: str, params: Any = None
    ) -> str | None:
        """Apply ``action`` to one id now; the API error code when it fails, else None."""
        if not self.exists(action, environment, some_id):
            return NOT_FOUND
        code = self._failures.get((action, some_id))
        if code is not None:
            return code
        key = self.normalize_env(environment)
        if action in META_ACTIONS:
            return self.meta.apply(action, key, some_id, params)
        env = self._env(environment)
        if action == "upload_destroy":
            if env.uploads.get(some_id, False):
                return IN_USE
            env.uploads.pop(some_id, None)
            env.missing_uploads.add(some_id)
            self.meta.forget(key, some_id)
        elif action == "destroy":
            env.records.pop(some_id, None)
            env.draftless.discard(some_id)
            env.missing_records.add(some_id)
            self.meta.forget(key, some_id)
        else:
            return _publication(env, action, some_id)
        return None

    # -- jobs -------------------------------------------------------------------------------
    def create_job(
        self,
        action: Action,
        environment: str | None,
        ids: list[str],
        failure: tuple[int, Any] | None = None,
        single: bool = False,
        params: Any = None,
        deferred: Callable[[], tuple[int, Any]] | None = None,
    ) -> Job:
        now = self._clock()
        never = self.config.datocms_job_never_finishes
        seconds = self.config.datocms_job_seconds_by_action.get(
            action, self.config.datocms_job_seconds
        )
        due = math.inf if never else now + seconds
        job_id = str(next(self._job_ids))
        job = Job(
            job_id,
            action,
            environment,
            ids,
            due,
            failure,
            single=single,
            params=params,
            deferred=deferred,
        )
        self._jobs[job.id] = job
        heapq.heappush(self._pending, (due, int(job.id), job.id))
        return job

    def job_result(self, job_id: str) -> dict[str, Any] | None:
        """The job's result attributes once it has finished, else None (running or unknown)."""
        self.settle()
        job = self._jobs.get(job_id)
        return None if job is None else job.result

    def settle(self) -> None:
        now = self._clock()
        while self._pending and self._pending[0][0] <= now:
            _, _, job_id = heapq.heappop(self._pending)
            job = self._jobs.get(job_id)
            if job is not None:
                job.result = self._run(job)

    def _run(self, job: Job) -> dict[str, Any]:
        if job.failure is not None:
            status, payload = job.failure
            return {"status": status, "payload": payload}
        if job.deferred is not None:
            status, payload = job.deferred()
            return {"status": status, "payload": payload}
        if job.single:
            return self._run_single(job)
        failed = sum(
            self.apply(job.action, job.environment, i, job.params) is not None for i in job.ids
        )
        meta = {"successful": len(job.ids) - failed, "failed": failed}
        return {"status": 200, "payload": {"data": [], "meta": meta}}

    def _run_single(self, job: Job) -> dict[str, Any]:
        """A single-record job (``DELETE /items/<id>``): the result's own status and payload
        carry the record, or the error the operation met (e.g. DELETE_RESTRICTION)."""
        some_id = job.ids[0]
        draftless = self.draftless(job.environment, some_id)
        record = None if draftless else self.record(job.environment, some_id)
        stage = self.meta.stage(self.normalize_env(job.environment), some_id)
        code = self.apply(job.action, job.environment, some_id)
        if code is None:  # the record as it was (ItemDestroyJobSchema: {"data": Item})
            return {"status": 200, "payload": {"data": item_json(some_id, record, stage)}}
        status = 404 if code == NOT_FOUND else 422
        return {"status": status, "payload": error_body(code, {"id": some_id})}

    # -- internals --------------------------------------------------------------------------
    def _env(self, environment: str | None) -> _Environment:
        key = self.normalize_env(environment)
        env = self._envs.get(key)
        if env is None:
            env = self._envs[key] = _Environment()
        return env

    def _implicit(self, missing: set[str], some_id: str) -> bool:
        return self.config.datocms_implicit_records and some_id not in missing


def _publication(env: _Environment, action: Action, item_id: str) -> str | None:
    if item_id in env.draftless:
        # Not documented: a record without drafts cannot be unpublished; a refusal is
        # the plausible answer. Publishing it changes nothing.
        return "INVALID_FIELD" if action == "unpublish" else None
    env.records[item_id] = "published" if action == "publish" else "draft"
    return None
