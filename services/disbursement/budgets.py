"""Allocations (source, program, fiscal year) and their ceilings; settlements of payments."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.disbursement import (AllocationSet, BudgetReleased, FundingLine, FundingSource, Settlement,
                                    SettlementRecorded, SettlementStatus)
from contracts.subjects import Names
from services.disbursement import domain, ledger, store
from services.disbursement.config import DisbursementSettings


class BudgetError(Exception):
    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


async def set_allocation(s: AsyncSession, names: Names, cfg: DisbursementSettings, source: FundingSource,
                         program: str, fiscal_year: int, ceiling: int, reason: str, by: str) -> dict:
    """Set or amend a ceiling. Refuses a ceiling below what is already reserved."""
    chain = await ledger.Chain.lock(s, names, cfg)
    a = store.allocations
    aid = domain.allocation_id(source.value, program, fiscal_year)
    cur = (await s.execute(sa.select(a).where(a.c.id == aid).with_for_update())).first()
    if cur is not None and ceiling < cur.reserved:
        raise BudgetError(f"ceiling {ceiling} is below the {cur.reserved} already reserved or paid from this "
                          "allocation; it cannot be lowered that far")
    previous = cur.ceiling if cur else None
    if cur is None:
        await s.execute(insert(a).values(id=aid, source=source.value, programme_identifier=program,
                                         fiscal_year=fiscal_year, ceiling=ceiling))
    else:
        await s.execute(sa.update(a).where(a.c.id == aid).values(ceiling=ceiling, updated_at=sa.func.now()))
    delta = ceiling - (previous or 0)
    if delta > 0:
        await ledger.post(s, [ledger.transfer("allocate", ledger.budget_account(aid),
                                              ledger.funding_account(source.value), delta, aid)])
    elif delta < 0:
        await ledger.post(s, [ledger.transfer("deallocate", ledger.funding_account(source.value),
                                              ledger.budget_account(aid), -delta, aid)])
    await s.execute(sa.insert(store.allocation_changes).values(allocation_id=aid, ceiling=ceiling,
                                                               previous_ceiling=previous, reason=reason, set_by=by))
    chain.emit(AllocationSet, allocation_id=aid, source=source, programme_identifier=program,
               fiscal_year=fiscal_year, ceiling=ceiling, previous_ceiling=previous, reason=reason, set_by=by)
    await chain.save(s)
    return {"allocation_id": str(aid), "source": source.value, "programme_identifier": program,
            "fiscal_year": fiscal_year, "ceiling": ceiling, "previous_ceiling": previous,
            "reserved": cur.reserved if cur else 0, "paid": cur.paid if cur else 0}


async def list_allocations(s: AsyncSession, program: str | None = None) -> list[dict]:
    a = store.allocations
    q = sa.select(a).order_by(a.c.programme_identifier, a.c.fiscal_year, a.c.source)
    if program:
        q = q.where(a.c.programme_identifier == program)
    return [{"allocation_id": str(r.id), "source": r.source, "programme_identifier": r.programme_identifier,
             "fiscal_year": r.fiscal_year, "ceiling": r.ceiling, "reserved": r.reserved, "paid": r.paid,
             "remaining": r.ceiling - r.reserved} for r in (await s.execute(q)).all()]


class SettlementRejected(Exception):
    """Goes to the dead-letter subject with `code` and the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def settle(s: AsyncSession, names: Names, cfg: DisbursementSettings, st: Settlement) -> str:
    """Apply one settlement. Returns 'paid', 'failed' or 'duplicate' (a late repeat: no change).
    Raises SettlementRejected for an unknown instruction or a contradicting report."""
    chain = await ledger.Chain.lock(s, names, cfg)
    i = store.instructions
    ins = (await s.execute(sa.select(i).where(i.c.id == st.instruction_id).with_for_update())).first()
    if ins is None:
        raise SettlementRejected("rjct.instruction.unknown",
                                 f"no payment instruction {st.instruction_id} was ever issued")
    if ins.status != "issued":
        if ins.status == st.status.value:
            return "duplicate"
        raise SettlementRejected("rjct.settlement.conflict",
                                 f"instruction {st.instruction_id} is already {ins.status}; "
                                 f"a later report of {st.status.value} is ignored")
    if st.status == SettlementStatus.failed and not st.reason:
        raise SettlementRejected("rjct.settlement.reason_missing", "a failed settlement must give a reason")
    funded = (await s.execute(sa.select(store.ledger.c.allocation_id, store.ledger.c.amount, store.allocations.c.source)
                              .join(store.allocations, store.allocations.c.id == store.ledger.c.allocation_id)
                              .where(store.ledger.c.ref == ins.id, store.ledger.c.kind == "reserve"))).all()
    lines = [FundingLine(source=r.source, allocation_id=r.allocation_id, amount=r.amount) for r in funded]
    a = store.allocations
    if st.status == SettlementStatus.paid:
        await ledger.post(s, [ledger.transfer("pay", ledger.paid_account(r.allocation_id),
                                              ledger.payable_account(r.allocation_id), r.amount, r.allocation_id,
                                              ins.id) for r in funded])
        for r in funded:
            await s.execute(sa.update(a).where(a.c.id == r.allocation_id).values(paid=a.c.paid + r.amount))
    else:
        await ledger.post(s, [ledger.transfer("release", ledger.budget_account(r.allocation_id),
                                              ledger.payable_account(r.allocation_id), r.amount, r.allocation_id,
                                              ins.id) for r in funded])
        for r in funded:
            await s.execute(sa.update(a).where(a.c.id == r.allocation_id).values(reserved=a.c.reserved - r.amount))
    await s.execute(sa.update(i).where(i.c.id == ins.id).values(status=st.status.value, reason=st.reason,
                                                                settled_at=st.settled_at))
    e = store.enrolments  # disbursement's own copy, from registry events
    village = (await s.execute(sa.select(e.c.village_code).where(
        e.c.nik == ins.nik, e.c.programme_identifier == ins.programme_identifier))).scalar()
    chain.emit(SettlementRecorded, instruction_id=ins.id, pseudonym=ins.pseudonym,
               programme_identifier=ins.programme_identifier, period=ins.period, status=st.status,
               amount=ins.amount, reason=st.reason, funding=lines, settled_at=st.settled_at,
               village_code=village)
    if st.status == SettlementStatus.failed:
        chain.emit(BudgetReleased, instruction_id=ins.id, programme_identifier=ins.programme_identifier,
                   period=ins.period, lines=lines, reason=st.reason or "")
    await chain.save(s)
    return st.status.value

