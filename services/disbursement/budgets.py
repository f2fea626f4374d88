"""Allocations (source, program, fiscal year) and their ceilings; settlements of payments."""
from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from contracts.disbursement import (AllocationSet, BudgetReleased, FundingLine, FundingSource, Settlement,
                                    SettlementRecorded, SettlementStatus)
from services.disbursement import domain, ledger, store
from services.disbursement.config import DisbursementSettings
from services.disbursement.domain import SettlementRejected
from services.kit.uow import UnitOfWork

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement


class BudgetError(domain.Refused):
    pass


async def set_allocation(deps: Disbursement, source: FundingSource, program: str, fiscal_year: int, ceiling: int,
                         reason: str, by: str) -> dict[str, Any]:
    """Set or amend a ceiling. Refuses a ceiling below what is already reserved."""
    async with deps.kit.unit_of_work() as uow:
        return await _set_allocation(uow, deps.cfg, source, program, fiscal_year, ceiling, reason, by)


async def _set_allocation(uow: UnitOfWork, cfg: DisbursementSettings, source: FundingSource, program: str,
                          fiscal_year: int, ceiling: int, reason: str, by: str) -> dict[str, Any]:
    s = uow.session
    chain = await ledger.Chain.lock(uow, cfg)
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
    await chain.save()
    return {"allocation_id": str(aid), "source": source.value, "programme_identifier": program,
            "fiscal_year": fiscal_year, "ceiling": ceiling, "previous_ceiling": previous,
            "reserved": cur.reserved if cur else 0, "paid": cur.paid if cur else 0}


async def list_allocations(deps: Disbursement, program: str | None = None) -> list[dict[str, Any]]:
    a = store.allocations
    q = sa.select(a).order_by(a.c.programme_identifier, a.c.fiscal_year, a.c.source)
    if program:
        q = q.where(a.c.programme_identifier == program)
    async with deps.kit.sessions() as s:
        rows = (await s.execute(q)).all()
    return [{"allocation_id": str(r.id), "source": r.source, "programme_identifier": r.programme_identifier,
             "fiscal_year": r.fiscal_year, "ceiling": r.ceiling, "reserved": r.reserved, "paid": r.paid,
             "remaining": r.ceiling - r.reserved} for r in rows]


# --- settlements ------------------------------------------------------------------------------

@dataclass
class _Writes:
    """What a batch of settlements changes, gathered before anything is written."""

    transfers: list[ledger.Transfer] = field(default_factory=list)
    paid: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))       # allocation -> amount
    released: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))   # allocation -> amount
    instructions: list[dict[str, Any]] = field(default_factory=list)


async def settle(uow: UnitOfWork, cfg: DisbursementSettings, settlements: Sequence[Settlement],
                 channels: Sequence[str] | None = None) -> list[str | SettlementRejected]:
    """Apply a batch of channel reports in one transaction under one chain lock. Returns, per
    settlement, 'paid', 'failed', 'duplicate' (a repeat that agrees: no change) or why it is
    rejected. Every outcome is decided (domain.settlement_outcome) before anything is written,
    so a rejected settlement leaves nothing behind; later reports in the batch see the earlier
    ones (paid, then paid again, is a duplicate). `channels[k]` is the channel whose subject
    settlement k came on: it may settle only instructions issued to it (None: trusted callers)."""
    s = uow.session
    chain = await ledger.Chain.lock(uow, cfg)
    ids = sorted({st.instruction_id for st in settlements})
    found = await store.instructions_for_update(s, ids)
    status = {iid: r.status for iid, r in found.items()}
    outcomes: list[str | SettlementRejected] = []
    applied: list[tuple[Settlement, Any]] = []
    for k, st in enumerate(settlements):
        ins = found.get(st.instruction_id)
        outcome = domain.settlement_outcome(status.get(st.instruction_id), st.status, st.reason, st.instruction_id,
                                            issued_to=ins.channel if ins is not None else None,
                                            reported_by=channels[k] if channels is not None else None)
        outcomes.append(outcome)
        if outcome in ("paid", "failed"):
            status[st.instruction_id] = st.status.value
            applied.append((st, found[st.instruction_id]))
    if applied:
        await _apply(uow, chain, applied)
        await chain.save()
    return outcomes


async def _apply(uow: UnitOfWork, chain: ledger.Chain, applied: list[tuple[Settlement, Any]]) -> None:
    s = uow.session
    funding = await store.reserved_lines(s, [ins.id for _st, ins in applied])
    villages = await store.villages(s, {(ins.nik, ins.programme_identifier) for _st, ins in applied})
    w = _Writes()
    for st, ins in applied:
        lines = funding.get(ins.id, [])
        _transfers(w, st, ins.id, lines)
        w.instructions.append({"iid": ins.id, "st": st.status.value, "why": st.reason, "at": st.settled_at})
        funded = [FundingLine(source=src, allocation_id=aid, amount=amt) for src, aid, amt in lines]
        # the audit stream counts by the month paid in; a stage's or one-off's key goes beside it
        month = domain.cycle_month(ins.period)
        key = None if month == ins.period else ins.period
        chain.emit(SettlementRecorded, instruction_id=ins.id, pseudonym=ins.pseudonym,
                   programme_identifier=ins.programme_identifier, period=month, cycle_key=key, status=st.status,
                   amount=ins.amount, reason=st.reason, funding=funded, settled_at=st.settled_at,
                   village_code=villages.get((ins.nik, ins.programme_identifier)))
        if st.status == SettlementStatus.failed:
            chain.emit(BudgetReleased, instruction_id=ins.id, programme_identifier=ins.programme_identifier,
                       period=month, cycle_key=key, lines=funded, reason=st.reason or "")
    await ledger.post(s, w.transfers)
    await store.settle_allocations(s, w.paid, w.released)
    await store.settle_instructions(s, w.instructions)


def _transfers(w: _Writes, st: Settlement, iid: uuid.UUID, lines: list[tuple[str, uuid.UUID, int]]) -> None:
    """paid: payable -> paid; failed: payable -> budget (the reservation is released)."""
    for _src, aid, amount in lines:
        if st.status == SettlementStatus.paid:
            w.transfers.append(ledger.transfer("pay", ledger.paid_account(aid), ledger.payable_account(aid), amount,
                                               aid, iid))
            w.paid[aid] += amount
        else:
            w.transfers.append(ledger.transfer("release", ledger.budget_account(aid), ledger.payable_account(aid),
                                               amount, aid, iid))
            w.released[aid] += amount
