"""The coordinator's and the companion's use cases behind their pages (issue 14), on real NATS
and PostgreSQL: a visit report sent again under its client id is one report; the assignment
board, ending an assignment, coverage per companion and village, overdue cases per office."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from contracts import wilayah
from services.intake import cases, fieldwork
from services.intake.domain import WIB, RuleError
from services.kit.auth import Principal, Role
from tests.conftest import eventually
from tests.factories import nik
from tests.integration.intake_support import fake_registry, intake_events, person, publish_event, token
from tests.integration.test_intake_visits import enrolment, enrolments, visit

pytestmark = pytest.mark.integration

KEC = "331701"
VILLAGE, VILLAGE_2 = wilayah.villages_in(KEC)[:2]
OTHER_KEC_VILLAGE = wilayah.villages_in("331705")[0]
COORD = Principal(user="koord", role=Role.coordinator, area=KEC)


async def _assigned(svc, headers, n, companion="ani"):
    r = await svc.http.post("/assignments", json={"companion": companion, "nik": n}, headers=headers)
    return r.status_code == 201


async def test_a_visit_report_sent_again_is_one_report(settings, nc, start):
    elder = nik(VILLAGE, dt.date(1938, 5, 5), "F")
    coord = token(settings, Role.coordinator, KEC, "koord")
    ani = token(settings, Role.companion, KEC, "ani")
    budi = token(settings, Role.companion, KEC, "budi")
    today = dt.datetime.now(WIB).date()
    async with start("intake", settings) as svc:
        await publish_event(nc, settings, enrolments(enrolment(elder, VILLAGE)))
        await eventually(lambda: _assigned(svc, coord, elder))
        vid = str(uuid.uuid4())
        first = await svc.http.post("/visits", json=visit(elder, today, visit_id=vid), headers=ani)
        assert first.status_code == 201, first.text
        assert first.json()["visit_id"] == vid and first.json()["replayed"] is False
        # the phone did not hear the answer and sends the same report again: the first one
        again = await svc.http.post("/visits", json=visit(elder, today, visit_id=vid), headers=ani)
        assert again.status_code == 201, again.text
        assert again.json() == {**first.json(), "replayed": True}
        # a different report for the same month is still the once-a-month rule
        other = await svc.http.post("/visits", json=visit(elder, today, visit_id=str(uuid.uuid4())), headers=ani)
        assert other.status_code == 409
        # another companion cannot reuse (or learn about) the id
        r = await svc.http.post("/visits", json=visit(elder, today, visit_id=vid), headers=budi)
        assert r.status_code == 409 and elder not in r.text
        listed = (await svc.http.get("/visits", headers=ani)).json()
        assert listed["total"] == 1 and listed["items"][0]["visit_id"] == vid
        filed = await eventually(lambda: intake_events(nc, settings, "intake.visit_report_filed"))
        assert [e["data"]["visit_id"] for e in filed] == [vid]


async def test_board_unassign_and_coverage(settings, nc, start):
    elders = [nik(VILLAGE, dt.date(1939, 6, 1 + i), "F") for i in range(3)]
    second_village = nik(VILLAGE_2, dt.date(1937, 1, 9), "M")
    far = nik(OTHER_KEC_VILLAGE, dt.date(1936, 2, 2), "F")
    coord = token(settings, Role.coordinator, KEC, "koord")
    ani = token(settings, Role.companion, KEC, "ani")
    today = dt.datetime.now(WIB).date()
    period = f"{today.year:04d}-{today.month:02d}"
    async with start("intake", settings) as svc:
        await publish_event(nc, settings, enrolments(*(enrolment(e, VILLAGE) for e in elders),
                                                     enrolment(second_village, VILLAGE_2),
                                                     enrolment(far, OTHER_KEC_VILLAGE)))
        await eventually(lambda: _assigned(svc, coord, elders[0]))
        assert await _assigned(svc, coord, elders[1])
        assert await _assigned(svc, coord, second_village)
        assert await _assigned(svc, coord, elders[2], "budi")
        assert (await svc.http.post("/visits", json=visit(elders[0], today), headers=ani)).status_code == 201

        board = await fieldwork.board(svc.deps, COORD)
        assert board["total"] == 4  # the other kecamatan's beneficiary is not on this board
        assert {i["nik"]: i["companion"] for i in board["items"]} == {
            elders[0]: "ani", elders[1]: "ani", elders[2]: "budi", second_village: "ani"}
        assert (await fieldwork.board(svc.deps, COORD, village=VILLAGE_2))["total"] == 1

        ended = await fieldwork.unassign(svc.deps, COORD, elders[1], "kamalia_merekah")
        assert ended["companion"] == "ani"
        unassigned = await fieldwork.board(svc.deps, COORD, unassigned_only=True)
        assert [i["nik"] for i in unassigned["items"]] == [elders[1]]
        with pytest.raises(RuleError) as again:
            await fieldwork.unassign(svc.deps, COORD, elders[1], "kamalia_merekah")
        assert again.value.status == 404
        # another kecamatan's assignment answers exactly as a missing one
        other_coord = Principal(user="koord2", role=Role.coordinator, area="331705")
        assert await eventually(lambda: _assigned(svc, token(settings, Role.coordinator, "331705", "koord2"), far))
        with pytest.raises(RuleError) as outside:
            await fieldwork.unassign(svc.deps, COORD, far, "kamalia_merekah")
        assert (outside.value.status, outside.value.message.replace(far, "X")) == \
            (again.value.status, again.value.message.replace(elders[1], "X"))
        assert (await fieldwork.board(svc.deps, other_coord))["total"] == 1
        with pytest.raises(RuleError):
            await fieldwork.board(svc.deps, Principal(user="ani", role=Role.companion, area=KEC))
        ends = [e["data"] for e in await intake_events(nc, settings, "intake.companion_assigned") if not e["data"]["active"]]
        assert [(e["nik"], e["actor"]) for e in ends] == [(elders[1], "koord")]

        cov = await fieldwork.coverage(svc.deps, COORD, period)
        assert (cov["assigned"], cov["visited"]) == (3, 1)
        assert [(d["companion"], d["village_code"], d["assigned"], d["visited"]) for d in cov["items"]] == [
            ("ani", VILLAGE, 1, 1), ("ani", VILLAGE_2, 1, 0), ("budi", VILLAGE, 1, 0)]
        assert [(d["companion"], d["assigned"], d["visited"]) for d in cov["companions"]] == [
            ("ani", 2, 1), ("budi", 1, 0)]


async def test_overdue_cases_per_office(settings, nc, start):
    known = nik(VILLAGE, dt.date(1950, 1, 1), "F")
    async with fake_registry(nc, settings, {known: person(known, VILLAGE, ["pkh"])}), \
            start("intake", settings) as svc:
        for village, n in ((VILLAGE, 2), (VILLAGE_2, 1), (OTHER_KEC_VILLAGE, 1)):
            office = Principal(user=f"fo-{village}", role=Role.village_office, area=village)
            for _ in range(n):
                await cases.register(svc.deps, office, cases.CaseIn.model_validate({
                    "reporter": {"nik": known}, "village_code": village, "category": "not_receiving_aid",
                    "channel": "walk_in", "text": "Bantuan belum diterima"}))
        # one of the first village's cases goes up to the kecamatan
        first = (await cases.list_cases(svc.deps, Principal(user="fo", role=Role.village_office, area=VILLAGE),
                                        limit=1, offset=0))["items"][0]
        await cases.act(svc.deps, Principal(user="fo", role=Role.village_office, area=VILLAGE), first["ticket"],
                        "refer", note="perlu kecamatan")
        assert (await fieldwork.overdue_by_office(svc.deps, COORD))["total"] == 0  # nothing late yet
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=60)
        late = await fieldwork.overdue_by_office(svc.deps, COORD, now=later)
        assert {(d["level"], d["office"], d["overdue"]) for d in late["items"]} == {
            ("village", VILLAGE, 1), ("village", VILLAGE_2, 1), ("kecamatan", KEC, 1)}
        assert [d["level"] for d in late["items"]] == ["village", "village", "kecamatan"]  # by level
        assert late["total"] == 3 and all(d["days_late"] > 0 for d in late["items"])
        assert "text" not in str(late) and known not in str(late)
        # the kecamatan supervisor sees the same; a village office and a companion may not
        kec = await fieldwork.overdue_by_office(svc.deps, Principal(user="k", role=Role.kecamatan, area=KEC), later)
        assert kec["total"] == 3
        for role in (Role.village_office, Role.companion):
            with pytest.raises(RuleError):
                await fieldwork.overdue_by_office(svc.deps, Principal(user="x", role=role, area=VILLAGE), later)
