"""``bulkops`` (or ``python -m worker``): ``run | emulator [--port N] | demo | submit | tail |
dlq``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable

from worker import logs


def main(argv: list[str] | None = None) -> int:
    from worker import cli

    parser = argparse.ArgumentParser(prog="bulkops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="consume requests and call the APIs (settings: BULKOPS_*)")
    emulator = commands.add_parser("emulator", help="serve the bundled DatoCMS/Bloomreach emulator")
    emulator.add_argument("--port", type=int, default=8900)
    emulator.add_argument("--host", default="127.0.0.1")
    demo = commands.add_parser("demo", help="emulator + worker + sample traffic on local RabbitMQ")
    demo.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    demo.add_argument(
        "--http-port",
        type=int,
        default=_env_port(),
        help="the worker's metrics port (default: BULKOPS_HTTP_PORT, else 9464 when free, "
        "else any free port)",
    )
    cli.add_commands(commands)
    args = parser.parse_args(argv)

    if args.command in cli.COMMANDS:
        return cli.run_command(args)

    if args.command == "run":
        from worker.app import run
        from worker.settings import Settings

        settings = Settings()
        logs.configure(settings.log_level)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(run(settings))
    if args.command == "emulator":
        return _emulator(args.host, args.port)
    return _demo(args.amqp_url, args.http_port)


# The emulator and the demo are development tools: the production image's wheel leaves them
# out (pyproject.toml, [tool.hatch.build.targets.wheel]), and there they say so.
NOT_INSTALLED = (
    "bulkops: `{command}` is not installed here: the production image carries only what "
    "`run` needs. Use a development checkout (uv sync; uv run python -m worker {command})."
)


def _emulator(host: str, port: int) -> int:
    try:
        from worker.emulator import EmulatorConfig, serve
    except ModuleNotFoundError as exc:
        return _not_installed("emulator", exc)
    logs.configure("INFO")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(EmulatorConfig(host=host, port=port)))
    return 0


def _env_port() -> int | None:
    """``BULKOPS_HTTP_PORT`` for the demo (which builds its own settings), when set."""
    value = os.environ.get("BULKOPS_HTTP_PORT", "").strip()
    return int(value) if value.isdigit() else None


def _demo(amqp_url: str, http_port: int | None) -> int:
    try:
        from worker.demo import demo as run_demo
    except ModuleNotFoundError as exc:
        return _not_installed("demo", exc)
    logs.configure("ERROR")
    code: int = asyncio.run(run_demo(amqp_url, http_port))
    return code


def _not_installed(command: str, exc: ModuleNotFoundError) -> int:
    if exc.name not in ("worker.emulator", "worker.demo"):
        raise exc  # a dependency missing in a development install: not this case
    print(NOT_INSTALLED.format(command=command), file=sys.stderr)
    return 2


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (not on Windows): a faster loop for a broker-bound worker."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    sys.exit(main())
