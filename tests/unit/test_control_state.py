"""ControlState (issue 23): cancels by id and by scope, their expiry, pauses and resumes."""

from __future__ import annotations

from typing import Any

from worker.control.messages import Control
from worker.control.state import ControlState
from worker.registry import SCOPES

FIELD = next(name for name, field in SCOPES.items() if field.absent)  # may be null: primary
TTL = 100.0


def control(command: str, at: float, **fields: Any) -> Control:
    return Control(command=command, at=at, **fields)  # type: ignore[arg-type]


def test_a_cancel_by_id_is_in_force_for_its_ttl_from_when_it_was_sent() -> None:
    state = ControlState(TTL)
    sent = control("cancel", 10, request_ids=("r1", "r2"), reason="wrong", user_id="ops")
    assert state.apply(sent, now=11)
    cancel = state.cancelled("r1", now=50)
    assert cancel is not None and (cancel.reason, cancel.user_id) == ("wrong", "ops")
    assert state.cancelled("r3", now=50) is None
    assert state.cancelled("r2", now=10 + TTL - 0.001) is not None
    assert state.cancelled("r2", now=10 + TTL) is None  # expired
    assert state.cancels(now=10 + TTL) == []


def test_a_cancel_read_after_it_expired_changes_nothing() -> None:
    state = ControlState(TTL)
    assert not state.apply(control("cancel", 10, request_ids=("r",)), now=10 + TTL + 1)
    assert state.cancelled("r", now=10 + TTL + 1) is None


def test_a_later_cancel_of_the_same_id_extends_it_and_a_repeat_changes_nothing() -> None:
    state = ControlState(TTL)
    first = control("cancel", 10, request_ids=("r",), reason="a")
    assert state.apply(first, now=10)
    assert not state.apply(first, now=10)  # the same record again: nothing new
    assert state.apply(control("cancel", 50, request_ids=("r",), reason="b"), now=50)
    cancel = state.cancelled("r", now=10 + TTL + 1)
    assert cancel is not None and cancel.reason == "b"


def test_a_scope_cancel_withdraws_what_was_published_up_to_it_only() -> None:
    state = ControlState(TTL)
    state.apply(control("cancel", 100, target="shop", scope=(FIELD, "c1")), now=100)
    assert state.scope_cancelled("shop", (FIELD, "c1"), published_at=99, now=101) is not None
    assert state.scope_cancelled("shop", (FIELD, "c1"), published_at=100, now=101) is not None
    assert state.scope_cancelled("shop", (FIELD, "c1"), published_at=100.5, now=101) is None
    assert state.scope_cancelled("shop", (FIELD, "c2"), published_at=99, now=101) is None
    assert state.scope_cancelled("other", (FIELD, "c1"), published_at=99, now=101) is None
    assert state.scope_cancelled("shop", (FIELD, "c1"), published_at=99, now=100 + TTL) is None


def test_a_whole_target_cancel_covers_each_scope_and_the_primary_is_its_own_scope() -> None:
    state = ControlState(TTL)
    state.apply(control("cancel", 100, target="cms"), now=100)
    state.apply(control("cancel", 100, target="cms2", scope=(FIELD, None)), now=100)
    assert state.scope_cancelled("cms", (FIELD, "staging"), 90, now=100) is not None
    assert state.scope_cancelled("cms", (FIELD, None), 90, now=100) is not None
    assert state.scope_cancelled("cms2", (FIELD, None), 90, now=100) is not None
    assert state.scope_cancelled("cms2", (FIELD, "staging"), 90, now=100) is None


