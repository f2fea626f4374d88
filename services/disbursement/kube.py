"""KUBE (Kelompok Usaha Bersama) revolving funds: a grant becomes the group's fund, members
who saved regularly for 3 months and attend meetings borrow from it, instalments flow back;
arrears (kemacetan) are aged by days overdue; the fund's balance over time is its dana abadi.
The rules (who may borrow, how much, the schedule, aging) are pure functions in domain.py;
this module reads and writes them, each write in one unit of work.

Ledger accounts per group: kube_fund/<g> (cash in the controlled account), kube_capital/<g>
(grants received: the group's perpetual fund), kube_receivable/<g> (loans outstanding).
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.disbursement import (FundingLine, FundingSource, KubeGrantMade, KubeGroupRegistered,
                                    KubeInstalmentPaid, KubeLoanIssued)
from services.disbursement import domain, ledger, store

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement

PROGRAM = "kube"


class KubeError(domain.Refused):
    pass


def fund(g: uuid.UUID) -> str:
    return f"kube_fund/{g}"


def capital(g: uuid.UUID) -> str:
    return f"kube_capital/{g}"


def receivable(g: uuid.UUID) -> str:
    return f"kube_receivable/{g}"


async def register_group(deps: Disbursement, name: str, village_code: str,
                         members: list[tuple[str, dt.date]]) -> uuid.UUID:
    cfg = deps.cfg
    async with deps.kit.unit_of_work() as uow:
        chain = await ledger.Chain.lock(uow, cfg)
        gid = uuid.uuid4()
        await uow.session.execute(sa.insert(store.kube_groups).values(id=gid, name=name, village_code=village_code))
        await uow.session.execute(sa.insert(store.kube_members), [
            {"group_id": gid, "nik": nik, "pseudonym": cfg.pseudonym(nik), "joined_on": joined}
            for nik, joined in members])
        chain.emit(KubeGroupRegistered, group_id=gid, name=name, village_code=village_code,
                   members=[cfg.pseudonym(n) for n, _ in members])
        await chain.save()
    return gid


async def _member(s: AsyncSession, gid: uuid.UUID, nik: str) -> Any:
    m = store.kube_members
    row = (await s.execute(sa.select(m).where(m.c.group_id == gid, m.c.nik == nik))).first()
    if row is None:
        raise KubeError(f"{nik[:6]}... is not a member of group {gid}", 404)
    return row


async def record_saving(deps: Disbursement, gid: uuid.UUID, nik: str, month: str, amount: int) -> None:
    domain.check_period(month)
    async with deps.kit.unit_of_work() as uow:
        await _member(uow.session, gid, nik)
        t = store.kube_savings
        stmt = insert(t).values(group_id=gid, nik=nik, month=month, amount=amount)
        await uow.session.execute(stmt.on_conflict_do_update(index_elements=["group_id", "nik", "month"],
                                                             set_={"amount": amount}))


async def record_meeting(deps: Disbursement, gid: uuid.UUID, held_on: dt.date, attendees: list[str]) -> None:
    async with deps.kit.unit_of_work() as uow:
        t = store.kube_meetings
        stmt = insert(t).values(group_id=gid, held_on=held_on, attendees=sorted(set(attendees)))
        await uow.session.execute(stmt.on_conflict_do_update(index_elements=["group_id", "held_on"],
                                                             set_={"attendees": stmt.excluded.attendees}))


async def eligibility(deps: Disbursement, gid: uuid.UUID, nik: str, as_of: dt.date) -> dict[str, Any]:
    async with deps.kit.sessions() as s:
        el = await _eligibility(s, gid, nik, as_of)
    return {"eligible": el.eligible, "reasons": list(el.reasons), "months": list(el.months), "meetings": el.meetings,
            "attended": el.attended}


async def _eligibility(s: AsyncSession, gid: uuid.UUID, nik: str, as_of: dt.date) -> domain.Eligibility:
    """domain.loan_eligibility on the member's savings and the group's meetings in the months before."""
    await _member(s, gid, nik)
    months = domain.saving_months(as_of)
    sv = store.kube_savings
    saved = (await s.execute(sa.select(sv.c.month).where(
        sv.c.group_id == gid, sv.c.nik == nik, sv.c.month.in_(months), sv.c.amount > 0))).scalars().all()
    mt = store.kube_meetings
    first = dt.date.fromisoformat(months[0] + "-01")
    meetings = (await s.execute(sa.select(mt.c.attendees).where(
        mt.c.group_id == gid, mt.c.held_on >= first, mt.c.held_on < as_of.replace(day=1)))).scalars().all()
    return domain.loan_eligibility(nik, months, saved, meetings)


async def _balance(s: AsyncSession, account: str) -> int:
    lg = store.ledger
    d = (await s.execute(sa.select(sa.func.coalesce(sa.func.sum(lg.c.amount), 0)).where(lg.c.debit_account == account))).scalar()
    c = (await s.execute(sa.select(sa.func.coalesce(sa.func.sum(lg.c.amount), 0)).where(lg.c.credit_account == account))).scalar()
    return int(d) - int(c)


async def grant(deps: Disbursement, gid: uuid.UUID, source: FundingSource, fiscal_year: int,
                amount: int) -> uuid.UUID:
    """A grant from an allocation (source, 'kube', year) to the group's fund, within the ceiling."""
    async with deps.kit.unit_of_work() as uow:
        s = uow.session
        chain = await ledger.Chain.lock(uow, deps.cfg)
        if (await s.execute(sa.select(store.kube_groups.c.id).where(store.kube_groups.c.id == gid))).first() is None:
            raise KubeError(f"no KUBE group {gid}", 404)
        aid = domain.allocation_id(source.value, PROGRAM, fiscal_year)
        a = store.allocations
        r = await s.execute(sa.update(a).where(a.c.id == aid, a.c.reserved + amount <= a.c.ceiling)
                            .values(reserved=a.c.reserved + amount, paid=a.c.paid + amount).returning(a.c.id))
        if r.first() is None:
            raise KubeError(f"allocation {source.value}/{PROGRAM}/{fiscal_year} is missing or has less than "
                            f"{amount} left")
        grant_id = uuid.uuid4()
        await ledger.post(s, [
            ledger.transfer("kube_grant", ledger.paid_account(aid), ledger.budget_account(aid), amount, aid, grant_id),
            ledger.transfer("kube_grant_received", fund(gid), capital(gid), amount, None, grant_id)])
        chain.emit(KubeGrantMade, grant_id=grant_id, group_id=gid, fiscal_year=fiscal_year,
                   funding=FundingLine(source=source, allocation_id=aid, amount=amount))
        await chain.save()
    return grant_id


