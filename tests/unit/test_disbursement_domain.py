"""Disbursement rules without I/O: program rules, funding plans, ids, what a settlement does,
KUBE eligibility, loan sizing, repayment schedules and aging."""
from __future__ import annotations

import datetime as dt
import itertools
import uuid

import pytest
from hypothesis import given, strategies as st
from pydantic import ValidationError

from contracts.channel import DisburseRequest
from contracts.disbursement import SettlementStatus
from services.disbursement import disburse, domain
from services.disbursement.config import pseudonym
from services.disbursement.domain import Budget, ProgramRules, Refused, SettlementRejected

A, B = uuid.uuid4(), uuid.uuid4()


def rules(**kw) -> dict:
    return {"name": "x", "amount": {"kind": "fixed", "amount": 100}, "funding": [{"source": "csr"}]} | kw


def test_program_rules_say_what_is_wrong():
    ProgramRules.model_validate(rules())
    with pytest.raises(ValidationError, match="summing to 100"):
        ProgramRules.model_validate(rules(funding_mode="split", funding=[{"source": "csr", "share": 50},
                                                                        {"source": "apbn", "share": 40}]))
    with pytest.raises(ValidationError, match="once"):
        ProgramRules.model_validate(rules(funding=[{"source": "csr"}, {"source": "csr"}]))
    with pytest.raises(ValidationError, match="regency"):
        ProgramRules.model_validate(rules(amount={"kind": "poverty_line"}))
    with pytest.raises(ValidationError):
        ProgramRules.model_validate(rules(funding=[{"source": "lottery"}]))


def test_order_plan_fills_sources_in_order_and_never_beyond_what_remains():
    t = domain.plan(100, "order", [Budget("csr", A, 250), Budget("apbn", B, 1000)], 10)
    assert [(x.count, x.lines) for x in t] == [(2, (("csr", A, 100),)), (8, (("apbn", B, 100),))]
    assert domain.plan(100, "order", [Budget("csr", None, 0), Budget("apbn", B, 99)], 5) == []


def test_split_plan_shares_each_payment_and_rounding_goes_to_the_first():
    assert domain.split_amounts(101, [70, 30]) == [71, 30]
    t = domain.plan(101, "split", [Budget("csr", A, 710, 70), Budget("apbn", B, 10_000, 30)], 50)
    assert t[0].count == 10 and t[0].lines == (("csr", A, 71), ("apbn", B, 30))
    # a source without an allocation blocks a split program entirely
    assert domain.plan(100, "split", [Budget("csr", A, 10**6, 70), Budget("apbn", None, 0, 30)], 5) == []


@given(amount=st.integers(1, 10**7), remaining=st.lists(st.integers(-5, 10**9), min_size=1, max_size=4),
       wanted=st.integers(0, 10**5), split=st.booleans())
