"""Traces across NATS (kit.tracing): an agency's enrolment report, sent with a W3C
`traceparent`, is one trace from the agency through the registry's consumer batch, its SQL,
the outbox and the relay, to intake's consumer batch that applies the registry's event. And
with tracing off (the default), nothing is traced and no header is added."""
from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.kit import tracing
from services.kit.auth import Role
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import auth, send

pytestmark = pytest.mark.integration


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()

    def provider(service: str) -> TracerProvider:
        p = TracerProvider(resource=Resource.create({"service.name": service}))
        p.add_span_processor(SimpleSpanProcessor(exporter))
        return p
    tracing.use(provider)
    yield exporter
    tracing.use(None)


async def test_an_enrolment_is_one_trace_from_the_agency_through_registry_to_intake(settings, nc, start, spans):
    agency = tracing.provider_for("agency")
    assert agency is not None
    report = factories.enrolment("pkh")
    async with start("registry", settings) as reg, start("intake", settings) as intake:
        with agency.get_tracer("test").start_as_current_span("agency publish", kind=SpanKind.PRODUCER) as root:
            headers: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(headers)
            js = nc.jetstream()
            await js.publish(settings.names.enrolments("pkh"), json.dumps(report).encode(),
                             headers={"Nats-Msg-Id": factories.msg_id(report), **headers})
        trace_id = root.get_span_context().trace_id

        def consumed_by_intake():
            return [s for s in spans.get_finished_spans()
                    if s.name == "consume intake-registry-v2" and s.context.trace_id == trace_id]
        await eventually(consumed_by_intake, timeout=20)
        from services.intake import store as intake_store

        async def applied():  # registry's events may come in more than one batch
            async with intake.rt.sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(intake_store.beneficiaries))
                        ).scalar() == 1
        await eventually(applied, timeout=10)

        # an HTTP request is traced too, named by its route template
        await reg.http.get(f"/people/{report['nik']}", headers=auth(settings))

    finished = spans.get_finished_spans()
    mine = [s for s in finished if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in mine}
    registry_batch = next(s for s in mine if s.name == "consume registry-enrolments-v1")
    intake_batch = next(s for s in mine if s.name == "consume intake-registry-v2")
    # agency -> registry batch -> (outbox, relay, NATS) -> intake batch
    assert registry_batch.parent.span_id == root.get_span_context().span_id
    assert intake_batch.parent.span_id == registry_batch.context.span_id
    assert registry_batch.resource.attributes["service.name"] == "registry"
    assert intake_batch.resource.attributes["service.name"] == "intake"
    assert registry_batch.kind == SpanKind.CONSUMER
    # each batch's SQL is inside its span, in its own service
    sql = [s for s in mine if s.parent is not None and s.parent.span_id in (registry_batch.context.span_id,
                                                                            intake_batch.context.span_id)
           and s.name != registry_batch.name]
    assert {s.resource.attributes["service.name"] for s in sql} == {"registry", "intake"}
    assert all(report["nik"] not in json.dumps(dict(s.attributes or {})) for s in mine)
    assert set(by_id) >= {registry_batch.context.span_id, intake_batch.context.span_id}

    http = [s for s in finished if s.kind == SpanKind.SERVER and s.resource.attributes["service.name"] == "registry"]
    assert any(s.attributes.get("http.route") == "/people/{nik}" for s in http), [s.name for s in http]
    assert not any(report["nik"] in s.name for s in http)


async def test_off_by_default_nothing_is_traced_and_no_header_is_added(settings, nc, start, monkeypatch):
    for var in ("SINERGI_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    assert tracing.provider_for("registry") is None
    async with start("registry", settings) as reg:
        assert not reg.rt.tracing.enabled
        await send(nc, settings, [factories.enrolment("pkh")])
        js = nc.jetstream()
        sub = await js.pull_subscribe(settings.names.receipts("pkh"), stream=settings.names.stream("AGENCY_RECEIPTS"))
        msg = (await sub.fetch(1, timeout=5))[0]
        assert "traceparent" not in (msg.headers or {})


async def test_an_intake_case_and_its_registry_lookup_are_one_trace(settings, nc, start, spans):
    """intake's HTTP request -> its `registry.lookup` request over core NATS -> the registry's
    answer (and the SQL it ran), one trace; the case's outbox event carries it to registry's
    proposals consumer too."""
    from tests.integration.intake_support import token

    village = "3317012001"
    front = token(settings, Role.village_office, village, "fo-t")
    async with start("registry", settings) as reg, start("intake", settings) as intake:
        r = await intake.http.post("/cases", headers=front, json={
            "reporter": {"nik": factories.nik(village, dt.date(1970, 1, 2), "M"),
                         "no_kk": factories.kk(village), "name": "Joko Susilo", "address": "RT 03"},
            "village_code": village, "category": "excluded_from_program", "channel": "walk_in",
            "text": "Belum masuk DTKS"})
        assert r.status_code == 201, r.text

        def answered():
            return [s for s in spans.get_finished_spans() if s.name == "answer registry.lookup"]
        answer = (await eventually(answered, timeout=10))[0]

        def proposal_consumed():
            return [s for s in spans.get_finished_spans() if s.name == "consume registry-proposals-v1"
                    and s.context.trace_id == answer.context.trace_id]
        await eventually(proposal_consumed, timeout=20)
        assert reg.rt.tracing.enabled and intake.rt.tracing.enabled

    finished = spans.get_finished_spans()
    trace = [s for s in finished if s.context.trace_id == answer.context.trace_id]
    http = next(s for s in trace if s.kind == SpanKind.SERVER and s.resource.attributes["service.name"] == "intake")
    assert http.attributes.get("http.route") == "/cases"
    assert answer.parent.span_id == http.context.span_id  # across core NATS
    assert answer.resource.attributes["service.name"] == "registry"
    assert any(s.parent is not None and s.parent.span_id == answer.context.span_id for s in trace)  # its SQL
