"""Intake's Puskesos flow against real NATS and PostgreSQL: registration with the registry
lookup, the proposal round trip, the SLRT referral chain, escalation, scope, validation."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import uuid

import nats.errors
import pytest

from contracts import wilayah
from contracts.envelope import envelope
from contracts.registry import ProposalDecided, ProposalDecision
from services.intake import cases
from services.kit.auth import Principal, Role
from tests.conftest import eventually
from tests.factories import kk, nik
from tests.integration.intake_support import fake_registry, intake_events, person, publish_event, token

pytestmark = pytest.mark.integration

KEC_A = "331701"
VILLAGE_A, VILLAGE_B = wilayah.villages_in(KEC_A)[:2]
VILLAGE_C = wilayah.villages_in("331702")[0]  # another kecamatan


def case_body(village: str, **reporter) -> dict:
    return {"reporter": reporter or {"nik": nik(village, dt.date(1958, 3, 4), "F")}, "village_code": village,
            "category": "not_receiving_aid", "channel": "walk_in", "kind": "complaint",
            "text": "Sudah tiga bulan tidak menerima bantuan PKH, rahasia: rumah bocor"}


async def test_found_person_goes_to_back_office_with_programs(settings, nc, start):
    known = nik(VILLAGE_A, dt.date(1960, 7, 1), "F")
    front = token(settings, Role.village_office, VILLAGE_A, "fo-ani")
    async with fake_registry(nc, settings, {known: person(known, VILLAGE_A, ["pkh", "bpnt"])}) as asked, \
            start("intake", settings) as svc:
        r = await svc.http.post("/cases", json=case_body(VILLAGE_A, nik=known), headers=front)
        assert r.status_code == 201, r.text
        case = r.json()
        year = dt.datetime.now(dt.timezone(dt.timedelta(hours=7))).year
        assert case["ticket"] == f"PSK-{VILLAGE_A}-{year}-000001"
        assert case["person_status"] == "found"
        assert [p["programme_identifier"] for p in case["programs"]] == ["pkh", "bpnt"]
        assert len(asked) == 1 and asked[0].nik == known  # one round trip
        looked = (await svc.http.get("/lookup", params={"nik": known}, headers=front)).json()
        assert looked["found"] and looked["people"][0]["enrolments"][0]["programme_identifier"] == "pkh"
        r = await svc.http.get("/lookup", params={"name": "Siti"}, headers=front)
        assert r.status_code == 422 and "village_code" in r.json()["error"]
        r2 = await svc.http.post("/cases", json=case_body(VILLAGE_A, nik=known), headers=front)
        assert r2.json()["ticket"].endswith("-000002")

        # the back office finds it by ticket, with the text; its queue lists it
        got = (await svc.http.get(f"/cases/{case['ticket']}", headers=front)).json()
        assert got["text"].startswith("Sudah tiga bulan") and got["reporter"]["nik"] == known
        queue = (await svc.http.get("/cases/queue", headers=front)).json()
        assert queue["total"] == 2 and {c["ticket"] for c in queue["items"]} >= {case["ticket"]}
        assert "text" not in queue["items"][0]  # lists never carry the complaint

        evs = await eventually(lambda: _n(intake_events(nc, settings, "intake.case_registered"), 2))
        data = evs[0]["data"]
        assert data["case_id"] == case["case_id"] and data["village_code"] == VILLAGE_A
        assert data["category"] == "not_receiving_aid" and data["level"] == "village" and data["status"] == "open"
        for e in evs:  # confidentiality: no text, no identity on the stream
            assert "tiga bulan" not in e["raw"] and known not in e["raw"] and "Siti" not in e["raw"]
            assert e["headers"]["Nats-Msg-Id"] == e["event_id"]


async def _n(coro, n):
    evs = await coro
    return evs if len(evs) >= n else None


async def test_not_in_registry_is_proposed_and_follows_the_decision(settings, nc, start):
    new = nik(VILLAGE_A, dt.date(1990, 5, 17), "M")
    no_kk = kk(VILLAGE_A)
    front = token(settings, Role.village_office, VILLAGE_A, "fo-budi")
    async with fake_registry(nc, settings, {}), start("intake", settings) as svc:
        r = await svc.http.post("/cases", json=case_body(VILLAGE_A, nik=new, no_kk=no_kk, name="Budi Santoso",
                                                         address="RT 02 RW 01"), headers=front)
        assert r.status_code == 201, r.text
        case = r.json()
        assert case["person_status"] == "proposed" and case["proposal_id"]

        props = await eventually(lambda: _n(intake_events(nc, settings, "intake.proposal_submitted"), 1))
        prop = props[0]["data"]
        assert prop["proposal_id"] == case["proposal_id"] and prop["case_id"] == case["case_id"]
        assert prop["nik"] == new and prop["no_kk"] == no_kk and prop["sex"] == "M"
        assert prop["birth_date"] == "1990-05-17" and prop["submitted_by"] == "fo-budi"

        decided = ProposalDecided(proposal_id=uuid.UUID(case["proposal_id"]), nik=new, village_code=VILLAGE_A,
                                  decision=ProposalDecision.accepted, decided_by="verifier-dinsos",
                                  case_id=uuid.UUID(case["case_id"]))
        eid = uuid.uuid4()
        await publish_event(nc, settings, decided, event_id=eid)

        async def accepted():
            c = (await svc.http.get(f"/cases/{case['case_id']}", headers=front)).json()
            return c if c["person_status"] == "accepted" else None
        await eventually(accepted)
        # the same event re-published outside the de-duplication window (another Nats-Msg-Id)
        # changes nothing: intake's inbox has seen its event_id
        again = envelope(decided, "registry", event_id=eid)
        await nc.jetstream().publish(settings.names.event(decided.event_type), again.model_dump_json().encode(),
                                     headers={"Nats-Msg-Id": f"copy-{eid}"})

        # and the same decision under a new event_id (what a new durable re-reading REGISTRY
        # from its start sees): the case already shows it, nothing more happens
        await publish_event(nc, settings, decided)

        async def consumed_all():
            info = await nc.jetstream().consumer_info(settings.names.stream("REGISTRY"), "intake-registry-v2")
            return info.delivered.stream_seq == 3 and info.num_ack_pending == 0 and info.num_pending == 0
        await eventually(consumed_all)
        steps = (await svc.http.get(f"/cases/{case['case_id']}/history", headers=front)).json()["steps"]
        assert [s["action"] for s in steps] == ["register", "proposal_accepted"]
        assert steps[1]["actor"] == "verifier-dinsos"
        changed = await eventually(lambda: _n(intake_events(nc, settings, "intake.case_status_changed"), 1))
        assert len(changed) == 1 and changed[0]["data"]["person_status"] == "accepted"


async def test_without_nik_the_name_is_searched_in_the_village(settings, nc, start):
    front = token(settings, Role.village_office, VILLAGE_A)
    known = nik(VILLAGE_A, dt.date(1950, 1, 2), "F")
    people = {known: person(known, VILLAGE_A, ["bpnt"], name="Sumiyati")}
    async with fake_registry(nc, settings, people) as asked, start("intake", settings) as svc:
        r = await svc.http.post("/cases", json=case_body(VILLAGE_A, name="Mbah Karto"), headers=front)
        assert r.status_code == 201, r.text
        assert r.json()["person_status"] == "not_found" and r.json()["proposal_id"] is None
        assert asked[0].name == "Mbah Karto" and asked[0].village_code == VILLAGE_A
        # a name match is a candidate for the back office to confirm, not a certainty
        r = await svc.http.post("/cases", json=case_body(VILLAGE_A, name="Sumiyati"), headers=front)
        assert r.json()["person_status"] == "possible_match"
        assert [m["nik"] for m in r.json()["matches"]] == [known] and r.json()["programs"] == []


async def test_concurrent_registrations_get_distinct_serials(settings, nc, start):
    front = token(settings, Role.village_office, VILLAGE_A)
    async with fake_registry(nc, settings, {}), start("intake", settings) as svc:
        rs = await asyncio.gather(*[svc.http.post("/cases", json=case_body(VILLAGE_A, name=f"Warga {i}"),
                                                  headers=front) for i in range(12)])
        assert all(r.status_code == 201 for r in rs)
        serials = sorted(int(r.json()["ticket"].rsplit("-", 1)[1]) for r in rs)
        assert serials == list(range(1, 13))


async def test_an_undecodable_registry_event_is_dead_lettered(settings, nc, start):
    js = nc.jetstream()
    dl = await js.pull_subscribe(settings.names.deadletter("intake"), stream=settings.names.stream("DEADLETTER"))
    async with start("intake", settings):
        bad = {"event_id": str(uuid.uuid4()), "event_type": "registry.proposal_decided", "schema_version": 1,
               "occurred_at": "2026-11-23T10:00:00Z", "producer": "registry", "data": {"decision": "maybe"}}
        await js.publish(settings.names.event("registry.proposal_decided"), json.dumps(bad).encode(),
                         headers={"Nats-Msg-Id": bad["event_id"]})

        async def dead():
            try:
                return await dl.fetch(1, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                return None
        msgs = await eventually(dead)
        letter = json.loads(msgs[0].data)
        assert letter["service"] == "intake" and letter["reason_code"] == "rjct.event.invalid"
        assert "proposal_id" in letter["reason"] and letter["msg_id"] == bad["event_id"]


async def test_referral_chain_with_who_and_when(settings, nc, start):
    village = token(settings, Role.village_office, VILLAGE_A, "bo-citra")
    kec = token(settings, Role.kecamatan, KEC_A, "slrt-kec")
    kab = token(settings, Role.kabupaten, "3317", "slrt-kab")
    async with fake_registry(nc, settings, {}), start("intake", settings) as svc:
        case = (await svc.http.post("/cases", json=case_body(VILLAGE_A, name="Warsini"), headers=village)).json()
        ref = case["ticket"]
        assert (await svc.http.post(f"/cases/{ref}/handle", json={"note": "cek data"}, headers=village)).status_code == 200
        r = await svc.http.post(f"/cases/{ref}/answer", json={"answer": "Data sedang diperiksa"}, headers=village)
        assert r.json()["status"] == "answered"
        r = await svc.http.post(f"/cases/{ref}/refer", json={"note": "perlu kecamatan"}, headers=village)
        assert r.json() == {"case_id": case["case_id"], "level": "kecamatan", "status": "open"}
        # the village office still follows it but can no longer act on it
        assert (await svc.http.get(f"/cases/{ref}", headers=village)).json()["level"] == "kecamatan"
        r = await svc.http.post(f"/cases/{ref}/resolve", json={}, headers=village)
        assert r.status_code == 403 and "kecamatan level" in r.json()["error"]
        assert (await svc.http.get("/cases/queue", headers=kec)).json()["total"] == 1
        assert (await svc.http.post(f"/cases/{ref}/refer", json={}, headers=kec)).json()["level"] == "kabupaten"
        r = await svc.http.post(f"/cases/{ref}/refer", json={}, headers=kab)
        assert r.status_code == 422 and "programme_identifier" in r.json()["error"]
        r = await svc.http.post(f"/cases/{ref}/refer", json={"programme_identifier": "pkh"}, headers=kab)
        assert r.json()["level"] == "agency"
        pm = token(settings, Role.program_manager, "", "pm-pkh", programs=("pkh",))
        other_pm = token(settings, Role.program_manager, "", "pm-kip", programs=("kip",))
        assert (await svc.http.get(f"/cases/{ref}", headers=other_pm)).status_code == 404
        r = await svc.http.post(f"/cases/{ref}/resolve", json={"outcome": "resolved", "note": "didaftarkan"},
                                headers=pm)
        assert r.json()["status"] == "resolved"
        r = await svc.http.post(f"/cases/{ref}/answer", json={"answer": "lagi"}, headers=kab)
        assert r.status_code == 409 and "resolved" in r.json()["error"]

        steps = (await svc.http.get(f"/cases/{ref}/history", headers=kab)).json()["steps"]
        assert [(s["action"], s["actor"], s["level"]) for s in steps] == [
            ("register", "bo-citra", "village"), ("handle", "bo-citra", "village"),
            ("answer", "bo-citra", "village"), ("refer", "bo-citra", "kecamatan"),
            ("refer", "slrt-kec", "kabupaten"), ("refer", "slrt-kab", "agency"), ("resolve", "pm-pkh", "agency")]
        assert all(s["at"] and s["event_id"] for s in steps)
        referred = await eventually(lambda: _n(intake_events(nc, settings, "intake.case_referred"), 3))
        assert [(e["data"]["from_level"], e["data"]["level"]) for e in referred] == [
            ("village", "kecamatan"), ("kecamatan", "kabupaten"), ("kabupaten", "agency")]
        assert referred[0]["data"]["actor"] == "bo-citra"
        resolved = await eventually(lambda: _n(intake_events(nc, settings, "intake.case_resolved"), 1))
        assert resolved[0]["data"]["actor"] == "pm-pkh" and "didaftarkan" not in resolved[0]["raw"]


async def test_overdue_cases_escalate_one_level_at_a_time(settings, nc, start):
    village = token(settings, Role.village_office, VILLAGE_A)
    kab = token(settings, Role.kabupaten, "3317")
    async with fake_registry(nc, settings, {}), start("intake", settings) as svc:
        case = (await svc.http.post("/cases", json=case_body(VILLAGE_A, name="Sarmi"), headers=village)).json()
        due = dt.datetime.fromisoformat(case["due_at"])
        now = dt.datetime.now(dt.UTC)
        assert dt.timedelta(days=3, minutes=-1) <= due - now <= dt.timedelta(days=5, minutes=1)  # 3 working days
        # the clock is moved only through the use cases (operators: `sinergi intake escalate
        # --now`); no staff route takes a clock override (issue 15)
        p_village = Principal(user="vo", role=Role.village_office, area=VILLAGE_A)
        p_kab = Principal(user="kab", role=Role.kabupaten, area="3317")

        async def overdue_at(p: Principal, at: dt.datetime) -> dict:
            return await cases.list_cases(svc.deps, p, overdue_at=at)

        async def escalate_at(at: dt.datetime) -> list[dict]:
            return await cases.escalate_overdue(svc.deps.kit, svc.deps.cfg, at)

        assert (await overdue_at(p_village, due - dt.timedelta(minutes=1)))["total"] == 0
        later = due + dt.timedelta(minutes=1)
        assert [c["ticket"] for c in (await overdue_at(p_village, later))["items"]] == [case["ticket"]]
        # over HTTP, `now=` is no longer read: nothing is overdue at the real time, nothing moves
        assert (await svc.http.get("/cases/overdue", params={"now": later.isoformat()},
                                   headers=village)).json()["total"] == 0
        assert (await svc.http.post("/cases/escalate", params={"now": "2099-01-01T00:00:00Z"},
                                    headers=village)).status_code == 403
        r = await svc.http.post("/cases/escalate", params={"now": "2099-01-01T00:00:00Z"}, headers=kab)
        assert r.status_code == 200 and r.json()["escalated"] == 0
        got = (await svc.http.get(f"/cases/{case['ticket']}", headers=kab)).json()
        assert got["level"] == "village" and dt.datetime.fromisoformat(got["due_at"]) == due

        done = await escalate_at(later)
        assert len(done) == 1 and done[0]["level"] == "kecamatan"
        # a second run at the same moment finds nothing more to do
        assert await escalate_at(later) == []
        got = (await svc.http.get(f"/cases/{case['ticket']}", headers=kab)).json()
        assert got["level"] == "kecamatan" and dt.datetime.fromisoformat(got["due_at"]) > later
        much_later = later + dt.timedelta(days=30)
        assert (await escalate_at(much_later))[0]["level"] == "kabupaten"
        # the agency needs a person naming the program: the kabupaten keeps it, listed as overdue
        far = much_later + dt.timedelta(days=60)
        assert await escalate_at(far) == []
        assert (await overdue_at(p_kab, far))["total"] == 1
        steps = (await svc.http.get(f"/cases/{case['ticket']}/history", headers=kab)).json()["steps"]
        assert [(s["action"], s["actor"]) for s in steps][1:] == [("escalate", "system"), ("escalate", "system")]
        evs = await eventually(lambda: _n(intake_events(nc, settings, "intake.case_escalated"), 2))
        assert [(e["data"]["from_level"], e["data"]["level"]) for e in evs] == [
            ("village", "kecamatan"), ("kecamatan", "kabupaten")]


def test_no_staff_route_takes_a_clock_override(settings):
    """`now=` (or any clock override) is for operators' commands and tests, never HTTP (issue 15)."""
    import importlib
    for service in ("intake", "registry", "disbursement", "reporting"):
        app = importlib.import_module(f"services.{service}.app").create_app(settings)
        for path, ops in app.openapi()["paths"].items():
            for method, op in ops.items():
                names = {q["name"].lower() for q in op.get("parameters", [])}
                assert not names & {"now", "at", "today", "clock"}, (service, method, path, names)


