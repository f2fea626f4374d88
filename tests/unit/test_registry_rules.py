"""Every rule a data officer applies to an enrolment report, one case per reason code."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from services.registry import domain
from tests import factories

TODAY = dt.date(2026, 11, 23)
V = "3317012001"  # a village in Kabupaten Rembang


def good(**overrides) -> dict:
    r = {"message_id": "m-1", "reference_id": "ref-1", "programme_identifier": "pkh",
         "nik": factories.nik(V, dt.date(1960, 7, 1), "F", serial=1), "no_kk": "3317010107100001",
         "name": "Siti Aminah", "sex": "F", "birth_date": "1960-07-01", "village_code": V,
         "address": "RT 01 RW 02", "enrolment_status": "active", "status_change_date": "2026-01-01"}
    r.update(overrides)
    return r


def check(report: dict | bytes, program: str = "pkh", header_id: str | None = None):
    data = report if isinstance(report, bytes) else json.dumps(report).encode()
    return domain.check_report(data, program, today=TODAY, header_id=header_id)


def codes(report, program: str = "pkh", header_id: str | None = None) -> set[str]:
    return {p.code for p in check(report, program, header_id)[2]}


def drop(key: str) -> dict:
    r = good()
    del r[key]
    return r


# (report, program, expected codes): each reason code in domain.REASONS at least once
CASES = [
    (b"{not json", "pkh", {"json.invalid"}),
    (b"[1, 2]", "pkh", {"json.not_object"}),
    (drop("nik"), "pkh", {"nik.missing"}),
    (drop("message_id"), "pkh", {"message_id.missing"}),
    (good(name=12), "pkh", {"name.string_type"}),
    (good(name="   "), "pkh", {"name.string_too_short"}),
    (good(reference_id="x" * 129), "pkh", {"reference_id.string_too_long"}),
    (good(reference_id="R\ud800-1"), "pkh", {"reference_id.string_unicode"}),  # an unpaired surrogate
    (good(name="Siti\x00Aminah"), "pkh", {"name.nul_character"}),
    (good(address="RT 01\x00", reference_id="\x00"), "pkh", {"address.nul_character", "reference_id.nul_character"}),
    (good(is_head_of_household="maybe"), "pkh", {"is_head_of_household.bool_parsing"}),
    (good(), "bpnt", {"programme_identifier.mismatch"}),
    (good(nik="33170141076000"), "pkh", {"nik.format"}),
    (good(nik="9917014107600001"), "pkh", {"nik.unknown_region"}),
    (good(nik="3317019907600001"), "pkh", {"nik.invalid_birth_date"}),
    (good(nik="3317017113600001"), "pkh", {"nik.invalid_birth_date"}),  # woman, 31+40 in month 13
    (good(nik="3317014107600000"), "pkh", {"nik.invalid_serial"}),
    (good(birth_date="1960-07-02"), "pkh", {"nik.birth_date_mismatch"}),
    (good(sex="M"), "pkh", {"nik.sex_mismatch"}),
    (good(no_kk="33170101071"), "pkh", {"kk.format"}),
    (good(no_kk="9917010107100001"), "pkh", {"kk.unknown_region"}),
    (good(no_kk="3317010107100000"), "pkh", {"kk.invalid_serial"}),
    (good(village_code="33170120"), "pkh", {"village_code.format"}),
    (good(village_code="3317019999"), "pkh", {"village_code.unknown"}),
    (good(sex="X"), "pkh", {"sex.invalid"}),
    (good(enrolment_status="paid"), "pkh", {"enrolment_status.invalid"}),
    (good(birth_date="01-07-1960"), "pkh", {"birth_date.format"}),
    (good(nik=factories.nik(V, dt.date(2026, 12, 1), "F", 1), birth_date="2026-12-01",
          status_change_date="2026-12-02"), "pkh", {"birth_date.in_future"}),
    (good(status_change_date="2026/01/01"), "pkh", {"status_change_date.format"}),
    (good(status_change_date="2028-01-01"), "pkh", {"status_change_date.too_far"}),
    (good(status_change_date="1959-01-01"), "pkh", {"status_change_date.before_birth"}),
]


@pytest.mark.parametrize("report,program,expected", CASES)
def test_each_rule_names_its_reason(report, program, expected):
    checked, _raw, problems = check(report, program)
    assert checked is None
    assert {p.code for p in problems} == expected
    assert all(p.message for p in problems)


# (header, what the registry says): the Nats-Msg-Id header, when present, is <program>:<message_id>
HEADERS = [
    (None, set()),
    ("pkh:m-1", set()),
    ("m-1", {"message_id.unscoped"}),  # the old contract: JetStream would drop bpnt's m-1 as a repeat
    ("bpnt:m-1", {"message_id.unscoped"}),
    ("pkh:m-2", {"message_id.unscoped"}),
    ("pkh:", {"message_id.unscoped"}),
]


def test_every_documented_reason_code_is_exercised():
    seen = set()
    checks = [check(report, program)[2] for report, program, _ in CASES]
    checks += [check(good(), "pkh", header)[2] for header, _ in HEADERS]
    for problems in checks:
        for p in problems:
            field, _, rest = p.code.partition(".")
            seen.add(p.code if p.code in domain.REASONS else f"<field>.{rest}")
    assert seen == set(domain.REASONS)


@pytest.mark.parametrize("header,expected", HEADERS)
def test_the_msg_id_header_is_scoped_to_the_program(header, expected):
    assert codes(good(), "pkh", header) == expected
    if expected:
        [p] = check(good(), "pkh", header)[2]
        assert "pkh:m-1" in p.message and p.field == "message_id"


def test_a_padded_message_id_matches_its_scoped_header():
    assert codes(good(message_id=" m-1 "), "pkh", "pkh: m-1 ") == set()


def test_nul_is_rejected_in_any_text_field_but_other_control_characters_and_escaped_text_pass():
    for field in ("message_id", "name", "address", "nik", "reference_id", "status_change_date"):
        assert f"{field}.nul_character" in codes(good(**{field: good()[field] + "\x00"})), field
    assert codes(good(name="Siti\x01Aminah\t", address="RT 01\x1f")) == set()
    assert codes(good(name="Siti \\u0000 Aminah")) == set()  # the six characters, not a NUL
    assert codes(good(extra="\x00")) == set()  # an ignored field is never stored


def test_storable_replaces_only_what_postgresql_refuses():
    assert domain.storable("a\x00b\ud800c\x01\U0001F600") == "a\ufffdb\ufffdc\x01\U0001F600"
    assert domain.is_storable("Siti \x01 \U0001F600") and not domain.is_storable("\udfff")


def test_a_valid_report_passes_with_parsed_values():
    checked, raw, problems = check(good(village_code="33.17.01.2001"))
    assert problems == [] and raw["message_id"] == "m-1"
    assert checked.village_code == V and checked.birth_date == dt.date(1960, 7, 1)
    assert checked.status_change_date == dt.date(2026, 1, 1) and checked.key == (checked.nik, "pkh")


def test_women_have_40_added_to_the_day_men_do_not():
    man = factories.nik(V, dt.date(1975, 3, 31), "M", 7)
    assert man[6:8] == "31"
    assert codes(good(nik=man, sex="M", birth_date="1975-03-31")) == set()
    woman = factories.nik(V, dt.date(1975, 3, 31), "F", 7)
    assert woman[6:8] == "71"
    assert codes(good(nik=woman, sex="F", birth_date="1975-03-31")) == set()
    # day 29 February exists only in leap years
    assert codes(good(nik="3317016902010001", sex="F", birth_date="2001-02-29")) >= {"nik.invalid_birth_date"}


def test_every_failed_rule_is_named_at_once():
    bad = good(nik="9917019907600000", no_kk="123", village_code="1", sex="X", enrolment_status="gone")
    assert codes(bad) == {"nik.unknown_region", "nik.invalid_birth_date", "nik.invalid_serial", "kk.format",
                          "village_code.format", "sex.invalid", "enrolment_status.invalid"}


def test_messages_say_what_is_wrong_in_plain_words():
    msgs = {p.code: p.message for p in check(good(sex="M", village_code="3317019999"))[2]}
    assert "female" in msgs["nik.sex_mismatch"]
    assert "33.17.01.9999" in msgs["village_code.unknown"]


def _checked(mid: str, date: str, status: str = "active", program: str = "pkh") -> domain.CheckedReport:
    c, _r, p = check(good(message_id=mid, status_change_date=date, enrolment_status=status,
                          programme_identifier=program), program)
    assert not p
    return c


def test_later_effective_date_wins_ties_by_greater_message_id():
    a, b, c = _checked("m-a", "2026-03-01"), _checked("m-b", "2026-02-01"), _checked("m-c", "2026-03-01")
    assert domain.winners([a, b])[a.key] is a
    assert domain.winners([b, a])[a.key] is a
    assert domain.winners([a, c])[a.key] is c and domain.winners([c, a])[a.key] is c
    assert domain.supersedes(b, None, None)
    assert not domain.supersedes(b, dt.date(2026, 3, 1), "m-a")
    assert domain.supersedes(c, dt.date(2026, 3, 1), "m-a")
    assert not domain.supersedes(a, dt.date(2026, 3, 1), "m-c")


def test_winners_are_per_person_and_program():
    p, q = _checked("m-1", "2026-01-01", program="pkh"), _checked("m-2", "2025-01-01", program="bpnt")
    assert set(domain.winners([p, q])) == {p.key, q.key}
