"""Reporting rules, no I/O: periods, how facts change the aggregates, and the recap's arithmetic."""
from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal

from contracts import wilayah
from services.reporting.facts import EnrolmentFact, PaymentFact

_PERIOD = re.compile(r"(\d{4})-(\d{2})")


class BadPeriod(ValueError):
    pass


def parse_period(value: str | None) -> str:
    """`YYYY-MM` with a real month, else BadPeriod saying what is wrong."""
    if not value:
        raise BadPeriod("period is required, as YYYY-MM (e.g. 2026-11)")
    m = _PERIOD.fullmatch(value.strip())
    if not m:
        raise BadPeriod(f"period {value!r} is not in the form YYYY-MM (e.g. 2026-11)")
    year, month = int(m.group(1)), int(m.group(2))
    if not 1 <= month <= 12:
        raise BadPeriod(f"period {value!r} has month {month:02d}; a month is 01-12")
    if not 2000 <= year <= 2100:
        raise BadPeriod(f"period {value!r} has year {year}; reports cover 2000-2100")
    return f"{year:04d}-{month:02d}"


def period_of(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def period_end(period: str) -> dt.date:
    """The last day of the month."""
    y, m = int(period[:4]), int(period[5:7])
    first_next = dt.date(y + (m == 12), m % 12 + 1, 1)
    return first_next - dt.timedelta(days=1)


def year_start(period: str) -> str:
    return f"{period[:4]}-01"


EnrolmentState = tuple[str, str, dt.date]  # village, status, effective date


def enrolment_changes(facts: list[EnrolmentFact], state: dict[tuple[str, str], EnrolmentState | None]
                      ) -> tuple[Counter, Counter]:
    """Move each person from where they were counted to where they are now.

    Returns (now: (program, village, status) -> delta, flow: (program, village, period,
    status) -> delta, in the month of the change) and updates `state` in place. A person who
    moved village leaves the old one; a change older than the one already applied is ignored
    (the registry sends them in order; a replay must not undo a later one).
    """
    now: Counter = Counter()
    flow: Counter = Counter()
    for f in facts:
        key = (f.program, f.person_ref)
        cur = state.get(key)
        if cur is not None and f.effective < cur[2]:
            continue
        p = period_of(f.effective)
        if cur is not None:
            now[(f.program, cur[0], cur[1])] -= 1
            flow[(f.program, cur[0], p, cur[1])] -= 1
        now[(f.program, f.village_code, f.status)] += 1
        flow[(f.program, f.village_code, p, f.status)] += 1
        state[key] = (f.village_code, f.status, f.effective)
    return now, flow


def months_paid(pays: list[PaymentFact], masks: dict[tuple[str, str, int], int]) -> Counter:
    """Set each payment's month bit in its payee's mask for the year (`masks`, updated in
    place; a payee missing from it had no month paid yet).

    Returns (program, village, period) -> payees newly paid that month: a person paid twice
    in a month, or from two funding sources, counts once, in the village of the first payment.
    """
    newly: Counter = Counter()
    for p in pays:
        key, bit = (p.program, p.person_ref, int(p.period[:4])), month_bit(p.period)
        mask = masks.get(key, 0)
        if not mask & bit:
            masks[key] = mask | bit
            newly[(p.program, p.village_code, p.period)] += 1
    return newly


def percent(part: int, whole: int) -> float | None:
    """Realisation percentage to two decimals, half up (as the village budget tables print it)."""
    if not whole:
        return None
    return float((Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def median_from_histogram(hist: dict[int, int]) -> float | None:
    """Median of values given as {value: count}: the middle one, or the mean of the two middle."""
    n = sum(hist.values())
    if n == 0:
        return None
    lo_rank, hi_rank = (n - 1) // 2, n // 2  # 0-based ranks of the middle value(s)
    seen, lo = 0, None
    for value in sorted(hist):
        seen += hist[value]
        if lo is None and seen > lo_rank:
            lo = value
        if seen > hi_rank:
            return (lo + value) / 2
    raise AssertionError("unreachable")


def area_names(village_code: str) -> tuple[str, str | None, str, str | None]:
    kec = wilayah.kecamatan_of(village_code)
    return kec, wilayah.name_of(kec), village_code, wilayah.name_of(village_code)


def month_bit(period: str) -> int:
    """Bit of the month in a year's 12-bit mask (January = 1)."""
    return 1 << (int(period[5:7]) - 1)


def today() -> dt.date:
    return dt.date.today()


def periods_back(period: str, months: int) -> list[str]:
    """The `months` periods ending at `period`, oldest first."""
    y, m = int(period[:4]), int(period[5:7])
    idx = y * 12 + m - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(idx - months + 1, idx + 1)]


# Rembang and the rest of Java keep WIB (UTC+7, no daylight saving): a case registered at
# 06:00 WIB on the 1st belongs to that day and month, not to the previous one in UTC
WIB = dt.timezone(dt.timedelta(hours=7), "WIB")


def local_date(moment: dt.datetime) -> dt.date:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(WIB).date()


def add_months(day: dt.date, months: int) -> str:
    """The period `months` after the month of `day`."""
    idx = day.year * 12 + day.month - 1 + months
    return f"{idx // 12:04d}-{idx % 12 + 1:02d}"


def instalment_schedule(principal: int, instalment: int, term_months: int, first_due: dt.date
                        ) -> list[tuple[str, int]]:
    """(period, amount) of each instalment: `instalment` a month until the principal is covered,
    the last one the remainder, at most `term_months` (any remainder falls in the last month)."""
    out: list[tuple[str, int]] = []
    left = principal
    for k in range(max(term_months, 1)):
        if left <= 0:
            break
        amount = left if k == term_months - 1 else min(instalment, left)
        out.append((add_months(first_due, k), amount))
        left -= amount
    return out


SOURCE_LABELS = {"apbn": "APBN", "apbd_provinsi": "APBD Provinsi", "apbd_kabupaten": "APBD Kabupaten",
                 "apbdes": "APBDes", "baznas": "Baznas", "csr": "CSR", "donation": "Donasi", "other": "Lainnya"}
CONDITION_LABELS = {"good": "baik", "fair": "cukup", "poor": "kurang", "critical": "buruk"}
LEVEL_LABELS = {"village": "Desa (Puskesos)", "kecamatan": "Kecamatan (SLRT)", "kabupaten": "Kabupaten (SLRT)",
                "agency": "Instansi program"}
