"""``uv run python -m tests.contract.write_asyncapi``: (re)write docs/asyncapi.yaml from the
message models (worker/contract.py). PyYAML is a development dependency, hence here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from worker.contract import document

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
HEADER = (
    "# The bulkops wire contract as AsyncAPI 3.0. Generated from the message models by\n"
    "# worker/contract.py: do not edit by hand; run\n"
    "#   uv run python -m tests.contract.write_asyncapi\n"
)


def render(doc: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=96)


def main() -> None:
    DOCUMENT.write_text(render(document()))
    print(f"wrote {DOCUMENT}")


if __name__ == "__main__":
    main()
