"""The double-entry ledger, the hash chain of audit events, and bulk writes (COPY).

Every money transaction takes the chain lock first (`Chain.lock`): audit events get their chain
position in commit order, and all lock orders start from the same row, so no deadlocks.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.disbursement import GENESIS_HASH, AuditEvent, ChainCheckpoint
from contracts.subjects import Names
from services.disbursement import store
from services.disbursement.config import DisbursementSettings, key_id, sign_checkpoint
from services.kit.outbox import event_row

SERVICE = "disbursement"


async def copy(s: AsyncSession, table: sa.Table, columns: list[str], records: list[tuple]) -> None:
    """Bulk insert with PostgreSQL COPY inside the session's transaction."""
    if not records:
        return
    conn = await s.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    await raw.copy_records_to_table(table.name, records=records, columns=columns)


class Chain:
    """The audit chain, locked for one transaction. `emit` builds the outbox row of an event
    with its chain position and advances the head; `save` writes rows and head."""

    def __init__(self, names: Names, cfg: DisbursementSettings, seq: int, head: str, checkpoint_seq: int) -> None:
        self.names, self.cfg = names, cfg
        self.seq, self.head, self.checkpoint_seq = seq, head, checkpoint_seq
        self.rows: list[dict] = []

    @classmethod
    async def lock(cls, s: AsyncSession, names: Names, cfg: DisbursementSettings) -> "Chain":
        t = store.chain_head
        row = (await s.execute(sa.select(t).where(t.c.id == 1).with_for_update())).first()
        if row is None:
            await s.execute(sa.dialects.postgresql.insert(t).values(id=1, seq=0, hash=GENESIS_HASH)
                            .on_conflict_do_nothing())
            row = (await s.execute(sa.select(t).where(t.c.id == 1).with_for_update())).one()
        return cls(names, cfg, row.seq, row.hash, row.checkpoint_seq)

    def emit(self, event_cls: type[AuditEvent], **fields: Any) -> AuditEvent:
        ev = event_cls(chain_seq=self.seq + 1, prev_hash=self.head, **fields)
        row = event_row(self.names, ev, SERVICE)
        self.rows.append(row)
        self.seq += 1
        self.head = hashlib.sha256(row["payload"]).hexdigest()
        return ev

    def checkpoint(self) -> None:
        key = self.cfg.signing_key
        stream = self.names.stream("DISBURSEMENT")
        self.emit(ChainCheckpoint, head_seq=self.seq, head_hash=self.head, key_id=key_id(key.public_key()),
                  signature=sign_checkpoint(key, stream, self.seq, self.head))
        self.checkpoint_seq = self.seq

    async def save(self, s: AsyncSession) -> None:
        if not self.rows:
            return
        if self.seq - self.checkpoint_seq >= self.cfg.checkpoint_every:
            self.checkpoint()
        await copy(s, store.outbox, ["id", "subject", "payload", "headers"],
                   [(r["id"], r["subject"], r["payload"], "{}") for r in self.rows])
        await s.execute(sa.update(store.chain_head).where(store.chain_head.c.id == 1)
                        .values(seq=self.seq, hash=self.head, checkpoint_seq=self.checkpoint_seq))
        self.rows = []


# --- accounts ---------------------------------------------------------------------------------

def funding_account(source: str) -> str:
    return f"funding/{source}"


def budget_account(alloc: uuid.UUID) -> str:
    return f"budget/{alloc}"


def payable_account(alloc: uuid.UUID) -> str:
    return f"payable/{alloc}"


def paid_account(alloc: uuid.UUID) -> str:
    return f"paid/{alloc}"


LEDGER_COLUMNS = ["kind", "debit_account", "credit_account", "amount", "allocation_id", "ref"]


def transfer(kind: str, to: str, frm: str, amount: int, allocation_id: uuid.UUID | None = None,
             ref: uuid.UUID | None = None) -> tuple:
    """One balanced transfer: `amount` leaves `frm` (credit) and enters `to` (debit)."""
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    return (kind, to, frm, amount, allocation_id, ref)


