"""The disbursement service's own tables, and the queries more than one module (or a route)
needs. PostgreSQL is the system of record for money.

Amounts are BIGINT rupiah. The ledger is append-only: one row per balanced transfer.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.kit.audit import audit_table
from services.kit.outbox import inbox_table, outbox_table

metadata = sa.MetaData()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
# who changed what over HTTP, in the write's own transaction (kit.audit.install; issue 15)
audit_log = audit_table(metadata)

_now = sa.func.now()
KEY_LEN = 40  # a cycle key (domain.check_cycle_key): month, quarterly stage or one-off

# The hash chain's head; one row. Every transaction that writes audit events locks it first, so
# chain order is commit order (and every money transaction is serialised behind it).
chain_head = sa.Table(
    "chain_head", metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("checkpoint_seq", sa.BigInteger, nullable=False, server_default="0"),
)

# copy of the registry's enrolments, fed only by registry events
enrolments = sa.Table(
    "enrolments", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("no_kk", sa.String(16), nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("birth_date", sa.Date, nullable=False),
    sa.Column("enrolment_status", sa.Text, nullable=False),
    sa.Column("status_change_date", sa.Date, nullable=False),
    # who the channel pays: {"name", "financial_address", "proxy"} as the agency reported it
    # (contracts.values.Payee); read only to build channel instructions, never published elsewhere
    sa.Column("payee", JSONB(none_as_null=True)),  # None is SQL NULL (coalesce keeps the known details)
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Index("enrolments_program_status", "programme_identifier", "enrolment_status", "nik"),
)

# latest verification result per person (registry.verification_recorded)
verifications = sa.Table(
    "verifications", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("verified", sa.Boolean, nullable=False),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

# each person's life status as the registry announced it (registry.life_status_changed): one row
# per person who ever had a change; nobody else is in it (no row: alive). Read by the cycle as a
# set over each chunk's NIK range (cycles._next_people), never per person.
life_statuses = sa.Table(
    "life_statuses", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("life_status", sa.Text, nullable=False),  # contracts.registry.LifeStatus
    sa.Column("effective_date", sa.Date, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("reason_code", sa.Text, nullable=False),
    # `alive` after a stop: the cycles starting in [held_from, held_until) were held (domain.payable)
    sa.Column("held_from", sa.Date),
    sa.Column("held_until", sa.Date),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),  # the announcement's occurred_at
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

# verifications past their validity per program (registry.verifications_expired); a newer
# verification result for the person clears them (store.clear_expiries)
verification_expiries = sa.Table(
    "verification_expiries", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("expired_on", sa.Date, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

programs = sa.Table(
    "programs", metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("rules", JSONB, nullable=False),
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

# garis kemiskinan per regency and year (rupiah per person per month)
poverty_lines = sa.Table(
    "poverty_lines", metadata,
    sa.Column("regency", sa.String(4), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.CheckConstraint("amount > 0", name="poverty_line_positive"),
)

allocations = sa.Table(
    "allocations", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("fiscal_year", sa.Integer, nullable=False),
    sa.Column("ceiling", sa.BigInteger, nullable=False),
    # reserved = outstanding payable + paid; the database itself refuses a ceiling breach
    sa.Column("reserved", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("paid", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.UniqueConstraint("source", "programme_identifier", "fiscal_year", name="allocation_key"),
    sa.CheckConstraint("reserved <= ceiling", name="allocation_within_ceiling"),
    sa.CheckConstraint("paid <= reserved AND paid >= 0 AND reserved >= 0", name="allocation_paid_within_reserved"),
)

allocation_changes = sa.Table(
    "allocation_changes", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("allocation_id", UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("ceiling", sa.BigInteger, nullable=False),
    sa.Column("previous_ceiling", sa.BigInteger),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("set_by", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

cycles = sa.Table(
    "cycles", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("period", sa.String(KEY_LEN), nullable=False),  # the cycle key: 2026-11, 2026-Q4, 2026-11-banjir
    sa.Column("status", sa.Text, nullable=False),  # running, completed
    sa.Column("started_by", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("completed_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("programme_identifier", "period", name="cycle_key"),
)

instructions = sa.Table(
    "instructions", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),  # uuid5 of the idempotency key (a retry: of its parent)
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("period", sa.String(KEY_LEN), nullable=False),  # the cycle key
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("pseudonym", sa.String(64), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("exclusivity_class", sa.Text),
    sa.Column("cycle_id", UUID(as_uuid=True), nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # issued, paid, failed, cancelled (life status)
    sa.Column("reason", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("settled_at", sa.DateTime(timezone=True)),
    sa.Column("retry_of", UUID(as_uuid=True)),  # the failed instruction this one pays again
    sa.CheckConstraint("amount > 0", name="instruction_amount_positive"),
    # never two live (issued or paid) instructions for one (program, cycle, NIK), whatever races;
    # failed ones stay beside their retry, cancelled ones beside the arrears that pay them late
    sa.Index("instruction_live", "programme_identifier", "period", "nik", unique=True,
             postgresql_where=sa.text("status not in ('failed', 'cancelled')")),
    # no person gets two cash programs of the same class in the same cycle, whatever races
    sa.Index("instruction_exclusivity", "exclusivity_class", "period", "nik", unique=True,
             postgresql_where=sa.text("exclusivity_class is not null and status not in ('failed', 'cancelled')")),
    # the few that are not live, so "has any instruction in this NIK range" is two index ranges
    # (cycles._ISSUED_SQL); issued rows are not in it, so it costs a cycle's inserts nothing
    sa.Index("instruction_not_live", "period", "nik",
             postgresql_where=sa.text("status in ('failed', 'cancelled')")),
)

# a channel's daily statement, reconciled against the instructions issued to it
statements = sa.Table(
    "statements", metadata,
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("statement_id", sa.Text, primary_key=True),
    sa.Column("statement_date", sa.Date, nullable=False),
    sa.Column("items", sa.Integer, nullable=False),
    sa.Column("matched", sa.Integer, nullable=False),
    sa.Column("unmatched", sa.Integer, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

# statement lines that do not agree with Sinergi's books, for an operator to chase
unmatched_items = sa.Table(
    "unmatched_items", metadata,
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("statement_id", sa.Text, primary_key=True),
    sa.Column("disbursement_id", sa.Text, primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("reason_code", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

# The double-entry ledger. Money moves from `credit_account` to `debit_account`; each row is one
# balanced transfer. Accounts: funding/<source>, budget/<allocation>, payable/<allocation>
# (program reservation owed to beneficiaries), paid/<allocation>, kube/... (see docs).
ledger = sa.Table(
    "ledger", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("debit_account", sa.Text, nullable=False),
    sa.Column("credit_account", sa.Text, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("allocation_id", UUID(as_uuid=True)),
    sa.Column("ref", UUID(as_uuid=True)),  # instruction, grant, loan or payment id
    sa.CheckConstraint("amount > 0", name="transfer_amount_positive"),
    sa.CheckConstraint("debit_account <> credit_account", name="transfer_two_accounts"),
    sa.Index("ledger_ref", "ref"),
)

# --- KUBE revolving funds -----------------------------------------------------------------
kube_groups = sa.Table(
    "kube_groups", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

kube_members = sa.Table(
    "kube_members", metadata,
    sa.Column("group_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("pseudonym", sa.String(64), nullable=False),
    sa.Column("joined_on", sa.Date, nullable=False),
)

kube_savings = sa.Table(
    "kube_savings", metadata,
    sa.Column("group_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("month", sa.String(7), primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.CheckConstraint("amount >= 0", name="saving_non_negative"),
)

kube_meetings = sa.Table(
    "kube_meetings", metadata,
    sa.Column("group_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("held_on", sa.Date, primary_key=True),
    sa.Column("attendees", JSONB, nullable=False),  # list of NIKs present
)

kube_loans = sa.Table(
    "kube_loans", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("group_id", UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("principal", sa.BigInteger, nullable=False),
    sa.Column("instalment", sa.BigInteger, nullable=False),
    sa.Column("term_months", sa.Integer, nullable=False),
    sa.Column("issued_on", sa.Date, nullable=False),
    sa.Column("first_due", sa.Date, nullable=False),
    sa.Column("repaid", sa.BigInteger, nullable=False, server_default="0"),
    sa.CheckConstraint("repaid <= principal", name="loan_not_overpaid"),
)

kube_payments = sa.Table(
    "kube_payments", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("loan_id", UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("paid_on", sa.Date, nullable=False),
)



# --- programs and poverty lines ----------------------------------------------------------

async def save_program(s: AsyncSession, code: str, rules: dict[str, Any], by: str) -> None:
    stmt = insert(programs).values(code=code, rules=rules, updated_by=by)
    await s.execute(stmt.on_conflict_do_update(index_elements=["code"], set_={
        "rules": stmt.excluded.rules, "updated_by": by, "updated_at": sa.func.now()}))


async def program_rules(s: AsyncSession, code: str) -> dict[str, Any] | None:
    return (await s.execute(sa.select(programs.c.rules).where(programs.c.code == code))).scalar()


async def save_poverty_line(s: AsyncSession, regency: str, year: int, amount: int, reason: str) -> None:
    stmt = insert(poverty_lines).values(regency=regency, year=year, amount=amount, reason=reason)
    await s.execute(stmt.on_conflict_do_update(index_elements=["regency", "year"], set_={
        "amount": amount, "reason": reason, "updated_at": sa.func.now()}))


async def poverty_line(s: AsyncSession, regency: str, year: int) -> int | None:
    pl = poverty_lines
    return (await s.execute(sa.select(pl.c.amount).where(pl.c.regency == regency, pl.c.year == year))).scalar()


# --- the registry's enrolments and verifications (disbursement's own copy) -------------------

async def upsert_enrolments(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Newer status changes win; an older change arriving late changes nothing."""
    if not rows:
        return
    t = enrolments
    stmt = insert(t)
    await s.execute(stmt.on_conflict_do_update(
        index_elements=["nik", "programme_identifier"],
        set_={c: stmt.excluded[c] for c in ("no_kk", "village_code", "birth_date", "enrolment_status",
                                            "status_change_date")}
        # a change without payee details keeps the ones already known
        | {"payee": sa.func.coalesce(stmt.excluded.payee, t.c.payee), "updated_at": sa.func.now()},
        where=stmt.excluded.status_change_date >= t.c.status_change_date), rows)


