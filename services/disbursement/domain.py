"""Disbursement rules, no I/O: program rules as data, entitlements and the funding plan,
what a settlement does to an instruction, and the KUBE rules (who may borrow, how much,
the repayment schedule, arrears)."""
from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, model_validator

from contracts.disbursement import FundingSource, SettlementStatus
from contracts.values import Period

_period = TypeAdapter(Period)

# The most any amount, ceiling or poverty line may be: 10^15 rupiah (a thousand trillion, about
# 300 times Indonesia's whole state budget). Every ledger row and counter stays far inside BIGINT
# (2^63 is about 9.2 x 10^18), and the proof sums in numeric, so no total can overflow either.
MAX_RUPIAH = 10**15
BoundedRupiah = Annotated[StrictInt, Field(ge=0, le=MAX_RUPIAH,
                                           description="whole rupiah, at most 10^15 (1000000000000000)")]
_URL_NS = uuid.NAMESPACE_URL.bytes


class Refused(Exception):
    """A request the rules refuse; `status` is the HTTP answer (409 conflict, 404 unknown, 422 invalid)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def check_period(period: str) -> str:
    return _period.validate_python(period)


Frequency = Literal["monthly", "quarterly", "one_off"]
_MONTHLY = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
# PKH pays in quarterly stages (tahap): 2026-T4. One spelling only: were 2026-Q4 also a key,
# the same stage could be paid twice under two names
_QUARTERLY = re.compile(r"(\d{4})-T([1-4])")
# a one-off payment names its month and what it is for: 2026-11-banjir (flood relief)
_ONE_OFF = re.compile(r"(\d{4})-(0[1-9]|1[0-2])-([a-z][a-z0-9_]{0,30})")
KEY_FORMS: dict[str, str] = {"monthly": "YYYY-MM (e.g. 2026-11)",
                             "quarterly": "YYYY-Tn, the stage (tahap) n = 1-4 (e.g. 2026-T4 for October-December)",
                             "one_off": "YYYY-MM-name (e.g. 2026-11-banjir)"}


def check_cycle_key(key: str, frequency: str | None = None) -> str:
    """A cycle key of the program's frequency (any frequency when None); ValueError says which
    form is expected. The key is the cycle's identity: (program, key, NIK) is paid at most once."""
    forms = {"monthly": _MONTHLY, "quarterly": _QUARTERLY, "one_off": _ONE_OFF}
    wanted = [frequency] if frequency else list(forms)
    if any(forms[f].fullmatch(key) for f in wanted):
        return key
    raise ValueError(f"period {key!r} must be " + " or ".join(KEY_FORMS[f] for f in wanted))


def cycle_month(key: str) -> str:
    """The month a cycle pays in (YYYY-MM, what the audit stream and reports count by): the
    month itself, a stage's first month, a one-off's month."""
    if m := _QUARTERLY.fullmatch(key):
        return f"{m.group(1)}-{(int(m.group(2)) - 1) * 3 + 1:02d}"
    return key[:7]


def add_months(d: dt.date, n: int) -> dt.date:
    """The same day `n` months later (or earlier), at most the month's last day."""
    y, m = divmod(d.month - 1 + n, 12)
    y, m = d.year + y, m + 1
    return dt.date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def period_start(key: str) -> dt.date:
    """The first day of the month a cycle pays in (a stage's first month, a one-off's month)."""
    month = cycle_month(key)
    return dt.date(int(month[:4]), int(month[5:7]), 1)


# --- life status (the registry's registry.life_status_changed) ---------------------------------
#
# The rule for a cycle that straddles an effective date: a cycle is paid when the person's status
# allowed payment on the cycle's first day (period_start). A death on 10 November still pays
# November (the person was alive on 1 November) and stops December; a death on 1 November stops
# November. A quarterly stage counts from its first month's first day, a one-off from its month's.

STOPPING = frozenset({"deceased", "moved_out", "ineligible", "disputed"})