async def test_staff_see_only_their_own_area(settings, nc, start):
    a = token(settings, Role.village_office, VILLAGE_A)
    b = token(settings, Role.village_office, VILLAGE_B)
    c = token(settings, Role.village_office, VILLAGE_C)
    kec_a = token(settings, Role.kecamatan, KEC_A)
    kec_other = token(settings, Role.kecamatan, VILLAGE_C[:6])
    kab = token(settings, Role.kabupaten, "3317")
    async with fake_registry(nc, settings, {}), start("intake", settings) as svc:
        case_a = (await svc.http.post("/cases", json=case_body(VILLAGE_A, name="A"), headers=a)).json()
        (await svc.http.post("/cases", json=case_body(VILLAGE_B, name="B"), headers=b)).json()
        (await svc.http.post("/cases", json=case_body(VILLAGE_C, name="C"), headers=c)).json()
        # a village office registers only for its own village
        r = await svc.http.post("/cases", json=case_body(VILLAGE_B, name="X"), headers=a)
        assert r.status_code == 403 and "outside your area" in r.json()["error"]
        for ref in (case_a["ticket"], case_a["case_id"]):
            assert (await svc.http.get(f"/cases/{ref}", headers=b)).status_code == 404
            assert (await svc.http.get(f"/cases/{ref}/history", headers=b)).status_code == 404
            assert (await svc.http.get(f"/cases/{ref}", headers=kec_other)).status_code == 404
            assert (await svc.http.get(f"/cases/{ref}", headers=kec_a)).status_code == 200
        r = await svc.http.post(f"/cases/{case_a['ticket']}/handle", json={}, headers=b)
        assert r.status_code == 404
        assert (await svc.http.get("/cases", headers=a)).json()["total"] == 1
        assert (await svc.http.get("/cases", headers=kec_a)).json()["total"] == 2
        assert (await svc.http.get("/cases", headers=kab)).json()["total"] == 3
        auditor = token(settings, Role.auditor, "3317")
        assert (await svc.http.get(f"/cases/{case_a['ticket']}", headers=auditor)).status_code == 403
        companion = token(settings, Role.companion, VILLAGE_A)
        assert (await svc.http.get("/cases", headers=companion)).status_code == 403
        assert (await svc.http.get("/cases")).status_code == 401
        # pagination: total stays, pages split
        page = (await svc.http.get("/cases", params={"limit": 2, "offset": 2}, headers=kab)).json()
        assert page["total"] == 3 and len(page["items"]) == 1 and page["limit"] == 2


