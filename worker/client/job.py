"""A bulk job: what every request message of it shares, checked before anything is published,
and the request body of one chunk of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker import exactjson
from worker.client.operations import CONTRACT_OPERATIONS, OperationSpec, scope_problem
from worker.messages import Invalid, Request, parse_request
from worker.registry import SCOPES

MAX_PER_MESSAGE = 10_000  # ids or items in one request message (the worker's limit)


class JobError(ValueError):
    """A job no worker would take (unknown operation or target, scope or params that do not
    fit): found before anything is published."""


class Job:
    """Operation, target, scope and params: the part every request message of a job shares.

    The scope is given by its field's name, as the operation's API declares it (e.g.
    ``environment="sandbox-1"`` for DatoCMS, ``catalog_id="products"`` for Bloomreach), or
    positionally after the target in the catalog's order (``worker.registry.SCOPES``), then
    ``params``. ``job.<field>`` reads a scope field (None when not given)."""

    __slots__ = ("operation", "params", "scope", "target")

    def __init__(
        self,
        operation: str,
        target: str,
        *args: Any,
        params: Mapping[str, Any] | None = None,
        **scope: str | None,
    ) -> None:
        names = list(SCOPES)
        if len(args) > len(names) + 1:
            raise TypeError(f"Job() takes at most {len(names) + 3} positional arguments")
        if len(args) == len(names) + 1:
            params = args[-1]
        unknown = sorted(set(scope) - set(names))
        if unknown:
            raise TypeError(f"Job() got an unexpected keyword argument {unknown[0]!r}")
        given = {**dict(zip(names, args, strict=False)), **scope}
        self.operation = operation
        self.target = target
        self.scope: Mapping[str, str] = {k: v for k, v in given.items() if v is not None}
        self.params = params

    def __getattr__(self, name: str) -> str | None:
        if name in SCOPES:
            return self.scope.get(name)
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        mine = (self.operation, self.target, self.scope, self.params)
        return mine == (other.operation, other.target, other.scope, other.params)

    def __hash__(self) -> int:
        return hash((self.operation, self.target, tuple(sorted(self.scope.items()))))

    def __repr__(self) -> str:
        scope = "".join(f", {k}={v!r}" for k, v in self.scope.items())
        params = f", params={self.params!r}" if self.params is not None else ""
        return f"Job({self.operation!r}, {self.target!r}{scope}{params})"

    @property
    def spec(self) -> OperationSpec:
        spec = CONTRACT_OPERATIONS.get(self.operation)
        if spec is None:
            known = ", ".join(sorted(CONTRACT_OPERATIONS))
            raise JobError(f"unknown operation {self.operation!r} (known: {known})")
        return spec

    def check(
        self, targets: Mapping[str, str | None] | None = None, *, with_params: bool = True
    ) -> OperationSpec:
        """Raise JobError unless the job fits the contract. ``targets`` (name -> API kind, or
        None when the kind is not known) are checked when given and not empty; without
        them the target is left to the worker, which answers an unknown one ``rejected``.
        ``with_params`` False leaves the params to the worker's reading (a dry run)."""
        spec = self.spec
        if targets:
            _check_target(self.target, spec, targets)
        _check_scope(self, spec)
        if with_params:
            _check_params(self.params, spec)
        return spec

    def request(
        self,
        request_id: str,
        ids: Sequence[str] | None = None,
        items: Sequence[Mapping[str, Any]] | None = None,
        *,
        every_item: bool = True,
    ) -> tuple[bytes, Request]:
        """The body of one request message and the worker's reading of it: JobError unless
        the worker would take the message and (with ``every_item``) send every id or item of
        it; without ``every_item`` an id or item the worker would reject goes along and is
        answered ``rejected`` by the worker. The worker's own validation
        (``worker.messages.parse_request``) decides, the target taken as one of the
        operation's API (the client cannot know the worker's targets)."""
        spec = self.check()
        if (ids is None) == (items is None):
            raise JobError("a request carries ids or items, exactly one of the two")
        body = self.body(request_id, ids, items)
        parsed = parse_request(body, request_id, {self.target: spec.api})
        if isinstance(parsed, Invalid):
            raise JobError(f"{spec.name}: {parsed.reason} ({parsed.code})")
        if parsed.rejected and every_item:
            shown = "; ".join(f"{r.id!r}: {r.reason} ({r.code})" for r in parsed.rejected[:3])
            more = f" and {len(parsed.rejected) - 3} more" if len(parsed.rejected) > 3 else ""
            raise JobError(
                f"{len(parsed.rejected)} of {len(parsed.distinct_ids)} {spec.carries} would "
                f"be rejected: {shown}{more}"
            )
        return body, parsed

    def body(
        self,
        request_id: str,
        ids: Sequence[str] | None = None,
        items: Sequence[Mapping[str, Any]] | None = None,
    ) -> bytes:
        """The JSON body of one request message carrying ``ids`` or ``items``."""
        if (ids is None) == (items is None):
            raise ValueError("a request carries ids or items, exactly one of the two")
        body: dict[str, Any] = {"operation": self.operation, "target": self.target}
        body.update((name, self.scope[name]) for name in SCOPES if name in self.scope)
        if self.params is not None:
            body["params"] = self.params
        body["ids" if ids is not None else "items"] = list(ids if ids is not None else items or ())
        body["request_id"] = request_id
        return exactjson.dumps(body)


def _check_target(name: str, spec: OperationSpec, targets: Mapping[str, str | None]) -> None:
    if name not in targets:
        raise JobError(f"unknown target {name!r} (configured: {', '.join(sorted(targets))})")
    kind = targets[name]
    if kind is not None and kind != spec.api:
        raise JobError(f"target {name!r} is a {kind} target; {spec.name} needs a {spec.api} one")


def _check_scope(job: Job, spec: OperationSpec) -> None:
    others = [name for name in job.scope if name != spec.scope_field]
    if others:
        raise JobError(f"{others[0]} does not apply to {spec.name}")
    scope = job.scope.get(spec.scope_field)
    if scope is None:
        if spec.scope_required:
            raise JobError(f"{spec.name} needs a {spec.scope_field}")
        return
    problem = scope_problem(scope, spec.scope_field)
    if problem is not None:
        raise JobError(problem)


def _check_params(params: Mapping[str, Any] | None, spec: OperationSpec) -> None:
    if spec.params is None:
        if params is not None:
            raise JobError(f"{spec.name} takes no params")
        return
    if params is None:
        raise JobError(f"{spec.name} needs params (a JSON object)")
    problem = spec.params(params)
    if problem is not None:
        raise JobError(problem)