def test_a_plan_never_spends_more_than_any_allocation_has(amount, remaining, wanted, split):
    ids = [uuid.uuid4() for _ in remaining]
    shares = [100 // len(remaining)] * len(remaining)
    shares[0] += 100 - sum(shares)
    budgets = [Budget(f"s{i}", ids[i], r, shares[i]) for i, r in enumerate(remaining)]
    plan = domain.plan(amount, "split" if split else "order", budgets, wanted)
    assert sum(t.count for t in plan) <= wanted
    spent: dict = {}
    for t in plan:
        assert sum(a for _s, _i, a in t.lines) == amount  # every payment fully funded
        for _s, aid, a in t.lines:
            spent[aid] = spent.get(aid, 0) + a * t.count
    for b in budgets:
        assert spent.get(b.allocation_id, 0) <= max(b.remaining, 0)


def test_ids_are_deterministic_idempotency_keys():
    assert domain.instruction_id("pkh", "2026-11", "3317014107600001") == \
        domain.instruction_id("pkh", "2026-11", "3317014107600001")
    assert domain.instruction_id("pkh", "2026-11", "3317014107600001") != \
        domain.instruction_id("pkh", "2026-12", "3317014107600001")
    assert domain.min_birth_date("2026-11", 60) == dt.date(1966, 11, 1)


def test_hand_built_channel_batch_is_a_valid_disburse_request():
    now = dt.datetime.now(dt.UTC).isoformat()
    iid = domain.instruction_id("pkh", "2026-T4", "3317014107600001")
    payee = {"name": 'Mbah "Sri" Wahyuni', "financial_address": {"kind": "bank_account", "bank_code": "002",
                                                                  "account_number": "0123456789"},
             "proxy": {"name": "Budi", "nik": None, "relationship": "anak"}}
    texts = [(iid, disburse.item(iid, "pkh", "2026-T4", "3317014107600001", "3317010101100001", "3317012001",
                                 600_000, payee, now))]
    texts += [(i, disburse.item(i, "pkh", "2026-T4", "3317014107600002", "3317010101100001", "3317012001",
                                600_000, None, now, retry_of=iid)) for i in [uuid.uuid4() for _ in range(600)]]
    rows = disburse.rows("channel.bank.instructions", "pkh", texts)
    assert len(rows) == 2  # 500 + 101
    req = DisburseRequest.model_validate_json(rows[0]["payload"])
    first = req.disbursements[0]
    assert rows[0]["id"] == req.transaction_id and len(req.disbursements) == 500
    assert first.disbursement_id == iid and first.amount == 600_000 and first.reference_id == "pkh/2026-T4/3317014107600001"
    assert first.payee_name == 'Mbah "Sri" Wahyuni' and first.payee_fa == "account:0123456789@002"
    assert first.proxy is not None and first.proxy.relationship == "anak"
    assert req.disbursements[1].payee_fa is None and req.disbursements[1].retry_of == iid
    assert len(DisburseRequest.model_validate_json(rows[1]["payload"]).disbursements) == 101


def test_cycle_keys_follow_the_frequency():
    assert domain.check_cycle_key("2026-11", "monthly") == "2026-11"
    assert domain.check_cycle_key("2026-T4", "quarterly") == "2026-T4"
    assert domain.check_cycle_key("2026-11-banjir", "one_off") == "2026-11-banjir"
    for key, freq in (("2026-T4", "monthly"), ("2026-11", "quarterly"), ("2026-Q4", "quarterly"),
                      ("2026-T5", "quarterly"), ("2026-13-x", "one_off"), ("2026-13", None)):
        with pytest.raises(ValueError):
            domain.check_cycle_key(key, freq)
    assert [domain.cycle_month(k) for k in ("2026-T1", "2026-T4", "2026-11-banjir", "2026-02")] == \
        ["2026-01", "2026-10", "2026-11", "2026-02"]
    assert domain.min_birth_date("2026-T4", 60) == dt.date(1966, 10, 1)


def test_pseudonym_is_keyed():
    assert pseudonym(b"k1", "3317014107600001") != pseudonym(b"k2", "3317014107600001")
    assert len(pseudonym(b"k1", "3317014107600001")) == 64


def test_kube_loan_sizing_and_arrears_aging():
    assert domain.size_loan(need=3_000_000, monthly_capacity=200_000, term_months=10, fund_balance=10**9) == \
        (2_000_000, 200_000)  # capacity limits
    assert domain.size_loan(1_000_000, 500_000, 10, 600_000) == (600_000, 60_000)  # fund limits
    assert domain.size_loan(1_000_001, 500_000, 3, 10**9) == (1_000_001, 333_334)  # rounded up
    first = dt.date(2026, 2, 15)
    assert domain.overdue(300, 100, 0, first, 3, dt.date(2026, 2, 15)) == (0, 0)
    assert domain.overdue(300, 100, 0, first, 3, dt.date(2026, 3, 20)) == (200, 33)
    assert domain.overdue(300, 100, 100, first, 3, dt.date(2026, 3, 20)) == (100, 5)
    assert domain.overdue(300, 100, 300, first, 3, dt.date(2027, 1, 1)) == (0, 0)
    assert [domain.bucket(d) for d in (0, 1, 30, 31, 61, 91)] == ["current", "1-30", "1-30", "31-60", "61-90", ">90"]
    assert domain.add_months(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)
    assert domain.add_months(dt.date(2028, 1, 31), 1) == dt.date(2028, 2, 29)
    assert domain.add_months(dt.date(2026, 1, 15), -1) == dt.date(2025, 12, 15)


# --- settlements ------------------------------------------------------------------------------

IID = uuid.UUID(int=7)


def test_a_settlement_applies_to_an_issued_instruction_only():
    paid, failed = SettlementStatus.paid, SettlementStatus.failed
    assert domain.settlement_outcome("issued", paid, None, IID) == "paid"
    assert domain.settlement_outcome("issued", failed, "account closed", IID) == "failed"
    assert domain.settlement_outcome("paid", paid, None, IID) == "duplicate"
    assert domain.settlement_outcome("failed", failed, "again", IID) == "duplicate"
    assert domain.settlement_outcome(None, paid, None, IID).code == "rjct.instruction.unknown"
    assert domain.settlement_outcome("paid", failed, "late", IID).code == "rjct.settlement.conflict"
    assert domain.settlement_outcome("issued", failed, None, IID).code == "rjct.settlement.reason_missing"
    assert domain.settlement_outcome("issued", failed, "", IID).code == "rjct.settlement.reason_missing"
    wrong = domain.settlement_outcome("paid", failed, "forged", IID, issued_to="bank", reported_by="pos")
    assert wrong.code == "rjct.settlement.wrong_channel"  # before duplicate/conflict: another channel's word counts for nothing
    assert domain.settlement_outcome("issued", paid, None, IID, issued_to="bank", reported_by="bank") == "paid"


@given(reports=st.lists(st.tuples(st.sampled_from(list(SettlementStatus)), st.sampled_from([None, "", "closed"])),
                        max_size=8))
def test_an_instruction_is_settled_at_most_once_whatever_the_channel_reports(reports):
    """Reports folded in order, as budgets.settle does within a batch: at most one is applied,
    and every later one is a duplicate that agrees or a rejection, never a second change."""
    current, applied = "issued", []
    for status, reason in reports:
        out = domain.settlement_outcome(current, status, reason, IID)
        if isinstance(out, SettlementRejected):
            assert out.code.startswith("rjct.") and out.reason
        elif out == "duplicate":
            assert current == status.value
        else:
            assert current == "issued" and out == status.value
            applied.append(out)
            current = out
    assert len(applied) <= 1


# --- KUBE ---------------------------------------------------------------------------------------

def test_loan_eligibility_says_which_condition_fails():
    months = domain.saving_months(dt.date(2026, 5, 2))
    assert months == ["2026-02", "2026-03", "2026-04"]
    nik = "3317014107600001"
    ok = domain.loan_eligibility(nik, months, months, [[nik], [nik], [nik, "x"], ["x"]])
    assert ok.eligible and ok.attended == 3 and ok.meetings == 4  # 75 % is enough
    no = domain.loan_eligibility(nik, months, ["2026-04"], [[nik], ["x"], ["x"]])
    assert not no.eligible and "2026-02, 2026-03" in no.reasons[0] and "attended 1 of 3" in no.reasons[1]
    assert "no group meetings" in domain.loan_eligibility(nik, months, months, []).reasons[0]


@given(need=st.integers(1, 10**9), capacity=st.integers(1, 10**7), term=st.integers(1, 60),
       balance=st.integers(-10**6, 10**10))
def test_a_loan_is_never_more_than_needed_repayable_or_held(need, capacity, term, balance):
    principal, instalment = domain.size_loan(need, capacity, term, balance)
    assert 0 <= principal <= min(need, capacity * term, max(balance, 0))
    if principal:
        # the smallest instalment that repays the principal within the term
        assert instalment * term >= principal > (instalment - 1) * term
        assert instalment <= capacity
        plan = domain.plan_loan(need, capacity, term, balance)
        limit = {"need": need, "capacity": capacity * term, "fund balance": balance}[plan.limited_by]
        assert plan.principal == principal == limit
    else:
        with pytest.raises(Refused):
            domain.plan_loan(need, capacity, term, balance)


@given(first=st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)), term=st.integers(1, 60))
def test_the_repayment_schedule_is_monthly_and_never_skips_a_month(first, term):
    dues = domain.repayment_schedule(first, term)
    assert len(dues) == term and dues[0] == first
    for a, b in itertools.pairwise(dues):
        assert (b.year * 12 + b.month) - (a.year * 12 + a.month) == 1
        assert b.day == min(first.day, b.day) and b > a


