"""Bloomreach answer mapping (worker/apis/bloomreach/wire.py, pure)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.apis.adapters import ItemResult
from worker.apis.bloomreach.adapter import Bloomreach, halves
from worker.apis.bloomreach.target import BloomreachTarget
from worker.apis.bloomreach.wire import (
    delete_body,
    delete_ids_body,
    item_error,
    map_answer,
    truthy,
)
from worker.errors import ApiError
from worker.http import RetryPolicy
from worker.messages import ErrorInfo

MALFORMED = "Malformed item id. Item id should be a string"


@pytest.mark.parametrize("value", [True, "True", "true", " TRUE ", 1])
def test_truthy_accepts_booleans_and_their_string_forms(value: Any) -> None:
    """success may be a boolean or the strings "True"/"true"."""
    assert truthy(value) is True


@pytest.mark.parametrize("value", [False, "False", "false", None, "", 0, "no", [], {}, 2])
def test_truthy_rejects_everything_else(value: Any) -> None:
    """False, "False", None and anything else mean not succeeded."""
    assert truthy(value) is False


def test_map_answer_pairs_ids_with_elements_in_order() -> None:
    """Element n answers id n; success false gives the API's message as the code."""
    answer = [
        {"success": True, "queued": True},
        {"success": "False", "queued": "False", "errors": {"_global": [MALFORMED]}},
        {"success": "True", "queued": "True"},
    ]
    results = map_answer(["a", "b", "c"], answer)
    assert list(results) == ["a", "b", "c"]
    assert results["a"] == ItemResult("succeeded")
    assert results["c"] == ItemResult("succeeded")
    assert results["b"] == ItemResult("failed", ErrorInfo(MALFORMED, MALFORMED, False))


@pytest.mark.parametrize(
    ("ids", "body"),
    [
        (["a", "b"], [{"success": True}]),
        (["a"], []),
        (["a"], {"success": True}),
        (["a"], None),
        (["a"], "ok"),
        (["a"], [{"success": True}, {"success": True}]),
    ],
)
def test_map_answer_shape_mismatch_is_a_retryable_error(ids: list[str], body: Any) -> None:
    """A different count or a non-list answer cannot be paired: retryable ApiError."""
    with pytest.raises(ApiError) as info:
        map_answer(ids, body)
    assert (info.value.code, info.value.retryable) == ("unexpected_response", True)


@pytest.mark.parametrize(
    ("element", "code"),
    [
        ({"success": False, "errors": {"_global": ["m1", "m2"]}}, "m1; m2"),
        ({"success": False, "errors": {"item_id": "bad"}}, "bad"),
        ({"success": False, "errors": "flat message"}, "flat message"),
        ({"success": False}, "success: false without an error message"),
        ("not an object", "success: false without an error message"),
        (None, "success: false without an error message"),
    ],
)
def test_failed_elements_give_a_readable_code(element: Any, code: str) -> None:
    """Every failure has a code and message, whatever the element looks like."""
    [result] = map_answer(["a"], [element]).values()
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.code, result.error.retryable) == (code, False)


def test_item_error_code_is_bounded() -> None:
    """Long API messages are cut: code to 200, message to 500 characters."""
    info = item_error({"errors": {"_global": ["x" * 1000]}})
    assert (len(info.code), len(info.message)) == (200, 500)


def test_delete_body_is_the_documented_list() -> None:
    """[{"item_id": ...}, ...] in order, ids as given (unicode included)."""
    assert orjson.loads(delete_body(["a", "é 1"])) == [{"item_id": "a"}, {"item_id": "é 1"}]
    assert delete_body([]) == b"[]"


def test_delete_ids_body_is_a_list_of_id_strings() -> None:
    """The form a production integration sends with DELETE."""
    assert orjson.loads(delete_ids_body(["a", "é 1"])) == ["a", "é 1"]


@given(st.lists(st.text(min_size=1), max_size=300), st.integers(min_value=1, max_value=4000))
def test_halves_keep_order_and_end_below_the_refused_size(ids: list[str], below: int) -> None:
    """Splitting converges: every part's body is smaller than the refused size (or the part
    is a single id), and the parts put together are the ids in their order."""
    size = lambda part: len(orjson.dumps(part))  # noqa: E731
    parts = halves(ids, lambda part: size(part) < below)
    assert [i for part in parts for i in part] == ids
    assert all(size(part) < below or len(part) <= 1 for part in parts)


def adapter(delete_format: str) -> Bloomreach:
    target = BloomreachTarget(
        kind="bloomreach",
        base_url="http://127.0.0.1:9",
        api_key_id="k",  # type: ignore[arg-type]
        api_secret="s",  # type: ignore[arg-type]
        project_id="p",
        delete_format=delete_format,  # type: ignore[arg-type]
    )
    return Bloomreach(target, RetryPolicy(1, 1.0, 0.1, 1.0))


def test_auto_starts_with_delete_ids_and_switches_once_on_a_405() -> None:
    """auto: DELETE first; a 405 switches to POST objects, a batch that raced the switch
    resends, and a 405 to the second form too is final (no ping-pong)."""
    auto = adapter("auto")
    assert auto.form == "delete-ids"
    assert auto.other_form_after_405("delete-ids") is True
    assert auto.form == "post-objects"
    assert auto.other_form_after_405("delete-ids") is True  # sent before the switch
    assert auto.other_form_after_405("post-objects") is False
    assert auto.form == "post-objects"


@pytest.mark.parametrize("form", ["delete-ids", "post-objects"])
def test_an_explicit_form_is_kept_on_a_405(form: str) -> None:
    explicit = adapter(form)
    assert explicit.form == form
    assert explicit.other_form_after_405(form) is False
    assert explicit.form == form
