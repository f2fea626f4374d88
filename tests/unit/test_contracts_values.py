"""Value types: NIK, No. KK, village codes, rupiah, periods, with valid and invalid cases."""
from __future__ import annotations

import datetime as dt
from typing import ClassVar

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from contracts import wilayah
from contracts.envelope import Event
from contracts.values import (NIK, NoKK, Period, Rupiah, SignedRupiah, VillageCode, kk_problems, nik_consistency,
                              nik_problems, parse_nik, village_problems)

REGION = "331701"  # Kab. Rembang, Kec. Sumber


def codes(problems) -> set[str]:
    return {p.code for p in problems}


def test_the_fixture_region_is_real():
    assert wilayah.exists(REGION) and wilayah.name_of("3317")


# --- NIK: PPKKCC DDMMYY SSSS -------------------------------------------------------------

def test_valid_male_nik_parses_into_its_parts():
    parts, problems = parse_nik(f"{REGION}010760" + "0001")
    assert problems == []
    assert parts.region == REGION and parts.birth_date == dt.date(1960, 7, 1)
    assert parts.sex == "M" and parts.serial == "0001"


@pytest.mark.parametrize("day,birth", [("41", dt.date(1960, 7, 1)), ("71", dt.date(1960, 7, 31))])
def test_women_have_forty_added_to_the_day(day, birth):
    parts, problems = parse_nik(f"{REGION}{day}0760" + "0002")
    assert problems == [] and parts.sex == "F" and parts.birth_date == birth


def test_two_digit_year_takes_the_latest_century_not_in_the_future():
    assert parse_nik(f"{REGION}010120" + "0001")[0].birth_date.year == 2020
    assert parse_nik(f"{REGION}010199" + "0001")[0].birth_date.year == 1999


@pytest.mark.parametrize("date_part", [
    "000160",  # day 0
    "320160",  # a man born on the 32nd
    "400160",  # 40 is neither a man's day nor a woman's (41-71)
    "720160",  # a woman's 32nd
    "300260",  # 30 February
    "690261",  # a woman's 29 February in a non-leap year (1961)
    "011360",  # month 13
    "010060",  # month 0
])
def test_impossible_birth_dates_are_rejected(date_part):
    assert codes(nik_problems(f"{REGION}{date_part}0001")) == {"nik.invalid_birth_date"}


def test_leap_day_is_a_real_date_for_a_woman():
    parts, problems = parse_nik(f"{REGION}690260" + "0003")  # 29 Feb 1960
    assert problems == [] and parts.birth_date == dt.date(1960, 2, 29) and parts.sex == "F"


def test_unknown_region_and_zero_serial_are_named():
    assert codes(nik_problems("999999" + "010760" + "0001")) == {"nik.unknown_region"}
    assert codes(nik_problems(f"{REGION}010760" + "0000")) == {"nik.invalid_serial"}


def test_every_broken_rule_is_listed_at_once():
    problems = nik_problems("999999" + "320160" + "0000")
    assert codes(problems) == {"nik.unknown_region", "nik.invalid_birth_date", "nik.invalid_serial"}
    assert all(p.message and p.field == "nik" for p in problems)


@pytest.mark.parametrize("bad", ["", "331701010760001", "33170101076000012", "33170101076O0001", "3317 01010760001",
                                 None, "\u0663\u0663\u0661\u0667010101600001", "３３17010101600001"])
def test_nik_must_be_sixteen_digits(bad):  # other scripts' digits are digits to str.isdigit, not here
    assert codes(nik_problems(bad)) == {"nik.format"}


def test_nik_consistency_with_stated_birth_date_and_sex():
    parts, _ = parse_nik(f"{REGION}410760" + "0001")
    assert nik_consistency(parts, dt.date(1960, 7, 1), "F") == []
    assert codes(nik_consistency(parts, dt.date(1960, 7, 2), "F")) == {"nik.birth_date_mismatch"}
    assert codes(nik_consistency(parts, dt.date(1960, 7, 1), "M")) == {"nik.sex_mismatch"}


