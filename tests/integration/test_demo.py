"""``python -m worker demo`` as a new user runs it: with the metrics port 9464 taken by another
process it still passes, within 30 s, and leaves no queue or exchange of its run behind; with
a port it cannot have, it fails fast with a clear message and cleans up as well."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import aio_pika
import aiormq
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AMQP = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def port_9464_taken() -> Iterator[None]:
    """Another process's listener on 9464 (the wildcard address, as a metrics exporter has)."""
    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", 9464))
    except OSError:
        holder.close()
        yield  # taken already, by someone else: the condition holds anyway
        return
    holder.listen()
    try:
        yield
    finally:
        holder.close()


def run_demo(**env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BULKOPS_")}
    ran = subprocess.run(
        [sys.executable, "-m", "worker", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **env},
        check=False,
    )
    return ran, time.monotonic() - started


def run_id(output: str) -> str:
    found = re.search(r"demo run ([0-9a-f]{6})", output)
    assert found, output
    return found.group(1)


def broker_names(kind: str) -> list[str]:
    listed = subprocess.run(
        ["rabbitmqctl", "-q", f"list_{kind}", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return listed.stdout.split()


async def assert_nothing_left(run: str) -> None:
    """No queue or exchange of the run: every name the demo uses is absent (a passive declare
    answers NOT_FOUND), and the broker's own listing has no name of the run."""
    from worker.demo import run_names
    from worker.settings import Settings

    prefix = f"bulkops.demo.{run}"
    settings = Settings(
        _env_file=None,
        request_queue=f"{prefix}.requests",
        dead_letter_queue=f"{prefix}.dlq",
        results_exchange=f"{prefix}.results",
        partition_exchange=f"{prefix}.partitions",
    )
    queues, exchanges = run_names(settings)
    connection = await aio_pika.connect(AMQP)
    async with connection:
        for name in queues:
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue(name, passive=True)
        for name in exchanges:
            channel = await connection.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await channel.declare_exchange(name, passive=True)
    left = [n for n in broker_names("queues") + broker_names("exchanges") if prefix in n]
    assert left == []


@pytest.mark.timeout(90)
async def test_demo_passes_with_port_9464_taken_in_under_30_s_and_leaves_nothing(
    port_9464_taken: None,
) -> None:
    ran, seconds = run_demo()
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert seconds < 30, seconds
    assert "rate-limit breaches seen by the emulator: 0" in ran.stdout
    assert "http://127.0.0.1:9464/metrics" not in ran.stdout  # it took another port
    await assert_nothing_left(run_id(ran.stdout))


@pytest.mark.timeout(90)
async def test_demo_honours_BULKOPS_HTTP_PORT_and_fails_fast_and_clean_when_it_is_taken(
    port_9464_taken: None,
) -> None:
    ran, seconds = run_demo(BULKOPS_HTTP_PORT="9464")
    assert ran.returncode == 1
    assert seconds < 15, seconds
    assert "port 9464" in ran.stderr
    assert "Traceback" not in ran.stderr
    await assert_nothing_left(run_id(ran.stdout))
