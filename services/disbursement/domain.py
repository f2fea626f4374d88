"""Disbursement rules, no I/O: program rules as data, entitlements and the funding plan."""
from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from contracts.disbursement import FundingSource
from contracts.values import Period, Rupiah

_period = TypeAdapter(Period)
_URL_NS = uuid.NAMESPACE_URL.bytes


def check_period(period: str) -> str:
    return _period.validate_python(period)


def idempotency_key(program: str, period: str, nik: str) -> str:
    return f"{program}/{period}/{nik}"


def instruction_id(program: str, period: str, nik: str) -> uuid.UUID:
    """Deterministic: the same (program, period, NIK) is always the same instruction
    (uuid5 in the URL namespace, computed inline: a million per cycle)."""
    h = hashlib.sha1(_URL_NS + f"sinergi/instruction/{program}/{period}/{nik}".encode()).digest()
    return uuid.UUID(bytes=h[:16], version=5)


def cycle_id(program: str, period: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sinergi/cycle/{program}/{period}")


def allocation_id(source: str, program: str, fiscal_year: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sinergi/allocation/{source}/{program}/{fiscal_year}")


class AmountRule(BaseModel):
    """A fixed monthly amount, or the regency's poverty line (garis kemiskinan) for the year."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["fixed", "poverty_line"]
    amount: Rupiah | None = Field(default=None, description="for kind fixed")
    regency: str | None = Field(default=None, pattern=r"^\d{4}$", description="for kind poverty_line, e.g. 3317")

    @model_validator(mode="after")
    def _complete(self) -> "AmountRule":
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
    frequency: Literal["monthly"] = "monthly"
    require_verified: bool = Field(default=True, description="the person's latest verification (verivali) passed")
    min_age: int | None = Field(default=None, ge=0, le=130, description="age in years on the period's first day")
    funding_mode: Literal["order", "split"] = Field(
        default="order", description="order: each payment from the first source with budget left; "
                                     "split: every payment shared between sources by percent")
    funding: list[FundingRule] = Field(min_length=1)
    exclusivity_class: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$",
                                          description="no one gets two programs of this class in one month")
    channel: str = Field(default="bank", pattern=r"^[a-z][a-z0-9_]{0,31}$", description="payment channel name")

    @model_validator(mode="after")
    def _funding(self) -> "ProgramRules":
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
    y, m = int(period[:4]), int(period[5:])
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
    if any(b.allocation_id is None for b, p in zip(budgets, parts) if p > 0):
        return []
    n = min([wanted] + [max(b.remaining, 0) // p for b, p in zip(budgets, parts) if p > 0])
    if n <= 0:
        return []
    return [Tranche(n, tuple((b.source, b.allocation_id, p) for b, p in zip(budgets, parts)  # type: ignore[misc]
                             if p > 0))]
