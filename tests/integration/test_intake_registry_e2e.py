"""Intake with the real registry: lookup finds an enrolled person with their programs; a
person missing from the registry is proposed, a verifier accepts, intake follows the decision
and the next lookup finds them. Real NATS and PostgreSQL, both services in-process."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from contracts import wilayah
from services.kit.auth import Role
from tests.conftest import eventually
from tests.factories import enrolment, kk, msg_id, nik
from tests.integration.intake_support import token

pytestmark = pytest.mark.integration

VILLAGE = wilayah.villages_in("331701")[0]


async def test_lookup_and_proposal_round_trip_with_the_registry(settings, nc, start):
    front = token(settings, Role.village_office, VILLAGE, "fo-e2e")
    verifier = token(settings, Role.verifier, "3317", "dinsos-ver")
    report = enrolment("pkh", village_code=VILLAGE, birth=dt.date(1962, 4, 5), sex="F")
    async with start("registry", settings) as reg, start("intake", settings) as intake:
        await nc.jetstream().publish(settings.names.enrolments("pkh"), json.dumps(report).encode(),
                                     headers={"Nats-Msg-Id": msg_id(report)})

        async def in_registry(n):
            r = await reg.http.get(f"/people/{n}", headers=verifier)
            return r.status_code == 200
        await eventually(lambda: in_registry(report["nik"]))

        found = await intake.http.post("/cases", headers=front, json={
            "reporter": {"nik": report["nik"]}, "village_code": VILLAGE, "category": "not_receiving_aid",
            "channel": "walk_in", "text": "PKH tidak cair"})
        assert found.status_code == 201, found.text
        assert found.json()["person_status"] == "found"
        assert [e["programme_identifier"] for e in found.json()["programs"]] == ["pkh"]

        newcomer = nik(VILLAGE, dt.date(1985, 12, 1), "M")
        r = await intake.http.post("/cases", headers=front, json={
            "reporter": {"nik": newcomer, "no_kk": kk(VILLAGE), "name": "Joko Susilo", "address": "RT 03"},
            "village_code": VILLAGE, "category": "excluded_from_program", "channel": "walk_in",
            "text": "Belum masuk DTKS"})
        case = r.json()
        assert case["person_status"] == "proposed"

        async def proposal_arrived():
            return (await reg.http.get(f"/proposals/{case['proposal_id']}", headers=verifier)).status_code == 200
        await eventually(proposal_arrived)
        d = await reg.http.post(f"/proposals/{case['proposal_id']}/decision", headers=verifier,
                                json={"decision": "accepted"})
        assert d.status_code == 200, d.text

        async def accepted():
            c = (await intake.http.get(f"/cases/{case['ticket']}", headers=front)).json()
            return c["person_status"] == "accepted"
        await eventually(accepted)
        steps = (await intake.http.get(f"/cases/{case['ticket']}/history", headers=front)).json()["steps"]
        assert steps[-1]["action"] == "proposal_accepted" and steps[-1]["actor"] == "dinsos-ver"

        again = await intake.http.post("/cases", headers=front, json={
            "reporter": {"nik": newcomer}, "village_code": VILLAGE, "category": "other", "channel": "phone",
            "text": "Tanya jadwal"})
        assert again.json()["person_status"] == "found"


async def test_a_rejected_proposal_is_shown_with_its_reason(settings, nc, start):
    front = token(settings, Role.village_office, VILLAGE, "fo-e2e")
    verifier = token(settings, Role.verifier, "3317", "dinsos-ver")
    async with start("registry", settings) as reg, start("intake", settings) as intake:
        r = await intake.http.post("/cases", headers=front, json={
            "reporter": {"nik": nik(VILLAGE, dt.date(1979, 6, 6), "F"), "no_kk": kk(VILLAGE), "name": "Rina"},
            "village_code": VILLAGE, "category": "excluded_from_program", "channel": "letter", "text": "Mohon didata"})
        case = r.json()

        async def proposal_arrived():
            return (await reg.http.get(f"/proposals/{case['proposal_id']}", headers=verifier)).status_code == 200
        await eventually(proposal_arrived)
        d = await reg.http.post(f"/proposals/{case['proposal_id']}/decision", headers=verifier,
                                json={"decision": "rejected", "reason": "pindah domisili ke kabupaten lain"})
        assert d.status_code == 200, d.text

        async def rejected():
            c = (await intake.http.get(f"/cases/{case['ticket']}", headers=front)).json()
            return c["person_status"] == "rejected"
        await eventually(rejected)
        steps = (await intake.http.get(f"/cases/{case['ticket']}/history", headers=front)).json()["steps"]
        assert steps[-1]["action"] == "proposal_rejected" and steps[-1]["note"] == "pindah domisili ke kabupaten lain"
        # the case itself stays open for the back office to answer the citizen
        assert (await intake.http.get(f"/cases/{case['ticket']}", headers=front)).json()["status"] == "open"
