"""The worker's own DatoCMS requests against what the official client sends for the same call.

For each DatoCMS operation the worker carries out, the worker's adapter and the official client
(``datocms/record_calls.mjs``) make the same calls (the bulk request, its job result, the
read-back by ids, the single-record call for the id the job failed) with the same ids,
environment and parameters, against an emulator that logs each request's headers and body.
The two logs must agree call by call: method, path, query, JSON body, and the headers below,
except for these decisions (also in the README, "What the emulator is faithful to"):

1. ``Content-Type``: the worker sends ``application/vnd.api+json`` on requests with a body and
   none on requests without one; the client sends ``application/json`` on every request. The
   reference pages' HTTP examples send ``application/vnd.api+json`` and the API takes both
   (the emulator too), so the worker keeps the reference pages' form.
2. ``User-Agent`` is not compared: the client names itself (``@datocms/cma-client``), the
   worker sends its HTTP library's; the API asks for none.
3. Job-result polls are compared as "polled until 200": how often each polls is its own
   (the client 1 s, 2 s, 3 s... by default; the worker by ``BULKOPS_JOB_POLL_*``).
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
from prometheus_client import CollectorRegistry

from tests.conformance.node import HERE, installed_node
from tests.unit.adapter_support import Sent, Sleeps
from worker.apis.base import BatchKey
from worker.apis.datocms.adapter import DatoCMS, JobPolling
from worker.apis.datocms.target import DatoCMSTarget
from worker.emulator import Emulator, EmulatorConfig
from worker.emulator.log import LogEntry
from worker.http import RetryPolicy, ScopedClient
from worker.limiter import Limiter, Rate
from worker.metrics import Metrics

ENVIRONMENT = "sandbox-1"
COMPARED_HEADERS = ("accept", "authorization", "content-type", "x-api-version", "x-environment")
WORKER_BODY_TYPE = "application/vnd.api+json"  # decision 1
# (operation, params, ids; the second id fails in the job: its single-record call follows)
OPERATIONS: list[tuple[str, dict[str, Any] | None, list[str]]] = [
    ("datocms.items.publish", None, ["p1", "p2"]),
    ("datocms.items.unpublish", None, ["n1", "n2"]),
    ("datocms.items.destroy", None, ["d1", "d2"]),
    ("datocms.items.move_to_stage", {"stage": "review"}, ["s1", "s2"]),
    ("datocms.uploads.destroy", None, ["u1", "u2"]),
    ("datocms.uploads.tag", {"tags": ["new"]}, ["t1", "t2"]),
    ("datocms.uploads.set_collection", {"upload_collection": "col1"}, ["c1", "c2"]),
]


def seed(emu: Emulator) -> None:
    """The same state for both runs: the second id of each operation fails in its job."""
    dato = emu.datocms
    dato.seed_records(["p1", "p2", "d1", "d2", "s1", "s2"], ENVIRONMENT, "draft")
    dato.seed_records(["n1", "n2"], ENVIRONMENT, "published")
    dato.seed_uploads(["u1", "t1", "t2", "c1", "c2"], ENVIRONMENT)
    dato.seed_uploads(["u2"], ENVIRONMENT, in_use=True)
    for action, some_id, code in [
        ("publish", "p2", "ITEM_LOCKED"),
        ("unpublish", "n2", "ITEM_LOCKED"),
        ("destroy", "d2", "DELETE_RESTRICTION"),
        ("move_to_stage", "s2", "ITEM_LOCKED"),
        ("upload_tag", "t2", "ITEM_LOCKED"),
        ("upload_set_collection", "c2", "ITEM_LOCKED"),
    ]:
        dato.set_failure([some_id], action, code)  # type: ignore[arg-type]


async def run_worker(emu: Emulator) -> None:
    target = DatoCMSTarget(kind="datocms", base_url=emu.base_url, api_token="dato-token")  # type: ignore[arg-type]
    retry = RetryPolicy(4, 60.0, 0.01, 0.05, sleep=Sleeps())
    adapter = DatoCMS(target, retry, JobPolling(5.0, 0.01, 0.05))
    async with httpx.AsyncClient() as http:
        client = ScopedClient(http, Limiter(Rate(60, 3.0)), Metrics(CollectorRegistry()), "main")
        for operation, params, ids in OPERATIONS:
            raw = orjson.dumps(params).decode() if params is not None else None
            key = BatchKey(operation=operation, target="main", scope=ENVIRONMENT, params=raw)
            results = await adapter.execute(key, [Sent(i) for i in ids], client, None)
            assert results[ids[0]].status == "succeeded", (operation, results)
            assert results[ids[1]].status == "failed", (operation, results)


async def run_client(emu: Emulator) -> None:
    env = {**os.environ, "EMULATOR_URL": emu.base_url, "DATOCMS_ENVIRONMENT": ENVIRONMENT}
    process = await asyncio.create_subprocess_exec(
        installed_node(),
        "record_calls.mjs",
        cwd=HERE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode(errors="replace")


def template(path: str) -> str:
    """The path with ids and job ids as placeholders (bulk paths stay as they are)."""
    if "/bulk/" in path:
        return path
    path = re.sub(r"^/job-results/[^/]+$", "/job-results/{job}", path)
    return re.sub(r"^/(items|uploads)/[^/]+", r"/\1/{id}", path)


def calls(log: list[LogEntry]) -> list[dict[str, Any]]:
    """The DatoCMS calls in order, consecutive job-result polls counted once (decision 3)."""
    out: list[dict[str, Any]] = []
    for entry in log:
        if entry.api != "datocms":
            continue
        call = {
            "call": f"{entry.method} {template(entry.path)}",
            "query": dict(parse_qsl(entry.query)),
            "body": orjson.loads(entry.body) if entry.body else None,
            "headers": {k: v for k, v in entry.headers.items() if k in COMPARED_HEADERS},
        }
        if out and call["call"] == out[-1]["call"] == "GET /job-results/{job}":
            continue
        out.append(call)
    return out


def as_the_worker_sends(call: dict[str, Any]) -> dict[str, Any]:
    """The client's call with decision 1 applied to its headers."""
    headers = dict(call["headers"])
    headers.pop("content-type", None)
    if call["body"] is not None:
        headers["content-type"] = WORKER_BODY_TYPE
    return {**call, "headers": headers}


async def test_the_worker_sends_what_the_official_client_sends_but_the_decided_differences() -> (
    None
):
    """Same calls, paths, queries and bodies; same headers but the Content-Type decision."""
    installed_node()
    config = EmulatorConfig(
        datocms_job_seconds=0.01, datocms_implicit_records=False, log_request_bodies=True
    )
    async with Emulator(config) as emu:
        seed(emu)
        await run_worker(emu)
        worker = calls(emu.log)
        emu.reset()
        seed(emu)
        await run_client(emu)
        client = calls(emu.log)
    # 4 calls an operation (bulk, job result, read-back, single), and the job of the single
    # DELETE /items/<id>.
    assert len(worker) == len(client) == 7 * 4 + 1, [c["call"] for c in worker]
    for ours, theirs in zip(worker, client, strict=True):
        assert ours == as_the_worker_sends(theirs), (ours, theirs)
    # What decision 1 is about, seen on the wire: a body-carrying call of each.
    bulk = next(c for c in client if c["call"] == "POST /items/bulk/publish")
    assert bulk["headers"]["content-type"] == "application/json"
    assert all(c["headers"]["x-environment"] == ENVIRONMENT for c in worker + client)