async def test_bad_input_says_what_is_wrong(settings, nc, start):
    front = token(settings, Role.village_office, VILLAGE_A)
    async with start("intake", settings) as svc:
        # no registry answering: a clear 503, nothing registered
        r = await svc.http.post("/cases", json=case_body(VILLAGE_A, name="Tanpa Registry"), headers=front)
        assert r.status_code == 503 and "registry did not answer" in r.json()["error"]
        assert (await svc.http.get("/cases", headers=front)).json()["total"] == 0
        async with fake_registry(nc, settings, {}):
            body = case_body(VILLAGE_A, nik="3317019999990000")
            body["category"] = "aliens"
            del body["channel"]
            r = await svc.http.post("/cases", json=body, headers=front)
            assert r.status_code == 422
            fields = {d["field"]: d["problem"] for d in r.json()["details"]}
            assert "reporter.nik" in fields and "category" in fields and "channel" in fields
            r = await svc.http.post("/cases", json=case_body(VILLAGE_A, contact="0812"), headers=front)
            assert r.status_code == 422 and "NIK, or their name" in r.text
            r = await svc.http.get("/cases", params={"limit": 0}, headers=front)
            assert r.status_code == 422 and r.json()["details"][0]["field"] == "query.limit"
            r = await svc.http.get("/cases", params={"status": "lost"}, headers=front)
            assert r.status_code == 422
            assert (await svc.http.get("/cases/PSK-NOPE", headers=front)).status_code == 404
            assert re.fullmatch(r"\d{10}", VILLAGE_A)


