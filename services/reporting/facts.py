"""Facts: the small, personal-data-free records the read models are built from.

Every event reporting uses is turned into facts by `adapters.py`; the store only knows
facts. So a changed event contract touches one adapter, never the SQL.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EnrolmentFact:
    """A person's enrolment in a program now has `status` in `village_code` from `effective`.
    `person_ref` is reporting's keyed pseudonym of the NIK (the NIK itself is never kept)."""

    program: str
    person_ref: str
    village_code: str
    status: str
    effective: dt.date


@dataclass(frozen=True, slots=True)
class LifeFact:
    """A person's life status (registry.life_status_changed) is now `life_status` from `effective`:
    anything but `alive` takes them out of every program they are active in; `deceased`,
    `moved_out` and `ineligible` are exits, counted by that reason."""

    person_ref: str
    village_code: str
    life_status: str
    effective: dt.date


@dataclass(frozen=True, slots=True)
class PaymentFact:
    """Money reached a person (pembayaran): `person_ref` is a pseudonym, never a NIK."""

    program: str
    person_ref: str
    village_code: str
    funding_source: str
    amount: int
    period: str  # YYYY-MM the payment belongs to
    payments: int = 1  # 0 for the second and later funding lines of one payment


@dataclass(frozen=True, slots=True)
class AllocationFact:
    """A funding source's ceiling (pagu) for a program and fiscal year grew by `amount`."""

    funding_source: str
    program: str
    fiscal_year: int
    amount: int


@dataclass(frozen=True, slots=True)
class ComplaintReceived:
    """A complaint or request (pengaduan / permohonan) was registered at `level`."""

    case_id: str
    village_code: str
    received_on: dt.date
    due_on: dt.date | None
    level: str = "village"


@dataclass(frozen=True, slots=True)
class ComplaintReferred:
    """The case went up the SLRT chain to `level` (by staff, or escalated when overdue)."""

    case_id: str
    village_code: str
    level: str
    referred_on: dt.date
    due_on: dt.date | None = None


@dataclass(frozen=True, slots=True)
class ComplaintResolved:
    case_id: str
    village_code: str
    resolved_on: dt.date
    received_on: dt.date | None  # when the event carries it; else taken from the case


@dataclass(frozen=True, slots=True)
class Assignment:
    """A companion (pendamping) took on, or stopped, an assisted person's monthly home visit.
    Each active assignment is one visit due per month."""

    assignment_id: str
    companion: str
    village_code: str
    active: bool
    period: str  # from this month on


@dataclass(frozen=True, slots=True)
class VisitDone:
    """A home visit report: physical and social condition ratings only, no free text."""

    visit_id: str
    companion: str
    village_code: str
    period: str
    physical: str
    social: str


@dataclass(frozen=True, slots=True)
class KubeGroup:
    """A KUBE (joint business group) was registered, or its membership changed."""

    group_id: str
    village_code: str
    members: int
    period: str


@dataclass(frozen=True, slots=True)
class KubeFlow:
    """Money in a KUBE revolving fund in a month: a grant in, a loan out, an instalment
    falling due, a repayment."""

    group_id: str
    period: str
    funded: int = 0
    disbursed: int = 0
    due: int = 0
    repaid: int = 0


Fact = (EnrolmentFact | LifeFact | PaymentFact | AllocationFact | ComplaintReceived | ComplaintReferred | ComplaintResolved
        | Assignment | VisitDone | KubeGroup | KubeFlow)
