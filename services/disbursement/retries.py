"""Paying a failed instruction again, in the same cycle: a new instruction linked to the failed
one (`retry_of`), to the same or another channel, with the payee's details as the enrolment
copy holds them now (corrected by the agency's next report). The budget released when the
payment failed is reserved again from the same allocations.

Never two live (issued or paid) instructions for one (program, cycle, NIK): the chain lock
serialises retries with cycles and settlements, and the partial unique index
`instruction_live` refuses a second one whatever races."""
from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from contracts.disbursement import BudgetReserved, FundingLine, IssuedInstruction, PaymentInstructionsIssued
from contracts.envelope import utcnow
from services.disbursement import disburse, domain, ledger, store

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement


class RetryRefused(domain.Refused):
    pass


def retry_id(failed: uuid.UUID) -> uuid.UUID:
    """Deterministic: asking twice for the same failed instruction is the same retry."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sinergi/retry/{failed}")


async def retry(deps: Disbursement, failed: uuid.UUID, channel: str | None, by: str) -> dict[str, Any]:
    async with deps.kit.unit_of_work() as uow:
        s = uow.session
        chain = await ledger.Chain.lock(uow, deps.cfg)
        i, e = store.instructions, store.enrolments
        ins = (await s.execute(sa.select(i).where(i.c.id == failed).with_for_update())).first()
        if ins is None:
            raise RetryRefused(f"no instruction {failed}", 404)
        if ins.status != "failed":
            raise RetryRefused(f"instruction {failed} is {ins.status}; only a failed payment can be paid again")
        live = (await s.execute(sa.select(i.c.id).where(
            i.c.programme_identifier == ins.programme_identifier, i.c.period == ins.period, i.c.nik == ins.nik,
            i.c.status.notin_(("failed", "cancelled"))))).scalar()
        if live is not None:
            raise RetryRefused(f"{ins.programme_identifier} {ins.period} already has a live instruction {live} "
                               "for this person")
        person = (await s.execute(sa.select(e.c.no_kk, e.c.village_code, e.c.payee, e.c.enrolment_status).where(
            e.c.nik == ins.nik, e.c.programme_identifier == ins.programme_identifier))).first()
        if person is None or person.enrolment_status != "active":
            raise RetryRefused("the person is no longer actively enrolled in the program")
        life = (await s.execute(sa.select(store.life_statuses).where(store.life_statuses.c.nik == ins.nik))).first()
        if life is not None and not domain.payable(life.life_status, life.effective_date, life.held_from,
                                                   life.held_until, domain.period_start(ins.period), False):
            raise RetryRefused(f"the person's life status ({life.life_status} from {life.effective_date}) stops "
                               f"payment for {ins.period}")
        lines = (await store.reserved_lines(s, [failed])).get(failed, [])
        new = retry_id(failed)
        to = channel or ins.channel
        try:
            async with s.begin_nested():  # the unique index's refusal is an answer, not a broken transaction
                await s.execute(sa.insert(i).values(
                    id=new, programme_identifier=ins.programme_identifier, period=ins.period, nik=ins.nik,
                    pseudonym=ins.pseudonym, amount=ins.amount, channel=to, exclusivity_class=ins.exclusivity_class,
                    cycle_id=ins.cycle_id, status="issued", retry_of=failed))
        except IntegrityError:
            raise RetryRefused(f"{ins.programme_identifier} {ins.period} already has a live instruction "
                               "for this person") from None
        await _reserve_again(s, new, lines)
        now = utcnow()
        text = disburse.item(new, ins.programme_identifier, ins.period, ins.nik, person.no_kk, person.village_code,
                             ins.amount, person.payee, now.isoformat(), retry_of=failed)
        uow.add_rows(disburse.rows(uow.names.subject(f"channel.{to}.instructions"), ins.programme_identifier,
                                   [(new, text)], deps.cfg.pseudonym_secret))
        funding = [FundingLine(source=src, allocation_id=aid, amount=amt) for src, aid, amt in lines]
        month = domain.cycle_month(ins.period)
        key = None if month == ins.period else ins.period
        chain.emit(BudgetReserved, cycle_id=ins.cycle_id, programme_identifier=ins.programme_identifier, period=month,
                   lines=funding, instructions=1, cycle_key=key)
        chain.emit(PaymentInstructionsIssued, cycle_id=ins.cycle_id, programme_identifier=ins.programme_identifier,
                   period=month, cycle_key=key, channel=to, total=ins.amount,
                   items=[IssuedInstruction(instruction_id=new, pseudonym=ins.pseudonym, amount=ins.amount,
                                            funding=funding, retry_of=failed)])
        await chain.save()
    return {"instruction_id": str(new), "retry_of": str(failed), "channel": to, "amount": ins.amount,
            "programme_identifier": ins.programme_identifier, "period": ins.period, "requested_by": by}


async def _reserve_again(s: Any, iid: uuid.UUID, lines: list[tuple[str, uuid.UUID, int]]) -> None:
    """The failed payment's funding lines, reserved again (refused beyond a ceiling)."""
    a = store.allocations
    for _src, aid, amt in sorted(lines, key=lambda x: x[1]):
        r = await s.execute(sa.update(a).where(a.c.id == aid, a.c.reserved + amt <= a.c.ceiling)
                            .values(reserved=a.c.reserved + amt, updated_at=sa.func.now()))
        if r.rowcount != 1:
            raise RetryRefused(f"allocation {aid} has no room left for this payment")
    await ledger.post(s, [ledger.transfer("reserve", ledger.payable_account(aid), ledger.budget_account(aid), amt,
                                          aid, iid) for _src, aid, amt in lines])
