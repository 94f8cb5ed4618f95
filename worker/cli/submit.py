"""``bulkops submit``: a bulk job from a file or standard input, answered per item."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from worker.cli import dryrun
from worker.cli.common import (
    BROKER_ERRORS,
    EXIT_FAILED,
    EXIT_OK,
    ClientSettings,
    CliError,
    connect,
    describe,
    say,
)
from worker.cli.inputs import InputError, Source
from worker.cli.interrupt import Interrupt
from worker.cli.progress import Quiet, progress
from worker.client import MAX_PER_MESSAGE, Answer, BrokerError, Client, Job, JobError
from worker.client.connection import iterate
from worker.registry import SCOPES


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "submit",
        help="publish a bulk job from a file or standard input and wait for every answer",
        description="Publishes ids (one per line) or items (one JSON object per line) as "
        "request messages of at most --chunk each, waits for the worker's replies and writes "
        "one JSON line per item. Exit 0: all succeeded; 1: some failed or were rejected; "
        "2: usage or connection error. With --dry-run nothing is published.",
    )
    parser.add_argument("operation", help="e.g. datocms.items.publish")
    parser.add_argument("--target", required=True, help="a target name of the worker")
    scope = parser.add_mutually_exclusive_group()
    for declared in SCOPES.values():  # each API's scope field, as its area declares it
        scope.add_argument(declared.flag, dest=declared.name, help=declared.help)
    parser.add_argument("--params", help="JSON object, for operations that take params")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--ids-file", metavar="F", help="one id per line ('-': standard input)")
    source.add_argument("--items-file", metavar="F", help="one JSON item per line ('-': stdin)")
    parser.add_argument("--chunk", type=int, default=1000, help="ids per message (default 1000)")
    parser.add_argument(
        "--results", default="-", metavar="OUT", help="JSON lines per item (default: stdout)"
    )
    parser.add_argument("--no-wait", action="store_true", help="publish without reply_to and exit")
    parser.add_argument(
        "--priority",
        action="store_true",
        help="publish to the priority lane (<request queue>.priority): answered ahead of the "
        "backlog, under the same rate limits",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the whole input as the worker would, show the request messages and how "
        "they would be batched, publish nothing (exit 0: all would be sent; 1: some would be "
        "rejected)",
    )


@dataclass
class Tally:
    """Items answered, by status and by error code."""

    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    codes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    requests: int = 0

    def add(self, answer: Answer) -> None:
        self.requests += 1
        for item in answer.reply.items:
            self.statuses[item.status] += 1
            if item.error is not None:
                self.codes[(item.status, item.error.code)] += 1
        if answer.unanswered:  # a message refused as a whole, its ids unreadable
            code = _refusal(answer)["code"]
            self.statuses["rejected"] += len(answer.unanswered)
            self.codes[("rejected", code)] += len(answer.unanswered)

    @property
    def items(self) -> int:
        return sum(self.statuses.values())

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.statuses["failed"] or self.statuses["rejected"] else EXIT_OK

    def summary(self) -> list[str]:
        counts = ", ".join(f"{self.statuses[s]} {s}" for s in ("succeeded", "failed", "rejected"))
        lines = [f"{self.items} items answered in {self.requests} requests: {counts}"]
        for (status, code), count in sorted(self.codes.items()):
            lines.append(f"  {status} {code}: {count}")
        return lines


def result_lines(answer: Answer) -> bytes:
    """One JSON line per item of a reply (``id``, ``status``, ``error``), and a ``rejected``
    one for each id the reply could not list (its message refused as a whole)."""
    rows: list[dict[str, Any]] = [
        {"id": i.id, "status": i.status, "error": i.error.model_dump() if i.error else None}
        for i in answer.reply.items
    ]
    if answer.unanswered:
        error = _refusal(answer)
        rows += [{"id": key, "status": "rejected", "error": error} for key in answer.unanswered]
    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def _refusal(answer: Answer) -> dict[str, Any]:
    if answer.reply.error is not None:
        return answer.reply.error.model_dump()
    return {"code": "no_answer", "message": "the reply does not list this id", "retryable": False}


def job_from(args: argparse.Namespace, settings: ClientSettings) -> tuple[Job, Source]:
    """The job and its input, checked: CliError for anything no worker would take."""
    params = _params(args.params)
    scope = {name: getattr(args, name) for name in SCOPES}
    job = Job(args.operation, args.target, params=params, **scope)
    try:
        spec = job.check(settings.target_kinds(), with_params=not args.dry_run)
    except JobError as exc:
        raise CliError(str(exc)) from None
    if args.ids_file is not None and spec.carries == "items":
        raise CliError(f"{spec.name} carries items: give them with --items-file")
    if args.items_file is not None and spec.carries == "ids":
        raise CliError(f"{spec.name} carries ids: give them with --ids-file")
    if not 1 <= args.chunk <= MAX_PER_MESSAGE:
        raise CliError(f"--chunk must be 1 to {MAX_PER_MESSAGE}")
    return job, Source(args.ids_file or args.items_file, spec.carries)


def _params(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        params = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"--params is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise CliError("--params must be a JSON object")
    return params


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    job, source = job_from(args, settings)
    try:
        total = source.check()
    except InputError as exc:
        raise CliError(str(exc)) from None
    if total == 0:
        raise CliError(f"no {source.kind} in {source.name}")
    if args.dry_run:
        return _dry_run(job, source, args.chunk, settings.request_queue)
    connection = await connect(settings, "submit")
    async with connection:
        try:
            # An id or item the worker would reject is published and answered `rejected`
            # (exit 1, as the contract says); `--dry-run` shows them before anything is sent.
            client = await Client.create(
                connection, settings.request_queue, every_item=False, priority=args.priority
            )
            if args.no_wait:
                return await _publish_only(client, job, source, args.chunk)
            return await _submit(client, job, source, args, total, settings)
        except BrokerError as exc:
            raise CliError(str(exc)) from None
        except JobError as exc:  # a chunk the worker would refuse whole: none of it sent
            raise CliError(f"{exc} (nothing of that request published; see --dry-run)") from None
        except BROKER_ERRORS as exc:
            raise CliError(f"lost the broker: {describe(exc)}") from None


def _dry_run(job: Job, source: Source, chunk: int, queue: str) -> int:
    try:
        found = dryrun.plan(job, job.spec, source, chunk)
    except InputError as exc:
        raise CliError(str(exc)) from None
    for line in dryrun.report(found, queue, source):
        print(line)
    return found.exit_code


async def _publish_only(client: Client, job: Job, source: Source, chunk: int) -> int:
    requests = items = 0
    try:
        async for part in iterate(source.chunks(chunk)):
            await client.publish(job, part)
            requests += 1
            items += len(part)
    except InputError as exc:
        raise CliError(f"{exc} ({requests} requests, {items} {source.kind} published)") from None
    say(f"published {requests} requests with {items} {source.kind} to {client.request_queue}")
    return EXIT_OK


async def _submit(
    client: Client,
    job: Job,
    source: Source,
    args: argparse.Namespace,
    total: int | None,
    settings: ClientSettings,
) -> int:
    tally = Tally()
    bar = progress(total, sys.stderr)
    quiet = Quiet(say, f"is a worker consuming {client.request_queue} and answering reply_to?")
    watcher = asyncio.create_task(quiet.watch())
    halt = Interrupt(client, settings)
    try:
        answers = client.submit(
            job, source.chunks(args.chunk), stop=halt.stop, unanswered=halt.unanswered
        )
        with _results(args.results) as out, halt.handling():
            halt.output = out

            async def consume() -> None:
                async with contextlib.aclosing(answers):
                    async for answer in answers:
                        quiet.touch()
                        out.write(result_lines(answer))
                        tally.add(answer)
                        bar.advance(answer.sent)

            await halt.run(consume())
    except InputError as exc:
        bar.close()
        for line in tally.summary():
            say(line)
        raise CliError(f"{exc} ({tally.items} {source.kind} before it answered)") from None
    finally:
        watcher.cancel()
    bar.close()
    if halt.stop.is_set():
        return halt.report(tally, total, source.kind)
    if tally.items == 0:
        raise CliError(f"no {source.kind} in {source.name}")
    for line in tally.summary():
        say(line)
    return tally.exit_code


@contextlib.contextmanager
def _results(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        stream = open(path, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
    with stream:
        yield stream
