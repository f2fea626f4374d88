"""Shared value types with real validation: NIK, No. KK, village codes, rupiah, periods.

Each rule has a stable, machine-readable code (used as G2P Connect `status_reason_code`
suffixes) and a plain message. `nik_problems` returns every failed rule so a receipt can
name them all; the Annotated types raise on the first for use inside events.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt
from pydantic_core import PydanticCustomError

from contracts import wilayah


@dataclass(frozen=True)
class Problem:
    """One failed rule: `code` like `nik.invalid_birth_date`, `message` in plain words."""

    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class NikParts:
    region: str  # six digits: provinsi, kabupaten, kecamatan
    birth_date: dt.date
    sex: str  # "F" or "M"
    serial: str


def _century(yy: int, today: dt.date | None = None) -> int:
    today = today or dt.date.today()
    return 1900 + yy if 2000 + yy > today.year else 2000 + yy


def _digits(s: str, n: int) -> bool:
    """Exactly n ASCII digits (str.isdigit alone also takes other scripts' digits)."""
    return isinstance(s, str) and len(s) == n and s.isascii() and s.isdigit()


def parse_nik(nik: str, today: dt.date | None = None) -> tuple[NikParts | None, list[Problem]]:
    """Split a NIK `PPKKCC DDMMYY SSSS` into its parts and list every rule it breaks."""
    problems: list[Problem] = []
    if not _digits(nik, 16):
        return None, [Problem("nik.format", "NIK must be exactly 16 digits", "nik")]
    region = nik[:6]
    if not wilayah.exists(region):
        problems.append(Problem(
            "nik.unknown_region",
            f"NIK region part {wilayah.dotted(region)} is not a known kecamatan code", "nik"))
    day, month, yy = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    sex = "F" if day > 40 else "M"
    if day > 40:
        day -= 40
    birth = None
    try:
        birth = dt.date(_century(yy, today), month, day)
    except ValueError:
        problems.append(Problem(
            "nik.invalid_birth_date",
            f"NIK birth date part {nik[6:12]} is not a real date (day {nik[6:8]}, month {nik[8:10]}; "
            "women have 40 added to the day)", "nik"))
    if nik[12:] == "0000":
        problems.append(Problem("nik.invalid_serial", "NIK serial part must not be 0000", "nik"))
    if problems or birth is None:
        return None, problems
    return NikParts(region=region, birth_date=birth, sex=sex, serial=nik[12:]), []


def nik_problems(nik: str) -> list[Problem]:
    return parse_nik(nik)[1]


def nik_consistency(parts: NikParts, birth_date: dt.date | None, sex: str | None) -> list[Problem]:
    """The NIK encodes birth date and sex: a stated birth date or sex that disagrees is an error."""
    problems = []
    if birth_date is not None and (birth_date.day, birth_date.month, birth_date.year % 100) != (
        parts.birth_date.day, parts.birth_date.month, parts.birth_date.year % 100
    ):
        problems.append(Problem(
            "nik.birth_date_mismatch",
            f"birth date {birth_date.isoformat()} does not match the NIK's date part "
            f"({parts.birth_date.strftime('%d-%m-%y')})", "birth_date"))
    if sex is not None and sex != parts.sex:
        word = {"F": "female", "M": "male"}
        problems.append(Problem(
            "nik.sex_mismatch",
            f"sex {word.get(sex, sex)} does not match the NIK (which encodes {word[parts.sex]})", "sex"))
    return problems


def kk_problems(no_kk: str) -> list[Problem]:
    """No. KK: 16 digits, the first six a known kecamatan code, serial not all zeros."""
    if not _digits(no_kk, 16):
        return [Problem("kk.format", "No. KK must be exactly 16 digits", "no_kk")]
    problems = []
    if not wilayah.exists(no_kk[:6]):
        problems.append(Problem(
            "kk.unknown_region", f"No. KK region part {wilayah.dotted(no_kk[:6])} is not a known kecamatan code",
            "no_kk"))
    if no_kk[12:] == "0000":
        problems.append(Problem("kk.invalid_serial", "No. KK serial part must not be 0000", "no_kk"))
    return problems


def village_problems(code: str) -> list[Problem]:
    d = wilayah.digits(code or "")
    if not _digits(d, 10):
        return [Problem("village_code.format",
                        "village code must be the 10-digit Kemendagri code, e.g. 3317012001", "village_code")]
    if not wilayah.is_village(d):
        return [Problem("village_code.unknown", f"village code {wilayah.dotted(d)} is not a known village",
                        "village_code")]
    return []


def _raise_first(problems: list[Problem]) -> None:
    if problems:
        raise PydanticCustomError(problems[0].code, problems[0].message)


def _check_nik(v: str) -> str:
    _raise_first(nik_problems(v))
    return v


def _check_kk(v: str) -> str:
    _raise_first(kk_problems(v))
    return v


def _check_village(v: str) -> str:
    _raise_first(village_problems(v))
    return wilayah.digits(v)


def _check_period(v: str) -> str:
    m = re.fullmatch(r"(\d{4})-(\d{2})", v)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise PydanticCustomError("period.format", "period must be YYYY-MM with a month 01-12")
    return v


def _strip(v: object) -> object:
    return v.strip() if isinstance(v, str) else v


NIK = Annotated[str, BeforeValidator(_strip), AfterValidator(_check_nik),
                Field(description="Nomor Induk Kependudukan, 16 digits: PPKKCC DDMMYY SSSS", examples=["3317014107600001"],
                      json_schema_extra={"pattern": r"^\d{16}$"})]
NoKK = Annotated[str, BeforeValidator(_strip), AfterValidator(_check_kk),
                 Field(description="Nomor Kartu Keluarga (family card number), 16 digits",
                       json_schema_extra={"pattern": r"^\d{16}$"})]
VillageCode = Annotated[str, BeforeValidator(_strip), AfterValidator(_check_village),
                        Field(description="10-digit Kemendagri village (desa/kelurahan) code, dots optional",
                              examples=["3317012001"],
                              json_schema_extra={"pattern": r"^\d{2}\.?\d{2}\.?\d{2}\.?\d{4}$"})]
RegionCode = Annotated[str, Field(pattern=r"^\d{2}(\d{2}(\d{2}(\d{4})?)?)?$",
                                  description="Kemendagri region code, 2/4/6/10 digits")]
# strict: pydantic's lax mode would turn 1000.0, "1000" and true into 1000; an amount that
# arrives as anything but a JSON integer is bad input, not something to guess at
Rupiah = Annotated[StrictInt, Field(ge=0, description="an amount in whole rupiah (integer, never a float)")]
SignedRupiah = Annotated[StrictInt, Field(description="a signed amount in whole rupiah")]
Period = Annotated[str, AfterValidator(_check_period), Field(description="a month, YYYY-MM", examples=["2026-11"])]
ProgramCode = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,31}$",
                                   description="program identifier, lower case, e.g. pkh, bpnt, kamalia_merekah")]
