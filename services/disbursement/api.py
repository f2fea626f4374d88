"""Disbursement HTTP routes: program rules, poverty lines, allocations, cycles, the ledger proof.

Changing money needs Role.program_manager; reading also allows Role.auditor.
"""
from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, Field
from sqlalchemy.dialects.postgresql import insert

from contracts.disbursement import FundingSource
from contracts.values import Rupiah
from services.disbursement import budgets, cycles, ledger, store
from services.disbursement.config import DisbursementSettings
from services.disbursement.domain import ProgramRules
from services.kit.auth import Principal, Role, require
from services.kit.runtime import ServiceRuntime

MANAGER = require(Role.program_manager)
READER = require(Role.program_manager, Role.auditor)
def _program():
    return Path(pattern=r"^[a-z][a-z0-9_]{1,31}$", description="program code, e.g. kamalia_merekah")


class AllocationIn(BaseModel):
    ceiling: Rupiah = Field(description="the most that may ever be reserved from this allocation, rupiah")
    reason: str = Field(min_length=3, max_length=1000, description="why it is set or amended (kept and published)")


class PovertyLineIn(BaseModel):
    amount: Rupiah = Field(gt=0, description="rupiah per person per month")
    reason: str = Field(min_length=3, max_length=1000)


def router(rt: ServiceRuntime, cfg: DisbursementSettings) -> APIRouter:
    r = APIRouter()

    @r.put("/programs/{code}", tags=["programs"], summary="define or change a program's rules")
    async def put_program(rules: ProgramRules, code: str = _program(), p: Principal = Depends(MANAGER)) -> dict:
        async with rt.sessions.begin() as s:
            stmt = insert(store.programs).values(code=code, rules=rules.model_dump(mode="json"), updated_by=p.user)
            await s.execute(stmt.on_conflict_do_update(index_elements=["code"], set_={
                "rules": stmt.excluded.rules, "updated_by": p.user, "updated_at": sa.func.now()}))
        return {"code": code, "rules": rules.model_dump(mode="json")}

    @r.get("/programs/{code}", tags=["programs"], summary="a program's rules")
    async def get_program(code: str = _program(), _p: Principal = Depends(READER)) -> dict:
        async with rt.sessions() as s:
            row = (await s.execute(sa.select(store.programs).where(store.programs.c.code == code))).first()
        if row is None:
            raise HTTPException(404, detail={"error": f"no program {code!r}"})
        return {"code": code, "rules": row.rules}

    @r.put("/poverty-lines/{regency}/{year}", tags=["programs"], summary="the regency's poverty line for a year")
    async def put_poverty_line(body: PovertyLineIn, regency: str = Path(pattern=r"^\d{4}$"),
                               year: int = Path(ge=2000, le=2100), _p: Principal = Depends(MANAGER)) -> dict:
        async with rt.sessions.begin() as s:
            stmt = insert(store.poverty_lines).values(regency=regency, year=year, amount=body.amount, reason=body.reason)
            await s.execute(stmt.on_conflict_do_update(index_elements=["regency", "year"], set_={
                "amount": body.amount, "reason": body.reason, "updated_at": sa.func.now()}))
        return {"regency": regency, "year": year, "amount": body.amount}

    @r.put("/allocations/{source}/{program}/{fiscal_year}", tags=["budgets"],
           summary="set or amend a budget allocation's ceiling (with a reason); published as an event")
    async def put_allocation(body: AllocationIn, source: FundingSource, program: str = _program(),
                             fiscal_year: int = Path(ge=2000, le=2100), p: Principal = Depends(MANAGER)) -> dict:
        try:
            async with rt.sessions.begin() as s:
                out = await budgets.set_allocation(s, rt.names, cfg, source, program, fiscal_year, body.ceiling,
                                                   body.reason, p.user)
        except budgets.BudgetError as exc:
            raise HTTPException(exc.status, detail={"error": str(exc)}) from None
        rt.kick()
        return out

    @r.get("/allocations", tags=["budgets"], summary="every allocation with ceiling, reserved, paid, remaining")
    async def get_allocations(program: str | None = None, _p: Principal = Depends(READER)) -> dict:
        async with rt.sessions() as s:
            return {"items": await budgets.list_allocations(s, program)}

    @r.post("/cycles/{program}/{period}/preview", tags=["cycles"],
            summary="dry run: who would be paid, totals per source; writes nothing")
    async def preview(program: str = _program(), period: str = Path(description="YYYY-MM"),
                      _p: Principal = Depends(MANAGER)) -> dict:
        try:
            async with rt.sessions() as s:
                return await cycles.preview(s, program, period)
        except cycles.CycleError as exc:
            raise HTTPException(exc.status, detail={"error": str(exc)}) from None

    @r.post("/cycles/{program}/{period}", tags=["cycles"],
            summary="commit the cycle: reserve budget, issue one instruction per person (idempotent)")
    async def commit(program: str = _program(), period: str = Path(description="YYYY-MM"),
                     p: Principal = Depends(MANAGER)) -> dict:
        try:
            return await cycles.run(rt.sessions, rt.names, cfg, program, period, p.user, rt.kick)
        except cycles.CycleError as exc:
            raise HTTPException(exc.status, detail={"error": str(exc)}) from None

    @r.get("/ledger/proof", tags=["ledger"], summary="prove the books balance (trial balance and reconciliations)")
    async def proof(_p: Principal = Depends(READER)) -> dict:
        async with rt.sessions() as s:
            return await ledger.prove(s)

    return r