def test_nik_type_in_a_model_strips_and_raises_the_first_rule():
    ta = TypeAdapter(NIK)
    assert ta.validate_python(f" {REGION}0107600001 ") == f"{REGION}0107600001"
    with pytest.raises(ValidationError) as e:
        ta.validate_python(f"{REGION}3201600001")
    assert e.value.errors()[0]["type"] == "nik.invalid_birth_date"
    with pytest.raises(ValidationError):
        ta.validate_python(3317010107600001)  # a number is not a NIK (leading zeros would vanish)


# --- No. KK ------------------------------------------------------------------------------

def test_kk_rules():
    assert kk_problems(f"{REGION}1203150001") == []
    assert codes(kk_problems("12345")) == {"kk.format"}
    assert codes(kk_problems("9999991203150001")) == {"kk.unknown_region"}
    assert codes(kk_problems(f"{REGION}1203150000")) == {"kk.invalid_serial"}
    with pytest.raises(ValidationError):
        TypeAdapter(NoKK).validate_python("9999991203150001")


# --- village codes -------------------------------------------------------------------------

def test_village_codes_checked_against_the_region_list():
    village = wilayah.villages_in("3317")[0]
    assert village_problems(village) == []
    assert village_problems(wilayah.dotted(village)) == []
    assert TypeAdapter(VillageCode).validate_python(wilayah.dotted(village)) == village  # stored as digits
    assert codes(village_problems("3317999999")) == {"village_code.unknown"}
    assert codes(village_problems(REGION)) == {"village_code.format"}  # a kecamatan is not a village
    assert codes(village_problems("33170120011")) == {"village_code.format"}
    assert codes(village_problems("")) == {"village_code.format"}


# --- rupiah and periods --------------------------------------------------------------------

class _Paid(Event):
    event_type: ClassVar[str] = "test.paid"
    domain: ClassVar[str] = "test"
    amount: Rupiah
    correction: SignedRupiah = 0


def test_rupiah_is_a_whole_non_negative_integer():
    assert _Paid(amount=1_625_000_000).amount == 1_625_000_000
    assert _Paid.model_validate_json('{"amount": 300000, "correction": -5000}').correction == -5000


@pytest.mark.parametrize("amount", [1000.5, 1000.0, "1000", True, -1, None])
def test_rupiah_rejects_floats_strings_booleans_and_negatives(amount):
    with pytest.raises(ValidationError):
        _Paid(amount=amount)


@pytest.mark.parametrize("raw", ['{"amount": 1000.5}', '{"amount": 1000.0}', '{"amount": "1000"}',
                                 '{"amount": 1e3}', '{"amount": true}'])
def test_rupiah_rejects_non_integers_in_json(raw):
    with pytest.raises(ValidationError):
        _Paid.model_validate_json(raw)


def test_rupiah_json_schema_says_integer():
    assert TypeAdapter(Rupiah).json_schema()["type"] == "integer"
    assert TypeAdapter(Rupiah).json_schema()["minimum"] == 0


@pytest.mark.parametrize("good", ["2026-01", "2026-12", "1999-07"])
def test_period_valid(good):
    assert TypeAdapter(Period).validate_python(good) == good


@pytest.mark.parametrize("bad", ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "2026-11-01", ""])
def test_period_invalid(bad):
    with pytest.raises(ValidationError) as e:
        TypeAdapter(Period).validate_python(bad)
    assert e.value.errors()[0]["type"] == "period.format"


def test_events_are_frozen_and_forbid_unknown_fields():
    with pytest.raises(ValidationError):
        _Paid(amount=1, surprise=2)
    p = _Paid(amount=1)
    with pytest.raises(ValidationError):
        p.amount = 2


class _Plain(BaseModel):
    amount: Rupiah


def test_rupiah_is_strict_in_plain_models_too():
    with pytest.raises(ValidationError):
        _Plain(amount=2.0)
