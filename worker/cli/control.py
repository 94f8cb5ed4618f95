"""``bulkops cancel|pause|resume|status``: operator control (CONTRACT "Control").

Each message is validated by the rules the workers apply (``worker.control.messages``; a
bad one: exit 2, nothing published) and sent with ``ControlClient``; the command exits 0
once the broker confirmed it, 2 on a usage or connection error. ``status`` prints what every
worker answered within ``--timeout`` and exits 1 when none did.
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime
from typing import Any

import orjson

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
from worker.client.control import ControlClient, ControlPublishError, ControlRefused
from worker.control.messages import control_body
from worker.registry import APIS, SCOPES

DEFAULT_TIMEOUT = 3.0


def add_parser(commands: Any) -> None:
    cancel = commands.add_parser(
        "cancel",
        help="withdraw every item of requests (or of a scope) not yet sent to an API",
        description="Cancel requests by id, or every item of a target (or of one scope of it) "
        "whoever published it. Items already sent to an API keep their true outcome; the "
        "rest are answered rejected/cancelled. Exit 0 once the broker confirmed the message; "
        "2: usage or connection error.",
    )
    cancel.add_argument("request_ids", nargs="*", metavar="REQUEST_ID", help="request ids")
    cancel.add_argument("--target", help="cancel a whole target, or with a scope option, a scope")
    _scope_options(cancel)
    for name, verb in (("pause", "send nothing for"), ("resume", "end the pause of")):
        parser = commands.add_parser(
            name,
            help=f"{verb} a target or one scope of it",
            description=f"{name.capitalize()}: {verb} TARGET (no scope option: the whole "
            "target). Exit 0 once the broker confirmed the message; 2: usage or connection "
            "error.",
        )
        parser.add_argument("target", metavar="TARGET", help="a target name of the worker")
        _scope_options(parser)
    status = commands.add_parser(
        "status",
        help="what every running worker holds, pauses and cancels in force",
        description="Asks every running worker and prints the answers that came within "
        "--timeout. Exit 0: at least one worker answered; 1: none did; 2: usage or "
        "connection error.",
    )
    status.add_argument("--json", action="store_true", help="one JSON report per line")
    status.add_argument(
        "--timeout", type=_seconds, default=DEFAULT_TIMEOUT, metavar="S",
        help=f"how long to wait for answers (default {DEFAULT_TIMEOUT:g} s)",
    )  # fmt: skip


def _scope_options(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    for declared in SCOPES.values():  # each API's scope field, as its area declares it
        scope.add_argument(declared.flag, dest=declared.name, help=declared.help)
    primaries = [s for s in SCOPES.values() if s.absent]
    scope.add_argument(
        "--primary",
        action="store_true",
        help="the target's primary scope ("
        + ", ".join(f"{s.flag} absent: {s.absent}" for s in primaries)
        + "), rather than the whole target",
    )
    parser.add_argument("--reason", help="why (shown by status and in the cancelled outcomes)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (0 < value <= 3600) or math.isnan(value):
        raise argparse.ArgumentTypeError("give more than 0 and at most 3600 seconds")
    return value


def _targets(settings: ClientSettings) -> dict[str, str] | None:
    """The configured targets and their kinds, to check a target and its scope field; None
    (no check) when none is configured or one's kind is not known here."""
    kinds = settings.target_kinds()
    if not kinds or any(kind is None for kind in kinds.values()):
        return None
    return {name: kind for name, kind in kinds.items() if kind is not None}


def _scope(args: argparse.Namespace, targets: dict[str, str] | None) -> dict[str, str | None]:
    """The scope keyword the options give: none (the whole target), one field and its
    value, or with ``--primary`` the target's scope field that may be absent, as null."""
    given = {name: getattr(args, name) for name in SCOPES if getattr(args, name) is not None}
    if not args.primary:
        return given
    kind = (targets or {}).get(args.target or "")
    fields = [APIS[kind].scope] if kind is not None and kind in APIS else list(SCOPES.values())
    primaries = [field.name for field in fields if field.absent]
    if len(primaries) != 1:
        where = f"target {args.target!r}" if kind else "an unconfigured target"
        raise CliError(
            f"--primary: {where} has no single primary scope; give the scope option instead"
        )
    return {primaries[0]: None}


