"""The registry's own tables and its bulk queries."""
from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert

from services.kit.outbox import inbox_table, outbox_table

metadata = sa.MetaData()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

people = sa.Table(
    "people", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("no_kk", sa.String(16), nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("sex", sa.String(1), nullable=False),
    sa.Column("birth_date", sa.Date, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False, index=True),
    sa.Column("address", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

households = sa.Table(
    "households", metadata,
    sa.Column("no_kk", sa.String(16), primary_key=True),
    sa.Column("head_nik", sa.String(16)),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

enrolments = sa.Table(
    "enrolments", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("enrolment_status", sa.Text, nullable=False),
    sa.Column("status_change_date", sa.Date, nullable=False),
    sa.Column("message_id", sa.Text, nullable=False),
    sa.Column("reference_id", sa.Text, nullable=False, server_default=""),
    sa.Column("reported_by", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# every report that was accepted, in arrival order: any past state can be rebuilt from it
enrolment_history = sa.Table(
    "enrolment_history", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("programme_identifier", sa.Text, nullable=False),
    sa.Column("enrolment_status", sa.Text, nullable=False),
    sa.Column("status_change_date", sa.Date, nullable=False),
    sa.Column("message_id", sa.Text, nullable=False),
    sa.Column("reference_id", sa.Text, nullable=False, server_default=""),
    sa.Column("reported_by", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("enrolment_history_person", "nik", "programme_identifier", "status_change_date"),
)

# the receipt given for each message, so a repeated message gets the same answer
receipts = sa.Table(
    "receipts", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("message_id", sa.Text, primary_key=True),
    sa.Column("receipt", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


async def lock_people(session, niks: list[str]) -> None:
    """Serialise concurrent batches touching the same people (sorted: no deadlocks)."""
    if niks:
        await session.execute(sa.text("select pg_advisory_xact_lock(hashtextextended(n, 0)) "
                                      "from unnest(cast(:niks as text[])) as n order by n"),
                              {"niks": sorted(set(niks))})


async def fetch_people(session, niks: list[str]) -> dict[str, sa.Row]:
    if not niks:
        return {}
    rows = (await session.execute(sa.select(people).where(people.c.nik.in_(set(niks))))).all()
    return {r.nik: r for r in rows}


async def fetch_enrolments(session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], sa.Row]:
    if not keys:
        return {}
    niks = {k[0] for k in keys}
    rows = (await session.execute(sa.select(enrolments).where(enrolments.c.nik.in_(niks)))).all()
    return {(r.nik, r.programme_identifier): r for r in rows}


async def upsert_people(session, rows: list[dict]) -> None:
    if not rows:
        return
    stmt = insert(people)
    await session.execute(stmt.on_conflict_do_update(index_elements=["nik"], set_={
        c: stmt.excluded[c] for c in ("no_kk", "name", "sex", "birth_date", "village_code", "address")
    } | {"updated_at": sa.func.now()}), rows)


async def upsert_households(session, rows: list[dict]) -> None:
    if not rows:
        return
    stmt = insert(households)
    await session.execute(stmt.on_conflict_do_update(index_elements=["no_kk"], set_={
        "head_nik": sa.func.coalesce(stmt.excluded.head_nik, households.c.head_nik),
        "village_code": stmt.excluded.village_code, "updated_at": sa.func.now()}), rows)


async def upsert_enrolments(session, rows: list[dict]) -> None:
    if not rows:
        return
    stmt = insert(enrolments)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=["nik", "programme_identifier"],
        set_={c: stmt.excluded[c] for c in ("enrolment_status", "status_change_date", "message_id",
                                            "reference_id", "reported_by")} | {"updated_at": sa.func.now()},
        # the later effective date wins, ties by message id: out-of-order reports cannot regress
        where=sa.tuple_(stmt.excluded.status_change_date, stmt.excluded.message_id)
        > sa.tuple_(enrolments.c.status_change_date, enrolments.c.message_id)), rows)


async def person_view(session, nik: str) -> dict | None:
    p = (await session.execute(sa.select(people).where(people.c.nik == nik))).first()
    if p is None:
        return None
    ens = (await session.execute(sa.select(enrolments).where(enrolments.c.nik == nik)
                                 .order_by(enrolments.c.programme_identifier))).all()
    return {
        "nik": p.nik, "no_kk": p.no_kk, "name": p.name, "sex": p.sex, "birth_date": p.birth_date.isoformat(),
        "village_code": p.village_code, "address": p.address,
        "enrolments": [{"programme_identifier": e.programme_identifier, "enrolment_status": e.enrolment_status,
                        "status_change_date": e.status_change_date.isoformat(), "reported_by": e.reported_by,
                        "reference_id": e.reference_id} for e in ens],
    }


async def stored_receipts(session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """The receipts already given for (program, message_id) pairs, as JSON bytes."""
    if not keys:
        return {}
    rows = (await session.execute(sa.select(receipts.c.programme_identifier, receipts.c.message_id, receipts.c.receipt)
                                  .where(sa.tuple_(receipts.c.programme_identifier, receipts.c.message_id)
                                         .in_(list(set(keys)))))).all()
    return {(r[0], r[1]): json.dumps(r[2]).encode() for r in rows}
