"""Processes under test: the emulator and the worker (each its own process, so its own core
as far as the machine has them), plus what /proc says about their CPU time and memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from tests.bench.amqp import AMQP_URL, Names
from tests.integration.harness import (
    EmulatorProcess,
    Proc,
    emulator_process,
    free_port,
    start_worker,
)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
    return out


class EmulatorProc(EmulatorProcess):
    async def round_trips(self, count: int = 50) -> list[float]:
        """Times of ``count`` one-id Bloomreach deletes, 20 ms apart, on one kept-alive
        connection (as the worker sends them)."""
        path = "/data/v2/projects/proj-1/catalogs/rtt/items/bulk-delete"
        times = []
        auth = ("bloom-key", "bloom-secret")
        async with httpx.AsyncClient(base_url=self.base_url, auth=auth) as client:
            for n in range(count):
                started = time.monotonic()
                response = await client.post(path, json=[{"item_id": f"rtt-{n}"}])
                times.append(time.monotonic() - started)
                response.raise_for_status()
                await asyncio.sleep(0.02)
        return times


@contextlib.asynccontextmanager
async def emulator() -> AsyncIterator[EmulatorProc]:
    """The bundled emulator on a free port, in its own process."""
    async with emulator_process() as emu:
        yield EmulatorProc(emu.process, emu.base_url)


def worker_env(
    names: Names, base_url: str, unlimited: bool = False, **settings: Any
) -> dict[str, str]:
    """Environment for ``python -m worker run``: one DatoCMS and one Bloomreach target.

    ``unlimited``: the worker's own limiters allow far more than the APIs (for runs against
    the emulator with its limits off, where the worker is to be measured, not the API)."""
    targets: dict[str, dict[str, str]] = {
        "bench": {"kind": "datocms", "base_url": base_url, "api_token": "dato-token"},
        "shop": {
            "kind": "bloomreach",
            "base_url": base_url,
            "api_key_id": "bloom-key",
            "api_secret": "bloom-secret",
            "project_id": "proj-1",
        },
    }
    if unlimited:
        for target in targets.values():
            target["rate_limit"] = "100000/1s"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKOPS_")}
    env |= {
        "BULKOPS_AMQP_URL": AMQP_URL,
        "BULKOPS_REQUEST_QUEUE": names.requests,
        "BULKOPS_DEAD_LETTER_QUEUE": names.dlq,
        "BULKOPS_RESULTS_EXCHANGE": names.results,
        "BULKOPS_HTTP_HOST": "127.0.0.1",
        "BULKOPS_HTTP_PORT": str(free_port()),
        "BULKOPS_TARGETS": orjson.dumps(targets).decode(),
        "BULKOPS_LOG_LEVEL": "WARNING",
    }
    env |= {f"BULKOPS_{k.upper()}": str(v) for k, v in settings.items()}
    return env


def fresh_port(env: dict[str, str]) -> dict[str, str]:
    """The same settings on a port of its own: for a second replica beside the first."""
    return {**env, "BULKOPS_HTTP_PORT": str(free_port())}


@contextlib.asynccontextmanager
async def worker(env: dict[str, str]) -> AsyncIterator[Proc]:
    """The worker as a real process, ready (``/readyz``) when yielded; SIGTERM on leaving."""
    proc = await start_worker(env)
    spy = await _profile(proc.process.pid)
    try:
        yield proc
    finally:
        code = await proc.terminate()
        if spy is not None:
            await spy.wait()
        if code != 0:
            raise RuntimeError(f"worker exited {code}: {proc.stderr_tail()}")


async def _profile(pid: int) -> asyncio.subprocess.Process | None:
    """With ``BENCH_PYSPY=DIR`` (and py-spy installed), sample each worker until it exits."""
    folder = os.environ.get("BENCH_PYSPY")
    if not folder:
        return None
    return await asyncio.create_subprocess_exec(
        "py-spy", "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
        "--output", os.path.join(folder, f"worker-{pid}.txt"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