async def post(s: AsyncSession, transfers: Iterable[tuple]) -> None:
    await copy(s, store.ledger, LEDGER_COLUMNS, list(transfers))


PROOF_SQL = {
    # the trial balance: every account's debits minus credits sums to zero
    "trial_balance": """
        with acc as (
          select debit_account a, amount d, 0::bigint c from ledger
          union all select credit_account, 0, amount from ledger)
        select coalesce(sum(d),0)::bigint debits, coalesce(sum(c),0)::bigint credits, count(distinct a) accounts,
               coalesce(sum(d) - sum(c), 0)::bigint net from acc""",
    # each allocation's counters equal what its ledger accounts say
    "allocations": """
        with bal as (
          select a, sum(x) b from (
            select debit_account a, amount x from ledger union all
            select credit_account, -amount from ledger) t group by a)
        select al.id, al.source, al.programme_identifier, al.fiscal_year, al.ceiling, al.reserved, al.paid,
               coalesce((select b from bal where a = 'budget/' || al.id), 0) budget_bal,
               coalesce((select b from bal where a = 'payable/' || al.id), 0) payable_bal,
               coalesce((select b from bal where a = 'paid/' || al.id), 0) paid_bal
        from allocations al""",
    # each instruction's reservation, payment or release matches its amount and status
    "instructions": """
        select count(*) filter (where bad) bad, count(*) total from (
          select i.id, (coalesce(sum(l.amount) filter (where l.kind = 'reserve'), 0) <> i.amount
              or coalesce(sum(l.amount) filter (where l.kind = 'pay'), 0) <> case when i.status = 'paid' then i.amount else 0 end
              or coalesce(sum(l.amount) filter (where l.kind = 'release'), 0) <> case when i.status = 'failed' then i.amount else 0 end) bad
          from instructions i left join ledger l on l.ref = i.id group by i.id, i.amount, i.status) t""",
}


async def prove(s: AsyncSession) -> dict:
    """Prove the books balance: trial balance, allocations against ledger, instructions
    against ledger, ceilings respected. Each check says what it found."""
    checks = []
    tb = (await s.execute(sa.text(PROOF_SQL["trial_balance"]))).one()
    checks.append({"check": "debits equal credits", "ok": tb.debits == tb.credits and tb.net == 0,
                   "detail": f"debits {tb.debits}, credits {tb.credits} over {tb.accounts} accounts"})
    bad_alloc = []
    for a in (await s.execute(sa.text(PROOF_SQL["allocations"]))).all():
        problems = []
        if a.reserved > a.ceiling:
            problems.append(f"reserved {a.reserved} exceeds ceiling {a.ceiling}")
        if a.budget_bal != a.ceiling - a.reserved:
            problems.append(f"budget account {a.budget_bal} != ceiling - reserved {a.ceiling - a.reserved}")
        if a.payable_bal != a.reserved - a.paid:
            problems.append(f"payable account {a.payable_bal} != reserved - paid {a.reserved - a.paid}")
        if a.paid_bal != a.paid:
            problems.append(f"paid account {a.paid_bal} != paid {a.paid}")
        if problems:
            bad_alloc.append(f"{a.source}/{a.programme_identifier}/{a.fiscal_year}: " + "; ".join(problems))
    checks.append({"check": "allocations agree with the ledger and stay within ceilings", "ok": not bad_alloc,
                   "detail": "; ".join(bad_alloc) or "all agree"})
    ins = (await s.execute(sa.text(PROOF_SQL["instructions"]))).one()
    checks.append({"check": "every instruction reserved, paid or released exactly once", "ok": ins.bad == 0,
                   "detail": f"{ins.bad} of {ins.total} instructions disagree with the ledger"})
    return {"balanced": all(c["ok"] for c in checks), "checks": checks}
