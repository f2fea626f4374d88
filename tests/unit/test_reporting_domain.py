"""Reporting's pure rules: periods, percentages, medians, enrolment deltas, event adapters."""
from __future__ import annotations

import datetime as dt

import pytest

from services.reporting import domain
from services.reporting.adapters import ADAPTERS
from services.reporting.facts import EnrolmentFact, KubeFlow, PaymentFact


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


def test_enrolment_deltas_move_people_between_statuses_in_the_month_of_the_change():
    facts = [EnrolmentFact("pkh", "3317012001", "active", None, dt.date(2026, 1, 3)),
             EnrolmentFact("pkh", "3317012001", "exited", "active", dt.date(2026, 3, 9))]
    assert domain.enrolment_deltas(facts) == {("pkh", "3317012001", "active"): 0,
                                              ("pkh", "3317012001", "exited"): 1}
    assert domain.enrolment_flow_deltas(facts) == {("pkh", "3317012001", "2026-01", "active"): 1,
                                                   ("pkh", "3317012001", "2026-03", "exited"): 1,
                                                   ("pkh", "3317012001", "2026-03", "active"): -1}


def test_adapters_turn_events_into_facts_without_personal_data():
    model, to_facts = ADAPTERS["disbursement.payment_settled"]
    e = model.model_validate({"payment_id": "6f1c2b9e-8d2a-4c1e-9a55-0c3f5c1f2a10", "programme_identifier": "pkh",
                              "person_ref": "pseudo-abcdef", "village_code": "33.17.01.2001",
                              "funding_source": "APBN", "amount": 600000, "period": "2026-03"})
    assert to_facts(e) == [PaymentFact("pkh", "pseudo-abcdef", "3317012001", "APBN", 600000, "2026-03")]
    model, to_facts = ADAPTERS["disbursement.kube_instalment_paid"]
    e = model.model_validate({"group_id": "6f1c2b9e-8d2a-4c1e-9a55-0c3f5c1f2a10", "amount": 5, "on": "2026-03-31"})
    assert to_facts(e) == [KubeFlow("6f1c2b9e-8d2a-4c1e-9a55-0c3f5c1f2a10", "2026-03", repaid=5)]
    with pytest.raises(ValueError):
        ADAPTERS["disbursement.payment_settled"][0].model_validate({"amount": -1})
