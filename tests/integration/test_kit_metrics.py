"""`/metrics` (kit.metrics): what a service did, in the Prometheus text format, per Kit.

A registry ingest with one good and one bad report shows up as messages per subject,
handled and rejected per reason code, a dead letter, published outbox rows, the consumer's
lag and the outbox backlog; HTTP latency is labelled by route template, never by a path that
holds a NIK; two services in one process keep their own registries. And the relay, whose
fallback poll is now long, still publishes a committed row at once (it is kicked)."""
from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import auth, send
from tests.integration.test_kit_consumer import kit_runtime

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples(text).items() if n == name and want <= ls)


async def test_registry_ingest_shows_in_metrics(settings, nc, start):
    good = factories.enrolment("pkh")
    bad = {**factories.enrolment("pkh"), "village_code": "9999999999"}
    async with start("registry", settings) as reg:
        got = await send(nc, settings, [good, bad])
        assert got[bad["message_id"]]["status"] == "rjct"
        # a lookup of a person by NIK: labelled by its template only
        await reg.http.get(f"/people/{good['nik']}", headers=auth(settings))

        async def scraped():
            r = await reg.http.get("/metrics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            return r.text if value(r.text, "sinergi_outbox_published_total") >= 2 else None
        text = await eventually(scraped, timeout=15)

    durable = "registry-enrolments-v1"
    assert value(text, "sinergi_consumer_messages_total", consumer=durable, subject="agency.pkh.enrolments") == 2
    assert value(text, "sinergi_consumer_handled_total", consumer=durable) == 2
    # the registry answers rejections itself (receipts) and dead-letters them with their code
    codes = {dict(ls)["code"]: v for (n, ls), v in samples(text).items() if n == "sinergi_dead_letters_total"}
    assert codes.get("rjct.village_code.unknown") == 1, codes
    assert value(text, "sinergi_consumer_pending", consumer=durable) == 0
    assert ("sinergi_consumer_up", frozenset({("consumer", durable)})) in samples(text)
    assert value(text, "sinergi_outbox_backlog") == 0
    assert value(text, "sinergi_outbox_oldest_age_seconds") == 0
    assert value(text, "sinergi_outbox_publish_seconds_count") >= 1
    assert value(text, "sinergi_http_request_duration_seconds_count", route="/people/{nik}", method="GET") == 1
    assert good["nik"] not in text and bad["nik"] not in text


async def test_two_services_in_one_process_keep_their_own_registries(settings, start):
    async with start("registry", settings) as reg, start("intake", settings) as intake:
        await reg.http.get("/healthz")
        r, i = (await reg.http.get("/metrics")).text, (await intake.http.get("/metrics")).text
    assert value(r, "sinergi_http_request_duration_seconds_count", route="/healthz") == 1
    assert value(i, "sinergi_http_request_duration_seconds_count", route="/healthz") == 0
    assert "registry-enrolments-v1" in r and "registry-enrolments-v1" not in i


async def test_unmatched_paths_are_not_labels(settings, start):
    async with start("registry", settings) as reg:
        await reg.http.get("/no/such/3317010101900001")
        text = (await reg.http.get("/metrics")).text
    assert value(text, "sinergi_http_request_duration_seconds_count", route="(unmatched)", status="404") == 1
    assert "3317010101900001" not in text


async def test_a_committed_row_goes_out_at_once_whatever_the_fallback_poll(settings, nc):
    """The relay waits on its wake event between rounds; a kick that comes while a round runs
    is not lost (it was cleared after the round before): with a fallback poll of an hour, a
    row must still go out."""
    slow = settings.model_copy(update={"outbox_poll_seconds": 3600.0})
    subject = settings.names.enrolments("kitmetrics")
    async with kit_runtime(slow) as (kit, _effects):
        for i in range(20):
            async with kit.unit_of_work() as uow:
                uow.send(subject, f"row {i}".encode(), msg_id=uuid.uuid4())

        async def all_out():
            async with kit.sessions() as s:
                left = (await s.execute(sa.select(sa.func.count()).select_from(kit.outbox)
                                        .where(kit.outbox.c.published_at.is_(None)))).scalar()
            return left == 0
        await eventually(all_out, timeout=20)