@given(principal=st.integers(1, 10**8), term=st.integers(1, 36), paid_share=st.floats(0, 1),
       first=st.dates(dt.date(2024, 1, 1), dt.date(2027, 12, 31)), days=st.integers(0, 2000))
def test_arrears_never_exceed_what_is_outstanding_and_vanish_when_repaid(principal, term, paid_share, first, days):
    instalment = -(-principal // term)
    repaid = int(principal * paid_share)
    as_of = first + dt.timedelta(days=days)
    late, late_days = domain.overdue(principal, instalment, repaid, first, term, as_of)
    assert 0 <= late <= principal - repaid
    assert (late == 0) == (late_days == 0) and late_days <= days
    assert domain.overdue(principal, instalment, principal, first, term, as_of) == (0, 0)
    assert domain.bucket(late_days) in {name for _l, name in domain.AGING} | {domain.OLDEST_BUCKET}


def test_arrears_are_summed_per_bucket():
    first = dt.date(2026, 6, 2)
    loans = [domain.LoanState(uuid.UUID(int=1), "p1", 1_800_000, 150_000, 150_000, first, 12),
             domain.LoanState(uuid.UUID(int=2), "p2", 300_000, 100_000, 300_000, first, 3)]
    rows, buckets = domain.arrears(loans, dt.date(2026, 8, 20))
    assert rows[0]["overdue"] == 300_000 and rows[0]["days_overdue"] == 49 and rows[0]["bucket"] == "31-60"
    assert rows[1]["overdue"] == 0 and rows[1]["bucket"] == "current"
    assert buckets == {"current": 0, "1-30": 0, "31-60": 300_000, "61-90": 0, ">90": 0}


def test_an_instalment_must_be_within_what_is_outstanding():
    domain.check_instalment(1, 1)
    for amount in (0, -5, 2):
        with pytest.raises(Refused) as e:
            domain.check_instalment(amount, 1)
        assert e.value.status == 422


# --- life status (issue 17) ---------------------------------------------------------------------

def test_a_cycle_is_paid_when_the_status_allowed_payment_on_its_first_day():
    d = dt.date
    assert domain.period_start("2026-11") == d(2026, 11, 1)
    assert domain.period_start("2026-T4") == d(2026, 10, 1) and domain.period_start("2026-11-banjir") == d(2026, 11, 1)
    nov, dec = d(2026, 11, 1), d(2026, 12, 1)
    assert domain.payable(None, None, None, None, nov, False)  # never announced: alive
    # a death on 10 November pays November, not December; on 1 November neither
    assert domain.payable("deceased", d(2026, 11, 10), None, None, nov, False)
    assert not domain.payable("deceased", d(2026, 11, 10), None, None, dec, False)
    assert not domain.payable("deceased", d(2026, 11, 1), None, None, nov, False)
    for status in ("moved_out", "ineligible", "disputed"):
        assert not domain.payable(status, nov, None, None, nov, True)  # arrears never pay a stopped person
    # alive after a hold from 1 September to 20 October: September and October were held
    win = (d(2026, 9, 1), d(2026, 10, 20))
    assert not domain.payable("alive", d(2026, 10, 20), *win, d(2026, 10, 1), False)
    assert domain.payable("alive", d(2026, 10, 20), *win, d(2026, 10, 1), True)
    assert domain.payable("alive", d(2026, 10, 20), *win, nov, False)
    assert domain.payable("alive", d(2026, 10, 20), *win, d(2026, 8, 1), False)


def test_the_stopping_statuses_are_the_registrys():
    from contracts.registry import LifeStatus
    assert {s.value for s in LifeStatus if s.stops_payment} == domain.STOPPING


def test_a_cancelled_instruction_is_never_booked_paid():
    iid = uuid.uuid4()
    out = domain.settlement_outcome("cancelled", SettlementStatus.paid, None, iid)
    assert isinstance(out, SettlementRejected) and out.code == "rjct.instruction.cancelled"
    # the channel's refusal agrees with the cancellation: nothing to change
    assert domain.settlement_outcome("cancelled", SettlementStatus.failed, "rjct.cancelled", iid) == "duplicate"
    assert domain.cancel_code("deceased") == "cncl.payee.deceased"
    assert domain.cancel_code("disputed") == "cncl.payment.held"


def test_arrears_are_off_unless_a_program_says_so_and_have_ids_of_their_own():
    assert ProgramRules.model_validate(rules()).pays_arrears is False
    assert ProgramRules.model_validate(rules(pays_arrears=True)).pays_arrears is True
    a = domain.arrears_id("pkh", "2026-09", "3317010101500001", "2026-11")
    assert a != domain.instruction_id("pkh", "2026-09", "3317010101500001")
    assert a == domain.arrears_id("pkh", "2026-09", "3317010101500001", "2026-11")


def test_a_cancellation_to_the_channel_is_its_own_shape():
    from contracts.channel import DisburseCancel
    msg = DisburseCancel.model_validate({"transaction_id": str(A), "payer_fa": "program:pkh@sinergi",
                                         "cancellations": [{"disbursement_id": str(B),
                                                            "status_reason_code": "cncl.payee.deceased"}]})
    assert msg.cancellations[0].disbursement_id == B
    with pytest.raises(ValidationError):  # never mistaken for a batch to pay
        DisburseRequest.model_validate(msg.model_dump(mode="json"))