def _checked(args: argparse.Namespace, targets: dict[str, str] | None) -> dict[str, Any]:
    """The message's fields, checked by the workers' rules before anything connects."""
    if args.command == "status":
        control_body("status", reply_to="checked", targets=targets)
        return {}
    target = args.target
    if args.command == "cancel" and target is None:
        if args.primary or any(getattr(args, name) is not None for name in SCOPES):
            raise CliError("a scope option goes with --target (not with request ids)")
        control_body("cancel", request_ids=args.request_ids or None, reason=args.reason)
        return {}
    if args.command == "cancel" and args.request_ids:
        raise CliError("give request ids or --target, not both")
    scope = _scope(args, targets)
    sel = next(iter(scope.items()), None)
    control_body(args.command, target=target, reason=args.reason, scope=sel, targets=targets)
    return scope


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    targets = _targets(settings)
    try:
        scope = _checked(args, targets)
    except ControlRefused as exc:
        raise CliError(f"refused: {exc.reason}") from None
    connection = await connect(settings, "control")
    async with connection:
        client = ControlClient(
            connection,
            exchange=settings.control_exchange,
            cancel_ttl_seconds=settings.cancel_ttl_seconds,
            targets=targets,
            app_id="bulkops-cli",
        )
        try:
            if args.command == "status":
                return _show_status(await client.status(args.timeout), args)
            return _sent(args, await _send(client, args, scope))
        except ControlRefused as exc:
            raise CliError(f"refused: {exc.reason}") from None
        except ControlPublishError as exc:
            raise CliError(str(exc)) from None
        except BROKER_ERRORS as exc:
            raise CliError(f"the broker: {describe(exc)}") from None


async def _send(client: ControlClient, args: argparse.Namespace, scope: dict[str, Any]) -> str:
    if args.command == "cancel" and args.target is None:
        return await client.cancel(args.request_ids, reason=args.reason)
    call = {
        "cancel": client.cancel_scope, "pause": client.pause, "resume": client.resume,
    }[args.command]  # fmt: skip
    return await call(args.target, reason=args.reason, **scope)


def _sent(args: argparse.Namespace, message_id: str) -> int:
    if args.command == "cancel" and args.target is None:
        what = f"cancel of {len(set(args.request_ids))} request(s)"
    else:
        what = f"{args.command} of {_where(args.target, _scope_json(args))}"
    print(message_id, flush=True)
    say(f"bulkops {args.command}: {what} confirmed by the broker (message {message_id})")
    return EXIT_OK


def _scope_json(args: argparse.Namespace) -> dict[str, Any] | None:
    for name in SCOPES:
        if getattr(args, name) is not None:
            return {name: getattr(args, name)}
    if args.primary:
        return {"primary": None}
    return None


def _where(target: Any, scope: Any) -> str:
    if not isinstance(scope, dict) or not scope:
        return f"{target} (whole target)"
    name, value = next(iter(scope.items()))
    if name == "primary" or value is None:
        return f"{target} (primary)"
    return f"{target} {name}={value}"


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float) or not math.isfinite(stamp):
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _who(entry: dict[str, Any]) -> str:
    return f"user {entry.get('user_id') or '-'}, app {entry.get('app_id') or '-'}"


def _show_status(reports: list[dict[str, Any]], args: argparse.Namespace) -> int:
    if not reports:
        say(f"bulkops status: no worker answered within {args.timeout:g} s")
        return EXIT_FAILED
    if args.json:
        for report in reports:
            print(orjson.dumps(report).decode(), flush=True)
    else:
        print("\n".join(line for report in reports for line in status_lines(report)))
    say(f"bulkops status: {len(reports)} worker(s) answered within {args.timeout:g} s")
    return EXIT_OK


def status_lines(report: dict[str, Any]) -> list[str]:
    """A worker's status reply as a few lines for a person."""
    partitions = report.get("partitions")
    parts = "not partitioned" if partitions is None else f"partitions {partitions}"
    lines = [f"worker {report.get('worker', '?')} ({parts}) at {_when(report.get('at'))}"]
    scopes = report.get("scopes") or []
    lines.append(f"  {'SCOPE':<40} {'PENDING':>8} {'IN FLIGHT':>9} {'PAUSED':>6} {'HELD':>8}")
    for s in scopes if isinstance(scopes, list) else []:
        where = _where(s.get("target"), s.get("scope"))
        lines.append(
            f"  {where:<40} {s.get('pending', 0):>8} {s.get('in_flight', 0):>9} "
            f"{'yes' if s.get('paused') else 'no':>6} {s.get('held', 0):>8}"
        )
    if not scopes:
        lines.append("  (no scope held)")
    for pause in report.get("pauses") or []:
        lines.append(
            f"  paused {_where(pause.get('target'), pause.get('scope'))} since "
            f"{_when(pause.get('since'))} by {_who(pause)}: {pause.get('reason') or '-'}"
        )
    for cancel in report.get("cancels") or []:
        what = (
            "requests " + ", ".join(cancel["request_ids"])
            if cancel.get("request_ids")
            else _where(cancel.get("target"), cancel.get("scope"))
        )
        lines.append(
            f"  cancelled {what} since {_when(cancel.get('since'))} until "
            f"{_when(cancel.get('expires'))} by {_who(cancel)}: {cancel.get('reason') or '-'}"
        )
    return lines
