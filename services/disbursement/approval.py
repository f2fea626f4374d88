"""Maker-checker for payment cycles, and program rules and poverty lines as audited changes.

A program manager *prepares* a cycle: the preview is computed and frozen (the people it would
pay, in NIK order, and its totals per source) and stored with an expiry. A *second* program
manager (e.g. the head of the Dinas, kepala dinas; never the preparer) approves it, and only
then does any instruction leave: the cycle pays the frozen people who are still eligible and
nobody else. A preparation can be rejected (or withdrawn), expires after
`SINERGI_DISBURSEMENT_PREPARATION_HOURS`, is superseded by a newer one, and cannot be approved
once the program's rules or the amount changed since it was made. Every step is an event on
the audit stream with its actor; so is every change of program rules and poverty lines, with
its reason.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.disbursement import (CycleApproved, CyclePrepared, CycleRejected, PovertyLineSet,
                                    ProgramRulesSet)
from services.disbursement import cycles, ledger, store
from services.disbursement.domain import ProgramRules, Refused

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement

P = store.preparations


# --- program rules and poverty lines: audited changes ----------------------------------------

async def define_program(deps: Disbursement, code: str, rules: ProgramRules, reason: str | None,
                         by: str) -> dict[str, Any]:
    new = rules.model_dump(mode="json")
    async with deps.kit.unit_of_work() as uow:
        chain = await ledger.Chain.lock(uow, deps.cfg)
        old = await store.program_rules(uow.session, code)
        if old is not None:  # as the rules read today: a field added since (pays_arrears) at its default
            old = ProgramRules.model_validate(old).model_dump(mode="json")
        if old == new:
            return {"code": code, "rules": new, "changed": False}
        if old is not None and not reason:
            raise Refused("changing a program's rules needs a reason (field `reason`, 3-1000 characters)", 422)
        await store.save_program(uow.session, code, new, by)
        chain.emit(ProgramRulesSet, programme_identifier=code, rules=new, previous_rules=old,
                   reason=reason or "program defined", set_by=by)
        await chain.save()
    return {"code": code, "rules": new, "changed": True}


async def program(deps: Disbursement, code: str) -> dict[str, Any]:
    async with deps.kit.sessions() as s:
        rules = await store.program_rules(s, code)
    if rules is None:
        raise Refused(f"no program {code!r}", 404)
    return {"code": code, "rules": rules}


async def set_poverty_line(deps: Disbursement, regency: str, year: int, amount: int, reason: str,
                           by: str) -> dict[str, Any]:
    async with deps.kit.unit_of_work() as uow:
        chain = await ledger.Chain.lock(uow, deps.cfg)
        old = await store.poverty_line(uow.session, regency, year)
        if old != amount:
            await store.save_poverty_line(uow.session, regency, year, amount, reason)
            chain.emit(PovertyLineSet, regency=regency, year=year, amount=amount, previous_amount=old,
                       reason=reason, set_by=by)
            await chain.save()
    return {"regency": regency, "year": year, "amount": amount, "previous_amount": old}


# --- maker-checker ----------------------------------------------------------------------------

def _terms_digest(ctx: cycles.CycleTerms) -> str:
    raw = json.dumps({"rules": ctx.rules.model_dump(mode="json"), "amount": ctx.amount}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


async def prepare(deps: Disbursement, program: str, period: str, by: str) -> dict[str, Any]:
    """Freeze the preview: who would be paid now (NIK order, as far as the budget goes) and the
    totals. An open preparation of the same cycle is superseded."""
    pid = uuid.uuid4()
    async with deps.kit.unit_of_work() as uow:
        s = uow.session
        chain = await ledger.Chain.lock(uow, deps.cfg)
        summary = await cycles._preview(s, program, period)
        ctx = await cycles.load_terms(s, program, period)
        await s.execute(sa.update(P).where(P.c.programme_identifier == program, P.c.period == period,
                                           P.c.status == "prepared")
                        .values(status="superseded", decided_at=sa.func.now(), decided_by=by))
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=deps.cfg.preparation_hours)
        await s.execute(sa.insert(P).values(
            id=pid, programme_identifier=program, period=period, status="prepared", prepared_by=by,
            expires_at=expires, terms=_terms_digest(ctx), people=summary["would_issue"], total=summary["total"],
            summary=summary))
        # the frozen list, written inside PostgreSQL (a million NIKs never travel to Python)
        sql, params = cycles._eligible_sql(ctx, exclusivity=True)
        await s.execute(sa.text(f"insert into cycle_preparation_people (preparation_id, nik) "
                                f"select :pid, nik from ({sql}) q order by nik limit :n"),
                        params | {"pid": pid, "n": summary["would_issue"]})
        chain.emit(CyclePrepared, preparation_id=pid, programme_identifier=program, period=period,
                   people=summary["would_issue"], total=summary["total"], amount_per_person=ctx.amount,
                   per_source=summary["per_source"], prepared_by=by, expires_at=expires)
        await chain.save()
    return await preparation(deps, pid)


async def preparation(deps: Disbursement, pid: uuid.UUID) -> dict[str, Any]:
    async with deps.kit.sessions() as s:
        row = (await s.execute(sa.select(P).where(P.c.id == pid))).first()
    if row is None:
        raise Refused(f"no cycle preparation {pid}", 404)
    return _out(row)


def _out(row: Any) -> dict[str, Any]:
    return {"preparation_id": row.id, "programme_identifier": row.programme_identifier, "period": row.period,
            "status": row.status, "prepared_by": row.prepared_by, "prepared_at": row.prepared_at,
            "expires_at": row.expires_at, "people": row.people, "total": row.total, "summary": row.summary,
            "decided_by": row.decided_by, "decided_at": row.decided_at, "decision_reason": row.decision_reason}


async def _open(s: AsyncSession, pid: uuid.UUID) -> Any:
    row = (await s.execute(sa.select(P).where(P.c.id == pid).with_for_update())).first()
    if row is None:
        raise Refused(f"no cycle preparation {pid}", 404)
    if row.status != "prepared":
        raise Refused(f"preparation {pid} is {row.status}, not awaiting approval", 409)
    return row


async def approve(deps: Disbursement, pid: uuid.UUID, by: str) -> dict[str, Any]:
    """The checker's approval, then the cycle runs on the frozen list."""
    async with deps.kit.unit_of_work() as uow:
        s = uow.session
        chain = await ledger.Chain.lock(uow, deps.cfg)
        row = await _open(s, pid)
        if row.prepared_by == by:
            raise Refused("maker-checker: the account that prepared a cycle cannot approve it; "
                          "another program manager must", 403)
        expired = row.expires_at <= dt.datetime.now(dt.UTC)
        changed = not expired and row.terms != _terms_digest(
            await cycles.load_terms(s, row.programme_identifier, row.period))
        if expired or changed:
            why = "expired" if expired else "the program's rules or amount changed since it was prepared"
            await s.execute(sa.update(P).where(P.c.id == pid).values(
                status="expired" if expired else "superseded", decided_at=sa.func.now(), decision_reason=why))
            chain.emit(CycleRejected, preparation_id=pid, programme_identifier=row.programme_identifier,
                       period=row.period, rejected_by="system", reason=why)
            await chain.save()
        else:
            await s.execute(sa.update(P).where(P.c.id == pid).values(status="approved", decided_by=by,
                                                                     decided_at=sa.func.now()))
            chain.emit(CycleApproved, preparation_id=pid, programme_identifier=row.programme_identifier,
                       period=row.period, people=row.people, total=row.total, prepared_by=row.prepared_by,
                       approved_by=by)
            await chain.save()
    if expired or changed:
        raise Refused(f"preparation {pid} cannot be approved: {why}; prepare the cycle again", 409)
    res = await cycles.run(deps, row.programme_identifier, row.period, by, preparation=pid)
    assert res is not None  # run waits for its turn
    return res | {"preparation_id": pid, "prepared_by": row.prepared_by, "approved_by": by}


