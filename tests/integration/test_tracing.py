"""Traces across merged batches, end to end: a worker process with the standard ``OTEL_*``
variables exports over OTLP/HTTP (protobuf) to a real receiver on this machine, which decodes
each ``ExportTraceServiceRequest``. Three request messages of three different traces, merged
into one API request: each consume span continues its message's ``traceparent``, the API
request's span links to all three, httpx's client span is under it, the job polls are spans,
and every outcome and reply carries its request's trace on."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.integration.harness import Rig, collect_queue, free_port

pytestmark = pytest.mark.integration

OP = "datocms.items.publish"


@dataclass
class Receiver:
    """An OTLP/HTTP traces endpoint: the spans it was sent, and the service names."""

    url: str
    spans: list[Span] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    content_types: set[str] = field(default_factory=set)

    def named(self, prefix: str) -> list[Span]:
        return [s for s in self.spans if s.name.startswith(prefix)]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    found = Receiver(f"http://127.0.0.1:{port}")

    async def traces(request: web.Request) -> web.Response:
        found.content_types.add(request.content_type)
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    found.services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                found.spans.extend(scope_spans.spans)
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield found
    finally:
        await runner.cleanup()


def traceparent() -> tuple[str, bytes, bytes]:
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    return f"00-{trace_id.hex()}-{span_id.hex()}-01", trace_id, span_id


def header(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("partitions", [0, 2], ids=["single", "partitioned"])
async def test_three_traced_requests_merged_into_one_api_request(
    r: Rig, receiver: Receiver, partitions: int
) -> None:
    """Partitioned, the router's consume span continues each message's trace too, and the
    owner's span of each request of a bundle (worker/broker/bundles.py) is the one the API
    request links to and the outcomes carry on."""
    env = r.env(linger_seconds=0.5, partitions=partitions) | {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "bulkops-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    reply_queue, replies = await collect_queue(r.channel)
    parents = [traceparent() for _ in range(3)]
    async with r.worker_process(env):
        for n, (header_value, _, _) in enumerate(parents):
            await r.publish(
                {"operation": OP, "target": "main", "ids": [f"t{n}-a", f"t{n}-b"],
                 "request_id": f"traced-{n}"},
                headers={"traceparent": header_value}, reply_to=reply_queue,
            )  # fmt: skip
        outcomes = await r.results.wait_for(6)
        await replies.wait_for(3)
    assert {o["status"] for o in outcomes} == {"succeeded"}
    # The worker flushed its spans on SIGTERM: all are in.
    trace_ids = {trace_id for _, trace_id, _ in parents}
    # Partitioned, a bundle's consume span continues the router's publish of it instead.
    sends = {s.span_id for s in receiver.spans if s.kind == Span.SPAN_KIND_PRODUCER}
    consumes = [
        s for s in receiver.spans
        if s.trace_id in trace_ids and s.kind == Span.SPAN_KIND_CONSUMER
        and s.parent_span_id not in sends
    ]  # fmt: skip
    assert {(s.trace_id, s.parent_span_id) for s in consumes} == {
        (trace_id, span_id) for _, trace_id, span_id in parents
    }
    assert len(consumes) == 3 * (2 if partitions else 1)  # partitioned: router's and owner's
    bulk = receiver.named("api items_bulk_publish")
    assert len(bulk) == 1, [s.name for s in receiver.spans]  # merged into one API request
    linked = {(link.trace_id, link.span_id) for link in bulk[0].links}
    owners = [s for s in consumes if not partitions or s.name == "consume bundled request"]
    assert linked == {(s.trace_id, s.span_id) for s in owners}
    http_children = [s for s in receiver.spans if s.parent_span_id == bulk[0].span_id]
    assert [s.kind for s in http_children] == [Span.SPAN_KIND_CLIENT]
    assert receiver.named("job poll"), [s.name for s in receiver.spans]
    assert receiver.services == {"bulkops-under-test"}
    assert receiver.content_types == {"application/x-protobuf"}
    # No credentials in any span.
    for span in receiver.spans:
        for attribute in span.attributes:
            assert "dato-token" not in str(attribute.value)
    # Outcomes and replies carry their request's trace on.
    consume_of = {s.trace_id: s.span_id for s in owners}
    for message in r.results.messages + replies.messages:
        value = header((message.headers or {})["traceparent"])
        _, trace_hex, span_hex, _ = value.split("-")
        assert consume_of[bytes.fromhex(trace_hex)] == bytes.fromhex(span_hex)
    by_request = {m.correlation_id: header(m.headers["traceparent"]) for m in replies.messages}
    for n, (_, trace_id, _) in enumerate(parents):
        assert by_request[f"traced-{n}"].split("-")[1] == trace_id.hex()


async def test_without_otel_variables_nothing_is_traced(r: Rig, receiver: Receiver) -> None:
    """Off by default: the same traffic, no OTEL_TRACES_EXPORTER: nothing reaches the
    receiver (even with an endpoint set) and outcomes carry no trace headers."""
    env = r.env() | {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
    async with r.worker_process(env):
        await r.publish(
            {"operation": OP, "target": "main", "ids": ["u1"]},
            headers={"traceparent": traceparent()[0]},
        )
        await r.results.wait_for(1)
    await asyncio.sleep(0.5)  # a batch processor would have exported by now (200 ms)
    assert receiver.spans == []
    assert "traceparent" not in (r.results.messages[0].headers or {})
