"""DatoCMS record stages, upload tags and upload collections, per environment. No I/O.

What is played (DatoCMS CMA reference, "Move items to stage in bulk", "Add tags to assets in
bulk", "Put assets into a collection in bulk", and the record / upload object payloads):
- a record's workflow stage is ``meta.stage`` (null when the record is in no workflow stage);
  a record can move only to a stage that its model's workflow defines. The docs do not list
  the errors: a stage the workflow lacks is refused here as ``INVALID_FIELD`` (422), and a
  record's bulk move then counts as failed.
- an upload's ``attributes.tags`` is a list of strings; bulk tag *adds* the given tags to
  each upload's own (no duplicates, order kept).
- an upload's ``relationships.upload_collection.data`` is ``{"type": "upload_collection",
  "id"}`` or null; bulk set-upload-collection puts every upload in one collection (or none).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

MetaAction = Literal["move_to_stage", "upload_tag", "upload_set_collection"]
META_ACTIONS: tuple[MetaAction, ...] = ("move_to_stage", "upload_tag", "upload_set_collection")
INVALID_FIELD = "INVALID_FIELD"


@dataclass(slots=True)
class _EnvMeta:
    stages: dict[str, str | None] = field(default_factory=dict)  # record id -> meta.stage
    workflows: dict[str, str] = field(default_factory=dict)  # record id -> workflow name
    # Stage names per workflow name; the key None holds the stages of records seeded without
    # a workflow. A missing key: any stage name exists (the default, for demos).
    workflow_stages: dict[str | None, set[str]] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)  # upload id -> tags
    collections: dict[str, str | None] = field(default_factory=dict)  # upload id -> collection
    known_collections: set[str] | None = None  # None: any collection id exists


class MetaState:
    """Stages, tags and collections; whether a record or upload exists is DatoState's call.
    ``environment`` is normalized by the caller (``DatoState.normalize_env``: None is the
    primary environment)."""

    def __init__(self) -> None:
        self._envs: dict[str | None, _EnvMeta] = {}

    # -- seeding ----------------------------------------------------------------------------
    def seed_record(
        self, environment: str | None, item_id: str, stage: str | None, workflow: str | None
    ) -> None:
        env = self._env(environment)
        env.stages[item_id] = stage
        if workflow is None:
            env.workflows.pop(item_id, None)
        else:
            env.workflows[item_id] = workflow

    def seed_upload(
        self,
        environment: str | None,
        upload_id: str,
        tags: Iterable[str],
        collection: str | None,
    ) -> None:
        env = self._env(environment)
        env.tags[upload_id] = list(dict.fromkeys(tags))
        env.collections[upload_id] = collection

    def set_stages(
        self, environment: str | None, workflow: str | None, stages: Iterable[str] | None
    ) -> None:
        """The stages of ``workflow`` (None: of records without one); ``stages`` None: any."""
        env = self._env(environment)
        if stages is None:
            env.workflow_stages.pop(workflow, None)
        else:
            env.workflow_stages[workflow] = set(stages)

    def set_collections(self, environment: str | None, ids: Iterable[str] | None) -> None:
        """The upload collections that exist; None: any id exists (the default)."""
        self._env(environment).known_collections = None if ids is None else set(ids)

    # -- reading ----------------------------------------------------------------------------
    def stage(self, environment: str | None, item_id: str) -> str | None:
        return self._env(environment).stages.get(item_id)

    def workflow(self, environment: str | None, item_id: str) -> str | None:
        return self._env(environment).workflows.get(item_id)

    def tags(self, environment: str | None, upload_id: str) -> list[str]:
        return list(self._env(environment).tags.get(upload_id, ()))

    def collection(self, environment: str | None, upload_id: str) -> str | None:
        return self._env(environment).collections.get(upload_id)

    def collection_exists(self, environment: str | None, collection: str | None) -> bool:
        known = self._env(environment).known_collections
        return collection is None or known is None or collection in known

    def stage_exists(self, environment: str | None, item_id: str, stage: str) -> bool:
        env = self._env(environment)
        stages = env.workflow_stages.get(env.workflows.get(item_id))
        return stages is None or stage in stages

    # -- effects ----------------------------------------------------------------------------
    def apply(
        self, action: MetaAction, environment: str | None, some_id: str, params: Any
    ) -> str | None:
        """Apply one meta action to an existing record or upload; an error code, else None."""
        env = self._env(environment)
        if action == "move_to_stage":
            if not self.stage_exists(environment, some_id, params):
                return INVALID_FIELD
            env.stages[some_id] = params
        elif action == "upload_tag":
            env.tags[some_id] = list(dict.fromkeys([*env.tags.get(some_id, ()), *params]))
        else:
            if not self.collection_exists(environment, params):
                return INVALID_FIELD
            env.collections[some_id] = params
        return None

    def replace_tags(self, environment: str | None, upload_id: str, tags: list[str]) -> None:
        """``PUT /uploads/<id>`` with ``attributes.tags``: the list replaces the upload's."""
        self._env(environment).tags[upload_id] = list(dict.fromkeys(tags))

    def forget(self, environment: str | None, some_id: str) -> None:
        """A destroyed record or upload loses its stage, tags and collection."""
        env = self._env(environment)
        for mapping in (env.stages, env.workflows, env.tags, env.collections):
            mapping.pop(some_id, None)

    def reset(self) -> None:
        self._envs.clear()

    def _env(self, environment: str | None) -> _EnvMeta:
        env = self._envs.get(environment)
        if env is None:
            env = self._envs[environment] = _EnvMeta()
        return env