async def reject(deps: Disbursement, pid: uuid.UUID, by: str, reason: str) -> dict[str, Any]:
    async with deps.kit.unit_of_work() as uow:
        chain = await ledger.Chain.lock(uow, deps.cfg)
        row = await _open(uow.session, pid)
        await uow.session.execute(sa.update(P).where(P.c.id == pid).values(
            status="rejected", decided_by=by, decided_at=sa.func.now(), decision_reason=reason))
        chain.emit(CycleRejected, preparation_id=pid, programme_identifier=row.programme_identifier,
                   period=row.period, rejected_by=by, reason=reason)
        await chain.save()
    return await preparation(deps, pid)


async def approved(s: AsyncSession, program: str, period: str) -> uuid.UUID | None:
    """The latest approved preparation of this cycle (what a re-run or a resumption pays)."""
    return (await s.execute(sa.select(P.c.id).where(P.c.programme_identifier == program, P.c.period == period,
                                                    P.c.status == "approved")
                            .order_by(P.c.decided_at.desc()).limit(1))).scalar()


async def rerun(deps: Disbursement, program: str, period: str, by: str) -> dict[str, Any]:
    """`POST /cycles/{program}/{period}`: continue an approved cycle (after a crash, a raised
    ceiling); without an approval nothing is issued."""
    async with deps.kit.sessions() as s:
        await cycles.load_terms(s, program, period)  # 404/422 as before for an unknown program or bad period
        pid = await approved(s, program, period)
    if pid is None:
        raise Refused(f"cycle {program} {period} has no approved preparation: prepare it "
                      f"(POST /cycles/{program}/{period}/prepare) and have another program manager approve it "
                      f"(POST /cycles/preparations/<id>/approve)", 409)
    res = await cycles.run(deps, program, period, by, preparation=pid)
    assert res is not None
    return res | {"preparation_id": pid}
