"""Enrolment history (any past state) and households by No. KK, against real servers."""
from __future__ import annotations

import datetime as dt

import pytest

from services.kit.auth import Role
from tests import factories
from tests.integration.registry_support import auth, send

pytestmark = pytest.mark.integration


async def test_history_keeps_every_report_and_shows_any_past_state(settings, nc, start):
    first = factories.enrolment("pkh", status="active", effective="2025-01-01", message_id="h1")
    later = {**first, "message_id": "h2", "enrolment_status": "suspended", "status_change_date": "2025-06-01"}
    back = {**first, "message_id": "h3", "enrolment_status": "active", "status_change_date": "2026-01-01"}
    bpnt = {**first, "message_id": "h4", "programme_identifier": "bpnt", "status_change_date": "2025-03-01"}
    renamed = {**first, "message_id": "h5", "name": "Siti Aminah Binti Karto", "status_change_date": "2025-02-01"}
    async with start("registry", settings) as registry:
        # out of order on purpose: history is by effective date, not arrival
        await send(nc, settings, [back])
        await send(nc, settings, [first, later])
        await send(nc, settings, [bpnt, renamed])
        h = auth(settings)
        r = await registry.http.get(f"/people/{first['nik']}/history", headers=h)
        assert r.status_code == 200, r.text
        body = r.json()
        pkh = [e for e in body["enrolments"] if e["programme_identifier"] == "pkh"]
        assert [(e["status_change_date"], e["enrolment_status"], e["message_id"]) for e in pkh] == [
            ("2025-01-01", "active", "h1"), ("2025-02-01", "active", "h5"),
            ("2025-06-01", "suspended", "h2"), ("2026-01-01", "active", "h3")]
        assert all(e["reported_by"] == "pkh" and e["received_at"] for e in pkh)
        assert [i["name"] for i in body["identity"]] == ["Siti Aminah", "Siti Aminah Binti Karto"]

        def state(as_of):
            return {e["programme_identifier"]: e["enrolment_status"] for e in as_of["enrolments"]}
        for day, expected in [("2024-12-31", {}), ("2025-01-01", {"pkh": "active"}),
                              ("2025-04-01", {"pkh": "active", "bpnt": "active"}),
                              ("2025-07-01", {"pkh": "suspended", "bpnt": "active"}),
                              ("2026-02-01", {"pkh": "active", "bpnt": "active"})]:
            r = await registry.http.get(f"/people/{first['nik']}/history", params={"as_of": day}, headers=h)
            assert state(r.json()["as_of"]) == expected, day
        today = dt.date.today().isoformat()
        r = await registry.http.get(f"/people/{first['nik']}/history", params={"as_of": today}, headers=h)
        assert r.json()["as_of"]["identity"]["name"] == "Siti Aminah Binti Karto"

        # bad input and unknown people are clear errors
        assert (await registry.http.get(f"/people/{first['nik']}/history")).status_code == 401
        r = await registry.http.get(f"/people/{first['nik']}/history", params={"as_of": "yesterday"}, headers=h)
        assert r.status_code == 422
        r = await registry.http.get("/people/3317019907600001/history", headers=h)
        assert r.status_code == 400 and "not a real date" in r.text
        other = factories.enrolment("pkh")
        assert (await registry.http.get(f"/people/{other['nik']}/history", headers=h)).status_code == 404
        # a village office elsewhere may not read it, nor learn that it exists (issue 15)
        far = auth(settings, Role.village_office, area="3317999999")
        assert (await registry.http.get(f"/people/{first['nik']}/history", headers=far)).status_code == 404


async def test_household_lists_members_head_and_their_enrolments(settings, nc, start):
    v = factories.village()
    kk = factories.kk(v)
    head = factories.enrolment("pkh", village_code=v, no_kk=kk, sex="M", birth=dt.date(1970, 5, 2),
                               name="Karto Wiryo", is_head_of_household=True)
    wife = factories.enrolment("pkh", village_code=v, no_kk=kk, sex="F", birth=dt.date(1972, 8, 9), name="Sumini")
    child = factories.enrolment("kip", village_code=v, no_kk=kk, sex="F", birth=dt.date(2010, 1, 3), name="Dewi")
    async with start("registry", settings) as registry:
        # the head's report arrives last: a later member report must not erase the head
        await send(nc, settings, [wife, child])
        await send(nc, settings, [head])
        await send(nc, settings, [{**wife, "message_id": "wife-2", "enrolment_status": "exited",
                                   "status_change_date": "2026-02-01"}])
        r = await registry.http.get(f"/households/{kk}", headers=auth(settings))
        assert r.status_code == 200, r.text
        h = r.json()
        assert h["no_kk"] == kk and h["village_code"] == v and h["head_nik"] == head["nik"]
        assert [(m["name"], m["is_head"]) for m in h["members"]] == [
            ("Karto Wiryo", True), ("Sumini", False), ("Dewi", False)]
        assert h["members"][1]["enrolments"][0]["enrolment_status"] == "exited"
        assert h["members"][2]["enrolments"][0]["programme_identifier"] == "kip"
        assert (await registry.http.get(f"/households/{kk[:-1]}", headers=auth(settings))).status_code == 400
        other = factories.kk(v)
        assert (await registry.http.get(f"/households/{other}", headers=auth(settings))).status_code == 404
