"""Reporting's pure rules: periods, percentages, medians, enrolment deltas, event adapters."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from contracts.disbursement import AllocationSet, FundingLine, KubeLoanIssued, SettlementRecorded
from contracts.envelope import envelope
from contracts.intake import CaseRegistered, CompanionAssigned
from services.reporting import domain
from services.reporting.adapters import ADAPTERS, Pseudonyms
from services.reporting.facts import AllocationFact, Assignment, EnrolmentFact, KubeFlow, LifeFact, PaymentFact

Row = domain.EnrolmentRow


@pytest.mark.parametrize("value,expected", [("2026-03", "2026-03"), (" 2026-12 ", "2026-12")])
def test_parse_period_accepts_months(value, expected):
    assert domain.parse_period(value) == expected


@pytest.mark.parametrize("value,fragment", [("2026-00", "month 00"), ("2026-13", "month 13"), ("26-03", "YYYY-MM"),
                                            ("2026/03", "YYYY-MM"), ("1999-01", "year 1999"), (None, "required")])
def test_parse_period_says_what_is_wrong(value, fragment):
    with pytest.raises(domain.BadPeriod, match=fragment):
        domain.parse_period(value)


def test_period_arithmetic():
    assert domain.period_end("2026-02") == dt.date(2026, 2, 28)
    assert domain.period_end("2024-02") == dt.date(2024, 2, 29)
    assert domain.period_end("2026-12") == dt.date(2026, 12, 31)
    assert domain.periods_back("2026-02", 4) == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert domain.month_bit("2026-01") == 1 and domain.month_bit("2026-12") == 2048


def test_percent_is_the_village_budget_arithmetic():
    assert domain.percent(399_976_000, 859_588_000) == 46.53
    assert domain.percent(2, 3) == 66.67       # half up
    assert domain.percent(1, 8) == 12.5
    assert domain.percent(5, 0) is None


@pytest.mark.parametrize("hist,median", [({}, None), ({7: 1}, 7), ({3: 1, 10: 1, 38: 1}, 10),
                                         ({1: 2, 5: 2}, 3), ({2: 3, 9: 1}, 2), ({1: 1, 4: 1, 6: 1, 100: 1}, 5)])
def test_median_from_histogram(hist, median):
    assert domain.median_from_histogram(hist) == median


def test_enrolment_changes_move_people_between_statuses_and_villages_in_the_month_of_the_change():
    A, B = "3317012001", "3317012002"
    facts = [EnrolmentFact("pkh", "x1", A, "active", dt.date(2026, 1, 3)),
             EnrolmentFact("pkh", "x1", A, "exited", dt.date(2026, 3, 9)),
             EnrolmentFact("pkh", "x2", B, "active", dt.date(2026, 4, 1)),    # moved from A (state below)
             EnrolmentFact("pkh", "x3", A, "exited", dt.date(2025, 1, 1))]    # older than what is known: ignored
    state = {("pkh", "x2"): Row(A, "active", dt.date(2025, 5, 1)), ("pkh", "x3"): Row(A, "active", dt.date(2025, 6, 1))}
    now, flow, exits = domain.people_changes(facts, state, {})
    assert {k: v for k, v in now.items() if v} == {("pkh", A, "exited"): 1, ("pkh", A, "active"): -1,
                                                   ("pkh", B, "active"): 1}
    assert {k: v for k, v in flow.items() if v} == {
        ("pkh", A, "2026-01", "active"): 1, ("pkh", A, "2026-03", "active"): -1, ("pkh", A, "2026-03", "exited"): 1,
        ("pkh", A, "2026-04", "active"): -1, ("pkh", B, "2026-04", "active"): 1}
    assert state[("pkh", "x2")] == (B, "active", dt.date(2026, 4, 1), None, None)
    assert state[("pkh", "x3")] == (A, "active", dt.date(2025, 6, 1), None, None)
    assert not +exits  # an agency's plain `exited` gives no reason


def test_an_agencys_death_the_registry_holds_as_disputed_is_no_exit_and_alive_keeps_it_so():
    """PKH reports a death while Kamalia has the person active: the registry says `disputed`
    (held, not gone); the verifier then finds them alive. No exit is counted at any point; PKH's
    own record stays `deceased` until PKH corrects it."""
    rows = {("pkh", "p"): Row(A, "active", dt.date(2025, 1, 1)),
            ("kamalia_merekah", "p"): Row(A, "active", dt.date(2025, 6, 1))}
    lives: dict = {}
    now, _flow, exits = domain.people_changes([
        EnrolmentFact("pkh", "p", A, "deceased", dt.date(2026, 3, 1)),
        LifeFact("p", A, "disputed", dt.date(2026, 3, 1))], rows, lives)
    assert {k: v for k, v in now.items() if v} == {("pkh", A, "active"): -1, ("kamalia_merekah", A, "active"): -1,
                                                   ("pkh", A, "disputed"): 1, ("kamalia_merekah", A, "disputed"): 1}
    assert not +exits
    now, _flow, exits = domain.people_changes([LifeFact("p", A, "alive", dt.date(2026, 3, 20))], rows, lives)
    assert {k: v for k, v in now.items() if v} == {("pkh", A, "disputed"): -1, ("pkh", A, "deceased"): 1,
                                                   ("kamalia_merekah", A, "disputed"): -1,
                                                   ("kamalia_merekah", A, "active"): 1}
    assert not +exits and not -exits


A, B = "3317012001", "3317012002"


def test_a_life_status_takes_a_person_out_of_every_program_and_counts_one_exit_per_program():
    """PKH reports a death; Kamalia still has them active: both stop counting them as active,
    each counts one exit by death, in the month of the death, whichever report came first."""
    rows = {("pkh", "p"): Row(A, "active", dt.date(2025, 1, 1)),
            ("kamalia_merekah", "p"): Row(A, "active", dt.date(2025, 6, 1)),
            ("pkh", "q"): Row(B, "active", dt.date(2025, 1, 1))}
    lives: dict = {}
    now, flow, exits = domain.people_changes([
        EnrolmentFact("pkh", "p", A, "deceased", dt.date(2026, 3, 10)),
        LifeFact("p", A, "deceased", dt.date(2026, 3, 10))], rows, lives)
    assert {k: v for k, v in now.items() if v} == {("pkh", A, "active"): -1, ("kamalia_merekah", A, "active"): -1,
                                                   ("pkh", A, "deceased"): 1, ("kamalia_merekah", A, "deceased"): 1}
    assert {k: v for k, v in exits.items() if v} == {("pkh", A, "2026-03", "deceased"): 1,
                                                     ("kamalia_merekah", A, "2026-03", "deceased"): 1}
    assert flow[("kamalia_merekah", A, "2026-03", "active")] == -1
    assert lives["p"] == (domain.LifeRow("deceased", dt.date(2026, 3, 10)))
    # a later report of Kamalia's enrolment `active` does not make a dead person active again
    now, _flow, exits = domain.people_changes(
        [EnrolmentFact("kamalia_merekah", "p", A, "active", dt.date(2026, 4, 1))], rows, lives)
    assert {k: v for k, v in now.items() if v} == {} and not +exits


def test_disputed_is_held_not_an_exit_until_decided_and_an_overturned_exit_is_taken_back():
    rows = {("pkh", "p"): Row(A, "active", dt.date(2025, 1, 1))}
    lives: dict = {}
    _now, flow, exits = domain.people_changes([LifeFact("p", A, "disputed", dt.date(2026, 3, 5))], rows, lives)
    # the registry's `disputed`, then `moved_out` once a verifier decided
    assert flow[("pkh", A, "2026-03", "disputed")] == 1 and flow[("pkh", A, "2026-03", "active")] == -1
    assert not +exits
    _now, _flow, exits = domain.people_changes([LifeFact("p", A, "moved_out", dt.date(2026, 3, 20))], rows, lives)
    assert {k: v for k, v in exits.items() if v} == {("pkh", A, "2026-03", "moved_out"): 1}
    assert rows[("pkh", "p")].exit_reason == "moved_out"
    # the verifier finds them at home in May: the March exit did not happen
    now, flow, exits = domain.people_changes([LifeFact("p", A, "alive", dt.date(2026, 5, 2))], rows, lives)
    assert {k: v for k, v in exits.items() if v} == {("pkh", A, "2026-03", "moved_out"): -1}
    assert {k: v for k, v in now.items() if v} == {("pkh", A, "moved_out"): -1, ("pkh", A, "active"): 1}
    assert flow[("pkh", A, "2026-05", "active")] == 1
    assert rows[("pkh", "p")] == Row(A, "active", dt.date(2025, 1, 1))


def test_a_life_status_before_the_enrolment_is_known_applies_to_it_and_is_no_exit():
    rows: dict = {}
    lives: dict = {}
    now, _flow, exits = domain.people_changes([LifeFact("p", A, "ineligible", dt.date(2026, 2, 1)),
                                               EnrolmentFact("pkh", "p", A, "active", dt.date(2026, 2, 3))],
                                              rows, lives)
    assert {k: v for k, v in now.items() if v} == {("pkh", A, "ineligible"): 1} and not +exits


def test_pseudonyms_are_keyed_and_hide_the_nik():
    one, two = Pseudonyms("one"), Pseudonyms("two")
    a, b = one("3317014107600001"), two("3317014107600001")
    assert a != b and len(a) == 32 and "3317014107600001" not in a
    assert two("3317014107600001") == b and Pseudonyms("two")("3317014107600001") == b


def facts_of(env):
    return ADAPTERS[env.event_type][1](env, Pseudonyms("test"))


def _env(event, day="2026-03-31T20:00:00+00:00"):
    return envelope(event, event.domain, occurred_at=dt.datetime.fromisoformat(day))


def test_settlements_become_one_payment_per_funding_line_and_failed_ones_nothing():
    lines = [FundingLine(source="apbn", allocation_id=uuid.uuid4(), amount=400_000),
             FundingLine(source="apbd_kabupaten", allocation_id=uuid.uuid4(), amount=200_000)]
    paid = SettlementRecorded(chain_seq=1, prev_hash="0" * 64, instruction_id=uuid.uuid4(), pseudonym="ab" * 32,
                              programme_identifier="pkh", period="2026-03", status="paid", amount=600_000,
                              funding=lines, settled_at=dt.datetime(2026, 3, 25, tzinfo=dt.UTC))
    assert facts_of(_env(paid)) == [PaymentFact("pkh", "ab" * 32, "", "apbn", 400_000, "2026-03", 1),
                                    PaymentFact("pkh", "ab" * 32, "", "apbd_kabupaten", 200_000, "2026-03", 0)]
    failed = paid.model_copy(update={"status": "failed"})
    assert facts_of(_env(failed)) == []


def test_case_dates_are_days_in_wib_and_assignments_drop_the_nik():
    reg = CaseRegistered(case_id=uuid.uuid4(), ticket="PSK-1", kind="complaint", category="other", channel="phone",
                         village_code="3317012001", level="village", status="open", person_status="found",
                         due_at=dt.datetime(2026, 4, 14, 10, tzinfo=dt.UTC), actor="s")
    (fact,) = facts_of(_env(reg))  # 20:00 UTC on 31 March is 03:00 WIB on 1 April
    assert (fact.received_on, fact.due_on, fact.level) == (dt.date(2026, 4, 1), dt.date(2026, 4, 14), "village")
    a = CompanionAssigned(assignment_id=uuid.uuid4(), companion="pdp-1", nik="3317014107600001",
                          village_code="3317012001", actor="c")
    (fact,) = facts_of(_env(a))
    assert fact == Assignment(str(a.assignment_id), "pdp-1", "3317012001", True, "2026-04")
    assert "3317014107600001" not in repr(fact)


def test_kube_loans_fall_due_monthly_until_the_principal_is_covered():
    assert domain.instalment_schedule(5_000, 2_000, 10, dt.date(2026, 11, 30)) == [
        ("2026-11", 2_000), ("2026-12", 2_000), ("2027-01", 1_000)]
    assert domain.instalment_schedule(10_000, 1_000, 3, dt.date(2026, 1, 5)) == [
        ("2026-01", 1_000), ("2026-02", 1_000), ("2026-03", 8_000)]
    loan = KubeLoanIssued(chain_seq=1, prev_hash="0" * 64, loan_id=uuid.uuid4(), group_id=uuid.uuid4(), member="m",
                          principal=3_000, instalment=1_500, term_months=2, first_due=dt.date(2026, 5, 1))
    facts = facts_of(_env(loan, "2026-04-10T03:00:00+00:00"))
    g = str(loan.group_id)
    assert facts == [KubeFlow(g, "2026-04", disbursed=3_000), KubeFlow(g, "2026-05", due=1_500),
                     KubeFlow(g, "2026-06", due=1_500)]


def test_allocation_amendments_add_their_difference():
    a = AllocationSet(chain_seq=1, prev_hash="0" * 64, allocation_id=uuid.uuid4(), source="apbn",
                      programme_identifier="pkh", fiscal_year=2026, ceiling=10_000, previous_ceiling=6_000,
                      reason="perubahan", set_by="pm")
    assert facts_of(_env(a)) == [AllocationFact("apbn", "pkh", 2026, 4_000)]


def test_months_paid_counts_each_payee_once_a_month_in_the_village_of_the_first_payment():
    A, B = "3317012001", "3317012002"
    pays = [PaymentFact("pkh", "x1", A, "apbn", 400, "2026-03", 1),
            PaymentFact("pkh", "x1", A, "apbd_kabupaten", 200, "2026-03", 0),  # the same payment, second source
            PaymentFact("pkh", "x1", B, "apbn", 600, "2026-03", 1),            # paid again that month: no one new
            PaymentFact("pkh", "x1", B, "apbn", 600, "2026-04", 1),
            PaymentFact("pkh", "x2", B, "apbn", 600, "2026-02", 1),            # February was paid before
            PaymentFact("pkh", "x2", B, "apbn", 600, "2025-02", 1)]            # another year: its own mask
    masks = {("pkh", "x2", 2026): 0b10}
    newly = domain.months_paid(pays, masks)
    assert newly == {("pkh", A, "2026-03"): 1, ("pkh", B, "2026-04"): 1, ("pkh", B, "2025-02"): 1}
    assert masks == {("pkh", "x1", 2026): 0b1100, ("pkh", "x2", 2026): 0b10, ("pkh", "x2", 2025): 0b10}
