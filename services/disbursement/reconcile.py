"""A payment channel's daily statement against the books: every line an instruction issued to
that channel, paid, for the same amount; every payment the books record for that channel and
day on the statement. What does not match is kept (statements, unmatched_items) for staff and
counted on the audit stream (`disbursement.statement_reconciled`, no ids of people)."""
from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from contracts.channel import Statement
from contracts.disbursement import StatementReconciled
from services.disbursement import domain, ledger, store
from services.kit.uow import UnitOfWork

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement

WIB = zoneinfo.ZoneInfo("Asia/Jakarta")  # a channel's day is the Indonesian (western) day


async def statement(deps: Disbursement, uow: UnitOfWork, channel: str, st: Statement) -> None:
    s = uow.session
    chain = await ledger.Chain.lock(uow, deps.cfg)  # first, as every transaction that writes audit events
    i = store.instructions
    ids = [it.disbursement_id for it in st.items]
    books = {r.id: domain.Booked(r.channel, r.status, r.amount) for r in (await s.execute(
        sa.select(i.c.id, i.c.channel, i.c.status, i.c.amount).where(i.c.id.in_(ids)))).all()} if ids else {}
    start = dt.datetime.combine(st.statement_date, dt.time(), WIB)
    paid = dict((await s.execute(sa.select(i.c.id, i.c.amount).where(
        i.c.channel == channel, i.c.status == "paid", i.c.settled_at >= start,
        i.c.settled_at < start + dt.timedelta(days=1)))).all())
    matched, unmatched = domain.reconcile_statement(channel, [(x.disbursement_id, x.amount) for x in st.items],
                                                    books, paid)
    total = sum(x.amount for x in st.items)
    new = await s.execute(insert(store.statements).values(
        channel=channel, statement_id=st.statement_id, statement_date=st.statement_date, items=len(st.items),
        matched=matched, unmatched=len(unmatched), total=total).on_conflict_do_nothing())
    if new.rowcount != 1:
        return  # the same statement again (the inbox keeps repeats out; a re-sent copy changes nothing)
    if unmatched:
        await s.execute(insert(store.unmatched_items).on_conflict_do_nothing(), [
            {"channel": channel, "statement_id": st.statement_id, "disbursement_id": u.disbursement_id,
             "amount": u.amount, "reason_code": u.reason_code, "reason": u.reason} for u in unmatched])
    chain.emit(StatementReconciled, channel=channel, statement_id=st.statement_id, statement_date=st.statement_date,
               items=len(st.items), matched=matched, unmatched=len(unmatched), total=total)
    await chain.save()


async def statements(deps: Disbursement, channel: str) -> list[dict[str, Any]]:
    t = store.statements
    async with deps.kit.sessions() as s:
        rows = (await s.execute(sa.select(t).where(t.c.channel == channel).order_by(t.c.statement_date.desc(),
                                                                                     t.c.statement_id))).all()
    return [{"statement_id": r.statement_id, "statement_date": r.statement_date.isoformat(), "items": r.items,
             "matched": r.matched, "unmatched": r.unmatched, "total": r.total} for r in rows]


async def unmatched(deps: Disbursement, channel: str, statement_id: str) -> list[dict[str, Any]]:
    u = store.unmatched_items
    async with deps.kit.sessions() as s:
        rows = (await s.execute(sa.select(u).where(u.c.channel == channel, u.c.statement_id == statement_id)
                                .order_by(u.c.reason_code, u.c.disbursement_id))).all()
    return [{"disbursement_id": r.disbursement_id, "amount": r.amount, "reason_code": r.reason_code,
             "reason": r.reason} for r in rows]
