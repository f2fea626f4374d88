"""Front-office lookups over HTTP and `registry.lookup` request-reply, with tolerant name search
by pg_trgm (the machine's PostgreSQL) and by the registry's own trigram table (no pg_trgm)."""
from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from contracts.lookup import LookupReply
from services.kit.auth import Role
from tests import factories
from tests.integration.registry_support import auth, send

pytestmark = pytest.mark.integration

V = "3317012001"
OTHER_V = "3317012002"


def people() -> list[dict]:
    kk = factories.kk(V)
    return [
        factories.enrolment("pkh", village_code=V, no_kk=kk, name="Mochammad Soeharto", sex="M",
                            birth=dt.date(1958, 3, 4), is_head_of_household=True),
        factories.enrolment("pkh", village_code=V, no_kk=kk, name="Siti Aminah", sex="F", birth=dt.date(1961, 1, 2)),
        factories.enrolment("bpnt", village_code=V, name="Djoko Tjahjono", sex="M", birth=dt.date(1970, 9, 9)),
        factories.enrolment("pkh", village_code=OTHER_V, name="Muhamad Suharto", sex="M", birth=dt.date(1959, 5, 5)),
    ]


@pytest.mark.parametrize("mode", ["auto", "trigram_table"])
async def test_lookup_by_nik_kk_and_tolerant_name(settings, nc, start, monkeypatch, mode):
    monkeypatch.setenv("SINERGI_REGISTRY_NAME_SEARCH", mode)
    ps = people()
    async with start("registry", settings) as registry:
        async with registry.rt.sessions() as s:
            offered = (await s.execute(sa.text(
                "select exists (select 1 from pg_available_extensions where name = 'pg_trgm')"))).scalar()
        # auto: pg_trgm where the server offers it; else (the embedded pgserver) the registry's own
        # trigram table, which the rest of this test then exercises in both modes
        assert registry.deps.name_search.trgm is (mode == "auto" and offered)
        await send(nc, settings, ps)

        async def ask(**req) -> LookupReply:
            msg = await nc.request(settings.names.lookup(), json.dumps(req).encode(), timeout=5)
            return LookupReply.model_validate_json(msg.data)

        r = await ask(nik=ps[0]["nik"])
        assert r.found and [p.nik for p in r.people] == [ps[0]["nik"]]
        assert r.people[0].enrolments[0].programme_identifier == "pkh"
        r = await ask(no_kk=ps[0]["no_kk"])
        assert {p.nik for p in r.people} == {ps[0]["nik"], ps[1]["nik"]}
        # old spelling, abbreviation and a typo, all within the village; the namesake elsewhere is left out
        for query in ("Muhammad Suharto", "moch. soeharto", "M Suharta"):
            r = await ask(name=query, village_code=V)
            assert r.found and r.people[0].nik == ps[0]["nik"], query
            assert ps[3]["nik"] not in {p.nik for p in r.people}
            assert r.people[0].score and r.people[0].score > 0.3
        r = await ask(name="Joko Cahyono", village_code=V)
        assert r.people[0].nik == ps[2]["nik"] and r.people[0].score == 1.0
        r = await ask(name="Siti", village_code=V)
        assert ps[1]["nik"] in {p.nik for p in r.people}
        r = await ask(name="Bambang Pamungkas", village_code=V)
        assert not r.found and r.people == [] and r.error is None

        # bad requests get an answer with the reason, never silence
        for bad, words in [(b"{nope", "not valid JSON"), (b'{"limit": 3}', "give nik, no_kk"),
                           (b'{"nik": "123"}', "16 digits"), (b'{"name": "Siti", "village_code": "99"}', "village"),
                           (b'{"nik": "3317014107600001", "limit": 500}', "limit"), (b"", "empty"),
                           (b"[" * 3000 + b"]" * 3000, "nested deeper"), (b'{"nik": "a\\u0000"}', "NUL"),
                           (b'{"limit": ' + b"9" * 5000 + b"}", "beyond 64 bits"), (b'{"nik": "\xff"}', "UTF-8"),
                           (b'{"name": "' + b"x" * 20_000 + b'"}', "bytes")]:
            msg = await nc.request(settings.names.lookup(), bad, timeout=5)
            reply = LookupReply.model_validate_json(msg.data)
            assert not reply.found and reply.error and words in reply.error, (bad, reply.error)

        # the same over HTTP, with area scope
        h = auth(settings, Role.village_office, area=V)
        r = await registry.http.get("/people", params={"name": "Soeharto", "village_code": V}, headers=h)
        assert r.status_code == 200 and r.json()["people"][0]["nik"] == ps[0]["nik"]
        r = await registry.http.get("/people", params={"no_kk": ps[0]["no_kk"]}, headers=h)
        assert len(r.json()["people"]) == 2
        r = await registry.http.get("/people", params={"nik": ps[3]["nik"]}, headers=h)
        assert r.status_code == 200 and r.json()["found"] is False  # lives in another village
        r = await registry.http.get("/people", params={"name": "Soeharto", "village_code": OTHER_V}, headers=h)
        assert r.status_code == 403
        r = await registry.http.get("/people", params={"name": "Soeharto"}, headers=h)
        assert r.status_code == 400 and "village_code" in r.text
        assert (await registry.http.get("/people", headers=h)).status_code == 400
        assert (await registry.http.get("/people", params={"nik": ps[0]["nik"]})).status_code == 401


async def test_renamed_or_moved_person_is_found_under_the_new_name_without_pg_trgm(settings, nc, start, monkeypatch):
    monkeypatch.setenv("SINERGI_REGISTRY_NAME_SEARCH", "trigram_table")
    rep = factories.enrolment("pkh", village_code=V, name="Sumarni")
    async with start("registry", settings):
        await send(nc, settings, [rep])
        await send(nc, settings, [{**rep, "message_id": "moved", "name": "Sumarni Wati", "village_code": OTHER_V,
                                   "status_change_date": "2026-02-01"}])

        async def ask(**req) -> LookupReply:
            msg = await nc.request(settings.names.lookup(), json.dumps(req).encode(), timeout=5)
            return LookupReply.model_validate_json(msg.data)
        assert not (await ask(name="Sumarni", village_code=V)).found
        r = await ask(name="Sumarni Wati", village_code=OTHER_V)
        assert r.found and r.people[0].nik == rep["nik"] and r.people[0].score == 1.0


async def test_lookups_are_answered_after_the_connection_is_replaced(settings, nc, start):
    rep = factories.enrolment("pkh", village_code=V)
    async with start("registry", settings) as registry:
        await send(nc, settings, [rep])
        # what the kit's watchdog does when nats-py's reading task died (issue 11): the lookup
        # subscription is made again on the new connection
        await registry.rt.bus.replace()
        msg = await nc.request(settings.names.lookup(), json.dumps({"nik": rep["nik"]}).encode(), timeout=5)
        assert LookupReply.model_validate_json(msg.data).found
        assert registry.rt.bus.replaced == 1
