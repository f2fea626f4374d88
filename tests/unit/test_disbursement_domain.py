"""Disbursement rules without I/O: program rules, funding plans, ids, KUBE sizing and aging."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import given, strategies as st
from pydantic import ValidationError

from contracts.disbursement import PaymentInstruction
from services.disbursement import cycles, domain, kube
from services.disbursement.config import pseudonym
from services.disbursement.domain import Budget, ProgramRules

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


def test_hand_built_channel_payload_is_a_valid_payment_instruction():
    ctx = cycles.Context("pkh", "2026-11", ProgramRules.model_validate(rules()), 600_000, 2026)
    iid = domain.instruction_id("pkh", "2026-11", "3317014107600001")
    raw = cycles._instruction_payload(iid, ctx, "3317014107600001", "3317010101100001", "3317012001",
                                      dt.datetime.now(dt.timezone.utc).isoformat())
    pi = PaymentInstruction.model_validate_json(raw)
    assert pi.instruction_id == iid and pi.amount == 600_000 and pi.idempotency_key == "pkh/2026-11/3317014107600001"


def test_pseudonym_is_keyed():
    assert pseudonym(b"k1", "3317014107600001") != pseudonym(b"k2", "3317014107600001")
    assert len(pseudonym(b"k1", "3317014107600001")) == 64


def test_kube_loan_sizing_and_arrears_aging():
    assert kube.size_loan(need=3_000_000, monthly_capacity=200_000, term_months=10, fund_balance=10**9) == \
        (2_000_000, 200_000)  # capacity limits
    assert kube.size_loan(1_000_000, 500_000, 10, 600_000) == (600_000, 60_000)  # fund limits
    assert kube.size_loan(1_000_001, 500_000, 3, 10**9) == (1_000_001, 333_334)  # rounded up
    first = dt.date(2026, 2, 15)
    assert kube.overdue(300, 100, 0, first, 3, dt.date(2026, 2, 15)) == (0, 0)
    assert kube.overdue(300, 100, 0, first, 3, dt.date(2026, 3, 20)) == (200, 33)
    assert kube.overdue(300, 100, 100, first, 3, dt.date(2026, 3, 20)) == (100, 5)
    assert kube.overdue(300, 100, 300, first, 3, dt.date(2027, 1, 1)) == (0, 0)
    assert [kube.bucket(d) for d in (0, 1, 30, 31, 61, 91)] == ["current", "1-30", "1-30", "31-60", "61-90", ">90"]
    assert kube.add_months(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)
