"""Registry rules, no I/O: what a valid enrolment report is, and which report wins."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from pydantic import ValidationError

from contracts.agency import EnrolmentReport, EnrolmentStatus, Sex
from contracts.values import Problem, kk_problems, nik_consistency, parse_nik, village_problems
from services.registry import names

_MISSING = {"missing": "is required", "string_type": "must be text", "bool_type": "must be true or false"}

# Every reason code a rejected receipt can carry (without the `rjct.` prefix), in plain words.
# Codes are stable: agencies match on them. docs/REGISTRY.md lists the same table.
REASONS: dict[str, str] = {
    "json.invalid": "the message is not valid JSON",
    "json.not_object": "the message is JSON but not one object",
    "<field>.missing": "a required field is absent (message_id, programme_identifier, nik, no_kk, name, sex, "
                       "birth_date, village_code, enrolment_status, status_change_date)",
    "<field>.string_type": "a field that must be text is not",
    "<field>.string_too_short": "a text field is empty (message_id, name)",
    "<field>.string_too_long": "a text field is longer than allowed",
    "is_head_of_household.bool_parsing": "is_head_of_household is not true or false",
    "programme_identifier.mismatch": "programme_identifier differs from the program in the subject",
    "nik.format": "NIK is not exactly 16 digits",
    "nik.unknown_region": "the NIK's first six digits are not a known kecamatan code",
    "nik.invalid_birth_date": "the NIK's date part is not a real date (women: day + 40)",
    "nik.invalid_serial": "the NIK's serial part is 0000",
    "nik.birth_date_mismatch": "birth_date disagrees with the date encoded in the NIK",
    "nik.sex_mismatch": "sex disagrees with the NIK (day + 40 means female)",
    "kk.format": "No. KK is not exactly 16 digits",
    "kk.unknown_region": "the No. KK's first six digits are not a known kecamatan code",
    "kk.invalid_serial": "the No. KK's serial part is 0000",
    "village_code.format": "village_code is not a 10-digit Kemendagri code",
    "village_code.unknown": "village_code is not a known village (desa/kelurahan)",
    "sex.invalid": "sex is not F or M",
    "enrolment_status.invalid": "enrolment_status is not active, suspended, exited or deceased",
    "birth_date.format": "birth_date is not a date YYYY-MM-DD",
    "birth_date.in_future": "birth_date is after today",
    "status_change_date.format": "status_change_date is not a date YYYY-MM-DD",
    "status_change_date.too_far": "status_change_date is more than a year ahead",
    "status_change_date.before_birth": "status_change_date is before the birth date",
}


@dataclass(frozen=True)
class CheckedReport:
    """A report that passed every rule, with its values parsed."""

    report: EnrolmentReport
    program: str
    birth_date: dt.date
    status_change_date: dt.date
    village_code: str

    @property
    def nik(self) -> str:
        return self.report.nik

    @property
    def key(self) -> tuple[str, str]:
        return (self.report.nik, self.program)

    @property
    def order(self) -> tuple[dt.date, str]:
        """Later effective date wins; on a tie the greater message_id, so every replica agrees."""
        return (self.status_change_date, self.report.message_id)


def _date(value: str, field: str, problems: list[Problem]) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        problems.append(Problem(f"{field}.format", f"{field} {value!r} is not a date in the form YYYY-MM-DD", field))
        return None


def check_report(data: bytes, subject_program: str, today: dt.date | None = None
                 ) -> tuple[CheckedReport | None, dict, list[Problem]]:
    """Apply every rule a data officer would; return the parsed report or every failed rule.

    Also returns what could be read of the raw message (for the receipt's ids).
    """
    today = today or dt.date.today()
    try:
        # the common case in one step (pydantic-core parses the JSON); only a report that fails
        # is parsed again, for the ids its receipt echoes and for naming every failed rule
        rep = EnrolmentReport.model_validate_json(data)
        raw = {"message_id": rep.message_id, "reference_id": rep.reference_id}
    except ValidationError:
        rep = None
    if rep is None:
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            return None, {}, [Problem("json.invalid", f"the message is not valid JSON ({exc})")]
        if not isinstance(raw, dict):
            return None, {}, [Problem("json.not_object", "the message must be one JSON object per person")]
    try:
        rep = rep or EnrolmentReport.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            problems.append(Problem(f"{field}.{err['type']}", f"{field} {_MISSING.get(err['type'], err['msg'])}", field))
        return None, raw, problems

    problems: list[Problem] = []
    if rep.programme_identifier != subject_program:
        problems.append(Problem("programme_identifier.mismatch",
                                f"programme_identifier {rep.programme_identifier!r} does not match the subject's "
                                f"program {subject_program!r}", "programme_identifier"))
    parts, nik_errs = parse_nik(rep.nik, today)
    problems += nik_errs
    problems += kk_problems(rep.no_kk)
    problems += village_problems(rep.village_code)
    if rep.sex not in (Sex.F, Sex.M):
        problems.append(Problem("sex.invalid", f"sex must be F or M, not {rep.sex!r}", "sex"))
    if rep.enrolment_status not in EnrolmentStatus.__members__:
        problems.append(Problem("enrolment_status.invalid",
                                f"enrolment_status must be one of active, suspended, exited, deceased, "
                                f"not {rep.enrolment_status!r}", "enrolment_status"))
    birth = _date(rep.birth_date, "birth_date", problems)
    effective = _date(rep.status_change_date, "status_change_date", problems)
    if birth and birth > today:
        problems.append(Problem("birth_date.in_future", f"birth_date {birth} is in the future", "birth_date"))
    if effective and effective > today + dt.timedelta(days=366):
        problems.append(Problem("status_change_date.too_far", "status_change_date is more than a year ahead",
                                "status_change_date"))
    if birth and effective and effective < birth:
        problems.append(Problem("status_change_date.before_birth", "status_change_date is before the birth date",
                                "status_change_date"))
    if parts is not None:
        problems += nik_consistency(parts, birth, rep.sex if rep.sex in ("F", "M") else None)
    if problems:
        return None, raw, problems
    assert birth and effective
    return CheckedReport(rep, subject_program, birth, effective, rep.village_code.replace(".", "")), raw, []


def winners(reports: list[CheckedReport]) -> dict[tuple[str, str], CheckedReport]:
    """The report that wins per (NIK, program) within one batch."""
    best: dict[tuple[str, str], CheckedReport] = {}
    for r in reports:
        cur = best.get(r.key)
        if cur is None or r.order > cur.order:
            best[r.key] = r
    return best


def supersedes(new: CheckedReport, current_date: dt.date | None, current_msg: str | None) -> bool:
    if current_date is None:
        return True
    return new.order > (current_date, current_msg or "")


# ---- cross-program conflicts (for the data-quality queue) ----

def identity_conflicts(current_name: str, current_birth: dt.date, current_by: str,
                       new: CheckedReport) -> list[str]:
    """What another program's report disagrees on (ConflictKind values). A program correcting its
    own earlier report is not a conflict; spelling variants of one name are not either."""
    if not current_by or current_by == new.program:
        return []
    kinds = []
    if names.normalise(current_name) != names.normalise(new.report.name):
        kinds.append("name_mismatch")
    if current_birth != new.birth_date:
        kinds.append("birth_date_mismatch")
    return kinds


def fingerprint(kind: str, *parts: str) -> str:
    """The same disagreement (same programs, same values) is flagged once, however often it is reported."""
    return hashlib.sha256("|".join([kind, *sorted(parts)]).encode()).hexdigest()[:32]


# ---- verivali ----

def round_period(day: dt.date, cadence: str) -> str:
    """The period a verification round opened on `day` covers: 2026-11 (monthly) or 2026-H2 (semiannual)."""
    if cadence == "monthly":
        return f"{day.year}-{day.month:02d}"
    if cadence == "semiannual":
        return f"{day.year}-H{1 if day.month <= 6 else 2}"
    raise ValueError(f"unknown verification cadence {cadence!r}; use monthly or semiannual")
