"""OpenTelemetry traces across NATS, off by default.

Off (no `SINERGI_OTEL_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): no provider, no exporter, no instrumentation; every
hook below returns at its first line, so an untraced service pays one attribute test per unit
of work and per batch.

On, a trace follows the work from end to end:
- HTTP: FastAPI's own telemetry opens a span per request (route template, status; no request
  logs or bodies, which hold personal data); health and metrics probes are left out.
- SQL: SQLAlchemy's engine events, a span per statement (the statement with placeholders,
  never the values).
- Outbox: a unit of work writes the current context's W3C `traceparent` (and `tracestate`)
  into the headers of every outbox row it adds; the relay publishes rows with their headers.
- Consumers: one span per batch (`consume <durable>`), a child of the first message's
  context, linked to the other messages' contexts (up to `MAX_LINKS`); what the handler emits
  carries that span's context on, to the next service.
- Core request-reply (`registry.lookup`): the asker sends `headers()`, the responder answers
  inside `serve(name, msg)`.

Exporter: OTLP over HTTP/protobuf (a collector's port 4318). `SINERGI_OTEL_ENDPOINT` is the
collector's base URL (`http://otel-collector:4318`); the standard `OTEL_EXPORTER_OTLP_*`
variables work as the SDK documents them. Tests install their own provider with `use()`.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

    from services.kit.outbox import OutboxRow

MAX_LINKS = 64  # a batch of 2,000 reports from one agency file mostly shares a few contexts
UNTRACED = ("/healthz", "/readyz", "/metrics")
_propagator = TraceContextTextMapPropagator()

ProviderFactory = Callable[[str], "TracerProvider"]
_factory: ProviderFactory | None = None
_providers: dict[str, TracerProvider] = {}


def endpoint(settings_endpoint: str | None = None) -> str | None:
    """Where spans go, or None (tracing off)."""
    return (settings_endpoint or os.environ.get("SINERGI_OTEL_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or None)


def use(factory: ProviderFactory | None) -> None:
    """Make every Kit composed from now on trace into `factory(service)` (tests: an in-memory
    exporter); `use(None)` goes back to the environment's choice."""
    global _factory
    _factory = factory


def _otlp_provider(service: str, url: str) -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.namespace": "sinergi"}))
    own = os.environ.get("SINERGI_OTEL_ENDPOINT")
    # our variable is the collector's base URL; the standard ones the SDK reads itself
    exporter = OTLPSpanExporter(endpoint=f"{own.rstrip('/')}/v1/traces") if own and url == own else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def provider_for(service: str, settings_endpoint: str | None = None) -> TracerProvider | None:
    if _factory is not None:
        return _factory(service)
    url = endpoint(settings_endpoint)
    if url is None or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if service not in _providers:  # one per process and service: its exporter batches
        _providers[service] = _otlp_provider(service, url)
    return _providers[service]


class Tracing:
    """One service's tracing hooks (all no-ops when off)."""

    def __init__(self, service: str, settings_endpoint: str | None = None) -> None:
        self.service = service
        self.provider = provider_for(service, settings_endpoint)
        self.tracer: Tracer | None = (self.provider.get_tracer("sinergi.kit") if self.provider is not None
                                      else None)

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def instrument(self, engine: AsyncEngine) -> None:
        if self.provider is None:
            return
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import NoOpMeter

        # this engine only: the instrumentor's `instrument()` also patches create_engine for the
        # whole process and, being a singleton, ignores every engine after the first
        usage = NoOpMeter("sinergi").create_up_down_counter("db.client.connections.usage")
        EngineTracer(self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy"), engine.sync_engine,  # type: ignore[no-untyped-call]
                     usage)

    def fastapi(self) -> dict[str, Any]:
        """FastAPI's `telemetry=` settings: request spans only, and only when tracing is on
        (FastAPI would otherwise trace whenever any global provider is set)."""
        off = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
        if self.provider is None:
            return off
        return {**off, "tracing": True, "tracer_provider": self.provider,
                "exclude": lambda scope: scope.get("path") in UNTRACED}

    def stamp(self, rows: Sequence[OutboxRow]) -> None:
        """Write the current trace context into the headers of outbox rows."""
        if self.tracer is None:
            return
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        if not carrier:
            return
        for r in rows:
            r["headers"] = {**(r.get("headers") or {}), **carrier}

    def headers(self) -> dict[str, str] | None:
        """Headers carrying the current trace context, for a core NATS request (None when off)."""
        if self.tracer is None:
            return None
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        return carrier or None

    @contextlib.contextmanager
    def serve(self, name: str, msg: Msg) -> Iterator[None]:
        """A span around answering one core NATS request, child of the asker's context."""
        if self.tracer is None:
            yield
            return
        parent = _propagator.extract(dict(msg.headers)) if msg.headers else None
        with self.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER,
                                               attributes={"messaging.system": "nats", "sinergi.service": self.service,
                                                           "messaging.destination.name": msg.subject}):
            yield

    @contextlib.contextmanager
    def batch(self, durable: str, subject: str, msgs: Sequence[Msg]) -> Iterator[None]:
        """A span around one consumer batch: parent from the first traced message, links to
        the others."""
        if self.tracer is None:
            yield
            return
        parent, links = _contexts(msgs)
        attrs: dict[str, str | int] = {"messaging.system": "nats", "messaging.destination.name": subject,
                 "messaging.consumer.group.name": durable, "messaging.batch.message_count": len(msgs),
                 "sinergi.service": self.service}
        with self.tracer.start_as_current_span(f"consume {durable}", context=parent, kind=SpanKind.CONSUMER,
                                               links=links, attributes=attrs):
            yield


def _contexts(msgs: Iterable[Msg]) -> tuple[Context | None, list[Link]]:
    parent: Context | None = None
    links: list[Link] = []
    seen: set[str] = set()
    for m in msgs:
        tp = m.headers.get("traceparent") if m.headers else None
        if not tp or tp in seen:
            continue
        seen.add(tp)
        ctx = _propagator.extract({"traceparent": tp, **({"tracestate": m.headers["tracestate"]}
                                                         if m.headers and "tracestate" in m.headers else {})})
        if parent is None:
            parent = ctx
        elif len(links) < MAX_LINKS:
            span_ctx = trace.get_current_span(ctx).get_span_context()
            if span_ctx.is_valid:
                links.append(Link(span_ctx))
        else:
            break
    return parent, links
