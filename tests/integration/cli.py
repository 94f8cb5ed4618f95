"""The installed ``bulkops`` command, run as a user runs it: a subprocess of the venv's
console script, configured through ``BULKOPS_*`` on a rig's fresh names."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from tests.integration.harness import Rig, die_with_parent

BULKOPS = Path(sys.executable).parent / "bulkops"


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def json_lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]


def cli_env(r: Rig, **extra: str) -> dict[str, str]:
    """The worker's settings of the rig (broker, names, targets), as a user would export."""
    env = r.env()
    env.update(extra)
    return env


async def bulkops(
    *args: str, env: dict[str, str], stdin: bytes | None = None, timeout: float = 60.0
) -> Ran:
    process = await asyncio.create_subprocess_exec(
        str(BULKOPS), *args, env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


@dataclass
class Running:
    """A long-running command (``tail``, a waiting ``submit``): lines as they come."""

    process: asyncio.subprocess.Process
    stderr: list[str] = field(default_factory=list)

    async def stdout_lines(self, count: int, timeout: float = 30.0) -> list[str]:
        assert self.process.stdout is not None
        lines = []
        async with asyncio.timeout(timeout):
            while len(lines) < count:
                line = await self.process.stdout.readline()
                assert line, f"stdout closed after {lines}; stderr: {self.stderr}"
                lines.append(line.decode().rstrip("\n"))
        return lines

    async def stderr_line(self, containing: str, timeout: float = 20.0) -> str:
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.process.stderr.readline()).decode()
                assert line, f"stderr closed before {containing!r}: {self.stderr}"
                self.stderr.append(line)
                if containing in line:
                    return line

    async def interrupt(self, timeout: float = 20.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def interrupt_twice(self, timeout: float = 20.0) -> int:
        """Ctrl-C twice: the first withdraws what was published and waits (bounded) for the
        replies, the second leaves at once (CONTRACT "Control")."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 1.0)
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        return await asyncio.wait_for(self.process.wait(), timeout)


@contextlib.asynccontextmanager
async def running(
    *args: str, env: dict[str, str], stdin: bytes = b"", close_stdin: bool = True
) -> AsyncIterator[Running]:
    process = await asyncio.create_subprocess_exec(
        str(BULKOPS), *args, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )  # fmt: skip
    assert process.stdin is not None
    process.stdin.write(stdin)
    if close_stdin:
        process.stdin.close()
    try:
        yield Running(process)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def take_all(r: Rig, queue_name: str, timeout: float = 5.0) -> list[AbstractIncomingMessage]:
    """Every message in a queue, in order, taken for good (basic.get and ack)."""
    queue = await r.channel.declare_queue(queue_name, passive=True)
    taken = []
    while (message := await queue.get(fail=False, timeout=timeout)) is not None:
        await message.ack()
        taken.append(message)
    return taken


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def environ_without_bulkops() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BULKOPS_")}


# Runs a command and prints, as the last line of its stderr, the peak RSS (kB) of that child
# alone: the wrapper has no other child, so RUSAGE_CHILDREN is the command's.
_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


async def bulkops_peak_rss(*args: str, env: dict[str, str], timeout: float) -> tuple[Ran, int]:
    """Run ``bulkops`` and return what it did and its peak RSS in kB."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PEAK_RSS, str(BULKOPS), *args, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    *lines, peak = err.decode().rstrip("\n").split("\n")
    return Ran(process.returncode, out.decode(), "\n".join(lines)), int(peak)
