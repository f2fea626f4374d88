"""Home visits against real NATS and PostgreSQL: caseloads from registry enrolment events,
assignment by the coordinator, visit reports, the once-a-month rule, the coordinator's view."""
from __future__ import annotations

import datetime as dt

import pytest

from contracts import wilayah
from contracts.agency import EnrolmentStatus
from contracts.registry import EnrolmentChange, EnrolmentsChanged
from services.intake.domain import WIB
from services.kit.auth import Role
from tests.conftest import eventually
from tests.factories import kk, nik
from tests.integration.intake_support import intake_events, publish_event, token

pytestmark = pytest.mark.integration

VILLAGE = wilayah.villages_in("331701")[0]
OTHER_KEC_VILLAGE = wilayah.villages_in("331705")[0]


def enrolment(n: str, village: str, program: str = "kamalia_merekah", status=EnrolmentStatus.active,
              day: dt.date = dt.date(2026, 1, 1)) -> EnrolmentChange:
    return EnrolmentChange(nik=n, no_kk=kk(village), village_code=village, birth_date=dt.date(1940, 1, 1),
                           programme_identifier=program, enrolment_status=status, status_change_date=day,
                           reported_by=program)


def enrolments(*changes: EnrolmentChange) -> EnrolmentsChanged:
    """The registry's event for one ingest batch."""
    return EnrolmentsChanged(changes=list(changes))


def visit(n: str, day: dt.date, **kw) -> dict:
    return {"nik": n, "visit_date": day.isoformat(), "physical_condition": "fair", "social_condition": "poor",
            "aid_use": "as_intended", "needs": ["health", "food"],
            "notes": "Mbah tinggal sendiri, atap bocor", **kw}


