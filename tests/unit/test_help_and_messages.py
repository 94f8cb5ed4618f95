"""What a person reads: every command's --help without Markdown, ``run --help`` with every
setting and its default, the emulator's port and admin API, a typo'd ``BULKOPS_*`` variable
reported with the closest name, one word for DLQ deliveries, a not-JSON reason in words."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import pytest

from worker.__main__ import _warn_unknown_variables, main
from worker.cli.dlq import DeadLetter
from worker.messages import Invalid, parse_request
from worker.settings import Settings, unknown_variables

COMMANDS = [
    [], ["run"], ["emulator"], ["demo"], ["submit"], ["tail"], ["dlq"], ["dlq", "list"],
    ["dlq", "replay"],
]  # fmt: skip


def help_of(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "bulkops")
def test_help_has_no_markdown(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    text = help_of(capsys, *command)
    assert "usage: bulkops" in text
    assert "`" not in text


def test_run_help_lists_every_setting_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of(capsys, "run")
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines() if "BULKOPS_" in line
            and line.startswith("  BULKOPS_")}  # fmt: skip
    assert set(rows) == {f"BULKOPS_{name.upper()}" for name in Settings.model_fields}
    assert rows["BULKOPS_REQUEST_QUEUE"] == "bulkops.requests"
    assert rows["BULKOPS_HTTP_PORT"] == "9464"
    assert rows["BULKOPS_ITEM_OUTCOMES"] == "all"
    assert rows["BULKOPS_AMQP_URL"] == "amqp://***@127.0.0.1:5672/"  # no credentials
    assert "guest" not in text


def test_emulator_help_has_a_port_line_and_the_admin_and_fault_api(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of(capsys, "emulator")
    assert "--port PORT  port to listen on (default 8900)" in text
    for documented in ("/_emulator", "POST /reset", "POST /datocms/seed", "POST /faults",
                       "job_failure", "path_contains", "GET /log"):  # fmt: skip
        assert documented in text


def test_a_typo_in_a_setting_is_named_with_the_closest_known_one() -> None:
    environ = {
        "BULKOPS_ITEM_OUTCOME": "failures",  # the typo
        "BULKOPS_ITEM_OUTCOMES": "all",
        "BULKOPS_TARGETS__MAIN__KIND": "datocms",  # nested: judged by BULKOPS_TARGETS
        "BULKOPS_ZZZ": "1",
        "PATH": "/bin",
    }
    assert list(unknown_variables(environ)) == [
        ("BULKOPS_ITEM_OUTCOME", "BULKOPS_ITEM_OUTCOMES"),
        ("BULKOPS_ZZZ", None),
    ]


def test_the_worker_warns_at_start_about_an_unknown_variable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BULKOPS_ITEM_OUTCOME", "failures")
    monkeypatch.setenv("BULKOPS_TARGETS__MAIN__API_TOKEN", "secret-token")
    with caplog.at_level(logging.WARNING, logger="bulkops"):
        _warn_unknown_variables()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "unknown setting BULKOPS_ITEM_OUTCOME is ignored; did you mean BULKOPS_ITEM_OUTCOMES?"
    ]
    assert "secret-token" not in caplog.text and "failures" not in caplog.text  # no values


def test_a_typo_in_dot_env_is_warned_about_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The settings read .env as well as the environment: a typo there is reported alike."""
    (tmp_path / ".env").write_text("BULKOPS_DELIVERY_LIMTI=7\n")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="bulkops"):
        _warn_unknown_variables()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "unknown setting BULKOPS_DELIVERY_LIMTI is ignored; did you mean BULKOPS_DELIVERY_LIMIT?"
    ]


def test_dlq_list_says_deliveries_in_text_and_json() -> None:
    letter = DeadLetter.of(b'{"operation": "x", "ids": ["a"]}', {"x-delivery-count": 2}, "m1")
    assert "deliveries=2" in letter.line()
    assert asdict(letter)["deliveries"] == 2
    assert "returned" not in letter.line()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"trux", "at line 1, column 1 there is text that is not valid JSON"),
        (b"garbage", "at line 1, column 1 there is text that is not valid JSON"),
        (b'{"ids": [', "it ends before the JSON value is complete"),
        (b"  ", "it is empty"),
        (b'"\xed\xa0\x80"', "it is not UTF-8 text"),
    ],
)
def test_the_not_json_reason_says_what_is_wrong_in_words(body: bytes, words: str) -> None:
    parsed = parse_request(body, "m1", {})
    assert isinstance(parsed, Invalid) and parsed.code == "not_json"
    assert parsed.reason.startswith("body is not JSON: ")
    assert words in parsed.reason
    assert "expected" not in parsed.reason and "literal" not in parsed.reason
