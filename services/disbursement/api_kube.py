"""KUBE HTTP routes (program managers write; auditors read). The rules live in domain.py,
the reads and writes in kube.py; a refusal (kube.KubeError, domain.Refused) is answered by
app.py's handler with its status."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from contracts.disbursement import FundingSource
from contracts.values import NIK, Period, VillageCode
from services.disbursement import kube
from services.disbursement.domain import BoundedRupiah
from services.kit.auth import Principal, Role, require

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement

Manager = Annotated[Principal, Depends(require(Role.program_manager))]
Reader = Annotated[Principal, Depends(require(Role.program_manager, Role.auditor))]
Month = Annotated[Period, Path()]


class MemberIn(BaseModel):
    nik: NIK
    joined_on: dt.date


class GroupIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    village_code: VillageCode
    members: list[MemberIn] = Field(min_length=1)


class SavingIn(BaseModel):
    amount: BoundedRupiah


class MeetingIn(BaseModel):
    attendees: list[NIK]


class GrantIn(BaseModel):
    source: FundingSource
    fiscal_year: int = Field(ge=2000, le=2100)
    amount: BoundedRupiah = Field(gt=0)


class LoanIn(BaseModel):
    nik: NIK
    need: BoundedRupiah = Field(gt=0, description="what the member's business needs")
    monthly_capacity: BoundedRupiah = Field(gt=0, description="the instalment the member can pay each month")
    term_months: int = Field(ge=1, le=60)
    issued_on: dt.date


class InstalmentIn(BaseModel):
    payment_id: uuid.UUID = Field(description="the treasurer's id for this payment: sending it twice records it once")
    amount: BoundedRupiah = Field(gt=0)
    paid_on: dt.date


# answers (the OpenAPI shows them; every refusal is kit.http.ErrorBody)
class GroupOut(BaseModel):
    group_id: str


class Done(BaseModel):
    ok: bool


class EligibilityOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    eligible: bool
    reasons: list[str]


class GrantOut(BaseModel):
    grant_id: str


class LoanOut(BaseModel):
    loan_id: str
    principal: int
    instalment: int
    term_months: int
    first_due: str
    limited_by: str | None


class InstalmentOut(BaseModel):
    loan_id: str
    duplicate: bool
    outstanding: int


class ArrearsOut(BaseModel):
    group_id: str
    as_of: str
    loans: list[dict[str, Any]]
    overdue_by_bucket: dict[str, Any]


class FundPoint(BaseModel):
    day: str
    balance: int


class FundOut(BaseModel):
    group_id: str
    dana_abadi: int
    fund_balance: int
    outstanding_loans: int
    history: list[FundPoint]


def router(deps: Disbursement) -> APIRouter:
    r = APIRouter(prefix="/kube", tags=["kube"])

    @r.post("/groups", response_model=GroupOut, summary="register a KUBE group and its members")
    async def create_group(body: GroupIn, _p: Manager) -> dict[str, Any]:
        gid = await kube.register_group(deps, body.name, body.village_code,
                                        [(m.nik, m.joined_on) for m in body.members])
        return {"group_id": str(gid)}

    @r.put("/groups/{gid}/savings/{nik}/{month}", response_model=Done, summary="a member's saving for a month")
    async def put_saving(body: SavingIn, gid: uuid.UUID, nik: str, month: Month, _p: Manager) -> dict[str, Any]:
        await kube.record_saving(deps, gid, nik, month, body.amount)
        return {"ok": True}

    @r.put("/groups/{gid}/meetings/{held_on}", response_model=Done, summary="who attended a group meeting")
    async def put_meeting(body: MeetingIn, gid: uuid.UUID, held_on: dt.date, _p: Manager) -> dict[str, Any]:
        await kube.record_meeting(deps, gid, held_on, list(body.attendees))
        return {"ok": True}

    @r.get("/groups/{gid}/eligibility/{nik}", response_model=EligibilityOut, summary="may this member borrow (savings and attendance)")
    async def get_eligibility(gid: uuid.UUID, nik: str, as_of: dt.date, _p: Reader) -> dict[str, Any]:
        return await kube.eligibility(deps, gid, nik, as_of)

    @r.post("/groups/{gid}/grants", response_model=GrantOut, summary="grant from a funding source to the group's fund")
    async def post_grant(body: GrantIn, gid: uuid.UUID, _p: Manager) -> dict[str, Any]:
        grant_id = await kube.grant(deps, gid, body.source, body.fiscal_year, body.amount)
        return {"grant_id": str(grant_id)}

    @r.post("/groups/{gid}/loans", response_model=LoanOut, summary="a loan sized to need and instalment capacity")
    async def post_loan(body: LoanIn, gid: uuid.UUID, _p: Manager) -> dict[str, Any]:
        return await kube.issue_loan(deps, gid, body.nik, body.need, body.monthly_capacity, body.term_months,
                                     body.issued_on)

    @r.post("/loans/{loan_id}/instalments", response_model=InstalmentOut, summary="an instalment paid back (idempotent by payment_id)")
    async def post_instalment(body: InstalmentIn, loan_id: uuid.UUID, _p: Manager) -> dict[str, Any]:
        return await kube.pay_instalment(deps, loan_id, body.payment_id, body.amount, body.paid_on)

    @r.get("/groups/{gid}/arrears", response_model=ArrearsOut, summary="arrears (kemacetan) aged by days overdue")
    async def get_arrears(gid: uuid.UUID, as_of: dt.date, _p: Reader) -> dict[str, Any]:
        return await kube.arrears(deps, gid, as_of)

    @r.get("/groups/{gid}/fund", response_model=FundOut, summary="the fund's balance over time (dana abadi)")
    async def get_fund(gid: uuid.UUID, _p: Reader) -> dict[str, Any]:
        return await kube.fund_history(deps, gid)

    return r
