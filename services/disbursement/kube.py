"""KUBE (Kelompok Usaha Bersama) revolving funds: a grant becomes the group's fund, members
who saved regularly for 3 months and attend meetings borrow from it, instalments flow back;
arrears (kemacetan) are aged by days overdue; the fund's balance over time is its dana abadi.

Ledger accounts per group: kube_fund/<g> (cash in the controlled account), kube_capital/<g>
(grants received: the group's perpetual fund), kube_receivable/<g> (loans outstanding).
"""
from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.disbursement import (FundingLine, FundingSource, KubeGrantMade, KubeGroupRegistered,
                                    KubeInstalmentPaid, KubeLoanIssued)
from contracts.subjects import Names
from services.disbursement import domain, ledger, store
from services.disbursement.config import DisbursementSettings

PROGRAM = "kube"
SAVING_MONTHS = 3
MIN_ATTENDANCE = 0.75
AGING = ((0, "current"), (30, "1-30"), (60, "31-60"), (90, "61-90"))


class KubeError(Exception):
    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def add_months(d: dt.date, n: int) -> dt.date:
    y, m = divmod(d.month - 1 + n, 12)
    y, m = d.year + y, m + 1
    last = [31, 29 if y % 4 == 0 and (y % 100 or y % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]
    return dt.date(y, m, min(d.day, last))


def fund(g: uuid.UUID) -> str:
    return f"kube_fund/{g}"


def capital(g: uuid.UUID) -> str:
    return f"kube_capital/{g}"


def receivable(g: uuid.UUID) -> str:
    return f"kube_receivable/{g}"


async def register_group(s: AsyncSession, names: Names, cfg: DisbursementSettings, name: str, village_code: str,
                         members: list[tuple[str, dt.date]]) -> uuid.UUID:
    chain = await ledger.Chain.lock(s, names, cfg)
    gid = uuid.uuid4()
    await s.execute(sa.insert(store.kube_groups).values(id=gid, name=name, village_code=village_code))
    await s.execute(sa.insert(store.kube_members), [
        {"group_id": gid, "nik": nik, "pseudonym": cfg.pseudonym(nik), "joined_on": joined} for nik, joined in members])
    chain.emit(KubeGroupRegistered, group_id=gid, name=name, village_code=village_code,
               members=[cfg.pseudonym(n) for n, _ in members])
    await chain.save(s)
    return gid


async def _member(s: AsyncSession, gid: uuid.UUID, nik: str):
    m = store.kube_members
    row = (await s.execute(sa.select(m).where(m.c.group_id == gid, m.c.nik == nik))).first()
    if row is None:
        raise KubeError(f"{nik[:6]}... is not a member of group {gid}", 404)
    return row


async def record_saving(s: AsyncSession, gid: uuid.UUID, nik: str, month: str, amount: int) -> None:
    domain.check_period(month)
    await _member(s, gid, nik)
    t = store.kube_savings
    stmt = insert(t).values(group_id=gid, nik=nik, month=month, amount=amount)
    await s.execute(stmt.on_conflict_do_update(index_elements=["group_id", "nik", "month"], set_={"amount": amount}))


async def record_meeting(s: AsyncSession, gid: uuid.UUID, held_on: dt.date, attendees: list[str]) -> None:
    t = store.kube_meetings
    stmt = insert(t).values(group_id=gid, held_on=held_on, attendees=sorted(set(attendees)))
    await s.execute(stmt.on_conflict_do_update(index_elements=["group_id", "held_on"],
                                               set_={"attendees": stmt.excluded.attendees}))


async def eligibility(s: AsyncSession, gid: uuid.UUID, nik: str, as_of: dt.date) -> dict:
    """Saved in each of the 3 months before `as_of`'s month, and attended at least 75 % of the
    meetings held in those months."""
    await _member(s, gid, nik)
    first = add_months(as_of.replace(day=1), -SAVING_MONTHS)
    months = [add_months(first, i).strftime("%Y-%m") for i in range(SAVING_MONTHS)]
    sv = store.kube_savings
    saved = set((await s.execute(sa.select(sv.c.month).where(
        sv.c.group_id == gid, sv.c.nik == nik, sv.c.month.in_(months), sv.c.amount > 0))).scalars())
    mt = store.kube_meetings
    meetings = (await s.execute(sa.select(mt.c.attendees).where(
        mt.c.group_id == gid, mt.c.held_on >= first, mt.c.held_on < as_of.replace(day=1)))).scalars().all()
    attended = sum(1 for a in meetings if nik in a)
    reasons = []
    missing = [m for m in months if m not in saved]
    if missing:
        reasons.append(f"no saving recorded for {', '.join(missing)} (needs {SAVING_MONTHS} months of regular saving)")
    if not meetings:
        reasons.append("no group meetings recorded in those months")
    elif attended / len(meetings) < MIN_ATTENDANCE:
        reasons.append(f"attended {attended} of {len(meetings)} meetings (needs {int(MIN_ATTENDANCE * 100)} %)")
    return {"eligible": not reasons, "reasons": reasons, "months": months, "meetings": len(meetings),
            "attended": attended}


async def _balance(s: AsyncSession, account: str) -> int:
    lg = store.ledger
    d = (await s.execute(sa.select(sa.func.coalesce(sa.func.sum(lg.c.amount), 0)).where(lg.c.debit_account == account))).scalar()
    c = (await s.execute(sa.select(sa.func.coalesce(sa.func.sum(lg.c.amount), 0)).where(lg.c.credit_account == account))).scalar()
    return int(d) - int(c)


async def grant(s: AsyncSession, names: Names, cfg: DisbursementSettings, gid: uuid.UUID, source: FundingSource,
                fiscal_year: int, amount: int) -> uuid.UUID:
    """A grant from an allocation (source, 'kube', year) to the group's fund, within the ceiling."""
    chain = await ledger.Chain.lock(s, names, cfg)
    if (await s.execute(sa.select(store.kube_groups.c.id).where(store.kube_groups.c.id == gid))).first() is None:
        raise KubeError(f"no KUBE group {gid}", 404)
    aid = domain.allocation_id(source.value, PROGRAM, fiscal_year)
    a = store.allocations
    r = await s.execute(sa.update(a).where(a.c.id == aid, a.c.reserved + amount <= a.c.ceiling)
                        .values(reserved=a.c.reserved + amount, paid=a.c.paid + amount).returning(a.c.id))
    if r.first() is None:
        raise KubeError(f"allocation {source.value}/{PROGRAM}/{fiscal_year} is missing or has less than {amount} left")
    grant_id = uuid.uuid4()
    await ledger.post(s, [
        ledger.transfer("kube_grant", ledger.paid_account(aid), ledger.budget_account(aid), amount, aid, grant_id),
        ledger.transfer("kube_grant_received", fund(gid), capital(gid), amount, None, grant_id)])
    chain.emit(KubeGrantMade, grant_id=grant_id, group_id=gid, fiscal_year=fiscal_year,
               funding=FundingLine(source=source, allocation_id=aid, amount=amount))
    await chain.save(s)
    return grant_id


def size_loan(need: int, monthly_capacity: int, term_months: int, fund_balance: int) -> tuple[int, int]:
    """Principal: what is needed, no more than the member can repay in the term, no more than
    the fund holds. Instalment: principal over the term, rounded up."""
    principal = max(0, min(need, monthly_capacity * term_months, fund_balance))
    return principal, -(-principal // term_months) if principal else 0


async def issue_loan(s: AsyncSession, names: Names, cfg: DisbursementSettings, gid: uuid.UUID, nik: str, need: int,
                     monthly_capacity: int, term_months: int, issued_on: dt.date) -> dict:
    chain = await ledger.Chain.lock(s, names, cfg)
    member = await _member(s, gid, nik)
    el = await eligibility(s, gid, nik, issued_on)
    if not el["eligible"]:
        raise KubeError("not eligible for a loan: " + "; ".join(el["reasons"]))
    balance = await _balance(s, fund(gid))
    principal, instalment = size_loan(need, monthly_capacity, term_months, balance)
    if principal == 0:
        raise KubeError(f"no loan possible: fund balance {balance}, capacity {monthly_capacity}/month")
    lid = uuid.uuid4()
    first_due = add_months(issued_on, 1)
    await s.execute(sa.insert(store.kube_loans).values(id=lid, group_id=gid, nik=nik, principal=principal,
                                                       instalment=instalment, term_months=term_months,
                                                       issued_on=issued_on, first_due=first_due))
    await ledger.post(s, [ledger.transfer("kube_loan", receivable(gid), fund(gid), principal, None, lid)])
    chain.emit(KubeLoanIssued, loan_id=lid, group_id=gid, member=member.pseudonym, principal=principal,
               instalment=instalment, term_months=term_months, first_due=first_due)
    await chain.save(s)
    return {"loan_id": str(lid), "principal": principal, "instalment": instalment, "term_months": term_months,
            "first_due": first_due.isoformat(), "limited_by": "need" if principal == need else
            ("capacity" if principal == monthly_capacity * term_months else "fund balance")}


async def pay_instalment(s: AsyncSession, names: Names, cfg: DisbursementSettings, loan_id: uuid.UUID,
                         payment_id: uuid.UUID, amount: int, paid_on: dt.date) -> dict:
    """Idempotent by `payment_id`: the same payment twice is recorded once."""
    chain = await ledger.Chain.lock(s, names, cfg)
    ln = store.kube_loans
    loan = (await s.execute(sa.select(ln).where(ln.c.id == loan_id).with_for_update())).first()
    if loan is None:
        raise KubeError(f"no loan {loan_id}", 404)
    pm = store.kube_payments
    if (await s.execute(sa.select(pm.c.id).where(pm.c.id == payment_id))).first():
        return {"loan_id": str(loan_id), "duplicate": True, "outstanding": loan.principal - loan.repaid}
    if amount <= 0 or amount > loan.principal - loan.repaid:
        raise KubeError(f"amount {amount} must be between 1 and the outstanding {loan.principal - loan.repaid}", 422)
    await s.execute(sa.insert(pm).values(id=payment_id, loan_id=loan_id, amount=amount, paid_on=paid_on))
    await s.execute(sa.update(ln).where(ln.c.id == loan_id).values(repaid=ln.c.repaid + amount))
    await ledger.post(s, [ledger.transfer("kube_instalment", fund(loan.group_id), receivable(loan.group_id), amount,
                                          None, payment_id)])
    member = await _member(s, loan.group_id, loan.nik)
    outstanding = loan.principal - loan.repaid - amount
    chain.emit(KubeInstalmentPaid, payment_id=payment_id, loan_id=loan_id, group_id=loan.group_id,
               member=member.pseudonym, amount=amount, outstanding=outstanding, paid_on=paid_on)
    await chain.save(s)
    return {"loan_id": str(loan_id), "duplicate": False, "outstanding": outstanding}


def overdue(principal: int, instalment: int, repaid: int, first_due: dt.date, term: int, as_of: dt.date) -> tuple[int, int]:
    """(amount overdue, days overdue of the oldest unpaid instalment) on `as_of`."""
    dues = [add_months(first_due, k) for k in range(term)]
    due_n = sum(1 for d in dues if d < as_of)
    owed = min(principal, instalment * due_n)
    late = max(0, owed - repaid)
    if late == 0:
        return 0, 0
    oldest = dues[repaid // instalment]
    return late, (as_of - oldest).days


def bucket(days: int) -> str:
    label = ">90"
    for limit, name in reversed(AGING):
        if days <= limit:
            label = name
    return label


async def arrears(s: AsyncSession, gid: uuid.UUID, as_of: dt.date) -> dict:
    ln = store.kube_loans
    m = store.kube_members
    rows = (await s.execute(sa.select(ln, m.c.pseudonym).join(m, sa.and_(m.c.group_id == ln.c.group_id, m.c.nik == ln.c.nik))
                            .where(ln.c.group_id == gid))).all()
    loans, buckets = [], {name: 0 for _l, name in AGING} | {">90": 0}
    for r in rows:
        late, days = overdue(r.principal, r.instalment, r.repaid, r.first_due, r.term_months, as_of)
        b = bucket(days)
        buckets[b] += late
        loans.append({"loan_id": str(r.id), "member": r.pseudonym, "principal": r.principal,
                      "outstanding": r.principal - r.repaid, "overdue": late, "days_overdue": days, "bucket": b})
    return {"group_id": str(gid), "as_of": as_of.isoformat(), "loans": loans, "overdue_by_bucket": buckets}


async def fund_history(s: AsyncSession, gid: uuid.UUID) -> dict:
    """The fund's balance at the end of each day with movements, from the ledger."""
    acc = fund(gid)
    rows = (await s.execute(sa.text("""
        select d::date as day, sum(x) over (order by d) as balance from (
          select date_trunc('day', at) d, sum(case when debit_account = :a then amount else -amount end) x
          from ledger where debit_account = :a or credit_account = :a group by 1) t order by d"""), {"a": acc})).all()
    cap = await _balance(s, capital(gid))
    return {"group_id": str(gid), "dana_abadi": -cap, "fund_balance": int(rows[-1].balance) if rows else 0,
            "outstanding_loans": await _balance(s, receivable(gid)),
            "history": [{"day": r.day.isoformat(), "balance": int(r.balance)} for r in rows]}
