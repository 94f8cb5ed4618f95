"""bulkops (or python -m worker): run | emulator [--port N] | demo | submit | tail | dlq.

The worker that batches DatoCMS and Bloomreach bulk operations under their rate limits and
answers per item, and the commands around it."""

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
    commands.add_parser(
        "run",
        help="consume requests and call the APIs (settings: BULKOPS_*)",
        description="Consume request messages, call the APIs under their rate limits, publish\n"
        "outcomes and replies. Exits 0 after a clean drain on SIGTERM or SIGINT.",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    emulator = commands.add_parser(
        "emulator",
        help="serve the bundled DatoCMS/Bloomreach emulator",
        description="The bundled emulator of both APIs, for local runs, demos and tests.",
        epilog=_emulator_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    emulator.add_argument("--port", type=int, default=8900, help="port to listen on (default 8900)")
    emulator.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    demo = commands.add_parser("demo", help="emulator + worker + sample traffic on local RabbitMQ")
    demo.add_argument(
        "--amqp-url",
        default=os.environ.get("BULKOPS_AMQP_URL", "").strip() or LOCAL_AMQP_URL,
        help="the broker, or a cluster's nodes comma-separated (default: BULKOPS_AMQP_URL, "
        "else the local RabbitMQ)",
    )
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

        try:
            settings = Settings()
        except ValueError:  # a bad setting: a typo'd name beside it is worth knowing too
            _warn_unknown_variables()
            raise
        logs.configure(settings.log_level)
        _warn_unknown_variables()
        from worker import tracing

        tracing.configure(os.environ)
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                return runner.run(run(settings))
        finally:
            tracing.shutdown()
    if args.command == "emulator":
        return _emulator(args.host, args.port)
    return _demo(args.amqp_url, args.http_port)


def _settings_help() -> str:
    from worker.settings import described_settings

    lines = "\n".join(f"  {line}" for line in described_settings())
    return (
        "settings: environment variables (also read from .env; nested ones with '__',\n"
        "e.g. BULKOPS_TARGETS__MAIN__API_TOKEN), with their defaults:\n" + lines
    )


def _emulator_help() -> str:
    """The admin and fault-injection API (under /_emulator), where the emulator is installed."""
    try:
        from worker.emulator import admin
    except ModuleNotFoundError:
        return ""
    return "admin and fault-injection API, under " + admin.PREFIX + ":\n" + plain(admin.HELP)


def plain(text: str) -> str:
    """Documentation text for a terminal: without reStructuredText/Markdown backticks."""
    return text.replace("``", "").replace("`", "")


def _warn_unknown_variables() -> None:
    """Log each BULKOPS_* variable (of the environment or .env, which the settings read
    too) that names no setting, with the closest known name."""
    import logging

    from dotenv import dotenv_values

    from worker.settings import unknown_variables

    log = logging.getLogger("bulkops")
    dotenv = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    for variable, close in unknown_variables({**dotenv, **os.environ}):
        hint = f"; did you mean {close}?" if close else ""
        log.warning("unknown setting %s is ignored%s", variable, hint)


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


LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


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
