"""Items, not ids (worker/apis/base.py, worker/batching.py): a batch key carries the
operation's params, an item its payload; equal keys and equal payloads coalesce, others not."""

from __future__ import annotations

from worker.apis.base import BatchKey, params_key
from worker.batching import Coalescer
from worker.registry import OPERATIONS

PUBLISH = OPERATIONS["datocms.items.publish"]


def key(params: dict[str, object] | None = None) -> BatchKey:
    return BatchKey(operation=PUBLISH.name, target="main", scope=None, params=params_key(params))


def test_params_in_any_order_make_one_key() -> None:
    assert key({"a": 1, "b": [2, 3]}) == key({"b": [2, 3], "a": 1})
    assert key({"a": 1}) != key({"a": 2})
    assert key() == BatchKey(PUBLISH.name, "main", None) and key().params is None


def test_a_key_reads_by_name() -> None:
    k = key({"stage": "review"})
    assert (k.operation, k.target, k.scope, k.params) == (
        PUBLISH.name,
        "main",
        None,
        '{"stage":"review"}',
    )
    assert k.labels == (PUBLISH.name, "main")


def test_equal_key_and_payload_join_one_item() -> None:
    """The same id, key and payload not yet sent: one item answers both requesters."""
    c = Coalescer()
    first = c.add(PUBLISH, key(), "a", "w1", 0.0, payload={"p": 1})
    second = c.add(PUBLISH, key(), "a", "w2", 0.0, payload={"p": 1})
    assert second is first and first.waiters == ["w1", "w2"]
    assert first.payload == {"p": 1}


def test_other_payload_or_params_make_a_new_item_that_waits_its_turn() -> None:
    """Another payload, or other params, for the same id: a new item, behind the first."""
    c = Coalescer()
    first = c.add(PUBLISH, key(), "a", "w1", 0.0, payload={"p": 1})
    other_payload = c.add(PUBLISH, key(), "a", "w2", 0.0, payload={"p": 2})
    other_params = c.add(PUBLISH, key({"x": 1}), "a", "w3", 0.0, payload={"p": 2})
    assert len({id(first), id(other_payload), id(other_params)}) == 3
    assert [item.id for item in c.take(key())] == ["a"]  # only the head is ready
    assert c.take(key({"x": 1})) == []