async def test_monthly_visits_from_assignment_to_coordinator_view(settings, nc, start):
    elders = [nik(VILLAGE, dt.date(1940, 1, 1 + i), "F") for i in range(3)]
    far = nik(OTHER_KEC_VILLAGE, dt.date(1941, 2, 2), "M")
    not_visited_program = nik(VILLAGE, dt.date(1970, 3, 3), "F")
    coord = token(settings, Role.coordinator, "331701", "koord")
    ani = token(settings, Role.companion, "331701", "ani")
    budi = token(settings, Role.companion, "331701", "budi")
    today = dt.datetime.now(WIB).date()
    this_month = f"{today.year:04d}-{today.month:02d}"
    last_month_day = today.replace(day=1) - dt.timedelta(days=1)

    async with start("intake", settings) as svc:
        # one ingest batch: the elders, one in another kecamatan, one in a program without visits
        await publish_event(nc, settings, enrolments(*(enrolment(e, VILLAGE) for e in elders),
                                                     enrolment(far, OTHER_KEC_VILLAGE),
                                                     enrolment(not_visited_program, VILLAGE, program="kip")))

        async def assigned(n, companion):
            r = await svc.http.post("/assignments", json={"companion": companion, "nik": n}, headers=coord)
            return r if r.status_code == 201 else None
        # the caseload arrives from the registry's events
        await eventually(lambda: _consumed(nc, settings, 1))
        assert (await assigned(elders[0], "ani")) is not None
        assert (await assigned(elders[1], "ani")).json()["programme_identifier"] == "kamalia_merekah"
        assert (await assigned(elders[2], "budi")) is not None
        r = await svc.http.post("/assignments", json={"companion": "ani", "nik": not_visited_program}, headers=coord)
        assert r.status_code == 404 and "home visits" in r.json()["error"]  # kip has no home visits
        r = await svc.http.post("/assignments", json={"companion": "ani", "nik": far}, headers=coord)
        assert r.status_code == 403 and "outside your area" in r.json()["error"]
        assert (await svc.http.post("/assignments", json={"companion": "ani", "nik": elders[0]},
                                    headers=ani)).status_code == 403

        # ani visits elder 0 this month; a second report this month is refused
        r = await svc.http.post("/visits", json=visit(elders[0], today), headers=ani)
        assert r.status_code == 201, r.text
        assert r.json()["period"] == this_month
        r = await svc.http.post("/visits", json=visit(elders[0], today), headers=ani)
        assert r.status_code == 409 and "one visit per month" in r.json()["error"]
        # last month's visit is its own month
        r = await svc.http.post("/visits", json=visit(elders[1], last_month_day), headers=ani)
        assert r.status_code == 201 and r.json()["period"] != this_month
        # not her beneficiary; a date in the future; a bad rating
        assert (await svc.http.post("/visits", json=visit(elders[2], today), headers=ani)).status_code == 403
        r = await svc.http.post("/visits", json=visit(elders[0], today + dt.timedelta(days=2)), headers=ani)
        assert r.status_code == 422 and "future" in r.json()["error"]
        r = await svc.http.post("/visits", json=visit(elders[1], today, physical_condition="great"), headers=ani)
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "physical_condition"
        assert (await svc.http.post("/visits", json=visit(elders[1], today), headers=coord)).status_code == 403

        s = (await svc.http.get("/visits/summary", params={"period": this_month}, headers=coord)).json()
        by = {d["companion"]: d for d in s["items"]}
        assert by["ani"]["assigned"] == 2 and by["ani"]["visits_done"] == 1 and by["ani"]["visits_due"] == 1
        assert [x["nik"] for x in by["ani"]["not_visited"]] == [elders[1]]
        assert by["budi"]["visits_done"] == 0 and by["budi"]["visits_due"] == 1
        assert s["total"] == 2
        assert (await svc.http.get("/visits/summary", params={"period": "2026-13"},
                                   headers=coord)).status_code == 422
        assert (await svc.http.get("/visits/summary", headers=ani)).status_code == 403

        load = (await svc.http.get("/companions/ani/caseload", params={"period": this_month}, headers=ani)).json()
        assert {(i["nik"], i["visited_on"]) for i in load["items"]} == {(elders[0], today.isoformat()),
                                                                       (elders[1], None)}
        assert (await svc.http.get("/companions/budi/caseload", headers=ani)).status_code == 403
        mine = (await svc.http.get("/visits", params={"limit": 1}, headers=ani)).json()
        assert mine["total"] == 2 and len(mine["items"]) == 1

        # the events carry ratings and codes; the notes stay in intake
        evs = await eventually(lambda: _at_least(intake_events(nc, settings, "intake.visit_report_filed"), 2))
        d = evs[0]["data"]
        assert d["nik"] == elders[0] and d["period"] == this_month and d["needs"] == ["health", "food"]
        assert all("atap bocor" not in e["raw"] for e in evs)
        assigned_evs = await eventually(lambda: _at_least(intake_events(nc, settings, "intake.companion_assigned"), 3))
        assert {(e["data"]["companion"], e["data"]["active"]) for e in assigned_evs} == {("ani", True), ("budi", True)}

        # reassigning elder 1 to budi ends ani's assignment
        assert (await assigned(elders[1], "budi")) is not None
        # elder 2 leaves the program: budi's assignment ends with it
        await publish_event(nc, settings, enrolments(enrolment(elders[2], VILLAGE, status=EnrolmentStatus.exited,
                                                               day=dt.date(2026, 6, 1))))

        async def budi_load():
            items = (await svc.http.get("/companions/budi/caseload", headers=budi)).json()["items"]
            return items if [i["nik"] for i in items] == [elders[1]] else None
        await eventually(budi_load)
        ended = await eventually(lambda: _at_least(intake_events(nc, settings, "intake.companion_assigned"), 6))
        assert {(e["data"]["companion"], e["data"]["nik"]) for e in ended if not e["data"]["active"]} == {
            ("ani", elders[1]), ("budi", elders[2])}
        # an older event arriving late does not bring the beneficiary back
        await publish_event(nc, settings, enrolments(enrolment(elders[2], VILLAGE, day=dt.date(2026, 2, 1))))
        await eventually(lambda: _consumed(nc, settings, 3))
        r = await svc.http.post("/assignments", json={"companion": "budi", "nik": elders[2]}, headers=coord)
        assert r.status_code == 404


async def _at_least(coro, n):
    evs = await coro
    return evs if len(evs) >= n else None


async def _consumed(nc, settings, n):
    info = await nc.jetstream().consumer_info(settings.names.stream("REGISTRY"), "intake-registry-v2")
    return info.delivered.stream_seq >= n and info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_late_older_exit_does_not_end_a_newer_assignment(settings, nc, start):
    elder = nik(VILLAGE, dt.date(1942, 4, 4), "F")
    coord = token(settings, Role.coordinator, "331701", "koord")
    ani = token(settings, Role.companion, "331701", "ani")
    async with start("intake", settings) as svc:
        await publish_event(nc, settings, enrolments(enrolment(elder, VILLAGE, day=dt.date(2026, 3, 1))))
        await eventually(lambda: _consumed(nc, settings, 1))
        r = await svc.http.post("/assignments", json={"companion": "ani", "nik": elder}, headers=coord)
        assert r.status_code == 201, r.text
        # an exit dated before the enrolment now stored arrives late: it is history, not news
        await publish_event(nc, settings, enrolments(enrolment(elder, VILLAGE, status=EnrolmentStatus.exited,
                                                               day=dt.date(2026, 2, 1))))
        await eventually(lambda: _consumed(nc, settings, 2))
        load = (await svc.http.get("/companions/ani/caseload", headers=ani)).json()["items"]
        assert [i["nik"] for i in load] == [elder]