def payable(status: str | None, effective: dt.date | None, held_from: dt.date | None,
            held_until: dt.date | None, start: dt.date, pays_arrears: bool) -> bool:
    """May a cycle starting on `start` pay this person? `status` is the life status disbursement
    holds (None: no announcement ever: alive). A stopping status stops every cycle starting on or
    after its effective date. `alive` after a stop (a verifier overturned a death or settled a
    dispute) leaves a hold window [held_from, held_until): cycles starting in it were held, and
    are paid (late, as arrears) only when the program's rules say `pays_arrears`.

    cycles._life_stop_sql is this rule in SQL: keep the two in step (a unit test holds them)."""
    if status is None:
        return True
    if status in STOPPING:
        return effective is None or start < effective
    if held_from is not None and held_until is not None and held_from <= start < held_until:
        return pays_arrears
    return True


def arrears_id(program: str, period: str, nik: str, paid_in: str) -> uuid.UUID:
    """A held cycle's payment made late, in cycle `paid_in`: deterministic, so a re-run issues it once."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sinergi/arrears/{program}/{period}/{nik}/{paid_in}")


def cancel_code(life_status: str) -> str:
    """The channel's reason code for a withdrawn disbursement (contracts.channel.CancelItem)."""
    return "cncl.payment.held" if life_status == "disputed" else f"cncl.payee.{life_status}"


def idempotency_key(program: str, period: str, nik: str) -> str:
    return f"{program}/{period}/{nik}"


def instruction_id(program: str, period: str, nik: str) -> uuid.UUID:
    """Deterministic: the same (program, period, NIK) is always the same instruction
    (uuid5 in the URL namespace, computed inline: a million per cycle)."""
    h = hashlib.sha1(_URL_NS + f"sinergi/instruction/{program}/{period}/{nik}".encode()).digest()
    return uuid.UUID(bytes=h[:16], version=5)


def instruction_ids(program: str, period: str) -> Callable[[str], str]:
    """instruction_id(program, period, nik) as text, for a cycle's million people: the digest's
    common prefix is hashed once and the uuid is formatted from hex, with no uuid.UUID object
    (whose constructor and str() were 0.6 s of a profiled 100,000-person cycle)."""
    base = hashlib.sha1(_URL_NS + f"sinergi/instruction/{program}/{period}/".encode())

    def one(nik: str) -> str:
        h = base.copy()
        h.update(nik.encode())
        x = h.hexdigest()
        # RFC 4122: version nibble 5, variant bits 10
        return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{'89ab'[int(x[16], 16) & 3]}{x[17:20]}-{x[20:32]}"
    return one