async def test_the_background_task_escalates_without_being_asked(settings, nc):
    """The real timer: a village deadline of 0 working days makes every new case overdue."""
    import httpx

    from services.intake.app import create_app
    from services.intake.config import IntakeSettings
    from services.kit.migrations import migrate

    cfg = IntakeSettings(_env_file=None, escalation_interval_seconds=0.1,
                         deadline_days={"village": 0, "kecamatan": 5, "kabupaten": 7, "agency": 14})
    front = token(settings, Role.village_office, VILLAGE_A)
    await migrate("intake", settings.db_url("intake"))
    app = create_app(settings, cfg)
    async with fake_registry(nc, settings, {}), app.router.lifespan_context(app), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://intake") as http:
        case = (await http.post("/cases", json=case_body(VILLAGE_A, name="Rukmini"), headers=front)).json()

        async def escalated():
            c = (await http.get(f"/cases/{case['ticket']}", headers=front)).json()
            return c if c["level"] == "kecamatan" else None
        c = await eventually(escalated)
        assert dt.datetime.fromisoformat(c["due_at"]) > dt.datetime.now(dt.UTC) + dt.timedelta(days=4)


async def test_a_repeated_registration_is_one_case_and_reads_are_audited(settings, nc, start):
    import sqlalchemy as sa

    from services.intake import store

    front = token(settings, Role.village_office, VILLAGE_A, "fo-dewi")
    kec = token(settings, Role.kecamatan, KEC_A, "slrt-kec")
    async with fake_registry(nc, settings, {}) as asked, start("intake", settings) as svc:
        key = {"Idempotency-Key": "form-7f3a"}
        first, again = [await svc.http.post("/cases", json=case_body(VILLAGE_A, name="Karsi"),
                                            headers=front | key) for _ in range(2)]
        assert first.status_code == again.status_code == 201
        assert again.json()["ticket"] == first.json()["ticket"] and again.json()["replayed"] is True
        assert len(asked) == 1  # the replay did not even ask the registry again
        # a double click: the same key at the same moment is still one case
        both = await asyncio.gather(*[svc.http.post("/cases", json=case_body(VILLAGE_A, name="Karsi"),
                                                    headers=front | {"Idempotency-Key": "dbl"}) for _ in range(2)])
        assert both[0].json()["ticket"] == both[1].json()["ticket"]
        assert (await svc.http.get("/cases", headers=front)).json()["total"] == 2
        # another user's key is theirs alone
        other = token(settings, Role.village_office, VILLAGE_A, "fo-lain")
        r = await svc.http.post("/cases", json=case_body(VILLAGE_A, name="Karsi"), headers=other | key)
        assert r.json()["replayed"] is False

        case_id = first.json()["case_id"]
        await svc.http.get(f"/cases/{case_id}", headers=kec)
        await svc.http.post(f"/cases/{case_id}/handle", json={}, headers=front)
        async with svc.rt.sessions() as s:
            rows = (await s.execute(sa.select(store.audit_log).where(store.audit_log.c.target == case_id)
                                    .order_by(store.audit_log.c.id))).all()
        assert [(r.actor, r.action) for r in rows] == [
            ("fo-dewi", "case.register"), ("slrt-kec", "case.read"), ("fo-dewi", "case.handle")]
        assert all("Karsi" not in str(r.detail) for r in rows)


