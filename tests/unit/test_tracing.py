"""worker/tracing.py with an in-memory exporter: off by default (no span, no header, no
instrumentation), on only for an ``otlp`` traces exporter; on, the API request span links
each request message once, job polls are spans of their own, and the headers given to
outcomes and replies carry the request's context."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from worker import tracing
from worker.http import ScopedClient
from worker.limiter import Limiter, Rate
from worker.metrics import Metrics


def on() -> trace.Tracer:
    tracer = tracing.tracer()
    assert tracer is not None
    return tracer


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.enable(SimpleSpanProcessor(exporter), {"OTEL_SERVICE_NAME": "unit"})
    try:
        yield exporter
    finally:
        tracing.shutdown()


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_traces_are_wanted_only_for_an_otlp_exporter(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on


def test_off_every_hook_is_a_no_op() -> None:
    assert tracing.configure({}) is False
    assert not AioPikaInstrumentor().is_instrumented_by_opentelemetry
    assert tracing.current() is None
    assert tracing.headers(None) is None
    assert tracing.links([object(), None]) == ()
    with tracing.api_request("items_bulk_publish", "POST", "main", ()):
        assert not trace.get_current_span().get_span_context().is_valid


def test_on_the_api_request_links_each_request_message_once(
    spans: InMemorySpanExporter,
) -> None:
    tracer = on()
    contexts = []
    for n in range(2):
        with tracer.start_as_current_span(f"consume {n}"):
            contexts.append(tracing.current())
    linked = tracing.links([contexts[0], contexts[1], contexts[0], None])
    with tracing.api_request("items_bulk_publish", "POST", "main", linked):
        pass
    with tracing.api_request("job_result", "GET", "main", linked):
        pass
    api, poll = spans.get_finished_spans()[2:]
    assert api.name == "api items_bulk_publish" and poll.name == "job poll"
    assert [link.context for link in api.links] == contexts
    assert api.attributes is not None
    assert api.attributes["messaging.batch.message_count"] == 2
    assert api.resource.attributes["service.name"] == "unit"


def test_headers_carry_the_request_context_on(spans: InMemorySpanExporter) -> None:
    with on().start_as_current_span("consume"):
        context = tracing.current()
    assert context is not None
    carried = tracing.headers(context)
    assert carried is not None
    _version, trace_id, span_id, flags = carried["traceparent"].split("-")
    assert (trace_id, span_id) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled


async def test_every_send_is_a_span_with_its_batch_links(spans: InMemorySpanExporter) -> None:
    """ScopedClient.send (the one door to the APIs) wraps each request in the span."""
    with on().start_as_current_span("consume"):
        context = tracing.current()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    async with httpx.AsyncClient(transport=transport) as http:
        limiter = Limiter(Rate(100, 1.0))
        client = ScopedClient(http, limiter, Metrics(CollectorRegistry()), "main")
        batch = client.for_batch(tracing.links([context]))
        await batch.send("items_bulk_publish", "POST", "http://api.test/x", headers={})
    api = spans.get_finished_spans()[-1]
    assert api.name == "api items_bulk_publish"
    assert [link.context for link in api.links] == [context]
    assert api.attributes is not None and api.attributes["bulkops.target"] == "main"


def test_an_api_request_keeps_a_link_to_each_of_200_request_messages(
    spans: InMemorySpanExporter,
) -> None:
    """A DatoCMS request of 200 records from 200 single-id messages links all 200 (the SDK's
    default keeps 128 and drops the rest, so 72 requests would lose the API call)."""
    tracer = on()
    contexts = []
    for n in range(200):
        with tracer.start_as_current_span(f"consume {n}"):
            contexts.append(tracing.current())
    with tracing.api_request("items_bulk_publish", "POST", "main", tracing.links(contexts)):
        pass
    api = spans.get_finished_spans()[-1]
    assert [link.context for link in api.links] == contexts
    assert api.dropped_links == 0