def test_pause_resume_and_whole_target_pause() -> None:
    state = ControlState(TTL)
    pause = control("pause", 5, target="shop", scope=(FIELD, "c1"), message_id="p1", app_id="cli")
    assert state.apply(pause, now=5)
    held = state.paused("shop", (FIELD, "c1"))
    assert held is not None and (held.at, held.app_id, held.origin) == (5, "cli", "p1")
    assert state.paused("shop", (FIELD, "c2")) is None
    assert state.apply(control("pause", 6, target="shop", message_id="p2"), now=6)
    assert state.paused("shop", (FIELD, "c2")) is not None  # the whole target
    assert state.paused("shop", (FIELD, None)) is not None
    assert [p.scope for p in state.pauses()] == [(FIELD, "c1"), None]
    assert state.apply(control("resume", 7, target="shop"), now=7)
    assert state.paused("shop", (FIELD, "c2")) is None
    assert state.paused("shop", (FIELD, "c1")) is not None  # its own pause stays
    assert not state.apply(control("resume", 8, target="shop", scope=(FIELD, "c9")), now=8)
    assert state.apply(control("resume", 9, target="shop", scope=(FIELD, "c1")), now=9)
    assert state.pauses() == []


def test_a_primary_pause_is_not_a_whole_target_pause() -> None:
    state = ControlState(TTL)
    state.apply(control("pause", 1, target="cms", scope=(FIELD, None)), now=1)
    assert state.paused("cms", (FIELD, None)) is not None
    assert state.paused("cms", (FIELD, "staging")) is None


def test_a_rewrite_keeps_the_first_pause_and_one_that_crossed_a_resume_is_ignored() -> None:
    state = ControlState(TTL)
    state.apply(control("pause", 1, target="t", message_id="p1", reason="outage"), now=1)
    rewrite = control("pause", 1, target="t", message_id="w1", rewrite_of="p1")
    assert not state.apply(rewrite, now=3600)  # duplicates of many replicas: no change
    assert state.apply(control("resume", 4000, target="t"), now=4000)
    late = control("pause", 1, target="t", message_id="w2", rewrite_of="p1")
    assert not state.apply(late, now=4001)  # a replica's rewrite that landed after the resume
    assert state.paused("t", None) is None
    assert state.apply(control("pause", 4002, target="t", message_id="p2"), now=4002)


def test_a_reader_that_sees_only_rewrites_rebuilds_the_pause_as_first_sent() -> None:
    state = ControlState(TTL)
    rewrite = control("pause", 1, target="t", message_id="w9", rewrite_of="p1", user_id="ops")
    assert state.apply(rewrite, now=90_000)
    pause = state.paused("t", None)
    assert pause is not None and (pause.at, pause.origin, pause.user_id) == (1, "p1", "ops")


def test_listings_for_status_say_who_why_and_since() -> None:
    state = ControlState(TTL)
    state.apply(control("cancel", 2, request_ids=("a", "b"), reason="x", user_id="u"), now=2)
    state.apply(control("cancel", 3, target="t", scope=(FIELD, "e"), app_id="cli"), now=3)
    state.apply(control("pause", 1, target="t", reason="vendor window", app_id="cli"), now=3)
    cancels = [c.describe() for c in state.cancels(now=4)]
    assert cancels == [
        {
            "request_ids": ["a", "b"], "target": None, "scope": None, "reason": "x",
            "user_id": "u", "app_id": None, "since": 2, "expires": 2 + TTL,
        },
        {
            "request_ids": None, "target": "t", "scope": {FIELD: "e"}, "reason": None,
            "user_id": None, "app_id": "cli", "since": 3, "expires": 3 + TTL,
        },
    ]  # fmt: skip
    assert [p.describe() for p in state.pauses()] == [
        {
            "target": "t", "scope": None, "reason": "vendor window", "user_id": None,
            "app_id": "cli", "since": 1,
        }
    ]  # fmt: skip
    assert state.expire(now=2 + TTL) == 2  # both ids
    assert len(state.cancels(now=2 + TTL)) == 1


def test_replaying_the_same_records_gives_the_same_state() -> None:
    records = [
        control("pause", 1, target="t", message_id="p1"),
        control("cancel", 2, request_ids=("r",)),
        control("resume", 3, target="t"),
        control("pause", 4, target="u", scope=(FIELD, "e"), message_id="p2"),
        control("status", 5),
    ]
    one, two = ControlState(TTL), ControlState(TTL)
    for record in records:
        one.apply(record, now=6)
    for record in records + records:
        two.apply(record, now=6)
    assert one.pauses() == two.pauses() and one.cancels(6) == two.cancels(6)
    assert [p.target for p in one.pauses()] == ["u"]
