"""The registry's life-status announcements (`registry.life_status_changed`) and verification
expiries (`registry.verifications_expired`), as disbursement acts on them (issue 17).

- Each person's life status is kept in `life_statuses` (the latest announcement wins; a repeat
  or an older one changes nothing). Cycles read it as a set (cycles._life_stop_sql) and pay a
  cycle only when domain.payable says so.
- A stopping status (deceased, moved_out, ineligible, disputed) cancels the person's unpaid
  (issued) instructions for cycles starting on or after its effective date, in the same unit of
  work: each reservation goes back to its allocation on the ledger (payable -> budget), the audit
  stream gets `disbursement.instructions_cancelled` and a `disbursement.budget_released` per
  instruction (signed like every audit event), and the channel a `DisburseCancel` on its
  instructions subject.
- `alive` after a stop leaves a hold window: the cycles held meanwhile are paid later only where
  the program's rules say `pays_arrears` (cycles._issue_arrears).

Lock order as every money transaction: the chain head first (ledger.Chain.lock), then the
life-status rows, then the instructions. A batch with a stopping status takes the chain lock
before it writes the status, so a cycle chunk (which takes the same lock, then reads the
statuses) either committed before (its instructions are cancelled here) or reads the new status.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from typing import Any

from contracts.channel import CancelItem, DisburseCancel
from contracts.disbursement import BudgetReleased, CancelledInstruction, FundingLine, InstructionsCancelled
from contracts.envelope import Envelope, utcnow
from contracts.registry import LifeStatusChange, LifeStatusChanged, VerificationsExpired
from services.disbursement import disburse, domain, ledger, store
from services.disbursement.config import DisbursementSettings
from services.kit import logging as klog
from services.kit.uow import UnitOfWork

log = klog.get(__name__)


def _changes(envs: list[Envelope[Any]]) -> list[tuple[dt.datetime, LifeStatusChange]]:
    return [(env.occurred_at, c) for env in envs if isinstance(env.data, LifeStatusChanged) for c in env.data.changes]


def fold(current: dict[str, dict[str, Any]], changes: list[tuple[dt.datetime, LifeStatusChange]],
         ) -> dict[str, dict[str, Any]]:
    """The rows to write: each change applied in order onto what is held (`current`, by NIK).
    An announcement older than the one held, or one that repeats it, changes nothing."""
    state = dict(current)
    out: dict[str, dict[str, Any]] = {}
    for at, c in changes:
        cur = state.get(c.nik)
        status = str(c.life_status)
        if cur is not None and (at < cur["changed_at"] or (cur["life_status"] == status
                                                          and cur["effective_date"] == c.effective_date)):
            continue
        held_from = held_until = None
        if status not in domain.STOPPING and cur is not None:
            if cur["life_status"] in domain.STOPPING:  # the hold ends: its window, for arrears
                held_from, held_until = cur["effective_date"], c.effective_date
            else:
                held_from, held_until = cur["held_from"], cur["held_until"]
        row = {"nik": c.nik, "life_status": status, "effective_date": c.effective_date, "source": str(c.source),
               "reason_code": c.reason_code or f"{c.source}.{status}", "held_from": held_from,
               "held_until": held_until, "changed_at": at}
        state[c.nik] = out[c.nik] = row
    return out


async def follow(uow: UnitOfWork, cfg: DisbursementSettings, envs: list[Envelope[Any]]) -> None:
    changes = _changes(envs)
    if changes:
        await _life(uow, cfg, changes)
    expiries: dict[tuple[str, str], dict[str, Any]] = {}
    for env in envs:
        if isinstance(env.data, VerificationsExpired):
            for x in env.data.expiries:
                for prog in x.programme_identifiers:
                    k = (prog, x.nik)
                    if k not in expiries or env.occurred_at >= expiries[k]["recorded_at"]:
                        expiries[k] = {"programme_identifier": prog, "nik": x.nik, "expired_on": x.expired_on,
                                       "recorded_at": env.occurred_at}
    await store.upsert_expiries(uow.session, list(expiries.values()))


async def _life(uow: UnitOfWork, cfg: DisbursementSettings,
                changes: list[tuple[dt.datetime, LifeStatusChange]]) -> None:
    s = uow.session
    stopping = any(str(c.life_status) in domain.STOPPING for _at, c in changes)
    chain = await ledger.Chain.lock(uow, cfg) if stopping else None
    held = {nik: r._asdict() for nik, r in (await store.life_for_update(s, (c.nik for _at, c in changes))).items()}
    rows = fold(held, changes)
    await store.save_life(s, list(rows.values()))
    stops = {nik: r for nik, r in rows.items() if r["life_status"] in domain.STOPPING}
    log.info("disbursement.life_status", changes=len(changes), applied=len(rows), stopping=len(stops))
    if not stops or chain is None:
        return
    cancel = [ins for ins in await store.unpaid_for_update(s, stops)
              if domain.period_start(ins.period) >= stops[ins.nik]["effective_date"]]
    if cancel:
        await _cancel(uow, cfg, chain, cancel, stops)
        await chain.save()


async def _cancel(uow: UnitOfWork, cfg: DisbursementSettings, chain: ledger.Chain, cancel: list[Any],
                  stops: dict[str, dict[str, Any]]) -> None:
    """Withdraw these issued instructions: reservations back to the budget, audit events, and a
    cancellation to each channel."""
    s = uow.session
    funding = await store.reserved_lines(s, [ins.id for ins in cancel])
    transfers: list[ledger.Transfer] = []
    released: dict[uuid.UUID, int] = defaultdict(int)
    updates: list[dict[str, Any]] = []
    per_person: dict[str, list[CancelledInstruction]] = defaultdict(list)
    per_channel: dict[tuple[str, str], list[CancelItem]] = defaultdict(list)
    now = utcnow()
    for ins in cancel:
        life = stops[ins.nik]
        lines = funding.get(ins.id, [])
        for _src, aid, amount in lines:
            transfers.append(ledger.transfer("release", ledger.budget_account(aid), ledger.payable_account(aid),
                                             amount, aid, ins.id))
            released[aid] += amount
        why = f"{life['life_status']} from {life['effective_date']} ({life['reason_code']})"
        updates.append({"iid": ins.id, "st": "cancelled", "why": why, "at": now})
        funded = [FundingLine(source=src, allocation_id=aid, amount=amt) for src, aid, amt in lines]
        month = domain.cycle_month(ins.period)
        key = None if month == ins.period else ins.period
        per_person[ins.nik].append(CancelledInstruction(
            instruction_id=ins.id, pseudonym=ins.pseudonym, programme_identifier=ins.programme_identifier,
            period=month, cycle_key=key, channel=ins.channel, amount=ins.amount, funding=funded))
        chain.emit(BudgetReleased, instruction_id=ins.id, programme_identifier=ins.programme_identifier,
                   period=month, cycle_key=key, lines=funded, reason=f"cancelled: {why}")
        per_channel[(ins.channel, ins.programme_identifier)].append(CancelItem(
            disbursement_id=ins.id, status_reason_code=domain.cancel_code(life["life_status"]),
            status_reason_message=f"{life['life_status']} from {life['effective_date']}"))
    for nik, items in per_person.items():
        life = stops[nik]
        chain.emit(InstructionsCancelled, pseudonym=items[0].pseudonym, life_status=life["life_status"],
                   effective_date=life["effective_date"], reason_code=life["reason_code"], source=life["source"],
                   items=items, total=sum(x.amount for x in items))
    await ledger.post(s, transfers)
    await store.settle_allocations(s, {}, released)
    await store.settle_instructions(s, updates)
    for (channel, program), items in sorted(per_channel.items()):
        for k in range(0, len(items), 500):
            part = items[k:k + 500]
            # named by its first instruction under the regency's secret: never computable by
            # another channel sharing the stream's duplicate window (disburse.message_id)
            tid = disburse.message_id("cancel", part[0].disbursement_id, cfg.pseudonym_secret)
            msg = DisburseCancel(transaction_id=tid, payer_fa=f"program:{program}@sinergi", cancellations=part)
            uow.add_rows([{"id": tid, "subject": uow.names.subject(f"channel.{channel}.instructions"),
                           "headers": {}, "payload": msg.model_dump_json().encode()}])
    log.info("disbursement.instructions_cancelled", instructions=len(cancel), people=len(per_person))
