"""``bulkops submit --dry-run``: the whole input read and validated as the worker would (its
own ``parse_request``), the request messages that would be published, and how the worker
would batch them and how long the rate limits need for that. Nothing is published: no broker
connection is made.

Estimates use the registry's facts: each operation's items (and body bytes) per API request
and each API's default rate limit. A DatoCMS bulk request is an asynchronous job: at least one
job poll follows it, counted too. The CLI cannot know the worker's targets: the target is
assumed to be one of the operation's API, with the default rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from worker import exactjson
from worker.apis.base import Operation
from worker.cli.common import EXIT_FAILED, EXIT_OK
from worker.cli.inputs import Source
from worker.client import Chunk, Job
from worker.messages import Invalid, Rejection, parse_request
from worker.rates import Rate
from worker.registry import APIS, SCOPES

SHOWN_REJECTIONS = 20


@dataclass
class Plan:
    """What a dry run found: per request message, how many of its ids or items would be sent;
    the rejected ones; the bytes of what would be sent (for body-size caps)."""

    job: Job
    spec: Operation
    requests: list[tuple[int, int]] = field(default_factory=list)  # (carried, to send)
    rejected: list[tuple[int, Rejection]] = field(default_factory=list)  # (request no., why)
    refused: list[tuple[int, Invalid]] = field(default_factory=list)  # whole messages
    send_bytes: int = 0

    @property
    def to_send(self) -> int:
        return sum(sent for _, sent in self.requests)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.rejected or self.refused else EXIT_OK

    def api_requests(self) -> int:
        """Bulk API requests for the items that would be sent, at the operation's caps."""
        if not self.to_send:
            return 0
        by_items = math.ceil(self.to_send / self.spec.max_items)
        cap = self.spec.max_body_bytes
        return max(by_items, math.ceil(self.send_bytes / cap) if cap else 0)


def plan(job: Job, spec: Operation, source: Source, chunk: int) -> Plan:
    """Read the whole input in request chunks and validate each as the worker would."""
    found = Plan(job, spec)
    for number, part in enumerate(source.chunks(chunk), 1):
        _add(found, number, part)
    return found


def _add(found: Plan, number: int, part: Chunk) -> None:
    body = found.job.body(f"dry-run-{number}", part.ids, part.items)
    parsed = parse_request(body, None, {found.job.target: found.spec.api})
    if isinstance(parsed, Invalid):
        found.refused.append((number, parsed))
        found.requests.append((len(part), 0))
        return
    found.requests.append((len(part), len(parsed.ids)))
    found.rejected += [(number, rejection) for rejection in parsed.rejected]
    if parsed.payloads is not None:
        found.send_bytes += sum(len(exactjson.dumps(p)) for p in parsed.payloads.values())
    else:
        found.send_bytes += sum(len(i) + 4 for i in parsed.ids)


def report(found: Plan, queue: str, source: Source) -> Iterator[str]:
    """The dry run's lines for a person (standard output)."""
    job, spec = found.job, found.spec
    yield "dry run: nothing is published (no broker connection is made)"
    yield f"operation {spec.name}, target {job.target!r}, {_scope(job, spec)}{_params(job)}"
    carried = sum(c for c, _ in found.requests)
    yield (
        f"{_n(len(found.requests), 'request message')} to {queue} with {carried} {spec.carries} "
        f"from {source.name}:"
    )
    for number, (count, sent) in enumerate(found.requests, 1):
        yield f"  request {number}: {count} {spec.carries}, {sent} would be sent"
    yield from _rejections(found)
    yield from _batching(found)
    yield (
        f"note: the CLI cannot know the worker's targets: {job.target!r} is assumed to be a "
        f"{spec.api} target with the default rate limit; a worker without it answers every "
        "item rejected (unknown_target)."
    )


def _rejections(found: Plan) -> Iterator[str]:
    for number, invalid in found.refused:
        yield f"request {number} would be refused as a whole: {invalid.reason} ({invalid.code})"
    if not found.rejected:
        return
    yield f"{len(found.rejected)} {found.spec.carries} would be rejected:"
    for number, rejection in found.rejected[:SHOWN_REJECTIONS]:
        yield f"  request {number}: {rejection.id!r}: {rejection.reason} ({rejection.code})"
    if len(found.rejected) > SHOWN_REJECTIONS:
        yield f"  and {len(found.rejected) - SHOWN_REJECTIONS} more"


def _batching(found: Plan) -> Iterator[str]:
    spec = found.spec
    api = APIS[spec.api]
    rate = Rate.parse(api.target.default_rate)
    bulk = found.api_requests()
    total = bulk * (1 + api.follow_ups)
    # The worker's limiter: a scope's first window starts as the worker does, then ``rate``
    # per window; the last window's requests go at its start.
    seconds = math.ceil(total / rate.requests) * rate.seconds if total else 0.0
    caps = f"at most {spec.max_items} {spec.carries}"
    if spec.max_body_bytes:
        caps += f" and {spec.max_body_bytes:,} body bytes"
    yield (
        f"batching: 1 scope ({_scope(found.job, spec)}{_params(found.job)}): "
        f"{found.to_send} {spec.carries} in {_n(bulk, 'API request')} of {caps}"
    )
    polls = total - bulk
    counted = f"{bulk} bulk + at least {polls} job polls = {total}" if polls else f"{total}"
    yield (
        f"rate limits: {counted} API requests at {api.title}'s default {rate}: about {seconds:g} s"
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _scope(job: Job, spec: Operation) -> str:
    value = job.scope.get(spec.scope_field)
    if value is None:
        absent = SCOPES[spec.scope_field].absent
        return f"{spec.scope_field} ({absent})" if absent else ""
    return f"{spec.scope_field} {value!r}"


def _params(job: Job) -> str:
    if job.params is None:
        return ""
    return f", params {exactjson.dumps(job.params).decode()}"


__all__ = ["Plan", "plan", "report"]
