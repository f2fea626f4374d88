"""Intake rules without servers: tickets, working-day deadlines, who may act, what a lookup
means for a new case, what a step changes, visit dates."""
from __future__ import annotations

import datetime as dt
import functools
import uuid

import pytest

from contracts.intake import CaseLevel, CaseStatus, PersonStatus
from contracts.lookup import EnrolmentSummary, LookupReply, PersonSummary
from services.intake import domain
from services.intake.domain import WIB, RuleError
from services.kit.auth import Principal, Role


def wib(*a) -> dt.datetime:
    return dt.datetime(*a, tzinfo=WIB)


def test_ticket_is_quotable_and_sortable():
    assert domain.ticket("33.17.01.2001", 2026, 123) == "PSK-3317012001-2026-000123"


@pytest.mark.parametrize("start,days,due", [
    (wib(2026, 11, 23, 10), 3, wib(2026, 11, 26, 10)),   # Monday -> Thursday
    (wib(2026, 11, 27, 10), 3, wib(2026, 12, 2, 10)),    # Friday -> Wednesday (weekend skipped)
    (wib(2026, 11, 28, 10), 3, wib(2026, 12, 2, 10)),    # Saturday counts from Monday
    (wib(2026, 11, 29, 23), 1, wib(2026, 11, 30, 23)),   # Sunday night -> Monday night
    (wib(2026, 11, 23, 10), 0, wib(2026, 11, 23, 10)),
])
def test_deadlines_count_working_days_in_wib(start, days, due):
    assert domain.add_working_days(start.astimezone(dt.UTC), days) == due


def test_weekday_is_decided_in_wib_not_utc():
    # Friday 20:00 UTC is already Saturday 03:00 in Rembang: due Wednesday 03:00 WIB
    fri_utc = dt.datetime(2026, 11, 27, 20, tzinfo=dt.UTC)
    assert domain.add_working_days(fri_utc, 3) == wib(2026, 12, 2, 3)


def test_holidays_are_not_working_days():
    due = domain.add_working_days(wib(2026, 12, 23, 9), 3, frozenset({dt.date(2026, 12, 25)}))
    assert due == wib(2026, 12, 29, 9)  # Thu 24, (Fri 25 holiday), Mon 28, Tue 29


def test_naive_start_is_refused():
    with pytest.raises(ValueError):
        domain.add_working_days(dt.datetime(2026, 11, 23), 3)


def test_chain_order_and_referral_targets():
    assert [lv.next() for lv in CaseLevel] == [CaseLevel.kecamatan, CaseLevel.kabupaten, CaseLevel.agency, None]
    assert domain.refer_target(CaseLevel.village, None) is CaseLevel.kecamatan
    with pytest.raises(RuleError, match="programme_identifier"):
        domain.refer_target(CaseLevel.kabupaten, None)
    assert domain.refer_target(CaseLevel.kabupaten, "pkh") is CaseLevel.agency
    with pytest.raises(RuleError, match="not a program code"):
        domain.refer_target(CaseLevel.kabupaten, "PKH; drop table")
    with pytest.raises(RuleError, match="end of the SLRT chain"):
        domain.refer_target(CaseLevel.agency, "pkh")


def test_only_the_office_at_the_case_level_in_its_area_may_act():
    village = "3317012001"
    office = Principal("bo", Role.village_office, village)
    domain.check_can_act(office, CaseLevel.village, village)
    with pytest.raises(RuleError) as e:
        domain.check_can_act(office, CaseLevel.kecamatan, village)
    assert e.value.status == 403
    with pytest.raises(RuleError, match="outside your area"):
        domain.check_can_act(Principal("bo2", Role.village_office, "3317012002"), CaseLevel.village, village)
    domain.check_can_act(Principal("kec", Role.kecamatan, "331701"), CaseLevel.kecamatan, village)
    with pytest.raises(RuleError):
        domain.check_can_act(Principal("kec2", Role.kecamatan, "331702"), CaseLevel.kecamatan, village)
    pm = Principal("pm", Role.program_manager, "", ("pkh",))
    domain.check_can_act(pm, CaseLevel.agency, village, "pkh")
    with pytest.raises(RuleError, match="not one of yours"):
        domain.check_can_act(pm, CaseLevel.agency, village, "kip")


def test_resolved_cases_are_final():
    for s in (CaseStatus.open, CaseStatus.in_progress, CaseStatus.answered):
        domain.check_open(s)
    with pytest.raises(RuleError, match="resolved"):
        domain.check_open(CaseStatus.resolved)


def test_visit_dates_and_periods():
    today = dt.date(2026, 11, 23)
    assert domain.period_of(dt.date(2026, 1, 31)) == "2026-01"
    domain.check_visit_date(today, today)
    with pytest.raises(RuleError, match="future"):
        domain.check_visit_date(today + dt.timedelta(days=1), today)
    with pytest.raises(RuleError, match="two months"):
        domain.check_visit_date(dt.date(2026, 9, 1), today)
    # 00:30 WIB on the 1st is already the new month even though UTC is still on the 30th
    assert domain.today_wib(dt.datetime(2026, 11, 30, 17, 30, tzinfo=dt.UTC)) == dt.date(2026, 12, 1)


