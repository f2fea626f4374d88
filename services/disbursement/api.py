"""Disbursement HTTP routes: program rules, poverty lines, allocations, cycles, the ledger proof.

Changing money needs Role.program_manager; reading also allows Role.auditor. Routes only
translate HTTP: the work (and every query) is in cycles.py, budgets.py and ledger.py; a
refusal of the rules (domain.Refused) is answered by app.py's handler with its status.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from contracts.disbursement import FundingSource
from services.disbursement import budgets, cycles, ledger
from services.disbursement.domain import BoundedRupiah, ProgramRules
from services.kit.auth import Principal, Role, require

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


def router(deps: Disbursement) -> APIRouter:
    r = APIRouter()

    @r.put("/programs/{code}", tags=["programs"], summary="define or change a program's rules")
    async def put_program(rules: ProgramRules, code: Program, p: Manager) -> dict[str, Any]:
        return await cycles.define_program(deps, code, rules, p.user)

    @r.get("/programs/{code}", tags=["programs"], summary="a program's rules")
    async def get_program(code: Program, _p: Reader) -> dict[str, Any]:
        return await cycles.program(deps, code)

    @r.put("/poverty-lines/{regency}/{year}", tags=["programs"], summary="the regency's poverty line for a year")
    async def put_poverty_line(body: PovertyLineIn, regency: Annotated[str, Path(pattern=r"^\d{4}$")], year: Year,
                               _p: Manager) -> dict[str, Any]:
        return await cycles.set_poverty_line(deps, regency, year, body.amount, body.reason)

    @r.put("/allocations/{source}/{program}/{fiscal_year}", tags=["budgets"],
           summary="set or amend a budget allocation's ceiling (with a reason); published as an event")
    async def put_allocation(body: AllocationIn, source: FundingSource, program: Program, fiscal_year: Year,
                             p: Manager) -> dict[str, Any]:
        return await budgets.set_allocation(deps, source, program, fiscal_year, body.ceiling, body.reason, p.user)

    @r.get("/allocations", tags=["budgets"], summary="every allocation with ceiling, reserved, paid, remaining")
    async def get_allocations(_p: Reader, program: str | None = None) -> dict[str, Any]:
        return {"items": await budgets.list_allocations(deps, program)}

    @r.post("/cycles/{program}/{period}/preview", tags=["cycles"],
            summary="dry run: who would be paid, totals per source; writes nothing")
    async def preview(program: Program, period: PeriodPath, _p: Manager) -> dict[str, Any]:
        return await cycles.preview(deps, program, period)

    @r.post("/cycles/{program}/{period}", tags=["cycles"],
            summary="commit the cycle: reserve budget, issue one instruction per person (idempotent)")
    async def commit(program: Program, period: PeriodPath, p: Manager) -> dict[str, Any]:
        return await cycles.run(deps, program, period, p.user)

    @r.get("/ledger/proof", tags=["ledger"], summary="prove the books balance (trial balance and reconciliations)")
    async def proof(_p: Reader) -> dict[str, Any]:
        return await ledger.proof(deps)

    return r
