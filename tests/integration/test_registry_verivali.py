"""Verivali against real servers: proposals from intake (INTAKE stream) and HTTP wait as
`proposed` until a verifier decides; verification rounds record results and list who is missing."""
from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from contracts.envelope import envelope
from contracts.intake import ProposalSubmitted
from services.kit.auth import Role
from services.registry import store
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import auth, count, events, send

pytestmark = pytest.mark.integration

V = "3317012001"


def proposal_body(name: str = "Mbah Karsinah", village: str = V) -> dict:
    born = dt.date(1941, 2, 3)
    return {"nik": factories.nik(village, born, "F"), "no_kk": factories.kk(village), "name": name, "sex": "F",
            "birth_date": born.isoformat(), "village_code": village, "address": "Dukuh Krajan RT 2",
            "programme_identifier": "kamalia_merekah"}


async def test_proposals_from_intake_and_http_wait_for_a_verifier(settings, nc, start):
    js = nc.jetstream()
    from_intake = ProposalSubmitted(proposal_id=uuid.uuid4(), submitted_by="puskesos-1", case_id=uuid.uuid4(),
                                    **{k: v for k, v in proposal_body("Ngatijem").items()})
    env = envelope(from_intake, "intake")
    async with start("registry", settings) as registry:
        for _ in range(2):  # delivered twice: one proposal
            await js.publish(settings.names.event(from_intake.event_type), env.model_dump_json().encode())
        await js.publish(settings.names.event(from_intake.event_type), b'{"event_type": "intake.proposal_submitted"}')
        front = auth(settings, Role.village_office, area=V, user="puskesos-2")
        body = proposal_body("Mbah Karsinah")
        r = await registry.http.post("/proposals", json=body, headers=front)
        assert r.status_code == 201, r.text
        http_id = r.json()["proposal_id"]

        async def listed():
            r = await registry.http.get("/proposals", headers=front)
            return r.json() if r.json()["total"] == 2 else None
        page = await eventually(listed)
        assert {p["source"] for p in page["items"]} == {"intake", "http"}
        assert all(p["status"] == "proposed" for p in page["items"])
        assert await count(registry, store.proposals) == 2
        assert await count(registry, store.people) == 0  # nobody enters before a verifier decides

        # bad proposals are clear 4xx errors
        bad = {**body, "sex": "M"}
        r = await registry.http.post("/proposals", json=bad, headers=front)
        assert r.status_code == 422 and "does not match the NIK" in r.text
        r = await registry.http.post("/proposals", json={**body, "village_code": "3317999999"}, headers=front)
        assert r.status_code == 422
        r = await registry.http.post("/proposals", json=proposal_body(village="3317012002"), headers=front)
        assert r.status_code == 403  # outside the village office's area

        verifier = auth(settings, Role.verifier, user="dinsos-7")
        url = f"/proposals/{from_intake.proposal_id}/decision"
        assert (await registry.http.post(url, json={"decision": "accepted"}, headers=front)).status_code == 403
        r = await registry.http.post(url, json={"decision": "rejected"}, headers=verifier)
        assert r.status_code == 422 and "reason" in r.text
        r = await registry.http.post(url, json={"decision": "accepted"}, headers=verifier)
        assert r.status_code == 200 and r.json()["person_created"] is True
        assert (await registry.http.post(url, json={"decision": "rejected", "reason": "x"},
                                         headers=verifier)).status_code == 409
        r = await registry.http.post(f"/proposals/{http_id}/decision",
                                     json={"decision": "rejected", "reason": "already in DTKS under another KK"},
                                     headers=verifier)
        assert r.status_code == 200
        unknown = f"/proposals/{uuid.uuid4()}/decision"
        assert (await registry.http.post(unknown, json={"decision": "accepted"}, headers=verifier)).status_code == 404

        person = (await registry.http.get(f"/people/{from_intake.nik}", headers=verifier)).json()
        assert person["name"] == "Ngatijem" and person["enrolments"] == []
        assert (await registry.http.get(f"/people/{body['nik']}", headers=verifier)).status_code == 404
        decided = await events(nc, settings, "registry.proposal_decided", 2)
        by_id = {e["data"]["proposal_id"]: e["data"] for e in decided}
        assert by_id[str(from_intake.proposal_id)]["decision"] == "accepted"
        assert by_id[str(from_intake.proposal_id)]["case_id"] == str(from_intake.case_id)
        assert by_id[http_id] | {} == by_id[http_id] and by_id[http_id]["decision"] == "rejected"
        assert by_id[http_id]["reason"] == "already in DTKS under another KK"
        registered = await events(nc, settings, "registry.people_registered", 1)
        assert [p["reported_by"] for p in registered[0]["data"]["people"]] == ["verivali"]

        # the malformed intake event went to the dead letters with its reason
        sub = await js.pull_subscribe(settings.names.deadletter("registry"), stream=settings.names.stream("DEADLETTER"))
        letters = await sub.fetch(1, timeout=5)
        assert json.loads(letters[0].data)["reason_code"] == "rjct.event.invalid"


