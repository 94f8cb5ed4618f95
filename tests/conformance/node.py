"""Where the conformance tier's Node side lives, and the check that it is installed."""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent / "datocms"
CLIENT = HERE / "node_modules" / "@datocms" / "cma-client-node" / "package.json"


def installed_node() -> str:
    """The ``node`` executable; fails the test (never skips it) when Node.js or the official
    client is not installed."""
    node = shutil.which("node")
    assert node is not None, "Node.js is not installed: the conformance tier needs it"
    assert CLIENT.is_file(), (
        f"the official client is not installed in {HERE}: run scripts/bootstrap.sh "
        "(or `npm ci` there)"
    )
    return node
