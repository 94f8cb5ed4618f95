"""Control messages (issue 23): every rejection reason, absent vs null scope, the sender."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from worker.control.messages import (
    MAX_REQUEST_IDS,
    Control,
    ControlInvalid,
    ControlProps,
    ControlRefused,
    check,
    control_body,
    parse_control,
)
from worker.registry import APIS, SCOPES

# The scope fields by what they mean, from the catalog (a field that may be absent: the
# primary; one that may not).
OPTIONAL = next(name for name, field in SCOPES.items() if field.absent)
REQUIRED = next(name for name, field in SCOPES.items() if not field.absent)
KIND_OF = {field.scope.name: kind for kind, field in APIS.items()}
TARGETS = {"cms": KIND_OF[OPTIONAL], "shop": KIND_OF[REQUIRED]}


SENT = datetime(2026, 1, 1, tzinfo=UTC)
ARRIVAL = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


def parse(data: object, **props: object) -> Control | ControlInvalid:
    body = data if isinstance(data, bytes) else orjson.dumps(data)
    props.setdefault("timestamp", SENT)  # as the CLI and the client publish
    return parse_control(body, ControlProps(**props), arrival=ARRIVAL)  # type: ignore[arg-type]


def refused(data: object, **props: object) -> ControlInvalid:
    parsed = parse(data, **props)
    assert isinstance(parsed, ControlInvalid), parsed
    return parsed


def valid(data: object, **props: object) -> Control:
    parsed = parse(data, **props)
    assert isinstance(parsed, Control), parsed
    return parsed


def test_the_contracts_four_examples_are_valid() -> None:
    cancel = valid({"command": "cancel", "request_ids": ["r1", "r2"], "reason": "wrong list"})
    assert (cancel.request_ids, cancel.reason, cancel.target) == (("r1", "r2"), "wrong list", None)
    pause = valid({"command": "pause", "target": "shop", REQUIRED: "products"})
    assert (pause.target, pause.scope) == ("shop", (REQUIRED, "products"))
    assert valid({"command": "resume", "target": "shop", REQUIRED: "products"}).command == "resume"
    assert valid({"command": "status"}, reply_to="amq.gen-x").reply_to == "amq.gen-x"


def test_absent_and_null_scope_are_different() -> None:
    whole = valid({"command": "pause", "target": "cms"})
    primary = valid({"command": "pause", "target": "cms", OPTIONAL: None})
    named = valid({"command": "pause", "target": "cms", OPTIONAL: "staging"})
    assert whole.scope is None
    assert primary.scope == (OPTIONAL, None)
    assert named.scope == (OPTIONAL, "staging")


def test_a_field_that_cannot_be_absent_cannot_be_null() -> None:
    bad = refused({"command": "pause", "target": "shop", REQUIRED: None})
    assert bad.code == "invalid_scope" and "cannot be null" in bad.reason


def test_a_scope_cancel_and_its_whole_target_form() -> None:
    scoped = valid({"command": "cancel", "target": "shop", REQUIRED: "c1", "reason": "stop"})
    assert (scoped.target, scoped.scope, scoped.request_ids) == ("shop", (REQUIRED, "c1"), ())
    assert valid({"command": "cancel", "target": "shop"}).scope is None


@pytest.mark.parametrize(
    ("data", "code", "says"),
    [
        (b"", "not_json", "empty"),
        (b"{", "not_json", "ends before"),
        (b"[1]", "not_object", "JSON object"),
        ({"command": "stop"}, "unknown_command", "'stop'"),
        ({}, "unknown_command", "None"),
        ({"command": "cancel"}, "missing_field", "request_ids or a target"),
        ({"command": "cancel", "request_ids": []}, "invalid_message", "at least 1"),
        ({"command": "cancel", "request_ids": [""]}, "invalid_request_id", "printable"),
        ({"command": "cancel", "request_ids": ["a b"]}, "invalid_request_id", "'a b'"),
        ({"command": "cancel", "request_ids": ["x" * 257]}, "invalid_request_id", "1-256"),
        ({"command": "cancel", "request_ids": [1]}, "invalid_message", "request_ids.0"),
        ({"command": "cancel", "request_ids": "r1"}, "invalid_message", "request_ids"),
        (
            {"command": "cancel", "request_ids": ["r"] * (MAX_REQUEST_IDS + 1)},
            "invalid_message",
            "at most 10000",
        ),
        (
            {"command": "cancel", "request_ids": ["r"], "reason": "x" * 1001},
            "invalid_message",
            "reason",
        ),
        ({"command": "cancel", "request_ids": ["r"], "reason": 5}, "invalid_message", "reason"),
        (
            {"command": "cancel", "request_ids": ["r"], "target": "t"},
            "conflicting_fields",
            "not both",
        ),
        (
            {"command": "cancel", "request_ids": ["r"], REQUIRED: "c"},
            "conflicting_fields",
            REQUIRED,
        ),
        (
            {"command": "cancel", "request_ids": ["r"], "ids": ["r"]},
            "invalid_message",
            "ids: Extra",
        ),
        ({"command": "pause"}, "missing_field", "pause needs a target"),
        ({"command": "resume", REQUIRED: "c"}, "missing_field", "resume needs a target"),
        ({"command": "pause", "target": ""}, "invalid_message", "target"),
        ({"command": "pause", "target": "t" * 129}, "invalid_message", "target"),
        (
            {"command": "pause", "target": "t", "request_ids": ["r"]},
            "conflicting_fields",
            "not request_ids",
        ),
        (
            {"command": "pause", "target": "t", REQUIRED: "c", OPTIONAL: "e"},
            "conflicting_fields",
            "at most one",
        ),
        ({"command": "pause", "target": "t", REQUIRED: "a/b"}, "invalid_scope", REQUIRED),
        ({"command": "pause", "target": "t", REQUIRED: 3}, "invalid_message", REQUIRED),
        ({"command": "status", "target": "t"}, "conflicting_fields", "status takes no other"),
        ({"command": "status"}, "no_reply_to", "reply_to"),
    ],
)
def test_every_rejection_has_its_code_and_a_specific_reason(
    data: object, code: str, says: str
) -> None:
    bad = refused(data)
    assert bad.code == code, bad
    assert says in bad.reason, bad.reason


def test_an_oversized_body_is_refused_before_it_is_parsed() -> None:
    bad = refused(b"{" + b" " * (4 * 1024 * 1024) + b"}")
    assert bad.code == "too_large"


def test_targets_when_known_must_hold_the_target_and_its_scope_field() -> None:
    def with_targets(data: dict[str, object]) -> Control | ControlInvalid:
        return parse_control(orjson.dumps(data), None, TARGETS, arrival=1.0)

    unknown = with_targets({"command": "pause", "target": "nope"})
    assert isinstance(unknown, ControlInvalid) and unknown.code == "unknown_target"
    wrong = with_targets({"command": "pause", "target": "cms", REQUIRED: "c"})
    assert isinstance(wrong, ControlInvalid) and wrong.code == "invalid_scope"
    assert "does not apply to target 'cms'" in wrong.reason
    assert isinstance(with_targets({"command": "pause", "target": "shop", REQUIRED: "c"}), Control)


def test_sender_and_time_come_from_the_amqp_properties() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    control = valid(
        {"command": "cancel", "request_ids": ["r", "r", "s"]},
        user_id="ops",
        app_id="bulkops-cli",
        timestamp=stamp,
        message_id="m1",
    )
    assert (control.user_id, control.app_id, control.message_id) == ("ops", "bulkops-cli", "m1")
    assert control.at == stamp.timestamp()
    assert control.request_ids == ("r", "s")  # each once, in order
    assert valid({"command": "cancel", "request_ids": ["r"]}).at == SENT.timestamp()


def test_a_record_time_is_its_timestamp_never_later_than_its_arrival() -> None:
    """A sender's clock ahead does not stretch a cancel's TTL or move a scope cut-off."""
    ahead = datetime.fromtimestamp(ARRIVAL + 3600, UTC)
    assert valid({"command": "cancel", "request_ids": ["r"]}, timestamp=ahead).at == ARRIVAL
    assert valid({"command": "cancel", "target": "t"}, timestamp=ahead).at == ARRIVAL


def test_a_cancel_without_an_amqp_timestamp_is_refused_a_pause_takes_its_arrival() -> None:
    """A 3.10 stream records no arrival time of its own: a raw-published cancel without a
    timestamp would get a new time on every read (every restart restarts its TTL and moves
    its scope cut-off), so it is refused; pause and resume take their arrival."""
    for body in ({"command": "cancel", "request_ids": ["r"]}, {"command": "cancel", "target": "t"}):
        bad = refused(body, timestamp=None)
        assert bad.code == "no_timestamp" and "AMQP timestamp" in bad.reason
    assert valid({"command": "pause", "target": "t"}, timestamp=None).at == ARRIVAL
    assert valid({"command": "resume", "target": "t"}, timestamp=None).at == ARRIVAL
    # the CLI and the client stamp what they publish: check() does not refuse for it
    assert check(orjson.dumps({"command": "cancel", "request_ids": ["r"]})).command == "cancel"


def test_a_reason_with_control_characters_or_too_long_is_refused() -> None:
    for reason in ("line\nbreak", "tab\there", "esc\x1b[31m", "nel\x85", "ls\u2028", ""):
        bad = refused({"command": "cancel", "request_ids": ["r"], "reason": reason})
        assert bad.code in ("invalid_reason", "invalid_message"), (reason, bad)
    assert refused({"command": "pause", "target": "t", "reason": "a\nb"}).code == "invalid_reason"
    long = refused({"command": "pause", "target": "t", "reason": "x" * 1001})
    assert long.code in ("invalid_reason", "invalid_message")
    ok = valid({"command": "pause", "target": "t", "reason": "Vendor's maintenance — ünïcode 1/2"})
    assert ok.reason == "Vendor's maintenance — ünïcode 1/2"
    with pytest.raises(ControlRefused):
        control_body("pause", target="t", reason="two\nlines")


def test_control_body_builds_valid_bodies_and_refuses_bad_ones() -> None:
    body = control_body("pause", target="cms", scope=(OPTIONAL, None), reason="outage")
    assert orjson.loads(body) == {
        "command": "pause",
        "target": "cms",
        "reason": "outage",
        OPTIONAL: None,
    }
    assert check(control_body("cancel", request_ids=["r1"])).request_ids == ("r1",)
    with pytest.raises(ControlRefused) as refusal:
        control_body("cancel", request_ids=["r1"], target="cms")
    assert refusal.value.code == "conflicting_fields"
    with pytest.raises(ControlRefused, match="reply_to"):
        control_body("status")
    assert orjson.loads(control_body("status", reply_to="q")) == {"command": "status"}
