"""Proposals to their end (issue 17), against real NATS and PostgreSQL: program settings say who
owns each program; accepting a proposal enrols the person in the regency's programs asked for
and forwards it to the agency owning each other one, on `agency.<program>.proposals`; the
agency's enrolment report for that NIK and program closes it (registry.proposal_fulfilled)."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from contracts.agency import ProposalToAgency
from contracts.envelope import envelope
from contracts.intake import ProposalSubmitted
from services.kit.auth import Principal, Role, issue_token
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import auth, drain, events, send

pytestmark = pytest.mark.integration

V = "3317012001"
REGENCY_PROGRAM = "kamalia_merekah"
AGENCY_PROGRAM = "pkh"


def manager(settings, area: str = "", programs: tuple[str, ...] = ()) -> dict:
    p = Principal("pm-1", Role.program_manager, area, programs)
    return {"Authorization": f"Bearer {issue_token(p, settings.auth_secret)}"}


async def define(http, settings, code: str, owner: str, **extra) -> dict:
    r = await http.put(f"/programs/{code}", json={"owner": owner, "reason": "Perbup 12/2026", **extra},
                       headers=manager(settings))
    assert r.status_code == 200, r.text
    return r.json()


def proposal(name: str = "Mbah Karsinah", programmes: list[str] | None = None) -> dict:
    born = dt.date(1941, 2, 3)
    return {"nik": factories.nik(V, born, "F"), "no_kk": factories.kk(V), "name": name, "sex": "F",
            "birth_date": born.isoformat(), "village_code": V, "address": "Dukuh Krajan RT 2",
            "programmes_requested": programmes if programmes is not None else [REGENCY_PROGRAM, AGENCY_PROGRAM]}


async def test_program_settings_are_set_by_a_regency_program_manager_with_a_reason(settings, start):
    async with start("registry", settings) as registry:
        http = registry.http
        body = {"owner": "regency", "requires_verification": True, "validity_months": 6, "reason": "Perbup 12/2026"}
        r = await http.put(f"/programs/{REGENCY_PROGRAM}", json=body, headers=manager(settings))
        assert r.status_code == 200, r.text
        assert r.json() | {"updated_at": None} == {
            "code": REGENCY_PROGRAM, "owner": "regency", "agency_name": "", "requires_verification": True,
            "validity_months": 6, "reason": "Perbup 12/2026", "updated_by": "pm-1", "updated_at": None,
            "changed": True}
        again = await http.put(f"/programs/{REGENCY_PROGRAM}", json=body, headers=manager(settings))
        assert again.json()["changed"] is False

        # who may not: a verifier, a manager of other programs, a manager limited to an area
        refused = [
            await http.put(f"/programs/{REGENCY_PROGRAM}", json=body, headers=auth(settings, Role.verifier)),
            await http.put(f"/programs/{REGENCY_PROGRAM}", json=body, headers=manager(settings, programs=("pkh",))),
            await http.put(f"/programs/{REGENCY_PROGRAM}", json=body, headers=manager(settings, area="331701")),
        ]
        assert [x.status_code for x in refused] == [403, 403, 403]
        assert all("error" in x.json() for x in refused)
        # bad input: no reason, an unknown owner, a validity without a verification, a bad code
        bad = [
            await http.put(f"/programs/{REGENCY_PROGRAM}", json={"owner": "regency"}, headers=manager(settings)),
            await http.put(f"/programs/{REGENCY_PROGRAM}", json={**body, "owner": "province"},
                           headers=manager(settings)),
            await http.put(f"/programs/{REGENCY_PROGRAM}", json={**body, "requires_verification": False},
                           headers=manager(settings)),
            await http.put(f"/programs/{REGENCY_PROGRAM}", json={**body, "validity_months": 0},
                           headers=manager(settings)),
            await http.put("/programs/Not-A-Code", json=body, headers=manager(settings)),
        ]
        assert [x.status_code for x in bad] == [422] * 5

        # any staff member reads them
        reader = auth(settings, Role.village_office, area=V)
        got = (await http.get(f"/programs/{REGENCY_PROGRAM}", headers=reader)).json()
        assert got["owner"] == "regency" and got["validity_months"] == 6
        assert [p["code"] for p in (await http.get("/programs", headers=reader)).json()] == [REGENCY_PROGRAM]
        missing = await http.get("/programs/kip", headers=reader)
        assert missing.status_code == 404 and "error" in missing.json()


async def test_an_accepted_proposal_enrols_in_regency_programs_and_goes_to_the_agency(settings, nc, start):
    js = nc.jetstream()
    async with start("registry", settings) as registry:
        http = registry.http
        await define(http, settings, REGENCY_PROGRAM, "regency")
        await define(http, settings, AGENCY_PROGRAM, "agency", agency_name="Kemensos")
        front = auth(settings, Role.village_office, area=V, user="puskesos-1")
        body = proposal(programmes=[REGENCY_PROGRAM, AGENCY_PROGRAM, "kube_lansia"])
        r = await http.post("/proposals", json=body, headers=front)
        assert r.status_code == 201, r.text
        pid = r.json()["proposal_id"]
        listed = (await http.get(f"/proposals/{pid}", headers=front)).json()
        assert listed["programmes_requested"] == [REGENCY_PROGRAM, AGENCY_PROGRAM, "kube_lansia"]
        assert listed["forwards"] == []
        bad = await http.post("/proposals", json={**body, "programmes_requested": ["PKH!"]}, headers=front)
        assert bad.status_code == 422 and "error" in bad.json()

        verifier = auth(settings, Role.verifier, user="dinsos-7")
        r = await http.post(f"/proposals/{pid}/decision", json={"decision": "accepted"}, headers=verifier)
        assert r.status_code == 200, r.text
        assert r.json() | {} == {"proposal_id": pid, "status": "accepted", "person_created": True, "reason": "",
                                 "enrolled_in": [REGENCY_PROGRAM], "forwarded_to": [AGENCY_PROGRAM],
                                 "not_configured": ["kube_lansia"]}

        # the regency's program: a normal enrolment, seen by disbursement and reporting
        person = (await http.get(f"/people/{body['nik']}", headers=verifier)).json()
        assert [(e["programme_identifier"], e["enrolment_status"], e["reported_by"]) for e in person["enrolments"]
                ] == [(REGENCY_PROGRAM, "active", "usulan")]
        changes = await events(nc, settings, "registry.enrolments_changed", 1, items="changes")
        assert [(c["nik"], c["programme_identifier"], c["enrolment_status"], c["reported_by"], c["reference_id"],
                 c["verification_status"]) for c in changes] == [
            (body["nik"], REGENCY_PROGRAM, "active", "usulan", pid, "verified")]

        decided = (await events(nc, settings, "registry.proposal_decided", 1))[0]["data"]
        assert (decided["programmes_requested"], decided["enrolled_in"], decided["forwarded_to"]) == (
            [REGENCY_PROGRAM, AGENCY_PROGRAM, "kube_lansia"], [REGENCY_PROGRAM], [AGENCY_PROGRAM])

        # the agency's program: the proposal on its own subject, in the contract's shape
        sent = await drain(js, settings.names.agency_proposals(AGENCY_PROGRAM),
                           settings.names.stream("AGENCY_PROPOSALS"))
        assert len(sent) == 1
        to_agency = ProposalToAgency.model_validate(sent[0])
        assert (to_agency.programme_identifier, to_agency.reference_id, to_agency.name) == (
            AGENCY_PROGRAM, pid, "Mbah Karsinah")
        assert [(i.identifier_type, i.identifier_value) for i in to_agency.identifier] == [
            ("NIK", body["nik"]), ("KK", body["no_kk"])]
        assert await drain(js, settings.names.agency_proposals(REGENCY_PROGRAM),
                           settings.names.stream("AGENCY_PROPOSALS"), wait=0.3) == []
        waiting = (await http.get(f"/proposals/{pid}", headers=front)).json()["forwards"]
        assert [(f["programme_identifier"], f["fulfilled_at"], f["enrolment_status"]) for f in waiting] == [
            (AGENCY_PROGRAM, None, None)]

        # the agency's enrolment report for that NIK and program closes the loop, once
        report = factories.enrolment(AGENCY_PROGRAM, village_code=V, nik=body["nik"], no_kk=body["no_kk"],
                                     name=body["name"], birth_date=body["birth_date"], effective="2026-11-01")
        await send(nc, settings, [report])
        fulfilled = await events(nc, settings, "registry.proposal_fulfilled", 1)
        assert len(fulfilled) == 1
        f = fulfilled[0]["data"]
        assert (f["proposal_id"], f["nik"], f["programme_identifier"], f["enrolment_status"]) == (
            pid, body["nik"], AGENCY_PROGRAM, "active")
        answered = (await http.get(f"/proposals/{pid}", headers=front)).json()["forwards"]
        assert answered[0]["enrolment_status"] == "active" and answered[0]["fulfilled_at"]
        await send(nc, settings, [{**report, "message_id": "later", "enrolment_status": "suspended",
                                   "status_change_date": "2026-11-20"}])
        await events(nc, settings, "registry.enrolments_changed", 3, items="changes")
        later = await drain(js, settings.names.event("registry.proposal_fulfilled"), settings.names.stream("REGISTRY"))
        assert len(later) == 1  # the proposal was answered already


async def test_a_rejected_proposal_enrols_nobody_and_forwards_nothing(settings, nc, start):
    js = nc.jetstream()
    async with start("registry", settings) as registry:
        http = registry.http
        await define(http, settings, REGENCY_PROGRAM, "regency")
        await define(http, settings, AGENCY_PROGRAM, "agency")
        front = auth(settings, Role.village_office, area=V)
        body = proposal()
        pid = (await http.post("/proposals", json=body, headers=front)).json()["proposal_id"]
        r = await http.post(f"/proposals/{pid}/decision", json={"decision": "rejected", "reason": "mampu"},
                            headers=auth(settings, Role.verifier))
        assert r.status_code == 200 and (r.json()["enrolled_in"], r.json()["forwarded_to"]) == ([], [])
        decided = (await events(nc, settings, "registry.proposal_decided", 1))[0]["data"]
        assert decided["programmes_requested"] == [REGENCY_PROGRAM, AGENCY_PROGRAM]
        assert (decided["enrolled_in"], decided["forwarded_to"]) == ([], [])
        assert await drain(js, settings.names.agency_proposals("*"), settings.names.stream("AGENCY_PROPOSALS"),
                           wait=0.3) == []


async def test_a_proposal_from_intake_names_its_programs(settings, nc, start):
    js = nc.jetstream()
    body = proposal("Ngatijem")
    body.pop("programmes_requested")
    event = ProposalSubmitted(proposal_id=uuid.uuid4(), submitted_by="puskesos-1", case_id=uuid.uuid4(),
                              programmes_requested=[AGENCY_PROGRAM], **body)
    async with start("registry", settings) as registry:
        await define(registry.http, settings, AGENCY_PROGRAM, "agency")
        await js.publish(settings.names.event(event.event_type), envelope(event, "intake").model_dump_json().encode())
        verifier = auth(settings, Role.verifier)

        async def stored():
            r = await registry.http.get(f"/proposals/{event.proposal_id}", headers=verifier)
            return r.json() if r.status_code == 200 else None
        assert (await eventually(stored))["programmes_requested"] == [AGENCY_PROGRAM]
        r = await registry.http.post(f"/proposals/{event.proposal_id}/decision", json={"decision": "accepted"},
                                     headers=verifier)
        assert r.json()["forwarded_to"] == [AGENCY_PROGRAM]
        report = factories.enrolment(AGENCY_PROGRAM, village_code=V, nik=body["nik"], no_kk=body["no_kk"],
                                     name=body["name"], birth_date=body["birth_date"], enrolment_status="exited")
        await send(nc, settings, [report])
        f = (await events(nc, settings, "registry.proposal_fulfilled", 1))[0]["data"]
        # the case that started it learns the outcome, whatever it is
        assert (f["case_id"], f["enrolment_status"]) == (str(event.case_id), "exited")


async def test_a_program_the_person_is_already_active_in_is_not_asked_again(settings, nc, start):
    js = nc.jetstream()
    async with start("registry", settings) as registry:
        http = registry.http
        await define(http, settings, AGENCY_PROGRAM, "agency")
        body = proposal(programmes=[AGENCY_PROGRAM])
        await send(nc, settings, [factories.enrolment(AGENCY_PROGRAM, village_code=V, nik=body["nik"],
                                                      no_kk=body["no_kk"], name=body["name"],
                                                      birth_date=body["birth_date"])])
        pid = (await http.post("/proposals", json=body, headers=auth(settings, Role.village_office, area=V))
               ).json()["proposal_id"]
        r = await http.post(f"/proposals/{pid}/decision", json={"decision": "accepted"},
                            headers=auth(settings, Role.verifier))
        assert (r.json()["person_created"], r.json()["enrolled_in"], r.json()["forwarded_to"]) == (
            False, [AGENCY_PROGRAM], [])
        assert await drain(js, settings.names.agency_proposals("*"), settings.names.stream("AGENCY_PROPOSALS"),
                           wait=0.3) == []


async def test_the_agency_gets_the_person_as_the_registry_knows_them(settings, nc, start):
    js = nc.jetstream()
    async with start("registry", settings) as registry:
        http = registry.http
        await define(http, settings, AGENCY_PROGRAM, "agency")
        body = proposal(name="Sity Aminah", programmes=[AGENCY_PROGRAM])
        await send(nc, settings, [factories.enrolment(REGENCY_PROGRAM, village_code=V, nik=body["nik"],
                                                      birth_date=body["birth_date"], name="Siti Aminah")])
        pid = (await http.post("/proposals", json=body, headers=auth(settings, Role.village_office, area=V))
               ).json()["proposal_id"]
        r = await http.post(f"/proposals/{pid}/decision", json={"decision": "accepted"},
                            headers=auth(settings, Role.verifier))
        assert r.json()["forwarded_to"] == [AGENCY_PROGRAM]
        [sent] = await drain(js, settings.names.agency_proposals(AGENCY_PROGRAM),
                             settings.names.stream("AGENCY_PROPOSALS"))
        assert ProposalToAgency.model_validate(sent).name == "Siti Aminah"