async def test_a_verification_round_records_results_and_lists_who_was_not_verified(settings, nc, start, monkeypatch):
    monkeypatch.setenv("SINERGI_REGISTRY_VERIFICATION_CADENCE", "semiannual")
    reps = [factories.enrolment("pkh", village_code=V) for _ in range(3)]
    async with start("registry", settings) as registry:
        await send(nc, settings, reps)
        verifier = auth(settings, Role.verifier)
        companion = auth(settings, Role.companion, area=V, user="pendamping-3")
        r = await registry.http.post("/verification-rounds", json={"area": V}, headers=verifier)
        assert r.status_code == 201, r.text
        rnd = r.json()
        today = dt.date.today()
        assert rnd["period"] == f"{today.year}-H{1 if today.month <= 6 else 2}" and rnd["cadence"] == "semiannual"
        assert (await registry.http.post("/verification-rounds", json={"area": V}, headers=verifier)).status_code == 409
        rid = rnd["round_id"]

        async def record(nik, result, h=companion):
            return await registry.http.post(f"/verification-rounds/{rid}/results", json={"nik": nik, "result": result},
                                            headers=h)
        r = await record(reps[0]["nik"], "verified")
        assert r.status_code == 200 and r.json() == {"round_id": rid, "nik": reps[0]["nik"], "result": "verified",
                                                     "verified": True, "programme_identifiers": ["pkh"]}
        assert (await record(reps[1]["nik"], "moved")).status_code == 200
        assert (await record(reps[1]["nik"], "maybe")).status_code == 422
        assert (await record(factories.enrolment()["nik"], "verified")).status_code == 404
        assert (await record(reps[2]["nik"], "verified", auth(settings, Role.village_office))).status_code == 403

        r = await registry.http.get(f"/verification-rounds/{rid}/unverified", headers=verifier)
        missing = r.json()
        assert missing["total"] == 2
        assert {(i["nik"], i["result"]) for i in missing["items"]} == {(reps[1]["nik"], "moved"), (reps[2]["nik"], None)}

        recorded = await events(nc, settings, "registry.verification_recorded", 2)
        first = next(e["data"] for e in recorded if e["data"]["nik"] == reps[0]["nik"])
        assert first["verified"] is True and first["programme_identifiers"] == ["pkh"] and first["period"] == rnd["period"]

        # disbursement learns the status with the next enrolment change too
        await send(nc, settings, [{**reps[0], "message_id": "later", "enrolment_status": "suspended",
                                   "status_change_date": "2026-06-01"}])
        changed = await events(nc, settings, "registry.enrolments_changed", 4, items="changes")
        last = next(c for c in changed if c["enrolment_status"] == "suspended")
        assert last["verification_status"] == "verified" and last["verification_period"] == rnd["period"]

        r = await registry.http.post(f"/verification-rounds/{rid}/close", headers=verifier)
        assert r.status_code == 200 and r.json()["verified"] == 1 and r.json()["not_verified"] == 2
        assert (await record(reps[2]["nik"], "verified")).status_code == 409
        assert (await registry.http.post(f"/verification-rounds/{rid}/close", headers=verifier)).status_code == 409
        closed = await events(nc, settings, "registry.verification_round_closed", 1)
        assert closed[0]["data"]["not_verified"] == 2
