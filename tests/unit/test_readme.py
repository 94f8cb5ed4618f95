"""The README says what the code does: its operations table and message examples list every
operation of the registry, its settings table every setting with its default, its list of
rejection codes the worker's; the reader's parts come before the contributors'."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from worker.errors import REJECTION_CODES
from worker.registry import CONTRACT_OPERATIONS
from worker.settings import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


def section(title: str) -> str:
    """The text under a heading (any level) up to the next heading of that level or higher."""
    match = re.search(rf"^(#+) {re.escape(title)}\n", README, re.M)
    assert match, title
    level = len(match.group(1))
    rest = README[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def test_the_operations_table_and_examples_list_every_operation() -> None:
    text = section("Request messages")
    table = set(re.findall(r"^\| `([a-z_.]+)` \|", text, re.M))
    examples = set(re.findall(r'^\{"operation": "([a-z_.]+)"', text, re.M))
    assert table == set(CONTRACT_OPERATIONS)
    assert examples == set(CONTRACT_OPERATIONS)


def test_the_settings_table_lists_every_setting_with_its_default() -> None:
    rows = dict(
        re.findall(r"^\| `(BULKOPS_[A-Z_]+)` \| `([^`]*)` \|", section("Configuration"), re.M)
    )
    expected = {}
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        expected[f"BULKOPS_{name.upper()}"] = "{}" if default == {} else str(default)
    assert rows == expected


def test_the_rejection_codes_are_the_workers() -> None:
    rejected = section("Outcome messages").split("**`rejected`**", 1)[1].split("\n\n", 1)[0]
    codes = rejected.split("`error.code` is one of", 1)[1].split(", and", 1)[0]
    listed = re.findall(r"`([a-z_]+)`", codes)
    assert listed == [str(code) for code in REJECTION_CODES]


def test_readers_first_contributors_last() -> None:
    """What it does and the two commands, the contents, then using, running, operating, and
    the architecture at the end."""
    assert README.startswith(
        "# bulkops\n\n```sh\nbash scripts/bootstrap.sh && uv run python -m worker demo"
    )
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings == [
        "Contents", "Using it from other services", "Running", "Configuration",
        "Operating it", "For contributors",
    ]  # fmt: skip
    assert "### Latest table" not in README  # the benchmark tables live in docs/benchmark.md