async def test_a_registry_event_that_keeps_failing_becomes_a_dead_letter(settings, nc, start, monkeypatch):
    """Fault injection: the decision handler raises every time (a bug, not bad input)."""
    from services.intake import cases as case_ops

    async def broken(*_a, **_k):
        raise RuntimeError("injected failure")
    monkeypatch.setattr(case_ops, "apply_decisions", broken)
    js = nc.jetstream()
    dl = await js.pull_subscribe(settings.names.deadletter("intake"), stream=settings.names.stream("DEADLETTER"))
    async with start("intake", settings):
        decided = ProposalDecided(proposal_id=uuid.uuid4(), nik=nik(VILLAGE_A, dt.date(1990, 5, 17), "M"),
                                  village_code=VILLAGE_A, decision=ProposalDecision.accepted, decided_by="v")
        await publish_event(nc, settings, decided)

        async def dead():
            try:
                return await dl.fetch(1, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                return None
        msgs = await eventually(dead, timeout=20)
        letter = json.loads(msgs[0].data)
        assert letter["reason_code"] == "rjct.handler.error" and "injected failure" in letter["reason"]
        assert letter["deliveries"] == 3  # the kit's max_deliveries, with its backoff between them

        async def settled():
            info = await js.consumer_info(settings.names.stream("REGISTRY"), "intake-registry-v2")
            return info.num_ack_pending == 0 and info.num_pending == 0 and info.delivered.consumer_seq >= 3
        await eventually(settled)
