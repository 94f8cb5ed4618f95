"""The commands for the people and services around the worker: ``submit``, ``tail``, ``dlq``,
``cancel``, ``pause``, ``resume``, ``status``.

Each prints data on standard output and messages for a person on standard error, and exits
0 (done), 1 (``submit``: some item failed or was rejected; ``status``: no worker answered)
or 2 (usage or connection error, with a message that never shows the broker's credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from worker.cli import control, dlq, submit, tail
from worker.cli.common import EXIT_USAGE, ClientSettings, CliError, load_settings, say

Command = Callable[[argparse.Namespace, ClientSettings], Coroutine[Any, Any, int]]
COMMANDS: dict[str, Command] = {"submit": submit.run, "tail": tail.run, "dlq": dlq.run}
COMMANDS.update(dict.fromkeys(("cancel", "pause", "resume", "status"), control.run))
EXIT_INTERRUPTED = 130


def add_commands(commands: Any) -> None:
    """Add the commands' parsers to the ``bulkops`` parser's subparsers."""
    for module in (submit, tail, dlq, control):
        module.add_parser(commands)


def run_command(args: argparse.Namespace) -> int:
    """Run a command of this package; its exit code."""
    # aiormq and aio-pika log connection failures as tracebacks: the command says it once.
    for name in ("aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        settings = load_settings()
        return asyncio.run(COMMANDS[args.command](args, settings))
    except CliError as exc:
        say(f"bulkops {args.command}: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        say(f"bulkops {args.command}: interrupted")
        return EXIT_INTERRUPTED
