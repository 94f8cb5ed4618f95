"""Request parsing and outcome messages (worker/messages.py): pure, no broker."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.strategies import json_ids
from worker.messages import (
    MAX_BODY_BYTES,
    MAX_IDS,
    ErrorInfo,
    Invalid,
    Outcome,
    Request,
    derive_request_id,
    outcome_message_id,
    parse_request,
    routing_operation,
)
from worker.registry import OPERATIONS

TARGETS = {"main": "datocms", "shop": "bloomreach"}
DATO_OPS = [
    "datocms.items.publish",
    "datocms.items.unpublish",
    "datocms.items.destroy",
    "datocms.uploads.destroy",
]
BR_OP = "bloomreach.catalog_items.delete"


def encode(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def parse(body: bytes, message_id: str | None = "amqp-1") -> Request | Invalid:
    return parse_request(body, message_id, TARGETS)


def valid(**fields: Any) -> Request:
    result = parse(encode(**fields))
    assert isinstance(result, Request), result
    return result


def invalid(body: bytes, message_id: str | None = "amqp-1") -> Invalid:
    result = parse(body, message_id)
    assert isinstance(result, Invalid), result
    return result


def rejected_keys(request: Request) -> list[str]:
    return [r.id for r in request.rejected]


# --- every operation -------------------------------------------------------------------------


@pytest.mark.parametrize("operation", DATO_OPS)
def test_each_datocms_operation_parses_with_and_without_environment(operation: str) -> None:
    """Every DatoCMS operation is accepted; environment is the optional scope."""
    with_env = valid(operation=operation, target="main", environment="sandbox-1", ids=["a1", "b2"])
    assert with_env.operation is OPERATIONS[operation]
    assert (with_env.target, with_env.scope, with_env.ids) == ("main", "sandbox-1", ("a1", "b2"))
    assert with_env.rejected == ()
    primary = valid(operation=operation, target="main", ids=["a1"])
    assert primary.scope is None


def test_bloomreach_delete_parses_with_catalog_id_as_scope() -> None:
    """The Bloomreach operation takes its scope from catalog_id, and free-form ids."""
    request = valid(operation=BR_OP, target="shop", catalog_id="cat 1", ids=["sku 1", "é"])
    assert request.operation is OPERATIONS[BR_OP]
    assert (request.scope, request.ids) == ("cat 1", ("sku 1", "é"))


def test_request_id_from_body_wins_over_amqp_message_id() -> None:
    """An explicit request_id is used as given."""
    request = valid(operation=DATO_OPS[0], target="main", ids=["a"], request_id="r-42")
    assert request.request_id == "r-42"


# --- whole-message problems ------------------------------------------------------------------


def test_unknown_operation_is_invalid_with_readable_ids() -> None:
    """Unknown operation: the message is invalid, but its string ids can be answered."""
    result = invalid(encode(operation="datocms.items.explode", target="main", ids=["a", "b", 3]))
    assert result.code == "unknown_operation"
    assert result.readable_ids == ("a", "b")
    assert result.operation == "datocms.items.explode"


def test_unknown_target_is_invalid() -> None:
    """A target not in the configuration is refused as a whole."""
    result = invalid(encode(operation=DATO_OPS[0], target="nope", ids=["a"]))
    assert (result.code, result.target, result.readable_ids) == ("unknown_target", "nope", ("a",))


@pytest.mark.parametrize(
    ("operation", "target", "scope"),
    [(DATO_OPS[0], "shop", {}), (BR_OP, "main", {"catalog_id": "c"})],
)
def test_operation_on_target_of_other_kind_is_invalid(
    operation: str, target: str, scope: dict[str, str]
) -> None:
    """A DatoCMS operation on a Bloomreach target (and vice versa) is refused."""
    result = invalid(encode(operation=operation, target=target, ids=["a"], **scope))
    assert result.code == "unknown_target"


def test_bloomreach_without_catalog_id_is_missing_scope() -> None:
    """catalog_id is required for Bloomreach."""
    result = invalid(encode(operation=BR_OP, target="shop", ids=["a"]))
    assert result.code == "missing_scope"
    assert result.readable_ids == ("a",)


def test_environment_on_bloomreach_is_invalid() -> None:
    """environment does not apply to Bloomreach: refused, not silently ignored."""
    body = encode(operation=BR_OP, target="shop", catalog_id="c", environment="prod", ids=["a"])
    result = invalid(body)
    assert result.code == "invalid_message"
    assert "environment" in result.reason


def test_catalog_id_on_datocms_is_invalid() -> None:
    """catalog_id does not apply to DatoCMS."""
    result = invalid(encode(operation=DATO_OPS[0], target="main", catalog_id="c", ids=["a"]))
    assert result.code == "invalid_message"
    assert "catalog_id" in result.reason


def test_extra_field_is_invalid_and_ids_still_readable() -> None:
    """Unknown fields are refused (extra=forbid), ids are kept to answer them."""
    result = invalid(encode(operation=DATO_OPS[0], target="main", ids=["a"], priority=1))
    assert result.code == "invalid_message"
    assert "priority" in result.reason
    assert (result.operation, result.target, result.readable_ids) == (DATO_OPS[0], "main", ("a",))


@pytest.mark.parametrize(
    "fields",
    [
        {"ids": "a,b"},  # a string is not a list (strict)
        {"ids": {"a": 1}},
        {"operation": 5},
        {"target": ["main"]},
        {"environment": 1},
        {"request_id": 7},
        {"environment": "Has Upper"},
        {"environment": "-leading"},
        {"catalog_id": ""},
        {"request_id": "has space"},
        {"request_id": ""},
        {"operation": "x" * 129},
    ],
)
def test_wrong_types_and_shapes_are_invalid_message(fields: dict[str, Any]) -> None:
    """Strict schema: no coercion of strings to lists or numbers to strings, patterns enforced."""
    base: dict[str, Any] = {"operation": DATO_OPS[0], "target": "main", "ids": ["a"]}
    result = invalid(encode(**(base | fields)))
    assert result.code == "invalid_message"


def test_ids_as_a_string_has_no_readable_ids() -> None:
    """A string in place of the ids list is not split into characters or ids."""
    result = invalid(encode(operation=DATO_OPS[0], target="main", ids="abc"))
    assert result.readable_ids == ()


def test_empty_ids_list_is_invalid() -> None:
    """A message must carry at least one id."""
    assert invalid(encode(operation=DATO_OPS[0], target="main", ids=[])).code == "invalid_message"


def test_max_ids_is_accepted_and_one_more_is_invalid() -> None:
    """10,000 ids are fine; 10,001 make the message invalid, each id still answerable."""
    ids = [f"i{n}" for n in range(MAX_IDS + 1)]
    assert len(valid(operation=DATO_OPS[0], target="main", ids=ids[:MAX_IDS]).ids) == MAX_IDS
    result = invalid(encode(operation=DATO_OPS[0], target="main", ids=ids))
    assert result.code == "invalid_message"
    assert result.readable_ids == tuple(ids)


def test_body_over_16_mib_is_too_large_without_parsing() -> None:
    """Over 16 MiB is refused by size (even if it is garbage); exactly 16 MiB is parsed."""
    assert invalid(b"x" * (MAX_BODY_BYTES + 1)).code == "too_large"
    assert invalid(b" " * MAX_BODY_BYTES).code == "not_json"


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe", b'{"a": 1,}'])
def test_not_json_is_invalid(body: bytes) -> None:
    """Bodies that are not JSON are dead-lettered with code not_json and no ids."""
    result = invalid(body)
    assert (result.code, result.readable_ids) == ("not_json", ())


@pytest.mark.parametrize("body", [b"[]", b'["a"]', b"1", b'"s"', b"null", b"true"])
def test_json_that_is_not_an_object_is_invalid(body: bytes) -> None:
    """The body must be a JSON object."""
    assert invalid(body).code == "not_object"


# --- per-id rejections -----------------------------------------------------------------------


def test_duplicate_ids_are_sent_once_in_first_order() -> None:
    """Duplicates collapse to one, order of first appearance kept."""
    request = valid(operation=DATO_OPS[0], target="main", ids=["b", "a", "b", "c", "a"])
    assert request.ids == ("b", "a", "c")


def test_duplicate_rejected_ids_are_answered_once() -> None:
    """A bad id repeated is rejected once."""
    request = valid(operation=BR_OP, target="shop", catalog_id="c", ids=["a/b", "ok", "a/b"])
    assert request.ids == ("ok",)
    assert rejected_keys(request) == ["a/b"]


def test_bloomreach_ids_with_slash_are_rejected_others_sent() -> None:
    """'/' cannot go through the Bloomreach API: rejected, the rest still sent."""
    request = valid(operation=BR_OP, target="shop", catalog_id="c", ids=["x/1", "x-1", "/"])
    assert request.ids == ("x-1",)
    assert rejected_keys(request) == ["x/1", "/"]
    assert all(r.code == "invalid_id" for r in request.rejected)
    assert "'/'" in request.rejected[0].reason


@pytest.mark.parametrize("bad", ["a\x00b", "tab\t", "nl\n", "del\x7f", "\x1f"])
@pytest.mark.parametrize(("operation", "target"), [(BR_OP, "shop"), (DATO_OPS[0], "main")])
def test_ids_with_control_characters_are_rejected(bad: str, operation: str, target: str) -> None:
    """Control characters are never sent, for either API."""
    scope = {"catalog_id": "c"} if target == "shop" else {}
    request = valid(operation=operation, target=target, ids=[bad, "ok"], **scope)
    assert request.ids == ("ok",)
    assert rejected_keys(request) == [bad]


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("", ""),
        (1, "1"),
        (1.5, "1.5"),
        (None, "null"),
        (True, "true"),
        (["a"], '["a"]'),
        ({"id": "a"}, '{"id":"a"}'),
    ],
)
def test_empty_and_non_string_ids_are_rejected_under_their_json_text(value: Any, key: str) -> None:
    """Numbers, null, booleans, lists, objects and "" are rejected, keyed by their JSON text."""
    request = valid(operation=DATO_OPS[0], target="main", ids=[value, "ok"])
    assert request.ids == ("ok",)
    assert rejected_keys(request) == [key]
    error = request.rejected[0].error()
    assert error == ErrorInfo("invalid_id", "id must be a non-empty string", False)


def test_long_non_string_id_key_is_truncated() -> None:
    """A huge non-string id does not become a huge outcome id."""
    request = valid(operation=DATO_OPS[0], target="main", ids=[list(range(500))])
    assert len(request.rejected[0].id) == 256


@pytest.mark.parametrize("bad", ["a/b", "a b", "a,b", "é", "x" * 65, "a.b", "a:b", "a+b="])
def test_datocms_ids_outside_the_id_alphabet_are_rejected(bad: str) -> None:
    """DatoCMS ids are [A-Za-z0-9_-]{1,64}; anything else could corrupt filter[ids]=a,b."""
    request = valid(operation=DATO_OPS[2], target="main", ids=[bad, "hWl-mnkWRYmMCSTq4z_piQ"])
    assert request.ids == ("hWl-mnkWRYmMCSTq4z_piQ",)
    assert rejected_keys(request) == [bad]


def test_datocms_id_of_64_chars_and_numeric_string_are_accepted() -> None:
    """The boundary of the DatoCMS id pattern."""
    request = valid(operation=DATO_OPS[0], target="main", ids=["x" * 64, "12345", "_-"])
    assert request.ids == ("x" * 64, "12345", "_-")


def test_bloomreach_id_over_1024_chars_is_rejected() -> None:
    """Overlong ids are rejected rather than sent."""
    request = valid(operation=BR_OP, target="shop", catalog_id="c", ids=["y" * 1025, "y" * 1024])
    assert request.ids == ("y" * 1024,)
    assert rejected_keys(request) == ["y" * 1025]


def test_all_ids_rejected_is_still_a_request() -> None:
    """A message whose every id is bad is a Request with nothing to send, not an Invalid."""
    request = valid(operation=DATO_OPS[0], target="main", ids=[1, ""])
    assert request.ids == ()
    assert rejected_keys(request) == ["1", ""]


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(json_ids, min_size=1, max_size=30), bloomreach=st.booleans())
def test_property_every_id_answered_exactly_once_in_first_order(
    ids: list[Any], bloomreach: bool
) -> None:
    """For any ids list: each input id (by its string key) is in ids + rejected exactly once,
    both parts keep the order of first appearance, and ``distinct_ids`` (what a reply lists)
    is every key once in the order of first appearance."""
    fields = (
        {"operation": BR_OP, "target": "shop", "catalog_id": "c"}
        if bloomreach
        else {"operation": DATO_OPS[0], "target": "main"}
    )
    request = valid(ids=ids, **fields)

    def key(value: Any) -> str:
        return value if isinstance(value, str) else orjson.dumps(value).decode()[:256]

    out = list(request.ids) + rejected_keys(request)
    assert len(out) == len(set(out))
    assert set(out) == {key(v) for v in ids}
    first_seen = list(dict.fromkeys(key(v) for v in ids))
    # Sent in the order the valid strings first appear (a non-string id whose key equals a
    # valid id, e.g. 0 and "0", is answered by that id and does not move it).
    first_strings = list(dict.fromkeys(v for v in ids if isinstance(v, str)))
    assert list(request.ids) == [k for k in first_strings if k in set(request.ids)]
    assert rejected_keys(request) == [k for k in first_seen if k in set(rejected_keys(request))]
    assert all(isinstance(i, str) and i for i in request.ids)
    assert list(request.distinct_ids) == first_seen


# --- request ids -----------------------------------------------------------------------------


def test_request_id_falls_back_to_amqp_message_id() -> None:
    """Without request_id in the body, the AMQP message_id is the request id."""
    request = parse(encode(operation=DATO_OPS[0], target="main", ids=["a"]), "m-7")
    assert isinstance(request, Request)
    assert request.request_id == "m-7"


@pytest.mark.parametrize("message_id", [None, "", "has space", "é", "x" * 257])
def test_request_id_falls_back_to_a_stable_hash_of_the_body(message_id: str | None) -> None:
    """No usable message_id: a hash of the body, the same on redelivery, different per body."""
    body = encode(operation=DATO_OPS[0], target="main", ids=["a"])
    first = parse(body, message_id)
    again = parse(body, message_id)
    other = parse(encode(operation=DATO_OPS[0], target="main", ids=["b"]), message_id)
    assert first.request_id == again.request_id
    assert first.request_id.startswith("sha256-")
    assert len(first.request_id) == len("sha256-") + 32
    assert other.request_id != first.request_id


def test_invalid_messages_also_get_the_fallback_request_id() -> None:
    """Unparseable messages are answered under the same deterministic id."""
    assert invalid(b"nope", "m-1").request_id == "m-1"
    assert invalid(b"nope", None).request_id == derive_request_id(b"nope", None)
    bad_rid = encode(operation=DATO_OPS[0], target="main", ids=["a"], request_id="a b", x=1)
    assert invalid(bad_rid, "m-2").request_id == "m-2"


def test_schema_invalid_keeps_a_valid_request_id_from_the_body() -> None:
    """An invalid message with a usable request_id is answered under it."""
    body = encode(operation=DATO_OPS[0], target="main", ids=[], request_id="r-1")
    assert invalid(body).request_id == "r-1"


@given(body=st.binary(max_size=64), message_id=st.none() | st.text(max_size=8))
@settings(max_examples=100, deadline=None)
def test_property_derive_request_id_is_deterministic(body: bytes, message_id: str | None) -> None:
    """Same body and message_id, same request id (so outcomes dedupe after redelivery)."""
    assert derive_request_id(body, message_id) == derive_request_id(body, message_id)


# --- outcomes --------------------------------------------------------------------------------


def make_outcome(operation: str, status: str = "failed", **kw: Any) -> Outcome:
    fields: dict[str, Any] = {
        "request_id": "r-1",
        "operation": operation,
        "target": "main",
        "scope": (("environment", "sb"),),
        "id": "item-1",
        "status": status,
        "error": ErrorInfo("ITEM_LOCKED", "locked", True),
        "attempts": 2,
        "batch_id": "b-1",
        "job_id": "4235",
        "finished_at": "2026-11-22T12:00:00Z",
    }
    return Outcome(**(fields | kw))


@pytest.mark.parametrize("operation", [*DATO_OPS, BR_OP])
@pytest.mark.parametrize("status", ["succeeded", "failed", "rejected"])
def test_outcome_routing_key_and_message_id(operation: str, status: str) -> None:
    """Routing key <operation>.<status>; message_id <request_id>:<operation>:<id>."""
    outcome = make_outcome(operation, status)
    assert outcome.routing_key == f"{operation}.{status}"
    assert outcome.message_id == f"r-1:{operation}:item-1"


@pytest.mark.parametrize("operation", ["evil.#", "datocms.*", "", "datocms.items", "a" * 300])
def test_untrusted_operation_never_reaches_the_routing_key(operation: str) -> None:
    """Operations not in the catalogue route as 'invalid'."""
    assert make_outcome(operation, "rejected").routing_key == "invalid.rejected"
    assert routing_operation(operation) == "invalid"
    assert routing_operation(None) == "invalid"


def test_outcome_body_has_exactly_the_contract_fields() -> None:
    """The JSON body carries the contract's fields and the error object."""
    body = orjson.loads(make_outcome(DATO_OPS[0]).body())
    assert body == {
        "request_id": "r-1",
        "operation": DATO_OPS[0],
        "target": "main",
        "environment": "sb",
        "catalog_id": None,
        "id": "item-1",
        "status": "failed",
        "error": {"code": "ITEM_LOCKED", "message": "locked", "retryable": True},
        "attempts": 2,
        "batch_id": "b-1",
        "job_id": "4235",
        "finished_at": "2026-11-22T12:00:00Z",
    }
    assert orjson.loads(make_outcome(DATO_OPS[0], "succeeded", error=None).body())["error"] is None


