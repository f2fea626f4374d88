"""The double-entry ledger, the hash chain of audit events, and bulk writes (COPY).

Every money transaction takes the chain lock first (`Chain.lock`): audit events get their chain
position in commit order, and all lock orders start from the same row, so no deadlocks.
"""
from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.disbursement import GENESIS_HASH, AuditEvent, ChainCheckpoint
from contracts.envelope import envelope
from services.disbursement import store
from services.disbursement.config import SIGNATURE_HEADER, DisbursementSettings, sign_checkpoint, sign_event
from services.kit.uow import UnitOfWork

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement

SERVICE = "disbursement"


async def copy(s: AsyncSession, table: sa.Table, columns: list[str], records: list[tuple[Any, ...]]) -> None:
    """Bulk insert with PostgreSQL COPY inside the session's transaction."""
    if not records:
        return
    conn = await s.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    await raw.copy_records_to_table(table.name, records=records, columns=columns)


class Chain:
    """The audit chain, locked for one unit of work. `emit` gives an event its chain position
    and advances the head; `save` hands the events to the unit of work (as the exact bytes
    the next event's `prev_hash` covers) and writes the head."""

    def __init__(self, uow: UnitOfWork, cfg: DisbursementSettings, seq: int, head: str, checkpoint_seq: int) -> None:
        self.uow, self.cfg = uow, cfg
        self.seq, self.head, self.checkpoint_seq = seq, head, checkpoint_seq
        self.pending: list[tuple[str, bytes, uuid.UUID]] = []  # (subject, payload, event id)

    @classmethod
    async def lock(cls, uow: UnitOfWork, cfg: DisbursementSettings) -> Chain:
        s, t = uow.session, store.chain_head
        row = (await s.execute(sa.select(t).where(t.c.id == 1).with_for_update())).first()
        if row is None:
            await s.execute(insert(t).values(id=1, seq=0, hash=GENESIS_HASH).on_conflict_do_nothing())
            row = (await s.execute(sa.select(t).where(t.c.id == 1).with_for_update())).one()
        return cls(uow, cfg, row.seq, row.hash, row.checkpoint_seq)

    def emit(self, event_cls: type[AuditEvent], *, raw: dict[str, str] | None = None, **fields: Any) -> AuditEvent:
        """`raw`: list fields given as their JSON text, spliced into the event's bytes (the model
        is built with them empty): a cycle's 1,000-item batches are rendered by hand
        (cycles._item_json) rather than as 1,000 pydantic objects each; a unit test holds the two
        byte for byte equal."""
        raw = raw or {}
        ev = event_cls(chain_seq=self.seq + 1, prev_hash=self.head, **fields, **{k: [] for k in raw})
        # built here, not by `uow.emit`: the next event's prev_hash is the digest of these bytes
        env = envelope(ev, SERVICE)
        text = env.model_dump_json()
        for k, value in raw.items():
            # inside a JSON string a quote is escaped, so `"k":[]` can only be the field itself
            mark = f'"{k}":[]'
            if text.count(mark) != 1:
                raise ValueError(f"cannot splice {k!r} into {event_cls.__name__}")
            text = text.replace(mark, f'"{k}":{value}', 1)
        payload = text.encode()
        self.pending.append((self.uow.names.event(ev.event_type), payload, env.event_id))
        self.seq += 1
        self.head = hashlib.sha256(payload).hexdigest()
        return ev

    def checkpoint(self) -> None:
        key = self.cfg.signing_key
        stream = self.uow.names.stream("DISBURSEMENT")
        self.emit(ChainCheckpoint, head_seq=self.seq, head_hash=self.head, key_id=self.cfg.key_id,
                  signature=sign_checkpoint(key, stream, self.seq, self.head))
        self.checkpoint_seq = self.seq

    async def save(self) -> None:
        if not self.pending:
            return
        if self.seq - self.checkpoint_seq >= self.cfg.checkpoint_every:
            self.checkpoint()
        # every event signed on its own (about 60 us each; a million-person cycle has ~1,200
        # events): a forged event appended with the right chain_seq and prev_hash fails `audit
        # verify` at its own position, not only once a later checkpoint does not cover it
        key, kid, stream = self.cfg.signing_key, self.cfg.key_id, self.uow.names.stream("DISBURSEMENT")
        self.uow.add_rows({"id": event_id, "subject": subject, "payload": payload,
                           "headers": {SIGNATURE_HEADER: sign_event(key, kid, stream, payload)}}
                          for subject, payload, event_id in self.pending)
        await self.uow.session.execute(sa.update(store.chain_head).where(store.chain_head.c.id == 1).values(
            seq=self.seq, hash=self.head, checkpoint_seq=self.checkpoint_seq))
        self.pending = []