async def upsert_verifications(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """The latest result per person wins."""
    if not rows:
        return
    v = verifications
    stmt = insert(v)
    await s.execute(stmt.on_conflict_do_update(
        index_elements=["nik"], set_={c: stmt.excluded[c] for c in ("verified", "result", "recorded_at")},
        where=stmt.excluded.recorded_at >= v.c.recorded_at), rows)
    await clear_expiries(s, (r["nik"] for r in rows))


async def clear_expiries(s: AsyncSession, niks: Iterable[str]) -> None:
    """An expiry ends with the person's next verification result (one recorded after it)."""
    niks = sorted(set(niks))
    if niks:
        await s.execute(sa.text(
            "delete from verification_expiries x using verifications v where v.nik = x.nik "
            "and v.recorded_at > x.recorded_at and x.nik = any(:niks)"), {"niks": niks})


async def upsert_expiries(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """rows: {programme_identifier, nik, expired_on, recorded_at}; the latest announcement wins,
    and one older than the person's latest verification result is cleared at once."""
    if not rows:
        return
    x = verification_expiries
    stmt = insert(x)
    await s.execute(stmt.on_conflict_do_update(
        index_elements=["programme_identifier", "nik"],
        set_={"expired_on": stmt.excluded.expired_on, "recorded_at": stmt.excluded.recorded_at},
        where=stmt.excluded.recorded_at >= x.c.recorded_at), rows)
    await clear_expiries(s, (r["nik"] for r in rows))


async def life_for_update(s: AsyncSession, niks: Iterable[str]) -> dict[str, Any]:
    """The life statuses held for these people, locked (NIK order: concurrent batches never deadlock)."""
    niks = sorted(set(niks))
    if not niks:
        return {}
    t = life_statuses
    rows = (await s.execute(sa.select(t).where(t.c.nik.in_(niks)).order_by(t.c.nik).with_for_update())).all()
    return {r.nik: r for r in rows}


async def save_life(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    t = life_statuses
    stmt = insert(t)
    cols = ("life_status", "effective_date", "source", "reason_code", "held_from", "held_until", "changed_at")
    await s.execute(stmt.on_conflict_do_update(
        index_elements=["nik"], set_={c: stmt.excluded[c] for c in cols} | {"updated_at": sa.func.now()}), rows)


async def unpaid_for_update(s: AsyncSession, niks: Iterable[str]) -> list[Any]:
    """Issued (not yet settled) instructions of these people, locked in id order."""
    niks = sorted(set(niks))
    if not niks:
        return []
    i = instructions
    return list((await s.execute(sa.select(i).where(i.c.nik.in_(niks), i.c.status == "issued")
                                 .order_by(i.c.id).with_for_update())).all())


# --- settlements ---------------------------------------------------------------------------

async def instructions_for_update(s: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """The instructions with these ids, locked (in id order: concurrent batches wait, never deadlock)."""
    if not ids:
        return {}
    i = instructions
    rows = (await s.execute(sa.select(i).where(i.c.id.in_(ids)).order_by(i.c.id).with_for_update())).all()
    return {r.id: r for r in rows}


async def reserved_lines(s: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[tuple[str, uuid.UUID, int]]]:
    """Each instruction's reservation as it was funded: [(source, allocation, amount)]."""
    lg, a = ledger, allocations
    rows = (await s.execute(sa.select(lg.c.ref, a.c.source, lg.c.allocation_id, lg.c.amount)
                            .join(a, a.c.id == lg.c.allocation_id)
                            .where(lg.c.ref.in_(ids), lg.c.kind == "reserve"))).all()
    out: dict[uuid.UUID, list[tuple[str, uuid.UUID, int]]] = {}
    for r in rows:
        out.setdefault(r.ref, []).append((r.source, r.allocation_id, r.amount))
    return out


async def villages(s: AsyncSession, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """(NIK, program) -> village, from disbursement's own copy of the enrolments."""
    keys = list(keys)
    if not keys:
        return {}
    e = enrolments
    rows = (await s.execute(sa.select(e.c.nik, e.c.programme_identifier, e.c.village_code).where(
        sa.tuple_(e.c.nik, e.c.programme_identifier).in_(keys)))).all()
    return {(r.nik, r.programme_identifier): r.village_code for r in rows}


async def settle_allocations(s: AsyncSession, paid: Mapping[uuid.UUID, int], released: Mapping[uuid.UUID, int]) -> None:
    """Add to `paid`, take released reservations off `reserved` (allocations in id order)."""
    a = allocations
    for aid in sorted(set(paid) | set(released)):
        await s.execute(sa.update(a).where(a.c.id == aid).values(
            paid=a.c.paid + paid.get(aid, 0), reserved=a.c.reserved - released.get(aid, 0),
            updated_at=sa.func.now()))


async def settle_instructions(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """rows: {iid, st (status), why (reason), at (settled_at)}."""
    if rows:
        i = instructions
        await s.execute(sa.update(i).where(i.c.id == sa.bindparam("iid")).values(
            status=sa.bindparam("st"), reason=sa.bindparam("why"), settled_at=sa.bindparam("at")), rows)


# --- maker-checker: a cycle is prepared (frozen list and totals) and approved by another account

preparations = sa.Table(
    "cycle_preparations", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("period", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),  # prepared, approved, rejected, expired, superseded
    sa.Column("prepared_by", sa.Text, nullable=False),
    sa.Column("prepared_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("terms", sa.Text, nullable=False),  # SHA-256 of the rules and amount it was prepared under
    sa.Column("people", sa.Integer, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("summary", JSONB, nullable=False),  # the preview as the preparer saw it
    sa.Column("decided_by", sa.Text),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("decision_reason", sa.Text),
    sa.Index("preparation_open", "programme_identifier", "period", unique=True,
             postgresql_where=sa.text("status = 'prepared'")),
)

# the frozen list: the cycle approved pays these people (if still eligible) and nobody else
preparation_people = sa.Table(
    "cycle_preparation_people", metadata,
    sa.Column("preparation_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("nik", sa.String(16), primary_key=True),
)