def test_invalid_message_outcomes_are_rejected_for_each_readable_id() -> None:
    """An Invalid answers each readable id as rejected, with its code, under 'invalid' routing
    when the operation is unknown."""
    result = invalid(encode(operation="nope", target="main", ids=["a", "b", "a"]), "m-9")
    outcomes = result.outcomes("2026-01-01T00:00:00Z")
    assert [o.id for o in outcomes] == ["a", "b"]
    for outcome in outcomes:
        assert outcome.status == "rejected"
        assert outcome.routing_key == "invalid.rejected"
        assert outcome.message_id == f"m-9:nope:{outcome.id}"
        assert outcome.error == ErrorInfo("unknown_operation", result.reason, False)
        assert outcome.attempts == 0


def test_invalid_message_with_known_operation_routes_under_it() -> None:
    """A known operation with a bad target keeps its routing key."""
    result = invalid(encode(operation=DATO_OPS[1], target="x", ids=["a"]))
    [outcome] = result.outcomes("t")
    assert outcome.routing_key == f"{DATO_OPS[1]}.rejected"


def test_not_json_message_has_no_outcomes() -> None:
    """Nothing readable, nothing to answer: only the dead-letter."""
    assert invalid(b"{").outcomes("t") == []


def test_outcome_message_id_format() -> None:
    """The deterministic dedupe key."""
    assert outcome_message_id("r", "op", "i") == "r:op:i"
