"""OpenTelemetry traces, off unless the standard ``OTEL_*`` variables turn them on.

``OTEL_TRACES_EXPORTER=otlp`` (with ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``; ``OTEL_SDK_DISABLED=true`` wins) exports
spans over OTLP/HTTP with the SDK's batch processor. What is traced:

- the consume of each request message: aio-pika's instrumentation, which continues the
  ``traceparent`` (W3C trace context) of the message's headers;
- each API request (job polls too): a span of its own, linked to the consume span of every
  request message whose items it carries (span links, as the messaging conventions describe
  for batches), with httpx's client span under it;
- outcome and reply messages carry the trace context of their request message's consume
  span on, in their headers.

Off, every hook here is a test of one module global: nothing is instrumented, no span made.
Spans carry no credentials. They do carry item ids where the API puts them in the URL:
httpx's client span records the request's URL (``PUT /items/<id>/publish``, a read-back's
``filter[ids]=…``); aio-pika's records the message id and correlation id, as the messaging
conventions name them. Keep that in mind for who may read the traces.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanContext, SpanKind

if TYPE_CHECKING:  # the SDK is imported only when tracing is turned on
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

log = logging.getLogger("bulkops.tracing")

SERVICE_NAME = "bulkops"
SUPPORTED_PROTOCOLS = ("http/protobuf",)
MAX_LINKS = 10_000  # request messages one API request may carry (one item each, at most)
_tracer: trace.Tracer | None = None  # None: tracing is off
_provider: TracerProvider | None = None


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (an ``otlp`` traces exporter, SDK enabled)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "none").lower().split(",")
    return "otlp" in (e.strip() for e in exporters)


def configure(environ: Mapping[str, str]) -> bool:
    """Turn tracing on when the environment asks for it; whether it is on. The exporter reads
    its endpoint, headers and timeout from the same variables itself."""
    if not wanted(environ):
        return False
    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    ).strip()
    if protocol and protocol not in SUPPORTED_PROTOCOLS:
        log.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: traces go over http/protobuf",
            protocol,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    enable(BatchSpanProcessor(OTLPSpanExporter()), environ)
    return True


def enable(processor: SpanProcessor, environ: Mapping[str, str] | None = None) -> None:
    """Trace into ``processor`` (an exporter's, or a test's in-memory one); instrument
    aio-pika and httpx. The service name is ``OTEL_SERVICE_NAME``, else bulkops."""
    global _tracer, _provider
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    environ = environ or {}
    name = environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME
    # The SDK keeps 128 links a span by default: a request of 200 DatoCMS records (or of
    # 10,000 Bloomreach items) may carry more request messages than that, and every one of
    # them must find the request in its trace. OTEL_SPAN_LINK_COUNT_LIMIT still wins.
    own = "OTEL_SPAN_LINK_COUNT_LIMIT" not in environ
    limits = SpanLimits(max_links=MAX_LINKS if own else None)
    provider = TracerProvider(resource=Resource.create({"service.name": name}), span_limits=limits)
    provider.add_span_processor(processor)
    AioPikaInstrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    _provider = provider
    _tracer = provider.get_tracer("bulkops")


def shutdown() -> None:
    """Export what is left and turn tracing off (instrumentations removed)."""
    global _tracer, _provider
    if _provider is None:
        return
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    AioPikaInstrumentor().uninstrument()
    HTTPXClientInstrumentor().uninstrument()
    _provider.shutdown()
    _tracer = _provider = None


def tracer() -> trace.Tracer | None:
    """The worker's tracer, None when tracing is off."""
    return _tracer


def current() -> SpanContext | None:
    """The context of the span in progress (a request message's consume span), when on."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def links(contexts: Iterable[Any]) -> tuple[Link, ...]:
    """One link per distinct span context (None and duplicates left out)."""
    if _tracer is None:
        return ()
    seen = {(c.trace_id, c.span_id): c for c in contexts if isinstance(c, SpanContext)}
    return tuple(Link(c) for c in seen.values())


@contextlib.contextmanager
def api_request(
    endpoint: str, method: str, target: str, linked: tuple[Link, ...]
) -> Iterator[None]:
    """The span of one API request (``job_result``: a job poll), linked to the request
    messages it carries; httpx's client span is its child."""
    if _tracer is None:
        yield
        return
    name = "job poll" if endpoint == "job_result" else f"api {endpoint}"
    attributes: dict[str, str | int] = {
        "bulkops.endpoint": endpoint,
        "bulkops.target": target,
        "http.request.method": method,
        "messaging.batch.message_count": len(linked),
    }
    with _tracer.start_as_current_span(
        name, kind=SpanKind.INTERNAL, links=linked, attributes=attributes
    ):
        yield


@contextlib.contextmanager
def part(carrier: Mapping[str, Any] | None) -> Iterator[None]:
    """The consume span of one request of a bundle (partitioned mode: the router forwards
    requests bound for one partition together, worker/broker/bundles.py): it continues the
    request's own ``traceparent`` (``carrier``: its headers), as aio-pika's consume span does
    for a message of its own, linked to the bundle's consume span."""
    if _tracer is None:
        yield
        return
    wanted = ("traceparent", "tracestate")
    strings = {k: v.decode() if isinstance(v, bytes) else str(v)
               for k, v in (carrier or {}).items() if k in wanted}  # fmt: skip
    bundle = current()
    with _tracer.start_as_current_span(
        "consume bundled request",
        context=propagate.extract(strings),
        kind=SpanKind.CONSUMER,
        links=() if bundle is None else (Link(bundle),),
    ):
        yield


def headers(context: SpanContext | None) -> dict[str, Any] | None:
    """AMQP headers carrying ``context`` on (``traceparent``, ``tracestate``), or None."""
    if context is None:
        return None
    carrier: dict[str, Any] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(context)))
    return carrier