async def checkpoint_if_due(deps: Disbursement) -> None:
    """Sign the chain head if events were added since the last checkpoint (the timer's tick)."""
    async with deps.kit.unit_of_work() as uow:
        chain = await Chain.lock(uow, deps.cfg)
        if chain.seq > chain.checkpoint_seq:
            chain.checkpoint()
            await chain.save()


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


Transfer = tuple[str, str, str, int, uuid.UUID | None, uuid.UUID | str | None]  # ref: an id, or its text (COPY takes either)


def transfer(kind: str, to: str, frm: str, amount: int, allocation_id: uuid.UUID | None = None,
             ref: uuid.UUID | None = None) -> Transfer:
    """One balanced transfer: `amount` leaves `frm` (credit) and enters `to` (debit)."""
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    return (kind, to, frm, amount, allocation_id, ref)


async def post(s: AsyncSession, transfers: Iterable[Transfer]) -> None:
    await copy(s, store.ledger, LEDGER_COLUMNS, list(transfers))


PROOF_SQL = {
    # the trial balance: every account's debits minus credits sums to zero. Sums stay numeric: the
    # funding accounts add up every ceiling ever set, which may pass 2^63 (a ::bigint cast made
    # the proof answer 500 "bigint out of range" for good)
    "trial_balance": """
        with acc as (
          select debit_account a, amount d, 0::bigint c from ledger
          union all select credit_account, 0, amount from ledger)
        select coalesce(sum(d),0) debits, coalesce(sum(c),0) credits, count(distinct a) accounts,
               coalesce(sum(d) - sum(c), 0) net from acc""",
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
    # each instruction's reservation, payment or release (failed or cancelled) matches its amount and status
    "instructions": """
        select count(*) filter (where bad) bad, count(*) total from (
          select i.id, (coalesce(sum(l.amount) filter (where l.kind = 'reserve'), 0) <> i.amount
              or coalesce(sum(l.amount) filter (where l.kind = 'pay'), 0) <> case when i.status = 'paid' then i.amount else 0 end
              or coalesce(sum(l.amount) filter (where l.kind = 'release'), 0) <> case when i.status in ('failed', 'cancelled') then i.amount else 0 end) bad
          from instructions i left join ledger l on l.ref = i.id group by i.id, i.amount, i.status) t""",
}


async def proof(deps: Disbursement) -> dict[str, Any]:
    """`prove` on a fresh read-only session (the route's use case)."""
    async with deps.kit.sessions() as s:
        return await prove(s)


async def prove(s: AsyncSession) -> dict[str, Any]:
    """Prove the books balance: trial balance, allocations against ledger, instructions
    against ledger, ceilings respected. Each check says what it found."""
    checks = []
    tb = (await s.execute(sa.text(PROOF_SQL["trial_balance"]))).one()
    checks.append({"check": "debits equal credits", "ok": tb.debits == tb.credits and tb.net == 0,
                   "detail": f"debits {int(tb.debits)}, credits {int(tb.credits)} over {tb.accounts} accounts"})
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
