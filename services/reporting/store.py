"""Reporting's read-model tables. No NIK or name is kept here: counts only."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from services.kit.outbox import inbox_table, outbox_table

metadata = sa.MetaData()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

# people per (program, village, status), kept incrementally from registry.enrolment_changed
enrolment_counts = sa.Table(
    "enrolment_counts", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("village_code", sa.String(10), primary_key=True),
    sa.Column("enrolment_status", sa.Text, primary_key=True),
    sa.Column("people", sa.BigInteger, nullable=False, server_default="0"),
)


async def bump_counts(session, deltas: dict[tuple[str, str, str], int]) -> None:
    rows = [{"programme_identifier": p, "village_code": v, "enrolment_status": st, "people": d}
            for (p, v, st), d in deltas.items() if d]
    if not rows:
        return
    stmt = insert(enrolment_counts)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=["programme_identifier", "village_code", "enrolment_status"],
        set_={"people": enrolment_counts.c.people + stmt.excluded.people}), rows)


async def counts(session, program: str | None = None) -> list[dict]:
    q = sa.select(enrolment_counts).where(enrolment_counts.c.people != 0)
    if program:
        q = q.where(enrolment_counts.c.programme_identifier == program)
    rows = (await session.execute(q.order_by(*enrolment_counts.c))).all()
    return [dict(r._mapping) for r in rows]
