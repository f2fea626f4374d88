"""Intake rules without servers: tickets, working-day deadlines, who may act, visit dates."""
from __future__ import annotations

import datetime as dt

import pytest

from contracts.intake import CaseLevel, CaseStatus
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
    assert domain.add_working_days(start.astimezone(dt.timezone.utc), days) == due


def test_weekday_is_decided_in_wib_not_utc():
    # Friday 20:00 UTC is already Saturday 03:00 in Rembang: due Wednesday 03:00 WIB
    fri_utc = dt.datetime(2026, 11, 27, 20, tzinfo=dt.timezone.utc)
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
    assert domain.today_wib(dt.datetime(2026, 11, 30, 17, 30, tzinfo=dt.timezone.utc)) == dt.date(2026, 12, 1)


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
