"""Fixtures shared by the integration tests and the fault suite: the emulator in-process,
and a rig of fresh queue names on the local RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.harness import Rig, rig
from worker.emulator import Emulator, EmulatorConfig


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(datocms_job_seconds=0.05)) as emu:
        yield emu


@pytest.fixture
async def r(emulator: Emulator) -> AsyncIterator[Rig]:
    async with rig(emulator) as the_rig:
        yield the_rig