def test_deadlines_and_holidays_come_from_the_environment(monkeypatch):
    from services.intake.config import IntakeSettings

    monkeypatch.setenv("SINERGI_INTAKE_DEADLINE_DAYS", '{"village": 2, "kecamatan": 4, "kabupaten": 6, "agency": 10}')
    monkeypatch.setenv("SINERGI_INTAKE_HOLIDAYS", '["2026-12-25"]')
    monkeypatch.setenv("SINERGI_INTAKE_VISIT_PROGRAMS", '["kamalia_merekah"]')
    cfg = IntakeSettings(_env_file=None)
    assert cfg.days(CaseLevel.village) == 2 and cfg.days(CaseLevel.agency) == 10
    assert cfg.holiday_set == frozenset({dt.date(2026, 12, 25)}) and cfg.visit_programs == ["kamalia_merekah"]
    for bad in ('{"desa": 2}', '{"village": -1}'):
        monkeypatch.setenv("SINERGI_INTAKE_DEADLINE_DAYS", bad)
        with pytest.raises(ValueError):
            IntakeSettings(_env_file=None)


def _reported(**kw) -> domain.Reported:
    base = {"nik": None, "name": None, "no_kk": None, "address": "", "village_code": "3317012001",
            "programme": None}
    return domain.Reported(**{**base, **kw})


def _person(nik: str) -> PersonSummary:
    return PersonSummary(nik=nik, no_kk="3317010101200001", name="Siti", sex="F", birth_date="1960-07-01",
                         village_code="3317012001", enrolments=[EnrolmentSummary(
                             programme_identifier="pkh", enrolment_status="active", status_change_date="2026-01-01")])


def test_what_the_registry_lookup_means_for_a_new_case():
    nik = "3317014107600001"  # born 1960-07-01, F
    ids = {"case_id": uuid.uuid4(), "proposal_id": uuid.uuid4(), "submitted_by": "fo"}
    found = domain.finding(_reported(nik=nik), LookupReply(found=True, people=[_person(nik)]), **ids)
    assert found.person_status is PersonStatus.found and found.programs[0]["programme_identifier"] == "pkh"
    missing = LookupReply(found=False)
    assert domain.finding(_reported(nik=nik), missing, **ids).person_status is PersonStatus.not_found
    proposed = domain.finding(_reported(nik=nik, name="Siti", no_kk="3317010101200001"), missing, **ids)
    assert proposed.person_status is PersonStatus.proposed and proposed.proposal is not None
    p = proposed.proposal
    assert (p.proposal_id, p.case_id, p.sex, p.birth_date) == (ids["proposal_id"], ids["case_id"], "F",
                                                               dt.date(1960, 7, 1))
    by_name = domain.finding(_reported(name="Siti"), LookupReply(found=True, people=[_person(nik)]), **ids)
    assert by_name.person_status is PersonStatus.possible_match and by_name.matches[0]["nik"] == nik
    assert domain.finding(_reported(name="Siti"), missing, **ids).person_status is PersonStatus.not_found


def test_a_step_is_decided_before_anything_is_written():
    now = wib(2026, 11, 23, 10)

    def deadline(level):
        return now + dt.timedelta(days={"kecamatan": 5, "kabupaten": 7, "agency": 14}[level.value])
    plan = functools.partial(domain.plan_step, now=now, deadline=deadline)
    assert plan("handle", CaseLevel.village, None).status is CaseStatus.in_progress
    answered = plan("answer", CaseLevel.village, None, answer="Sedang diperiksa")
    assert answered.status is CaseStatus.answered and answered.note == "Sedang diperiksa"
    assert answered.changes == {"answer": "Sedang diperiksa"}
    with pytest.raises(RuleError) as e:
        plan("answer", CaseLevel.village, None)
    assert e.value.status == 422
    referred = plan("refer", CaseLevel.kabupaten, None, programme="pkh")
    assert (referred.level, referred.from_level, referred.status) == (CaseLevel.agency, CaseLevel.kabupaten,
                                                                      CaseStatus.open)
    assert referred.changes == {"due_at": now + dt.timedelta(days=14), "programme_identifier": "pkh"}
    # the case's own program serves a referral to the agency when none is named
    assert plan("refer", CaseLevel.kabupaten, "kip").changes["programme_identifier"] == "kip"
    resolved = plan("resolve", CaseLevel.agency, "pkh", outcome="not_eligible")
    assert resolved.status is CaseStatus.resolved and resolved.changes == {"outcome": "not_eligible",
                                                                            "resolved_at": now}
    with pytest.raises(RuleError, match="unknown action"):
        plan("delete", CaseLevel.village, None)
