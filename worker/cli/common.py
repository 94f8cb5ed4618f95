"""What every command shares: exit codes, usage errors, the settings, a broker connection
whose errors never show the credentials in the URL."""

from __future__ import annotations

import sys
import urllib.parse

import aio_pika
import aio_pika.exceptions
import aiormq.exceptions
from aio_pika.abc import AbstractConnection
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from worker.addresses import Addresses

EXIT_OK = 0
EXIT_FAILED = 1  # some item failed or was rejected
EXIT_USAGE = 2  # bad arguments or input, or the broker cannot be reached

BROKER_ERRORS = (
    OSError,
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.AMQPException,
)


class CliError(Exception):
    """A usage or connection error: its message is printed and the command exits 2."""


class TargetKind(BaseModel):
    """Of a configured target, the client needs only the name (the key) and its kind."""

    model_config = ConfigDict(extra="ignore")

    kind: str | None = None


class ClientSettings(BaseSettings):
    """The worker's own ``BULKOPS_*`` settings that the commands use (credentials of the
    targets are not needed and not read into anything)."""

    model_config = SettingsConfigDict(
        env_prefix="BULKOPS_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    request_queue: str = "bulkops.requests"
    dead_letter_queue: str = "bulkops.requests.dlq"
    results_exchange: str = "bulkops.results"
    control_exchange: str = Field(default="bulkops.control", min_length=1, max_length=200)
    cancel_ttl_seconds: float = Field(default=86400, gt=0, le=30 * 86400)
    targets: dict[str, TargetKind] = {}

    def target_kinds(self) -> dict[str, str | None]:
        return {name: target.kind for name, target in self.targets.items()}


def load_settings() -> ClientSettings:
    """The settings, or CliError naming what is wrong (never the values: they may be secret)."""
    try:
        return ClientSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"BULKOPS_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise CliError(f"settings: {problems}") from None
    except SettingsError as exc:
        raise CliError(f"settings: {exc}") from None


def safe_url(url: str) -> str:
    """The broker URL without user and password: what may be printed."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


async def connect(settings: ClientSettings, role: str) -> AbstractConnection:
    url = settings.amqp_url.get_secret_value()
    try:  # every address of a comma-separated list in turn (worker/addresses.py)
        addresses = Addresses.parse(url)
        return await addresses.connect(client_properties={"connection_name": f"bulkops-{role}"})
    except BROKER_ERRORS as exc:
        reason = describe(exc)
        for one in url.split(","):
            password = urllib.parse.urlsplit(one.strip()).password
            if password:  # an error text must not carry it either
                reason = reason.replace(password, "***")
        where = ", ".join(safe_url(one.strip()) for one in url.split(",") if one.strip())
        raise CliError(f"cannot connect to the broker at {where}: {reason}") from None
    except ValueError as exc:  # a URL that does not parse
        raise CliError(f"BULKOPS_AMQP_URL is not a valid AMQP URL ({type(exc).__name__})") from None


def describe(exc: BaseException) -> str:
    """An exception in a few words, for a person; the class name when it says nothing."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def say(text: str) -> None:
    """A line for the person at the terminal (standard error; standard output is data)."""
    print(text, file=sys.stderr, flush=True)
