"""The control commands' pure parts (issue 23): the status table, the scope options (named
by the registry's scope fields), the status timeout, and the client's scope keywords."""

from __future__ import annotations

import argparse

import pytest

from worker.cli import add_commands
from worker.cli.common import CliError
from worker.cli.control import _scope, _seconds, status_lines
from worker.client.control import scope_of
from worker.control.messages import ControlRefused
from worker.registry import APIS, SCOPES

PRIMARY = next(name for name, field in SCOPES.items() if field.absent)
NO_PRIMARY = next(name for name, field in SCOPES.items() if not field.absent)
KINDS = {
    "with": next(kind for kind, spec in APIS.items() if spec.scope.absent),
    "without": next(kind for kind, spec in APIS.items() if not spec.scope.absent),
}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_the_scope_options_are_the_registrys_scope_fields_and_primary_means_null() -> None:
    flag = "--" + NO_PRIMARY.replace("_", "-")
    assert _scope(parse("pause", "x", flag, "c1"), None) == {NO_PRIMARY: "c1"}
    assert _scope(parse("pause", "x"), None) == {}  # the whole target
    assert _scope(parse("pause", "with", "--primary"), KINDS) == {PRIMARY: None}
    assert _scope(parse("resume", "unknown", "--primary"), None) == {PRIMARY: None}
    with pytest.raises(CliError, match="no single primary scope"):
        _scope(parse("pause", "without", "--primary"), KINDS)


def test_the_status_timeout_is_bounded() -> None:
    assert _seconds("2.5") == 2.5
    for bad in ("0", "-1", "nan", "3601", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            _seconds(bad)


def test_the_clients_scope_keywords() -> None:
    assert scope_of({}) is None
    assert scope_of({PRIMARY: None}) == (PRIMARY, None)
    with pytest.raises(ControlRefused, match="unknown scope field 'colour'"):
        scope_of({"colour": "red"})
    with pytest.raises(ControlRefused, match="at most one scope field"):
        scope_of(dict.fromkeys(SCOPES, "a"))


def test_a_status_report_as_lines_for_a_person() -> None:
    report = {
        "worker": "w1",
        "at": 0,
        "partitions": [0, 3],
        "scopes": [
            {"target": "shop", "scope": {NO_PRIMARY: "c1"}, "pending": 7, "in_flight": 2,
             "paused": True, "held": 5},
            {"target": "cms", "scope": {PRIMARY: None}, "pending": 1, "in_flight": 0,
             "paused": False, "held": 0},
        ],
        "pauses": [{"target": "shop", "scope": None, "reason": "vendor", "user_id": "ops",
                    "app_id": "bulkops-cli", "since": 60}],
        "cancels": [
            {"request_ids": ["r1", "r2"], "target": None, "scope": None, "reason": None,
             "user_id": None, "app_id": "svc", "since": 0, "expires": 86400},
            {"request_ids": None, "target": "cms", "scope": {PRIMARY: "e1"}, "reason": "x",
             "user_id": "ops", "app_id": None, "since": 0, "expires": 86400},
        ],
    }  # fmt: skip
    lines = status_lines(report)
    assert lines[0] == "worker w1 (partitions [0, 3]) at 1970-01-01T00:00:00Z"
    assert lines[1].split() == ["SCOPE", "PENDING", "IN", "FLIGHT", "PAUSED", "HELD"]
    assert lines[2].split() == ["shop", f"{NO_PRIMARY}=c1", "7", "2", "yes", "5"]
    assert lines[3].split() == ["cms", "(primary)", "1", "0", "no", "0"]
    assert lines[4] == (
        "  paused shop (whole target) since 1970-01-01T00:01:00Z by user ops, app "
        "bulkops-cli: vendor"
    )
    assert lines[5] == (
        "  cancelled requests r1, r2 since 1970-01-01T00:00:00Z until 1970-01-02T00:00:00Z "
        "by user -, app svc: -"
    )
    assert lines[6].startswith(f"  cancelled cms {PRIMARY}=e1 since")
    assert status_lines({"worker": "w2", "partitions": None})[:3] == [
        "worker w2 (not partitioned) at -",
        lines[1],
        "  (no scope held)",
    ]
