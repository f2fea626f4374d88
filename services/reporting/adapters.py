"""Events in, facts out: the one place that knows the other services' event shapes.

`ADAPTERS` maps an `event_type` to (the model to validate `data` with, a function giving
facts). Event types not listed are acknowledged and skipped. Where a domain had not yet
published its event class in `contracts/`, a `Pending*` model below states the shape
reporting expects; wiring the real class is one line in `ADAPTERS` (and its field names
in the adapter function).
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from contracts.registry import EnrolmentChanged
from contracts.values import Period, ProgramCode, Rupiah, VillageCode
from services.reporting import domain
from services.reporting.facts import (AllocationFact, ComplaintReceived, ComplaintReferred, ComplaintResolved,
                                      EnrolmentFact, Fact, KubeFlow, KubeGroup, PaymentFact, VisitDone, VisitDue)


class _Pending(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PendingPaymentSettled(_Pending):
    """disbursement.payment_settled: the channel confirmed the money reached the person."""

    payment_id: uuid.UUID
    programme_identifier: ProgramCode
    person_ref: str = Field(min_length=8, description="keyed pseudonym of the person, never the NIK")
    village_code: VillageCode
    funding_source: str = Field(min_length=1)
    amount: Rupiah
    period: Period


class PendingBudgetAllocated(_Pending):
    """disbursement.budget_allocated: a source's ceiling (pagu) for a program and year."""

    funding_source: str = Field(min_length=1)
    programme_identifier: ProgramCode
    fiscal_year: int = Field(ge=2000, le=2100)
    amount: Rupiah


class PendingComplaintReceived(_Pending):
    case_id: uuid.UUID
    village_code: VillageCode
    received_on: dt.date
    due_on: dt.date | None = None


class PendingComplaintReferred(_Pending):
    case_id: uuid.UUID
    village_code: VillageCode
    level: str = Field(pattern=r"^(kecamatan|kabupaten|agency)$")
    referred_on: dt.date


class PendingComplaintResolved(_Pending):
    case_id: uuid.UUID
    village_code: VillageCode
    resolved_on: dt.date
    received_on: dt.date | None = None


class PendingVisitScheduled(_Pending):
    visit_id: uuid.UUID
    companion_id: str = Field(min_length=1, max_length=64)
    village_code: VillageCode
    period: Period


class PendingVisitRecorded(_Pending):
    visit_id: uuid.UUID
    companion_id: str = Field(min_length=1, max_length=64)
    village_code: VillageCode
    visited_on: dt.date
    physical_condition: str = Field(min_length=1, max_length=32)
    social_condition: str = Field(min_length=1, max_length=32)


class PendingKubeFunded(_Pending):
    group_id: uuid.UUID
    village_code: VillageCode
    members: int = Field(ge=0)
    fund_amount: Rupiah
    funded_on: dt.date


class PendingKubeLoan(_Pending):
    """A loan out of the group fund, an instalment falling due, or an instalment paid."""

    group_id: uuid.UUID
    amount: Rupiah
    on: dt.date


def _enrolment(e: EnrolmentChanged) -> list[Fact]:
    return [EnrolmentFact(e.programme_identifier, e.village_code, e.enrolment_status.value,
                          e.previous_status.value if e.previous_status else None, e.status_change_date)]


def _payment(e: PendingPaymentSettled) -> list[Fact]:
    return [PaymentFact(e.programme_identifier, e.person_ref, e.village_code, e.funding_source, e.amount, e.period)]


def _allocation(e: PendingBudgetAllocated) -> list[Fact]:
    return [AllocationFact(e.funding_source, e.programme_identifier, e.fiscal_year, e.amount)]


def _kube_flow(kind: str) -> Callable[[PendingKubeLoan], list[Fact]]:
    def f(e: PendingKubeLoan) -> list[Fact]:
        return [KubeFlow(str(e.group_id), domain.period_of(e.on), **{kind: e.amount})]
    return f


ADAPTERS: dict[str, tuple[type[BaseModel], Callable[[Any], list[Fact]]]] = {
    "registry.enrolment_changed": (EnrolmentChanged, _enrolment),
    "disbursement.payment_settled": (PendingPaymentSettled, _payment),
    "disbursement.budget_allocated": (PendingBudgetAllocated, _allocation),
    "intake.complaint_received": (PendingComplaintReceived, lambda e: [
        ComplaintReceived(str(e.case_id), e.village_code, e.received_on, e.due_on)]),
    "intake.complaint_referred": (PendingComplaintReferred, lambda e: [
        ComplaintReferred(str(e.case_id), e.village_code, e.level, e.referred_on)]),
    "intake.complaint_resolved": (PendingComplaintResolved, lambda e: [
        ComplaintResolved(str(e.case_id), e.village_code, e.resolved_on, e.received_on)]),
    "intake.visit_scheduled": (PendingVisitScheduled, lambda e: [
        VisitDue(str(e.visit_id), e.companion_id, e.village_code, e.period)]),
    "intake.visit_recorded": (PendingVisitRecorded, lambda e: [
        VisitDone(str(e.visit_id), e.companion_id, e.village_code, e.visited_on,
                  e.physical_condition.lower(), e.social_condition.lower())]),
    "disbursement.kube_funded": (PendingKubeFunded, lambda e: [
        KubeGroup(str(e.group_id), e.village_code, e.members, e.fund_amount, domain.period_of(e.funded_on))]),
    "disbursement.kube_loan_disbursed": (PendingKubeLoan, _kube_flow("disbursed")),
    "disbursement.kube_instalment_due": (PendingKubeLoan, _kube_flow("due")),
    "disbursement.kube_instalment_paid": (PendingKubeLoan, _kube_flow("repaid")),
}
