"""Issue 24: an API is a plug-in. A third API (``tests/plugin_api``: a search index scoped by
``index``, one batch operation, its own fake HTTP server) is added without touching any
shared module, and its messages go through a real worker process (the real pipeline) and the
real RabbitMQ to their outcomes."""

from __future__ import annotations

import orjson

from tests.integration.harness import Rig
from tests.plugin_api.server import FakeSearchIndex
from tests.plugin_api.spec import DELETE


async def test_a_third_api_added_as_a_plug_in_answers_through_the_real_pipeline(r: Rig) -> None:
    fake = FakeSearchIndex("key-1", locked=frozenset({"d-3"}))
    await fake.start()
    try:
        env = r.env()
        targets = orjson.loads(env["BULKOPS_TARGETS"])
        targets["search"] = {"kind": "searchidx", "base_url": fake.base_url, "api_key": "key-1"}
        env["BULKOPS_TARGETS"] = orjson.dumps(targets).decode()
        env["BULKOPS_API_AREAS"] = "tests.plugin_api"
        async with r.worker_process(env):
            body = {"operation": DELETE, "target": "search", "index": "products"}
            await r.publish({**body, "ids": ["d-1", "d-2", "d-3"], "request_id": "p-1"})
            await r.publish({**body, "index": "Bad Index", "ids": ["x-1"], "request_id": "p-2"})
            await r.publish({**body, "catalog_id": "c", "ids": ["y-1"], "request_id": "p-3"})
            outcomes = await r.results.wait_for(5)
    finally:
        await fake.stop()
    by_id = {o["id"]: o for o in outcomes}
    assert fake.requests == [("products", ["d-1", "d-2", "d-3"])]
    assert {i: o["status"] for i, o in by_id.items()} == {
        "d-1": "succeeded",
        "d-2": "succeeded",
        "d-3": "failed",
        "x-1": "rejected",
        "y-1": "rejected",
    }
    assert by_id["d-3"]["error"]["code"] == "DOC_LOCKED"
    # The plug-in's scope field sits beside the others, null where it does not apply.
    assert by_id["d-1"]["index"] == "products"
    assert by_id["d-1"]["environment"] is None and by_id["d-1"]["catalog_id"] is None
    assert "index must be" in by_id["x-1"]["error"]["message"]
    assert by_id["y-1"]["error"]["message"] == f"catalog_id does not apply to {DELETE}"
    keys = {orjson.loads(m.body)["id"]: m.routing_key for m in r.results.messages}
    assert keys["d-1"] == f"{DELETE}.succeeded" and keys["x-1"] == f"{DELETE}.rejected"