async def issue_loan(deps: Disbursement, gid: uuid.UUID, nik: str, need: int, monthly_capacity: int,
                     term_months: int, issued_on: dt.date) -> dict[str, Any]:
    async with deps.kit.unit_of_work() as uow:
        s = uow.session
        chain = await ledger.Chain.lock(uow, deps.cfg)
        member = await _member(s, gid, nik)
        el = await _eligibility(s, gid, nik, issued_on)
        if not el.eligible:
            raise KubeError("not eligible for a loan: " + "; ".join(el.reasons))
        loan = domain.plan_loan(need, monthly_capacity, term_months, await _balance(s, fund(gid)))
        lid = uuid.uuid4()
        first_due = domain.add_months(issued_on, 1)
        await s.execute(sa.insert(store.kube_loans).values(id=lid, group_id=gid, nik=nik, principal=loan.principal,
                                                           instalment=loan.instalment, term_months=term_months,
                                                           issued_on=issued_on, first_due=first_due))
        await ledger.post(s, [ledger.transfer("kube_loan", receivable(gid), fund(gid), loan.principal, None, lid)])
        chain.emit(KubeLoanIssued, loan_id=lid, group_id=gid, member=member.pseudonym, principal=loan.principal,
                   instalment=loan.instalment, term_months=term_months, first_due=first_due)
        await chain.save()
    return {"loan_id": str(lid), "principal": loan.principal, "instalment": loan.instalment,
            "term_months": term_months, "first_due": first_due.isoformat(), "limited_by": loan.limited_by}


