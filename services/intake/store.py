"""Intake's own tables and every query on them. Complaint text and the reporter's identity
live only here. Functions take the caller's session (a unit of work's, for writes): no
transaction is opened here."""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.agency import EnrolmentStatus
from contracts.intake import CaseLevel, CaseStatus
from services.intake import domain
from services.kit.principal import Principal, Role

from services.kit.audit import audit_table
from services.kit.outbox import inbox_table, outbox_table

metadata = sa.MetaData()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
# who read or changed which case or visit, and when (kit.audit; ids and codes only)
audit_log = audit_table(metadata)

cases = sa.Table(
    "cases", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("ticket", sa.Text, nullable=False, unique=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("category", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("person_status", sa.Text, nullable=False),
    # the reporter (confidential): NIK if known, else name; profile holds KK, sex, birth date, address
    sa.Column("nik", sa.String(16), index=True),
    sa.Column("reporter_name", sa.Text, nullable=False, server_default=""),
    sa.Column("contact", sa.Text, nullable=False, server_default=""),
    sa.Column("profile", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("text", sa.Text, nullable=False),
    # what the registry said at registration: enrolments (found) or candidates (name search)
    sa.Column("programs", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("matches", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("proposal_id", UUID(as_uuid=True), unique=True),
    sa.Column("programme_identifier", sa.Text),
    sa.Column("answer", sa.Text),
    sa.Column("outcome", sa.Text),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("registered_by", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    # `<user>:<Idempotency-Key>`: a repeated registration (double click, retry) is the same case
    sa.Column("request_key", sa.Text, unique=True),
    sa.Index("cases_queue", "level", "village_code", "status"),
    sa.Index("cases_due", "due_at", postgresql_where=sa.text("status <> 'resolved'")),
)

# every step of a case, who and when: the case history (append-only)
case_steps = sa.Table(
    "case_steps", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("case_id", UUID(as_uuid=True), sa.ForeignKey("cases.id"), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("from_level", sa.Text),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("event_id", UUID(as_uuid=True)),
)

# ticket serials per village and year (row-locked by the upsert that takes the next one)
ticket_counters = sa.Table(
    "ticket_counters", metadata,
    sa.Column("village_code", sa.String(10), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("last", sa.Integer, nullable=False),
)

# people enrolled in a program with home visits, kept from registry.enrolments_changed
beneficiaries = sa.Table(
    "beneficiaries", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("village_code", sa.String(10), nullable=False, index=True),
    sa.Column("enrolment_status", sa.Text, nullable=False),
    sa.Column("status_change_date", sa.Date, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

assignments = sa.Table(
    "assignments", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("companion", sa.Text, nullable=False, index=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("assigned_by", sa.Text, nullable=False),
    sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    # one companion at a time per beneficiary and program
    sa.Index("assignments_one_active", "nik", "programme_identifier", unique=True,
             postgresql_where=sa.text("active")),
)

visits = sa.Table(
    "visits", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("companion", sa.Text, nullable=False, index=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("visit_date", sa.Date, nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("physical_condition", sa.Text, nullable=False),
    sa.Column("social_condition", sa.Text, nullable=False),
    sa.Column("aid_use", sa.Text, nullable=False),
    sa.Column("needs", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column("notes", sa.Text, nullable=False, server_default=""),
    sa.Column("filed_at", sa.DateTime(timezone=True), nullable=False),
    # the field rule: one visit per beneficiary (and program) per calendar month
    sa.UniqueConstraint("nik", "programme_identifier", "period", name="visits_once_a_month"),
)

# Bulk writes pass one array per column (unnest), not one parameter per value: 50,000
# beneficiary upserts took 0.9-1.0 s so, against 8.8-14 s as multi-row VALUES in chunks of
# 1,000 (asyncpg allows at most 32,767 parameters per statement), measured on the shared
# 2-core machine at load 7-8. Chunks bound the size of one statement.
CHUNK = 5000


def _chunks(items: Sequence[Any], size: int = CHUNK) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _unnest(columns: dict[str, tuple[list[Any], Any]]) -> sa.Subquery:
    """SELECT unnest(:a) AS a, unnest(:b) AS b, ...: the arrays as rows (zipped)."""
    return sa.select(*[sa.func.unnest(sa.bindparam(name, values, type_=ARRAY(type_))).label(name)
                       for name, (values, type_) in columns.items()]).subquery()


# --- cases ------------------------------------------------------------------------------

def ref_clause(ref: str) -> sa.ColumnElement[bool]:
    """A case by its id or by its ticket number."""
    try:
        return cases.c.id == uuid.UUID(ref)
    except ValueError:
        return cases.c.ticket == ref.strip().upper()


def scope_clause(p: Principal) -> sa.ColumnElement[bool]:
    """What a principal may see: their area (village prefix); a program manager only the cases
    referred to their programs' agencies."""
    c = cases.c
    clause: sa.ColumnElement[bool] = c.village_code.like(f"{p.area}%") if p.area else sa.true()
    if p.role is Role.program_manager:
        clause = sa.and_(clause, c.level == CaseLevel.agency, c.programme_identifier.in_(list(p.programs)))
    elif p.role not in domain.CASE_READERS:
        clause = sa.false()
    return clause


def case_filters(p: Principal, *, status: str | None, level: str | None, queue: bool,
                 overdue_at: dt.datetime | None) -> list[sa.ColumnElement[bool]]:
    c = cases.c
    where = [scope_clause(p)]
    if status:
        where.append(c.status == status)
    if level:
        where.append(c.level == level)
    if queue:  # the office's own work: open cases at the levels its role handles
        where.append(c.level.in_([lv.value for lv, roles in domain.LEVEL_ROLES.items() if p.role in roles]))
        where.append(c.status != CaseStatus.resolved)
    if overdue_at is not None:
        where += [c.status != CaseStatus.resolved, c.due_at < overdue_at]
    return where


async def case_page(s: AsyncSession, where: list[sa.ColumnElement[bool]], limit: int,
                    offset: int) -> tuple[int, Sequence[Row[Any]]]:
    """(total, one page) of cases, oldest deadline first."""
    total = (await s.execute(sa.select(sa.func.count()).select_from(cases).where(*where))).scalar_one()
    rows = (await s.execute(sa.select(cases).where(*where).order_by(cases.c.due_at, cases.c.id)
                            .limit(limit).offset(offset))).all()
    return total, rows


async def next_ticket_serial(s: AsyncSession, village_code: str, year: int) -> int:
    """The village's next serial for the year (the upsert row-locks the counter until commit)."""
    tc = ticket_counters
    return (await s.execute(
        pg_insert(tc).values(village_code=village_code, year=year, last=1)
        .on_conflict_do_update(index_elements=["village_code", "year"], set_={"last": tc.c.last + 1})
        .returning(tc.c.last))).scalar_one()


async def case_by_request_key(s: AsyncSession, key: str) -> Row[Any] | None:
    return (await s.execute(sa.select(cases).where(cases.c.request_key == key))).first()


async def insert_case(s: AsyncSession, values: dict[str, Any]) -> None:
    await s.execute(sa.insert(cases).values(**values))


async def find_case(s: AsyncSession, ref: str, p: Principal) -> Row[Any] | None:
    """The case if it exists within the principal's scope."""
    return (await s.execute(sa.select(cases).where(ref_clause(ref), scope_clause(p)))).first()


async def lock_case(s: AsyncSession, ref: str, p: Principal) -> Row[Any] | None:
    """The case, locked, if it exists within the principal's scope (as find_case: a case the
    caller may not see is answered as one that does not exist)."""
    return (await s.execute(sa.select(cases).where(ref_clause(ref), scope_clause(p)).with_for_update())).first()


async def update_case(s: AsyncSession, case_id: uuid.UUID, values: dict[str, Any]) -> None:
    await s.execute(sa.update(cases).where(cases.c.id == case_id).values(**values))


async def add_steps(s: AsyncSession, steps: list[dict[str, Any]]) -> None:
    if steps:
        await s.execute(sa.insert(case_steps), steps)


async def steps_of(s: AsyncSession, case_id: uuid.UUID) -> Sequence[Row[Any]]:
    st = case_steps.c
    return (await s.execute(sa.select(case_steps).where(st.case_id == case_id).order_by(st.id))).all()


async def lock_overdue(s: AsyncSession, now: dt.datetime, limit: int) -> Sequence[Row[Any]]:
    """Open cases past their deadline below the kabupaten, claimed (several processes may
    escalate at once: SKIP LOCKED)."""
    c = cases.c
    return (await s.execute(
        sa.select(cases).where(c.status != CaseStatus.resolved, c.due_at < now,
                               c.level.in_([CaseLevel.village, CaseLevel.kecamatan]))
        .order_by(c.due_at).limit(limit).with_for_update(skip_locked=True))).all()


async def move_cases(s: AsyncSession, moves: list[dict[str, Any]], now: dt.datetime) -> None:
    """Escalations: `moves` holds b_id, b_level, b_due per case; one statement for all."""
    if moves:
        await s.execute(sa.update(cases).where(cases.c.id == sa.bindparam("b_id")).values(
            level=sa.bindparam("b_level"), due_at=sa.bindparam("b_due"), status=CaseStatus.open.value,
            updated_at=now), moves, execution_options={"synchronize_session": False})


async def add_audit_rows(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await s.execute(sa.insert(audit_log), rows)


async def lock_by_proposal(s: AsyncSession, proposal_ids: list[uuid.UUID]) -> dict[uuid.UUID, Row[Any]]:
    """The cases that proposed these people, locked, in id order (no deadlock between batches)."""
    if not proposal_ids:
        return {}
    rows = (await s.execute(sa.select(cases).where(cases.c.proposal_id.in_(set(proposal_ids)))
                            .order_by(cases.c.id).with_for_update())).all()
    return {r.proposal_id: r for r in rows}


# --- home visits ------------------------------------------------------------------------

async def upsert_beneficiaries(s: AsyncSession, rows: list[dict[str, Any]]) -> list[Row[Any]]:
    """Insert or update; an older status arriving late never overwrites a newer one. Returns
    the rows actually written (nik, programme_identifier, enrolment_status)."""
    b = beneficiaries
    written: list[Row[Any]] = []
    for part in _chunks(rows):
        src = _unnest({c: ([r[c] for r in part], t) for c, t in (
            ("nik", sa.Text), ("programme_identifier", sa.Text), ("village_code", sa.Text),
            ("enrolment_status", sa.Text), ("status_change_date", sa.Date))})
        ins = pg_insert(b).from_select(list(src.c.keys()), sa.select(src))
        written += (await s.execute(ins.on_conflict_do_update(
            index_elements=["nik", "programme_identifier"],
            set_={"village_code": ins.excluded.village_code, "enrolment_status": ins.excluded.enrolment_status,
                  "status_change_date": ins.excluded.status_change_date, "updated_at": sa.func.now()},
            where=b.c.status_change_date <= ins.excluded.status_change_date)
            .returning(b.c.nik, b.c.programme_identifier, b.c.enrolment_status))).all()
    return written


async def end_assignments(s: AsyncSession, pairs: list[tuple[str, str]], now: dt.datetime) -> list[Row[Any]]:
    """End the active assignments of these (nik, programme) pairs; returns the ended ones."""
    a = assignments
    ended: list[Row[Any]] = []
    for part in _chunks(pairs):
        gone = _unnest({"nik": ([n for n, _p in part], sa.Text), "programme": ([p for _n, p in part], sa.Text)})
        ended += (await s.execute(
            sa.update(a).where(a.c.nik == gone.c.nik, a.c.programme_identifier == gone.c.programme, a.c.active)
            .values(active=False, ended_at=now)
            .returning(a.c.id, a.c.companion, a.c.nik, a.c.programme_identifier, a.c.village_code))).all()
    return ended


async def active_beneficiaries(s: AsyncSession, nik: str, programme: str | None) -> Sequence[Row[Any]]:
    b = beneficiaries
    q = sa.select(b).where(b.c.nik == nik, b.c.enrolment_status == EnrolmentStatus.active)
    if programme:
        q = q.where(b.c.programme_identifier == programme)
    return (await s.execute(q)).all()


async def insert_assignment(s: AsyncSession, values: dict[str, Any]) -> None:
    await s.execute(sa.insert(assignments).values(**values))


async def assignments_of(s: AsyncSession, companion: str, nik: str, programme: str | None) -> Sequence[Row[Any]]:
    a = assignments
    q = sa.select(a).where(a.c.companion == companion, a.c.nik == nik, a.c.active)
    if programme:
        q = q.where(a.c.programme_identifier == programme)
    return (await s.execute(q)).all()


async def visit_date_in(s: AsyncSession, nik: str, programme: str, period: str) -> dt.date | None:
    v = visits
    return (await s.execute(sa.select(v.c.visit_date).where(
        v.c.nik == nik, v.c.programme_identifier == programme, v.c.period == period))).scalar()


async def insert_visit(s: AsyncSession, values: dict[str, Any]) -> None:
    await s.execute(sa.insert(visits).values(**values))


def _with_period_visit(period: str) -> sa.FromClause:
    a, v = assignments, visits
    return a.outerjoin(v, sa.and_(v.c.nik == a.c.nik, v.c.programme_identifier == a.c.programme_identifier,
                                  v.c.period == period))


async def caseload(s: AsyncSession, companion: str, area: str, period: str) -> Sequence[Row[Any]]:
    """A companion's active assignments in the area, each with the period's visit date (or None)."""
    a, v = assignments, visits
    return (await s.execute(
        sa.select(a.c.id, a.c.nik, a.c.programme_identifier, a.c.village_code, v.c.visit_date)
        .select_from(_with_period_visit(period))
        .where(a.c.companion == companion, a.c.active, a.c.village_code.like(f"{area}%"))
        .order_by(a.c.village_code, a.c.nik))).all()


async def all_caseloads(s: AsyncSession, area: str, period: str) -> Sequence[Row[Any]]:
    a, v = assignments, visits
    return (await s.execute(
        sa.select(a.c.companion, a.c.nik, a.c.programme_identifier, a.c.village_code, v.c.visit_date)
        .select_from(_with_period_visit(period))
        .where(a.c.active, a.c.village_code.like(f"{area}%"))
        .order_by(a.c.companion, a.c.village_code, a.c.nik))).all()


async def visits_done(s: AsyncSession, area: str, period: str) -> dict[str, int]:
    """Reports per companion in the period (also for people since reassigned)."""
    v = visits
    rows = (await s.execute(sa.select(v.c.companion, sa.func.count())
                            .where(v.c.period == period, v.c.village_code.like(f"{area}%"))
                            .group_by(v.c.companion))).all()
    return {companion: n for companion, n in rows}


async def visit_page(s: AsyncSession, area: str, companion: str | None, period: str | None, limit: int,
                     offset: int) -> tuple[int, Sequence[Row[Any]]]:
    v = visits
    where = [v.c.village_code.like(f"{area}%")]
    if companion:
        where.append(v.c.companion == companion)
    if period:
        where.append(v.c.period == period)
    total = (await s.execute(sa.select(sa.func.count()).select_from(v).where(*where))).scalar_one()
    rows = (await s.execute(sa.select(v).where(*where).order_by(v.c.visit_date.desc(), v.c.id)
                            .limit(limit).offset(offset))).all()
    return total, rows


# --- the coordinator's and the companion's pages ------------------------------------------

async def visit_by_id(s: AsyncSession, visit_id: uuid.UUID) -> Row[Any] | None:
    return (await s.execute(sa.select(visits).where(visits.c.id == visit_id))).first()


async def beneficiary_board(s: AsyncSession, area: str, village: str | None, unassigned_only: bool, limit: int,
                            offset: int) -> tuple[int, Sequence[Row[Any]]]:
    """Active beneficiaries of the area (optionally one village), each with their current
    companion (None if unassigned): the coordinator's assignment board."""
    b, a = beneficiaries, assignments
    joined = b.outerjoin(a, sa.and_(a.c.nik == b.c.nik, a.c.programme_identifier == b.c.programme_identifier,
                                    a.c.active))
    where = [b.c.enrolment_status == EnrolmentStatus.active, b.c.village_code.like(f"{area}%")]
    if village:
        where.append(b.c.village_code == village)
    if unassigned_only:
        where.append(a.c.id.is_(None))
    total = (await s.execute(sa.select(sa.func.count()).select_from(joined).where(*where))).scalar_one()
    rows = (await s.execute(
        sa.select(b.c.nik, b.c.programme_identifier, b.c.village_code, a.c.companion, a.c.assigned_at)
        .select_from(joined).where(*where).order_by(b.c.village_code, b.c.nik, b.c.programme_identifier)
        .limit(limit).offset(offset))).all()
    return total, rows


async def active_assignment(s: AsyncSession, nik: str, programme: str) -> Row[Any] | None:
    a = assignments
    return (await s.execute(sa.select(a).where(a.c.nik == nik, a.c.programme_identifier == programme,
                                               a.c.active))).first()


async def overdue_counts(s: AsyncSession, area: str, now: dt.datetime) -> Sequence[Row[Any]]:
    """Open cases past their deadline in the area, counted per level, village and program,
    with the oldest deadline (no case content)."""
    c = cases.c
    return (await s.execute(
        sa.select(c.level, c.village_code, c.programme_identifier, sa.func.count().label("n"),
                  sa.func.min(c.due_at).label("oldest_due"))
        .where(c.status != CaseStatus.resolved, c.due_at < now, c.village_code.like(f"{area}%"))
        .group_by(c.level, c.village_code, c.programme_identifier))).all()
