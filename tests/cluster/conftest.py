"""The cluster tier: three RabbitMQ nodes of scripts/cluster.sh beside the default node.
Started here when not up yet (and then stopped at the end); every test leaves all three up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.cluster.support import NODES, restart, script, up
from tests.faults.ledger import HEADER, ROWS


@pytest.fixture(scope="session")
def cluster() -> Iterator[None]:
    was_up = all(up(node) for node in NODES)
    script("start")
    try:
        yield
    finally:
        if not was_up:
            script("stop")


@pytest.fixture(autouse=True)
async def every_node_up_after(cluster: None) -> AsyncIterator[None]:
    yield
    for node in NODES:
        if not up(node):
            await restart(node)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = [row for row in ROWS if row.scenario.startswith("cluster")]
    if not rows:
        return
    terminalreporter.section("cluster ledger")
    terminalreporter.write_line(HEADER)
    for row in rows:
        terminalreporter.write_line(row.line())
