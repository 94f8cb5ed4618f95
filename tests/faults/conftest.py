from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.faults.ledger import HEADER, ROWS
from tests.faults.support import PrivateBroker, private_rig
from tests.integration.harness import Rig
from worker.emulator import Emulator


@pytest.fixture(scope="session")
def private_broker() -> Iterator[PrivateBroker]:
    """A RabbitMQ node of this session's own, free to be stopped and restarted."""
    broker = PrivateBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        broker.remove()


@pytest.fixture
async def pr(emulator: Emulator, private_broker: PrivateBroker) -> AsyncIterator[Rig]:
    async with private_rig(emulator, private_broker.url) as the_rig:
        yield the_rig


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    terminalreporter.section("fault ledger")
    terminalreporter.write_line(HEADER)
    for row in ROWS:
        terminalreporter.write_line(row.line())
