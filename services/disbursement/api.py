"""Disbursement HTTP routes: program rules, poverty lines, allocations, cycles, the ledger proof.

Changing money needs Role.program_manager; reading also allows Role.auditor. A cycle is
prepared by one program manager and approved by another (maker-checker, approval.py) before
any instruction leaves. Routes only translate HTTP: the work (and every query) is in
approval.py, cycles.py, budgets.py and ledger.py; a refusal of the rules (domain.Refused) is
answered by app.py's handler with its status.
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from contracts.disbursement import FundingSource
from services.disbursement import approval, budgets, cycles, ledger
from services.disbursement.domain import BoundedRupiah, ProgramRules
from services.kit.auth import Principal, ProgramScope, Role, require

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement

Manager = Annotated[Principal, Depends(require(Role.program_manager))]
Reader = Annotated[Principal, Depends(require(Role.program_manager, Role.auditor))]
Program = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{1,31}$", description="program code, e.g. kamalia_merekah")]
PeriodPath = Annotated[str, Path(description="YYYY-MM")]
Year = Annotated[int, Path(ge=2000, le=2100)]


class AllocationIn(BaseModel):
    ceiling: BoundedRupiah = Field(description="the most that may ever be reserved from this allocation, rupiah")
    reason: str = Field(min_length=3, max_length=1000, description="why it is set or amended (kept and published)")


class PovertyLineIn(BaseModel):
    amount: BoundedRupiah = Field(gt=0, description="rupiah per person per month, at most 10^15")
    reason: str = Field(min_length=3, max_length=1000)


class ProgramIn(ProgramRules):
    reason: str | None = Field(default=None, min_length=3, max_length=1000,
                               description="why the rules change (required when changing a defined program)")


class ProgramOut(BaseModel):
    code: str
    rules: dict[str, Any]
    changed: bool = True


class PovertyLineOut(BaseModel):
    regency: str
    year: int
    amount: int
    previous_amount: int | None = None


class RejectIn(BaseModel):
    reason: str = Field(min_length=3, max_length=1000, description="why the prepared cycle is rejected")


class PreparationOut(BaseModel):
    preparation_id: uuid.UUID
    programme_identifier: str
    period: str
    status: str = Field(description="prepared, approved, rejected, expired or superseded")
    prepared_by: str
    prepared_at: dt.datetime
    expires_at: dt.datetime
    people: int = Field(description="the frozen list: people the approved cycle may pay")
    total: int
    summary: dict[str, Any] = Field(description="the preview as the preparer saw it")
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    decision_reason: str | None = None


class ArrearsOut(BaseModel):
    instructions: int = Field(description="held cycles paid late in this run (programs with pays_arrears)")
    total: int


class CycleRunOut(BaseModel):
    programme_identifier: str
    period: str
    dry_run: bool = False
    cycle_id: uuid.UUID
    created: int = Field(description="instructions this run issued")
    created_total: int
    created_per_source: dict[str, int]
    instructions: int = Field(description="instructions of the cycle so far")
    total: int
    unfunded: int
    arrears: ArrearsOut = Field(default_factory=lambda: ArrearsOut(instructions=0, total=0))
    preparation_id: uuid.UUID | None = None
    prepared_by: str | None = None
    approved_by: str | None = None


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # the main fields typed, the rest of the object kept


class PreviewOut(Open):
    programme_identifier: str
    period: str
    dry_run: bool
    total: int
    per_source: list[dict[str, Any]]


class AllocationOut(Open):
    allocation_id: str
    source: str
    programme_identifier: str


class AllocationsOut(BaseModel):
    items: list[AllocationOut]


class ProofCheck(Open):
    check: str
    ok: bool


class ProofOut(BaseModel):
    balanced: bool
    checks: list[ProofCheck]


def router(deps: Disbursement) -> APIRouter:
    r = APIRouter()

    @r.put("/programs/{code}", tags=["programs"], response_model=ProgramOut,
           summary="define or change a program's rules (a change needs a reason); an audit event")
    async def put_program(body: ProgramIn, code: Program, p: Manager, _s: ProgramScope) -> dict[str, Any]:
        rules = ProgramRules.model_validate(body.model_dump(exclude={"reason"}))
        return await approval.define_program(deps, code, rules, body.reason, p.user)

    @r.get("/programs/{code}", tags=["programs"], response_model=ProgramOut, summary="a program's rules")
    async def get_program(code: Program, _p: Reader) -> dict[str, Any]:
        return await approval.program(deps, code)

    @r.put("/poverty-lines/{regency}/{year}", tags=["programs"], response_model=PovertyLineOut,
           summary="the regency's poverty line for a year (with a reason); an audit event")
    async def put_poverty_line(body: PovertyLineIn, regency: Annotated[str, Path(pattern=r"^\d{4}$")], year: Year,
                               p: Manager) -> dict[str, Any]:
        return await approval.set_poverty_line(deps, regency, year, body.amount, body.reason, p.user)

    @r.put("/allocations/{source}/{program}/{fiscal_year}", response_model=AllocationOut, tags=["budgets"],
           summary="set or amend a budget allocation's ceiling (with a reason); published as an event")
    async def put_allocation(body: AllocationIn, source: FundingSource, program: Program, fiscal_year: Year,
                             p: Manager, _s: ProgramScope) -> dict[str, Any]:
        return await budgets.set_allocation(deps, source, program, fiscal_year, body.ceiling, body.reason, p.user)

    @r.get("/allocations", response_model=AllocationsOut, tags=["budgets"], summary="every allocation with ceiling, reserved, paid, remaining")
    async def get_allocations(_p: Reader, program: str | None = None) -> dict[str, Any]:
        return {"items": await budgets.list_allocations(deps, program)}

    @r.post("/cycles/{program}/{period}/preview", response_model=PreviewOut, tags=["cycles"],
            summary="dry run: who would be paid, totals per source; writes nothing")
    async def preview(program: Program, period: PeriodPath, _p: Manager, _s: ProgramScope) -> dict[str, Any]:
        return await cycles.preview(deps, program, period)

    @r.post("/cycles/{program}/{period}/prepare", tags=["cycles"], response_model=PreparationOut,
            summary="maker: freeze the cycle's list and totals for approval by another program manager")
    async def prepare(program: Program, period: PeriodPath, p: Manager, _s: ProgramScope) -> dict[str, Any]:
        return await approval.prepare(deps, program, period, p.user)

    @r.get("/cycles/preparations/{preparation_id}", tags=["cycles"], response_model=PreparationOut,
           summary="a prepared cycle and its decision")
    async def get_preparation(preparation_id: uuid.UUID, _p: Reader) -> dict[str, Any]:
        return await approval.preparation(deps, preparation_id)

    @r.post("/cycles/preparations/{preparation_id}/approve", tags=["cycles"], response_model=CycleRunOut,
            summary="checker (never the preparer): approve, then issue the frozen list's instructions")
    async def approve(preparation_id: uuid.UUID, p: Manager) -> dict[str, Any]:
        return await approval.approve(deps, preparation_id, p.user)

    @r.post("/cycles/preparations/{preparation_id}/reject", tags=["cycles"], response_model=PreparationOut,
            summary="reject (or withdraw) a prepared cycle, with a reason")
    async def reject(preparation_id: uuid.UUID, body: RejectIn, p: Manager) -> dict[str, Any]:
        return await approval.reject(deps, preparation_id, p.user, body.reason)

    @r.post("/cycles/{program}/{period}", tags=["cycles"], response_model=CycleRunOut,
            summary="continue an approved cycle (after a crash or a raised ceiling; idempotent); "
                    "409 without an approved preparation")
    async def commit(program: Program, period: PeriodPath, p: Manager, _s: ProgramScope) -> dict[str, Any]:
        return await approval.rerun(deps, program, period, p.user)

    @r.get("/ledger/proof", response_model=ProofOut, tags=["ledger"], summary="prove the books balance (trial balance and reconciliations)")
    async def proof(_p: Reader) -> dict[str, Any]:
        return await ledger.proof(deps)

    return r
