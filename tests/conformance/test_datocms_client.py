"""The official DatoCMS client against the emulator: ``datocms/conformance.test.mjs`` run by
Node's test runner against an emulator started here, on a free port, over real HTTP.

The client (``@datocms/cma-client-node``, exact version in ``datocms/package-lock.json``) is
installed by ``scripts/bootstrap.sh`` (``npm ci``). Without Node or the installed client this
test FAILS, never skips: a tier that silently does not run proves nothing.
"""

from __future__ import annotations

import asyncio
import os
import re

from tests.conformance.node import HERE, installed_node
from worker.emulator import Emulator, EmulatorConfig

SCRIPT = HERE / "conformance.test.mjs"
NODE_TIMEOUT = 90.0


def _tap_count(output: str, name: str) -> int:
    match = re.search(rf"^# {name} (\d+)$", output, re.MULTILINE)
    assert match is not None, f"no '# {name}' line in the test runner's output:\n{output}"
    return int(match.group(1))


async def test_the_official_client_succeeds_against_the_emulator_for_every_worker_call() -> None:
    """Every ``test(...)`` of the Node script passes; none is skipped or left out."""
    node = installed_node()
    expected = len(re.findall(r"^test\(", SCRIPT.read_text(), re.MULTILINE))
    async with Emulator(EmulatorConfig()) as emulator:
        env = {**os.environ, "EMULATOR_URL": emulator.base_url, "NODE_NO_WARNINGS": "1"}
        process = await asyncio.create_subprocess_exec(
            node,
            "--test",
            "--test-reporter=tap",
            SCRIPT.name,
            cwd=HERE,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            raw, _ = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    output = raw.decode(errors="replace")
    assert process.returncode == 0, output
    assert _tap_count(output, "fail") == 0, output
    assert _tap_count(output, "skipped") == 0, output
    assert _tap_count(output, "todo") == 0, output
    assert _tap_count(output, "pass") == expected, output