def cycle_id(program: str, period: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sinergi/cycle/{program}/{period}")


def allocation_id(source: str, program: str, fiscal_year: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sinergi/allocation/{source}/{program}/{fiscal_year}")


class AmountRule(BaseModel):
    """A fixed monthly amount, or the regency's poverty line (garis kemiskinan) for the year."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["fixed", "poverty_line"]
    amount: BoundedRupiah | None = Field(default=None, description="for kind fixed, at most 10^15")
    regency: str | None = Field(default=None, pattern=r"^\d{4}$", description="for kind poverty_line, e.g. 3317")

    @model_validator(mode="after")
    def _complete(self) -> AmountRule:
        if self.kind == "fixed" and not self.amount:
            raise ValueError("a fixed amount needs amount > 0")
        if self.kind == "poverty_line" and not self.regency:
            raise ValueError("a poverty-line amount needs the regency code (4 digits)")
        return self


class FundingRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: FundingSource
    share: int | None = Field(default=None, ge=1, le=100, description="percent, for funding_mode split")


class ProgramRules(BaseModel):
    """One cash program's rules. Eligibility is always an active enrolment in the program."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    amount: AmountRule
    frequency: Frequency = Field(default="monthly", description="monthly (period 2026-11), quarterly stages "
                                 "(tahap, period 2026-T4) or one_off (period 2026-11-banjir)")
    require_verified: bool = Field(default=True, description="the person's latest verification (verivali) passed")
    min_age: int | None = Field(default=None, ge=0, le=130, description="age in years on the period's first day")
    funding_mode: Literal["order", "split"] = Field(
        default="order", description="order: each payment from the first source with budget left; "
                                     "split: every payment shared between sources by percent")
    funding: list[FundingRule] = Field(min_length=1)
    exclusivity_class: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$",
                                          description="no one gets two programs of this class in one month")
    channel: str = Field(default="bank", pattern=r"^[a-z][a-z0-9_]{0,31}$", description="payment channel name")
    pays_arrears: bool = Field(default=False, description="when a hold ends (a verifier finds the person alive), "
                               "pay the cycles held meanwhile in the next cycle; false: they are lost")

    @model_validator(mode="after")
    def _funding(self) -> ProgramRules:
        sources = [f.source for f in self.funding]
        if len(set(sources)) != len(sources):
            raise ValueError("each funding source may appear once")
        if self.funding_mode == "split":
            shares = [f.share for f in self.funding]
            if any(s is None for s in shares) or sum(shares) != 100:  # type: ignore[arg-type]
                raise ValueError("split funding needs a share for every source, summing to 100")
        return self


def min_birth_date(period: str, min_age: int | None) -> dt.date | None:
    """Born on or before this date to be `min_age` on the period's first day."""
    if min_age is None:
        return None
    month = cycle_month(period)
    y, m = int(month[:4]), int(month[5:7])
    return dt.date(y - min_age, m, 1)


@dataclass(frozen=True)
class Budget:
    source: str
    allocation_id: uuid.UUID | None  # None: no allocation for this source and year
    remaining: int
    share: int | None = None


@dataclass(frozen=True)
class Tranche:
    """`count` consecutive people funded by the same lines [(source, allocation_id, amount)]."""

    count: int
    lines: tuple[tuple[str, uuid.UUID, int], ...]


def split_amounts(amount: int, shares: list[int]) -> list[int]:
    """Integer split by percent; the rupiah lost to rounding go to the first source."""
    parts = [amount * s // 100 for s in shares]
    parts[0] += amount - sum(parts)
    return parts


def plan(amount: int, mode: str, budgets: list[Budget], wanted: int) -> list[Tranche]:
    """How many of `wanted` people each allocation can fund, never beyond what remains.

    order: fill the first source, then the next; split: each payment shared by percent, as many
    as the tightest source allows.
    """
    if amount <= 0 or wanted <= 0:
        return []
    out: list[Tranche] = []
    if mode == "order":
        left = wanted
        for b in budgets:
            if left == 0 or b.allocation_id is None:
                continue
            n = min(left, max(b.remaining, 0) // amount)
            if n:
                out.append(Tranche(n, ((b.source, b.allocation_id, amount),)))
                left -= n
        return out
    parts = split_amounts(amount, [b.share or 0 for b in budgets])
    if any(b.allocation_id is None for b, p in zip(budgets, parts, strict=True) if p > 0):
        return []
    n = min([wanted] + [max(b.remaining, 0) // p for b, p in zip(budgets, parts, strict=True) if p > 0])
    if n <= 0:
        return []
    return [Tranche(n, tuple((b.source, b.allocation_id, p) for b, p in zip(budgets, parts, strict=True)  # type: ignore[misc]
                             if p > 0))]


# --- settlements --------------------------------------------------------------------------

@dataclass(frozen=True)
class SettlementRejected:
    """A settlement the rules refuse: dead-lettered with `code`, nothing written."""

    code: str
    reason: str


def settlement_outcome(current: str | None, reported: SettlementStatus, reason: str | None,
                       instruction: uuid.UUID, *, issued_to: str | None = None,
                       reported_by: str | None = None) -> str | SettlementRejected:
    """What a channel's report does to an instruction whose status is `current` (None: never
    issued): 'paid' or 'failed' (apply it), 'duplicate' (a repeat that agrees: no change), or
    a rejection. A channel settles only what was issued to it (`issued_to`): instruction ids
    are computable by anyone, so another channel's report is refused before anything else."""
    if current is None:
        return SettlementRejected("rjct.instruction.unknown", f"no payment instruction {instruction} was ever issued")
    if reported_by is not None and issued_to != reported_by:
        return SettlementRejected("rjct.settlement.wrong_channel",
                                  f"instruction {instruction} was not issued to channel {reported_by}")
    if current == "cancelled":
        # withdrawn before payment (the payee died, moved out, or is held): a refusal agrees; a
        # `paid` is money the channel sent after it was told not to, for an operator to recover
        # (the daily statement then shows it as unmatched.cancelled)
        if reported == SettlementStatus.failed:
            return "duplicate"
        return SettlementRejected("rjct.instruction.cancelled", f"instruction {instruction} was cancelled before "
                                  "payment; a later report of paid is not booked: recover the money")
    if current != "issued":
        if current == reported.value:
            return "duplicate"
        return SettlementRejected("rjct.settlement.conflict", f"instruction {instruction} is already {current}; "
                                                               f"a later report of {reported.value} is ignored")
    if reported == SettlementStatus.failed and not reason:
        return SettlementRejected("rjct.settlement.reason_missing", "a failed settlement must give a reason")
    return reported.value


# --- KUBE revolving funds ---------------------------------------------------------------------

SAVING_MONTHS = 3
MIN_ATTENDANCE = 0.75
AGING = ((0, "current"), (30, "1-30"), (60, "31-60"), (90, "61-90"))
OLDEST_BUCKET = ">90"


def saving_months(as_of: dt.date) -> list[str]:
    """The months (YYYY-MM) a member must have saved in: the SAVING_MONTHS before `as_of`'s month."""
    first = add_months(as_of.replace(day=1), -SAVING_MONTHS)
    return [add_months(first, i).strftime("%Y-%m") for i in range(SAVING_MONTHS)]


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    reasons: tuple[str, ...]
    months: tuple[str, ...]
    meetings: int
    attended: int


def loan_eligibility(nik: str, months: Sequence[str], saved: Iterable[str],
                     meetings: Sequence[Iterable[str]]) -> Eligibility:
    """Saved in each of `months` and attended at least MIN_ATTENDANCE of the `meetings` (each
    the NIKs present) held in them."""
    saved = set(saved)
    attended = sum(1 for present in meetings if nik in present)
    reasons = []
    missing = [m for m in months if m not in saved]
    if missing:
        reasons.append(f"no saving recorded for {', '.join(missing)} (needs {SAVING_MONTHS} months of regular saving)")
    if not meetings:
        reasons.append("no group meetings recorded in those months")
    elif attended / len(meetings) < MIN_ATTENDANCE:
        reasons.append(f"attended {attended} of {len(meetings)} meetings (needs {int(MIN_ATTENDANCE * 100)} %)")
    return Eligibility(not reasons, tuple(reasons), tuple(months), len(meetings), attended)


@dataclass(frozen=True)
class LoanPlan:
    principal: int
    instalment: int
    limited_by: Literal["need", "capacity", "fund balance"]


def size_loan(need: int, monthly_capacity: int, term_months: int, fund_balance: int) -> tuple[int, int]:
    """Principal: what is needed, no more than the member can repay in the term, no more than
    the fund holds. Instalment: principal over the term, rounded up."""
    principal = max(0, min(need, monthly_capacity * term_months, fund_balance))
    return principal, -(-principal // term_months) if principal else 0


def plan_loan(need: int, monthly_capacity: int, term_months: int, fund_balance: int) -> LoanPlan:
    """The loan to issue, and what limited it; refused when nothing can be lent."""
    principal, instalment = size_loan(need, monthly_capacity, term_months, fund_balance)
    if principal == 0:
        raise Refused(f"no loan possible: fund balance {fund_balance}, capacity {monthly_capacity}/month")
    limited_by: Literal["need", "capacity", "fund balance"] = (
        "need" if principal == need else "capacity" if principal == monthly_capacity * term_months
        else "fund balance")
    return LoanPlan(principal, instalment, limited_by)


def repayment_schedule(first_due: dt.date, term_months: int) -> list[dt.date]:
    """The instalments' due dates: monthly from `first_due`."""
    return [add_months(first_due, k) for k in range(term_months)]


def check_instalment(amount: int, outstanding: int) -> None:
    if amount <= 0 or amount > outstanding:
        raise Refused(f"amount {amount} must be between 1 and the outstanding {outstanding}", 422)


def overdue(principal: int, instalment: int, repaid: int, first_due: dt.date, term: int,
            as_of: dt.date) -> tuple[int, int]:
    """(amount overdue, days overdue of the oldest unpaid instalment) on `as_of`."""
    dues = repayment_schedule(first_due, term)
    due_n = sum(1 for d in dues if d < as_of)
    owed = min(principal, instalment * due_n)
    late = max(0, owed - repaid)
    if late == 0:
        return 0, 0
    oldest = dues[repaid // instalment]
    return late, (as_of - oldest).days


def bucket(days: int) -> str:
    """The aging bucket of a debt `days` overdue."""
    for limit, name in AGING:
        if days <= limit:
            return name
    return OLDEST_BUCKET


@dataclass(frozen=True)
class LoanState:
    loan_id: uuid.UUID
    member: str            # pseudonym
    principal: int
    instalment: int
    repaid: int
    first_due: dt.date
    term_months: int


def arrears(loans: Iterable[LoanState], as_of: dt.date) -> tuple[list[dict[str, object]], dict[str, int]]:
    """Each loan's overdue amount, days and bucket on `as_of`, and the overdue total per bucket."""
    buckets = {name: 0 for _l, name in AGING} | {OLDEST_BUCKET: 0}
    out: list[dict[str, object]] = []
    for ln in loans:
        late, days = overdue(ln.principal, ln.instalment, ln.repaid, ln.first_due, ln.term_months, as_of)
        b = bucket(days)
        buckets[b] += late
        out.append({"loan_id": str(ln.loan_id), "member": ln.member, "principal": ln.principal,
                    "outstanding": ln.principal - ln.repaid, "overdue": late, "days_overdue": days, "bucket": b})
    return out, buckets


# --- channel statements -----------------------------------------------------------------------

@dataclass(frozen=True)
class Booked:
    """An instruction as the books know it (for reconciling a channel's statement)."""

    channel: str
    status: str
    amount: int


@dataclass(frozen=True)
class Unmatched:
    disbursement_id: str
    amount: int
    reason_code: str
    reason: str


def reconcile_statement(channel: str, lines: Sequence[tuple[uuid.UUID, int]], books: dict[uuid.UUID, Booked],
                        paid_that_day: dict[uuid.UUID, int]) -> tuple[int, list[Unmatched]]:
    """A channel's statement (`lines`: disbursement id, amount) against the books: `books` holds
    the instructions the lines name, `paid_that_day` what the books record as paid by this
    channel on the statement's day. Returns (lines matched, what does not match)."""
    out: list[Unmatched] = []
    seen: set[uuid.UUID] = set()
    matched = 0
    for iid, amount in lines:
        b = books.get(iid)
        if iid in seen:
            out.append(Unmatched(str(iid), amount, "unmatched.duplicate_line", "the statement lists it twice"))
        elif b is None or b.channel != channel:
            out.append(Unmatched(str(iid), amount, "unmatched.unknown", f"no instruction {iid} was issued to {channel}"))
        elif b.status != "paid":
            out.append(Unmatched(str(iid), amount, f"unmatched.{b.status}",
                                 f"the books have it {b.status}, the statement paid"))
        elif b.amount != amount:
            out.append(Unmatched(str(iid), amount, "unmatched.amount", f"the books have {b.amount}, the statement {amount}"))
        else:
            matched += 1
        seen.add(iid)
    for iid, amount in paid_that_day.items():
        if iid not in seen:
            out.append(Unmatched(str(iid), amount, "unmatched.missing",
                                 "the books record it paid by this channel that day; the statement does not list it"))
    return matched, out