async def pay_instalment(deps: Disbursement, loan_id: uuid.UUID, payment_id: uuid.UUID, amount: int,
                         paid_on: dt.date) -> dict[str, Any]:
    """Idempotent by `payment_id`: the same payment twice is recorded once."""
    async with deps.kit.unit_of_work() as uow:
        s = uow.session
        chain = await ledger.Chain.lock(uow, deps.cfg)
        ln = store.kube_loans
        loan = (await s.execute(sa.select(ln).where(ln.c.id == loan_id).with_for_update())).first()
        if loan is None:
            raise KubeError(f"no loan {loan_id}", 404)
        pm = store.kube_payments
        if (await s.execute(sa.select(pm.c.id).where(pm.c.id == payment_id))).first():
            return {"loan_id": str(loan_id), "duplicate": True, "outstanding": loan.principal - loan.repaid}
        domain.check_instalment(amount, loan.principal - loan.repaid)
        await s.execute(sa.insert(pm).values(id=payment_id, loan_id=loan_id, amount=amount, paid_on=paid_on))
        await s.execute(sa.update(ln).where(ln.c.id == loan_id).values(repaid=ln.c.repaid + amount))
        await ledger.post(s, [ledger.transfer("kube_instalment", fund(loan.group_id), receivable(loan.group_id),
                                              amount, None, payment_id)])
        member = await _member(s, loan.group_id, loan.nik)
        outstanding = loan.principal - loan.repaid - amount
        chain.emit(KubeInstalmentPaid, payment_id=payment_id, loan_id=loan_id, group_id=loan.group_id,
                   member=member.pseudonym, amount=amount, outstanding=outstanding, paid_on=paid_on)
        await chain.save()
    return {"loan_id": str(loan_id), "duplicate": False, "outstanding": outstanding}


async def arrears(deps: Disbursement, gid: uuid.UUID, as_of: dt.date) -> dict[str, Any]:
    ln, m = store.kube_loans, store.kube_members
    async with deps.kit.sessions() as s:
        rows = (await s.execute(sa.select(ln, m.c.pseudonym)
                                .join(m, sa.and_(m.c.group_id == ln.c.group_id, m.c.nik == ln.c.nik))
                                .where(ln.c.group_id == gid))).all()
    loans, buckets = domain.arrears([domain.LoanState(r.id, r.pseudonym, r.principal, r.instalment, r.repaid,
                                                      r.first_due, r.term_months) for r in rows], as_of)
    return {"group_id": str(gid), "as_of": as_of.isoformat(), "loans": loans, "overdue_by_bucket": buckets}


async def fund_history(deps: Disbursement, gid: uuid.UUID) -> dict[str, Any]:
    """The fund's balance at the end of each day with movements, from the ledger."""
    acc = fund(gid)
    async with deps.kit.sessions() as s:
        rows = (await s.execute(sa.text("""
            select d::date as day, sum(x) over (order by d) as balance from (
              select date_trunc('day', at) d, sum(case when debit_account = :a then amount else -amount end) x
              from ledger where debit_account = :a or credit_account = :a group by 1) t order by d"""),
                                {"a": acc})).all()
        cap = await _balance(s, capital(gid))
        outstanding = await _balance(s, receivable(gid))
    return {"group_id": str(gid), "dana_abadi": -cap, "fund_balance": int(rows[-1].balance) if rows else 0,
            "outstanding_loans": outstanding,
            "history": [{"day": r.day.isoformat(), "balance": int(r.balance)} for r in rows]}
