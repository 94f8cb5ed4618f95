"""The registry (worker/registry.py): API facts in one place, read by everyone else."""

from __future__ import annotations

import pytest

from worker.apis.base import BatchKey
from worker.messages import Request, parse_request, routing_operation
from worker.registry import APIS, CONTRACT_OPERATIONS, OPERATIONS, TARGET_MODELS, rate_scope

TARGETS = {"main": "datocms", "shop": "bloomreach"}
PLANNED = sorted(set(CONTRACT_OPERATIONS) - set(OPERATIONS))


def request(body: bytes) -> Request:
    parsed = parse_request(body, "m-1", TARGETS)
    assert isinstance(parsed, Request)
    return parsed


def test_every_contract_operation_is_carried_out() -> None:
    """The five operations of the sync issue are executed now: no contract row is left
    for the worker to answer ``unknown_operation``."""
    assert PLANNED == []
    assert {
        "bloomreach.catalog_items.update",
        "bloomreach.catalog_items.upsert",
        "datocms.items.move_to_stage",
        "datocms.uploads.set_collection",
        "datocms.uploads.tag",
    } <= set(OPERATIONS)


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_operation_routes_under_its_own_name(name: str) -> None:
    """Outcomes of every executed operation are routed by its name, not as ``invalid``."""
    assert routing_operation(name) == name


def test_the_rate_scope_keeps_its_spelling() -> None:
    """A DatoCMS token's scope spans its environments, a Bloomreach one is per catalog.
    Joined with NUL, these are the strings partitioned mode hashes to pick a partition
    (``scope_key``): they keep the spelling earlier versions used, so replicas of two
    versions agree on every scope's owner."""
    dato = request(b'{"operation": "datocms.items.publish", "target": "main", '
                   b'"environment": "sandbox", "ids": ["a"]}')  # fmt: skip
    bloom = request(b'{"operation": "bloomreach.catalog_items.delete", "target": "shop", '
                    b'"catalog_id": "products", "ids": ["a"]}')  # fmt: skip
    spelled = {}
    for req in (dato, bloom):
        key = BatchKey(operation=req.operation.name, target=req.target, scope=req.scope)
        spelled[req.target] = "\x00".join(rate_scope(key))
    assert spelled == {"main": "datocms\x00main", "shop": "bloomreach\x00shop\x00products"}
    other_env = BatchKey(operation="datocms.items.destroy", target="main", scope=None)
    assert rate_scope(other_env) == rate_scope(
        BatchKey(operation="datocms.items.publish", target="main", scope="sandbox")
    )


def test_each_api_has_its_target_model_and_operations() -> None:
    assert set(TARGET_MODELS) == {spec.target for spec in APIS.values()}
    for kind, spec in APIS.items():
        assert spec.operations and all(op.api == kind for op in spec.operations)
        assert all(op.name.startswith(f"{kind}.") for op in spec.operations)
