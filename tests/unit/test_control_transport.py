"""The control transport's pure parts (issue 23): properties of a record (a rewrite stands
for the pause as first sent), rewrites of the pauses in force, the status reply body, the
stream's arguments and the settings."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from worker.cli.common import ClientSettings
from worker.control.config import max_age_seconds, stream_name
from worker.control.messages import Control, parse_control
from worker.control.state import ControlState
from worker.control.transport import (
    APP_HEADER,
    REWRITE_HEADER,
    SINCE_HEADER,
    USER_HEADER,
    ScopeCounts,
    WorkerSnapshot,
    props_of,
    rewrite_headers,
    status_body,
    stream_arguments,
)
from worker.registry import SCOPES
from worker.settings import Settings

FIELD = next(name for name, field in SCOPES.items() if field.absent)


def incoming(**kw: Any) -> Any:
    base: dict[str, Any] = {
        "headers": {}, "timestamp": None, "user_id": None, "app_id": None,
        "message_id": None, "reply_to": None, "correlation_id": None, "type": None,
    }  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def test_props_of_a_plain_message_a_naive_timestamp_is_utc_and_the_offset_names_it() -> None:
    props = props_of(incoming(timestamp=datetime(2026, 1, 1, 0, 0, 0), user_id="u"), 42)
    assert props.timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    assert (props.user_id, props.message_id, props.rewrite_of) == ("u", "offset-42", None)


def test_a_rewrite_round_trips_to_the_pause_as_first_sent() -> None:
    state = ControlState(100)
    state.apply(
        Control("pause", 7, target="t", scope=(FIELD, None), message_id="p1", reason="why",
                user_id="ops", app_id="cli")
    )  # fmt: skip
    [(body, headers)] = rewrite_headers(state)
    assert body == {"command": "pause", "target": "t", FIELD: None, "reason": "why"}
    assert headers == {REWRITE_HEADER: "p1", SINCE_HEADER: 7, USER_HEADER: "ops", APP_HEADER: "cli"}
    message = incoming(
        headers=headers, timestamp=datetime.now(UTC), user_id="guest", app_id="bulkops-worker"
    )
    parsed = parse_control(orjson.dumps(body), props_of(message, 9), arrival=1e9)
    assert isinstance(parsed, Control)
    assert (parsed.at, parsed.user_id, parsed.app_id, parsed.rewrite_of) == (7, "ops", "cli", "p1")
    fresh = ControlState(100)
    assert fresh.apply(parsed)
    pause = fresh.paused("t", (FIELD, None))
    assert pause is not None and pause.origin == "p1" and pause.at == 7


def test_the_status_body_lists_scopes_pauses_cancels_and_partitions() -> None:
    state = ControlState(100)
    state.apply(Control("pause", 1, target="t", message_id="p"))
    state.apply(Control("cancel", 2, request_ids=("r",), reason="x"))
    snapshot = WorkerSnapshot(
        "w", (ScopeCounts("t", (FIELD, "e"), pending=1, in_flight=2),), partitions=None
    )
    body = orjson.loads(status_body(snapshot, state, now=3))
    assert body["worker"] == "w" and body["at"] == 3 and body["partitions"] is None
    assert body["scopes"] == [
        {"target": "t", "scope": {FIELD: "e"}, "pending": 1, "in_flight": 2, "paused": True,
         "held": 0}
    ]  # fmt: skip
    assert [c["request_ids"] for c in body["cancels"]] == [["r"]]
    assert [p["target"] for p in body["pauses"]] == ["t"]


def test_the_stream_keeps_records_a_day_longer_than_the_cancel_ttl() -> None:
    assert stream_arguments(86400) == {"x-queue-type": "stream", "x-max-age": "172800s"}
    assert stream_arguments(0.5)["x-max-age"] == "86401s"


def test_the_settings_read_the_contracts_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in (Settings, ClientSettings):
        assert kind().control_exchange == "bulkops.control"
        assert kind().cancel_ttl_seconds == 86400
    monkeypatch.setenv("BULKOPS_CONTROL_EXCHANGE", "ops.control")
    monkeypatch.setenv("BULKOPS_CANCEL_TTL_SECONDS", "60")
    for kind in (Settings, ClientSettings):
        settings = kind()
        assert stream_name(settings.control_exchange) == "ops.control.state"
        assert max_age_seconds(settings.cancel_ttl_seconds) == 86460
    monkeypatch.setenv("BULKOPS_CANCEL_TTL_SECONDS", "0")
    with pytest.raises(ValueError, match="cancel_ttl_seconds"):
        Settings()


def test_a_rewrites_since_header_survives_the_wire_exactly() -> None:
    """pamqp sends a float header as a 32-bit float: an epoch time would come back off by
    up to a minute. The pause's time goes as whole seconds, an integer, exact."""
    from pamqp import decode, encode

    state = ControlState(100)
    state.apply(Control("pause", 1_796_500_000.0, target="t", message_id="p1"))
    [(_, headers)] = rewrite_headers(state)
    _, back = decode.field_table(encode.field_table(headers))
    assert back[SINCE_HEADER] == 1_796_500_000
