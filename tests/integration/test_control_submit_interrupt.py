"""``bulkops submit`` interrupted while it reads standard input (review of issue 23): the
first Ctrl-C's wait ends once every published request is answered (publishing, stuck
reading a pipe nobody writes to, would otherwise hold it the full 30 s); a second Ctrl-C
leaves at once and keeps the results already received in the results file."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import orjson
import pytest

from tests.integration.cli import BULKOPS, cli_env
from tests.integration.harness import Rig, die_with_parent, ids

pytestmark = pytest.mark.integration

OP = "bloomreach.catalog_items.delete"


async def _start(r: Rig, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BULKOPS), "submit", OP, "--target", "shop", "--catalog-id", "cat-1",
        "--ids-file", "-", "--chunk", "2", "--results", str(out),
        env=cli_env(r), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )  # fmt: skip


async def _write(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("".join(f"{line}\n" for line in lines).encode())
    await process.stdin.drain()


async def _until_said(process: asyncio.subprocess.Process, text: str) -> str:
    """Standard error read up to the line that holds ``text``."""
    assert process.stderr is not None
    said = ""
    async with asyncio.timeout(20):
        while text not in said:
            line = await process.stderr.readline()
            assert line, said
            said += line.decode()
    return said


async def test_a_first_ctrl_c_on_standard_input_ends_once_the_published_are_answered(
    r: Rig, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    async with r.worker(r.settings(linger_seconds=0.05)):
        process = await _start(r, out)
        await _write(process, ids("a", 5))  # two requests of 2 go; the 5th waits for a 6th
        async with asyncio.timeout(20):
            while len(r.emulator.bloomreach.deleted("cat-1")) < 4:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # their replies reach the command
        started = time.monotonic()
        process.send_signal(signal.SIGINT)  # standard input stays open, never written again
        _, err = await asyncio.wait_for(process.communicate(), 40)
        took = time.monotonic() - started
    stderr = err.decode()
    assert process.returncode == 130, stderr
    assert took < 10, f"the wait ran {took:.1f}s although every request was answered"
    rows = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == ids("a", 4)
    assert "4 ids were done (answered), 0 withdrawn" in stderr


async def test_a_second_ctrl_c_keeps_the_results_already_received(r: Rig, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    async with r.worker(r.settings(linger_seconds=0.05)):
        process = await _start(r, out)
        await _write(process, ids("a", 5))
        async with asyncio.timeout(20):
            while len(r.emulator.bloomreach.deleted("cat-1")) < 4:
                await asyncio.sleep(0.05)
    # The worker is gone (its replies sent): what is published now stays unanswered.
    await asyncio.sleep(0.5)
    await _write(process, ids("b", 3))  # a5 + b1, then b2 + b3 once b4 comes
    await _write(process, ["b4"])
    await asyncio.sleep(0.5)
    process.send_signal(signal.SIGINT)
    await _until_said(process, "waiting up to 30s")
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 10)
    stderr = err.decode()
    assert process.returncode == 130, stderr
    assert "interrupted again: leaving without waiting" in stderr
    assert "to withdraw what is left: bulkops cancel " in stderr
    rows = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert sorted(row["id"] for row in rows) == ids("a", 4)
    assert {row["status"] for row in rows} == {"succeeded"}
