"""The registry's own tables and its bulk queries."""
from __future__ import annotations

import json
import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID, insert

from services.kit.audit import audit_table
from services.kit.outbox import inbox_table, outbox_table
from services.registry.domain import PERSON_COLUMNS, Enrolment, IngestPlan, Life, LifePlan, Person

metadata = sa.MetaData()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
# who changed what over HTTP, in the write's own transaction (kit.audit.install; issue 15)
audit_log = audit_table(metadata)

people = sa.Table(
    "people", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("no_kk", sa.String(16), nullable=False, index=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("sex", sa.String(1), nullable=False),
    sa.Column("birth_date", sa.Date, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False, index=True),
    sa.Column("address", sa.Text, nullable=False, server_default=""),
    # names.normalise(name): what tolerant search compares (pg_trgm index, or name_trigrams)
    sa.Column("name_key", sa.Text, nullable=False, server_default=""),
    sa.Column("reported_by", sa.Text, nullable=False, server_default="", comment="who set the identity last"),
    sa.Column("verification_status", sa.Text, comment="latest verivali result"),
    sa.Column("verification_period", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# every identity a person has had, with who reported it: past identity can be shown
person_history = sa.Table(
    "person_history", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("no_kk", sa.String(16), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("sex", sa.String(1), nullable=False),
    sa.Column("birth_date", sa.Date, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("address", sa.Text, nullable=False, server_default=""),
    sa.Column("reported_by", sa.Text, nullable=False),
    sa.Column("message_id", sa.Text, nullable=False, server_default=""),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("person_history_nik", "nik", "id"),
)

# fallback for tolerant name search where pg_trgm is not installed (e.g. the embedded
# PostgreSQL): the trigrams of each person's name_key, searched by index within a village
name_trigrams = sa.Table(
    "name_trigrams", metadata,
    sa.Column("village_code", sa.String(10), primary_key=True),
    sa.Column("trigram", sa.Text, primary_key=True),
    sa.Column("nik", sa.String(16), primary_key=True),
)

# conflicts between programs, waiting for a verifier (antrian kualitas data)
data_quality = sa.Table(
    "data_quality", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text, nullable=False, comment="what disagrees; the same conflict is flagged once"),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("programme_identifiers", ARRAY(sa.Text), nullable=False),
    sa.Column("details", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    sa.Column("status", sa.Text, nullable=False, server_default="open"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("resolved_by", sa.Text),
    sa.Column("resolution", sa.Text),
    sa.UniqueConstraint("nik", "kind", "fingerprint", name="data_quality_once"),
    sa.Index("data_quality_queue", "status", "created_at"),
)

# proposals to add a person (usulan), from intake or staff, until a verifier decides
proposals = sa.Table(
    "proposals", metadata,
    sa.Column("proposal_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("source", sa.Text, nullable=False, comment="intake or http"),
    sa.Column("nik", sa.String(16), nullable=False, index=True),
    sa.Column("no_kk", sa.String(16), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("sex", sa.String(1), nullable=False),
    sa.Column("birth_date", sa.Date, nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("address", sa.Text, nullable=False, server_default=""),
    sa.Column("programme_identifier", sa.Text),
    # the programs asked for (issue 17): enrolled or forwarded when a verifier accepts
    sa.Column("programmes_requested", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Column("submitted_by", sa.Text, nullable=False),
    sa.Column("case_id", UUID(as_uuid=True)),
    sa.Column("status", sa.Text, nullable=False, server_default="proposed"),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("decided_by", sa.Text),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("proposals_queue", "status", "created_at"),
)

verification_rounds = sa.Table(
    "verification_rounds", metadata,
    sa.Column("round_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("period", sa.Text, nullable=False),
    sa.Column("cadence", sa.Text, nullable=False),
    sa.Column("area", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.Text, nullable=False, server_default="open"),
    sa.Column("opened_by", sa.Text, nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("closed_by", sa.Text),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("period", "area", name="verification_round_once"),
)

verification_results = sa.Table(
    "verification_results", metadata,
    sa.Column("round_id", UUID(as_uuid=True), sa.ForeignKey("verification_rounds.round_id"), primary_key=True),
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("recorded_by", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
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
    # who a payment channel pays in this program (contracts.payee.Payee, JSON): name, financial
    # address, proxy, as the agency last reported them; passed on only in enrolments_changed
    sa.Column("payee", sa.Text),
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

# the receipt given for each message: the enrolment consumer's idempotency record, and a
# repeated message gets the same answer
receipts = sa.Table(
    "receipts", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("message_id", sa.Text, primary_key=True),
    sa.Column("receipt", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


# each person's life status (issue 17): a person-level fact, apart from the programs' enrolments;
# no row means alive. A row may exist before the person does (Dukcapil reports every death).
life_status = sa.Table(
    "life_status", metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("status", sa.Text, nullable=False, comment="contracts.registry.LifeStatus"),
    sa.Column("source", sa.Text, nullable=False, comment="crvs, verifier or agency"),
    sa.Column("effective_date", sa.Date, nullable=False),
    sa.Column("reported_by", sa.Text, nullable=False),
    sa.Column("reason_code", sa.Text, nullable=False, server_default=""),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("conflict_id", UUID(as_uuid=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# every life status change, in order
life_history = sa.Table(
    "life_history", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("previous_status", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("effective_date", sa.Date, nullable=False),
    sa.Column("reported_by", sa.Text, nullable=False),
    sa.Column("reason_code", sa.Text, nullable=False, server_default=""),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("conflict_id", UUID(as_uuid=True)),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("life_history_nik", "nik", "id"),
)

# ---- bulk writes: one statement per table per batch (INSERT ... SELECT FROM unnest) ----

_PG_TYPES = {sa.String: "text", sa.Text: "text", sa.Date: "date", sa.Boolean: "boolean", sa.BigInteger: "bigint",
             UUID: "uuid", sa.LargeBinary: "bytea", JSONB: "jsonb"}


def _pg_type(col: sa.Column) -> str:
    for t, name in _PG_TYPES.items():
        if isinstance(col.type, t):
            return name
    raise TypeError(f"no array type for {col}")


async def bulk_insert(session, table: sa.Table, rows: list[dict], tail: str = "", returning: str = "") -> list:
    """`insert into t (cols) select * from unnest($1::type[], ...) <tail>`: one round trip for
    any number of rows (executemany costs one per row). Every row must have the same keys."""
    if not rows:
        return []
    cols = list(rows[0])
    arrays = ", ".join(f"cast(:c{i} as {_pg_type(table.c[c])}[])" for i, c in enumerate(cols))
    sql = f"insert into {table.name} ({', '.join(cols)}) select * from unnest({arrays}) {tail}"
    if returning:
        sql += f" returning {returning}"
    res = await session.execute(sa.text(sql), {f"c{i}": [r[c] for r in rows] for i, c in enumerate(cols)})
    return res.all() if returning else []


async def record_receipts(session, rows: list[tuple[str, str, bytes]]) -> set[tuple[str, str]]:
    """Store the receipt for each (program, message_id, receipt JSON); return the keys that had
    none yet. The receipts table is the enrolment consumer's idempotency record (its inbox)."""
    if not rows:
        return set()
    # in key order: two batches holding the same messages (a redelivery race) wait, not deadlock
    got = await bulk_insert(session, receipts, [{"programme_identifier": p, "message_id": m, "receipt": b.decode()}
                                                for p, m, b in sorted(rows, key=lambda r: (r[0], r[1]))],
                            "on conflict do nothing", returning="programme_identifier, message_id")
    return {(r[0], r[1]) for r in got}


async def replace_receipt(session, program: str, message_id: str, body: bytes) -> None:
    """The receipt a report gets, once its batch is applied (an informational reason added)."""
    await session.execute(sa.update(receipts).where(receipts.c.programme_identifier == program,
                                                    receipts.c.message_id == message_id)
                          .values(receipt=json.loads(body)))


async def add_outbox(session, rows: list[dict]) -> None:
    """kit.outbox.add in one statement (rows: id, subject, payload; headers stay '{}')."""
    await bulk_insert(session, outbox, [{"id": r["id"], "subject": r["subject"], "payload": r["payload"]}
                                        for r in rows], "on conflict (id) do nothing")


async def insert_new_people(session, rows: list[dict]) -> set[str]:
    """Insert the people that are not in the registry yet (rows: nik first, then PERSON_COLUMNS);
    return their NIKs. In NIK order: the uncommitted rows are this transaction's locks on them."""
    got = await bulk_insert(session, people, sorted(rows, key=lambda r: r["nik"]), "order by 1 on conflict do nothing",
                            returning="nik")
    return {r[0] for r in got}


_PERSON = [people.c[f] for f in Person.__dataclass_fields__]


async def lock_people(session, niks: list[str]) -> dict[str, Person]:
    """Lock existing people (row locks, NIK order: no deadlocks) and read them as committed now."""
    if not niks:
        return {}
    rows = (await session.execute(sa.select(*_PERSON).where(people.c.nik == sa.func.any(
        sa.cast(sorted(set(niks)), ARRAY(sa.Text)))).order_by(people.c.nik).with_for_update())).all()
    return {r[0]: Person(*r) for r in rows}


async def current_enrolments(session, niks: list[str]) -> dict[tuple[str, str], Enrolment]:
    """Every enrolment of these people, in every program (death conflicts need all of them)."""
    if not niks:
        return {}
    e = enrolments
    rows = (await session.execute(sa.select(e.c.nik, e.c.programme_identifier, e.c.enrolment_status,
                                            e.c.status_change_date, e.c.message_id)
                                  .where(e.c.nik == sa.func.any(sa.cast(sorted(set(niks)), ARRAY(sa.Text)))))).all()
    return {(r[0], r[1]): Enrolment(r[2], r[3], r[4]) for r in rows}


async def fetch_enrolments(session, niks: list[str]) -> dict[tuple[str, str], sa.Row]:
    """Every enrolment of these people, in every program (conflict checks need all of them)."""
    if not niks:
        return {}
    rows = (await session.execute(sa.select(enrolments).where(enrolments.c.nik == sa.func.any(
        sa.cast(sorted(set(niks)), ARRAY(sa.Text)))))).all()
    return {(r.nik, r.programme_identifier): r for r in rows}


async def upsert_people(session, rows: list[dict]) -> None:
    """Rows carry every column in PERSON_COLUMNS plus nik."""
    await bulk_insert(session, people, rows, "on conflict (nik) do update set "
                      + ", ".join(f"{c} = excluded.{c}" for c in PERSON_COLUMNS) + ", updated_at = now()")


async def upsert_households(session, rows: list[dict]) -> None:
    await bulk_insert(session, households, rows,
                      "on conflict (no_kk) do update set head_nik = coalesce(excluded.head_nik, households.head_nik), "
                      "village_code = excluded.village_code, updated_at = now()")


async def upsert_enrolments(session, rows: list[dict]) -> None:
    # the later effective date wins, ties by message id: out-of-order reports cannot regress,
    # even when two batches race (the row lock makes the second compare with the first's result).
    # Message ids compare by code point (COLLATE "C"), as domain.supersedes does in Python: under
    # a server default like en_US.UTF-8, "a-1" < "B-1" and the two would disagree on ties.
    await bulk_insert(session, enrolments, rows,
                      "on conflict (nik, programme_identifier) do update set "
                      "enrolment_status = excluded.enrolment_status, status_change_date = excluded.status_change_date, "
                      "message_id = excluded.message_id, reference_id = excluded.reference_id, "
                      "reported_by = excluded.reported_by, payee = coalesce(excluded.payee, enrolments.payee), "
                      "updated_at = now() "
                      "where (excluded.status_change_date, excluded.message_id collate \"C\") > "
                      "(enrolments.status_change_date, enrolments.message_id collate \"C\")")


async def replace_name_trigrams(session, rows: list[tuple[str, str, set[str]]]) -> None:
    """Fallback index: (nik, village_code, trigrams) for people whose name or village changed."""
    if not rows:
        return
    await session.execute(sa.delete(name_trigrams).where(name_trigrams.c.nik == sa.func.any(
        sa.cast([r[0] for r in rows], ARRAY(sa.Text)))))
    await bulk_insert(session, name_trigrams, [{"village_code": v, "trigram": t, "nik": n}
                                               for n, v, grams in rows for t in sorted(grams)],
                      "on conflict do nothing")


async def has_pg_trgm(session) -> bool:
    return bool((await session.execute(sa.text(
        "select exists (select 1 from pg_extension where extname = 'pg_trgm')"))).scalar())


async def flag(session, rows: list[dict]) -> list[dict]:
    """Add conflicts to the data-quality queue; return only the new ones, with the id each got
    (each is flagged once). Row by row: conflicts are rare, and each needs its own `returning`."""
    new = []
    for row in rows:
        row = {"id": uuid.uuid4(), **row}
        stmt = insert(data_quality).values(row).on_conflict_do_nothing(constraint="data_quality_once")
        if (await session.execute(stmt.returning(data_quality.c.id))).first():
            new.append(row)
    return new


async def write_plan(session, plan: IngestPlan) -> list[dict]:
    """Write an ingest batch's plan (domain.plan_ingest), one statement per table; return the
    conflicts that are new to the data-quality queue. The caller holds the batch's people rows."""
    await upsert_people(session, list(plan.people))
    await bulk_insert(session, person_history, list(plan.person_history))
    await replace_name_trigrams(session, list(plan.name_trigrams))
    await upsert_households(session, list(plan.households))
    await bulk_insert(session, enrolment_history, list(plan.enrolment_history))
    await upsert_enrolments(session, list(plan.enrolments))
    return await flag(session, list(plan.conflicts))


# ---- reads ----

def _enrolment_json(e) -> dict:
    return {"programme_identifier": e.programme_identifier, "enrolment_status": e.enrolment_status,
            "status_change_date": e.status_change_date.isoformat(), "reported_by": e.reported_by,
            "reference_id": e.reference_id}


async def person_view(session, nik: str) -> dict | None:
    p = (await session.execute(sa.select(people).where(people.c.nik == nik))).first()
    if p is None:
        return None
    ens = (await session.execute(sa.select(enrolments).where(enrolments.c.nik == nik)
                                 .order_by(enrolments.c.programme_identifier))).all()
    return {
        "nik": p.nik, "no_kk": p.no_kk, "name": p.name, "sex": p.sex, "birth_date": p.birth_date.isoformat(),
        "village_code": p.village_code, "address": p.address,
        "enrolments": [_enrolment_json(e) for e in ens],
    }


async def person_history_view(session, nik: str, as_of=None) -> dict | None:
    """Every identity and enrolment report kept for a person; with `as_of`, the state on that date
    (enrolments by effective date; identity as the registry knew it at the end of that day)."""
    ids = (await session.execute(sa.select(person_history).where(person_history.c.nik == nik)
                                 .order_by(person_history.c.id))).all()
    eh = enrolment_history
    hist = (await session.execute(sa.select(eh).where(eh.c.nik == nik).order_by(
        eh.c.programme_identifier, eh.c.status_change_date, eh.c.message_id.collate("C")))).all()
    if not ids and not hist:
        return None
    identity = [{"no_kk": r.no_kk, "name": r.name, "sex": r.sex, "birth_date": r.birth_date.isoformat(),
                 "village_code": r.village_code, "address": r.address, "reported_by": r.reported_by,
                 "received_at": r.received_at.isoformat()} for r in ids]
    enrol = [{**_enrolment_json(r), "message_id": r.message_id, "received_at": r.received_at.isoformat()}
             for r in hist]
    out = {"nik": nik, "identity": identity, "enrolments": enrol}
    if as_of is not None:
        best: dict[str, dict] = {}
        for r, j in zip(hist, enrol, strict=True):  # ordered by date then message id: the last one wins
            if r.status_change_date <= as_of:
                best[r.programme_identifier] = j
        known = [i for r, i in zip(ids, identity, strict=True) if r.received_at.date() <= as_of]
        out["as_of"] = {"date": as_of.isoformat(), "identity": known[-1] if known else None,
                        "enrolments": list(best.values())}
    return out


async def household_view(session, no_kk: str) -> dict | None:
    h = (await session.execute(sa.select(households).where(households.c.no_kk == no_kk))).first()
    members = (await session.execute(sa.select(people).where(people.c.no_kk == no_kk)
                                     .order_by(people.c.birth_date, people.c.nik))).all()
    if h is None and not members:
        return None
    ens = await fetch_enrolments(session, [m.nik for m in members])
    by_nik: dict[str, list] = {}
    for (nik, _p), e in sorted(ens.items()):
        by_nik.setdefault(nik, []).append(_enrolment_json(e))
    head = h.head_nik if h else None
    return {"no_kk": no_kk, "village_code": h.village_code if h else members[0].village_code,
            "head_nik": head,
            "members": [{"nik": m.nik, "name": m.name, "sex": m.sex, "birth_date": m.birth_date.isoformat(),
                         "is_head": m.nik == head, "verification_status": m.verification_status,
                         "enrolments": by_nik.get(m.nik, [])} for m in members]}


async def stored_receipts(session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """The receipts already given for (program, message_id) pairs, as JSON bytes."""
    if not keys:
        return {}
    rows = (await session.execute(sa.select(receipts.c.programme_identifier, receipts.c.message_id, receipts.c.receipt)
                                  .where(sa.tuple_(receipts.c.programme_identifier, receipts.c.message_id)
                                         .in_(list(set(keys)))))).all()
    return {(r[0], r[1]): json.dumps(r[2]).encode() for r in rows}


# ---- lookups (HTTP and registry.lookup) ----

async def summaries(session, rows: list, scores: dict[str, float] | None = None) -> list[dict]:
    """People with their enrolments, in the shape of contracts.lookup.PersonSummary."""
    ens = await fetch_enrolments(session, [r.nik for r in rows])
    by_nik: dict[str, list] = {}
    for (nik, _p), e in sorted(ens.items()):
        by_nik.setdefault(nik, []).append({"programme_identifier": e.programme_identifier,
                                           "enrolment_status": e.enrolment_status,
                                           "status_change_date": e.status_change_date.isoformat()})
    return [{"nik": r.nik, "no_kk": r.no_kk, "name": r.name, "sex": r.sex, "birth_date": r.birth_date.isoformat(),
             "village_code": r.village_code, "verification_status": r.verification_status,
             "enrolments": by_nik.get(r.nik, []),
             "score": round(scores[r.nik], 3) if scores and r.nik in scores else None} for r in rows]


async def people_by_nik(session, nik: str) -> list:
    return (await session.execute(sa.select(people).where(people.c.nik == nik))).all()


async def people_by_kk(session, no_kk: str, limit: int = 50) -> list:
    return (await session.execute(sa.select(people).where(people.c.no_kk == no_kk)
                                  .order_by(people.c.birth_date, people.c.nik).limit(limit))).all()


async def search_names(session, village_code: str, key: str, limit: int, threshold: float, trgm: bool
                       ) -> tuple[list, dict[str, float]]:
    """Tolerant name search within one village, by index: pg_trgm's `%` / `<%` on people.name_key,
    or (without pg_trgm) shared trigrams counted from name_trigrams. Same similarity either way."""
    if not key:
        return [], {}
    if trgm:
        await session.execute(sa.text("select set_config('pg_trgm.similarity_threshold', :t, true), "
                                      "set_config('pg_trgm.word_similarity_threshold', :t, true)"),
                              {"t": str(threshold)})
        rows = (await session.execute(sa.text("""
            select nik, greatest(similarity(name_key, :q), word_similarity(:q, name_key)) as score
            from people where village_code = :v and (name_key % :q or :q <% name_key)
            order by score desc, nik limit :limit"""), {"q": key, "v": village_code, "limit": limit})).all()
    else:
        from services.registry.names import trigrams
        grams = sorted(trigrams(key))
        rows = (await session.execute(sa.text("""
            with hits as (
                select n.nik, count(*) as shared from name_trigrams n
                where n.village_code = :v and n.trigram = any(cast(:grams as text[])) group by n.nik),
            sizes as (
                select n.nik, count(*) as total from name_trigrams n
                where n.village_code = :v and n.nik in (select nik from hits) group by n.nik),
            scored as (
                select nik, hits.shared::float8 / (sizes.total + :nq - hits.shared) as score
                from hits join sizes using (nik))
            select nik, score from scored where score >= :t order by score desc, nik limit :limit"""),
            {"v": village_code, "grams": grams, "nq": len(grams), "t": threshold, "limit": limit})).all()
    scores = {r.nik: float(r.score) for r in rows}
    if not scores:
        return [], {}
    found = {p.nik: p for p in (await session.execute(sa.select(people).where(people.c.nik.in_(list(scores))))).all()}
    return [found[n] for n in scores if n in found], scores


async def data_quality_page(session, status: str | None, kind: str | None, area: str, limit: int, offset: int
                            ) -> tuple[int, list]:
    q = sa.select(data_quality)
    if status:
        q = q.where(data_quality.c.status == status)
    if kind:
        q = q.where(data_quality.c.kind == kind)
    if area:
        q = q.where(data_quality.c.village_code.startswith(area))
    total = (await session.execute(sa.select(sa.func.count()).select_from(q.subquery()))).scalar()
    rows = (await session.execute(q.order_by(data_quality.c.created_at, data_quality.c.id)
                                  .limit(limit).offset(offset))).all()
    return total, rows


# ---- proposals, verification rounds and the data-quality queue (verivali.py, api.py) ----

async def add_proposals(session, rows: list[dict]) -> None:
    """Proposals (usulan), each once per proposal_id: a repeated event adds nothing."""
    if rows:
        await session.execute(insert(proposals).on_conflict_do_nothing(), rows)


async def proposal(session, proposal_id: uuid.UUID, *, lock: bool = False) -> sa.Row | None:
    q = sa.select(proposals).where(proposals.c.proposal_id == proposal_id)
    return (await session.execute(q.with_for_update() if lock else q)).first()


async def proposals_page(session, status: str | None, area: str, limit: int, offset: int) -> tuple[int, list]:
    """Proposals in `area`, oldest first, and how many there are in all."""
    q = sa.select(proposals).where(proposals.c.village_code.startswith(area))
    if status:
        q = q.where(proposals.c.status == status)
    total = (await session.execute(sa.select(sa.func.count()).select_from(q.subquery()))).scalar_one()
    rows = (await session.execute(q.order_by(proposals.c.created_at, proposals.c.proposal_id)
                                  .limit(limit).offset(offset))).all()
    return total, list(rows)


async def decide_proposal(session, proposal_id: uuid.UUID, status: str, reason: str, by: str) -> None:
    await session.execute(sa.update(proposals).where(proposals.c.proposal_id == proposal_id).values(
        status=status, reason=reason, decided_by=by, decided_at=sa.func.now()))


async def insert_proposed_person(session, row: dict, message_id: str) -> bool:
    """A person from an accepted proposal, with their first history row; False if the NIK is
    already in the registry. The insert is the lock: a concurrent ingest inserting this NIK
    is waited for, and a person who exists is never created twice."""
    created = (await session.execute(insert(people).values(row).on_conflict_do_nothing()
                                     .returning(people.c.nik))).first()
    if created:
        await session.execute(sa.insert(person_history).values(
            {c: row[c] for c in ("nik", "no_kk", "name", "sex", "birth_date", "village_code", "address",
                                 "reported_by")} | {"message_id": message_id}))
    return created is not None


async def add_round(session, round_id: uuid.UUID, period: str, cadence: str, area: str, by: str) -> bool:
    """A new verification round; False if the period already has one for this area."""
    t = verification_rounds
    done = (await session.execute(insert(t).values(round_id=round_id, period=period, cadence=cadence, area=area,
                                                   opened_by=by)
                                  .on_conflict_do_nothing(constraint="verification_round_once")
                                  .returning(t.c.round_id))).first()
    return done is not None


async def verification_round(session, round_id: uuid.UUID, *, lock: bool = False) -> sa.Row | None:
    q = sa.select(verification_rounds).where(verification_rounds.c.round_id == round_id)
    return (await session.execute(q.with_for_update() if lock else q)).first()


async def latest_rounds(session, limit: int = 100) -> list:
    t = verification_rounds
    return list((await session.execute(sa.select(t).order_by(t.c.opened_at.desc()).limit(limit))).all())


async def lock_person(session, nik: str) -> sa.Row | None:
    return (await session.execute(sa.select(people).where(people.c.nik == nik).with_for_update())).first()


async def record_result(session, round_id: uuid.UUID, period: str, nik: str, result: str, note: str, by: str
                        ) -> list[str]:
    """Keep a person's result in a round (the last one recorded counts) and as their latest
    status; return the programs they are active in."""
    vr = verification_results
    stmt = insert(vr).values(round_id=round_id, nik=nik, result=result, note=note, recorded_by=by)
    await session.execute(stmt.on_conflict_do_update(index_elements=["round_id", "nik"], set_={
        "result": stmt.excluded.result, "note": stmt.excluded.note, "recorded_by": stmt.excluded.recorded_by,
        "recorded_at": sa.func.now()}))
    await session.execute(sa.update(people).where(people.c.nik == nik).values(
        verification_status=result, verification_period=period))
    e = enrolments
    return list((await session.execute(sa.select(e.c.programme_identifier).where(
        e.c.nik == nik, e.c.enrolment_status == "active").order_by(e.c.programme_identifier))).scalars().all())


def _not_verified(round_id: uuid.UUID, area: str, verified: list[str]) -> sa.Select:
    """People in `area` without a result in the round that counts as verified."""
    vr = verification_results
    done = sa.select(vr.c.nik).where(vr.c.round_id == round_id, vr.c.result.in_(verified))
    return sa.select(people).where(people.c.village_code.startswith(area), people.c.nik.not_in(done))


async def close_round(session, round_id: uuid.UUID, area: str, verified: list[str], by: str) -> tuple[int, int]:
    """Close a round (the caller holds its row); return (verified, not verified) in its area."""
    missing = (await session.execute(sa.select(sa.func.count()).select_from(
        _not_verified(round_id, area, verified).subquery()))).scalar_one()
    vr = verification_results
    done = (await session.execute(sa.select(sa.func.count()).select_from(vr).where(
        vr.c.round_id == round_id, vr.c.result.in_(verified)))).scalar_one()
    await session.execute(sa.update(verification_rounds).where(verification_rounds.c.round_id == round_id)
                          .values(status="closed", closed_by=by, closed_at=sa.func.now()))
    return done, missing


async def unverified_page(session, round_id: uuid.UUID, area: str, verified: list[str], limit: int, offset: int
                          ) -> tuple[int, list]:
    """People in `area` not verified in the round, with the result recorded if any."""
    q = _not_verified(round_id, area, verified).subquery()
    total = (await session.execute(sa.select(sa.func.count()).select_from(q))).scalar_one()
    vr = verification_results
    rows = (await session.execute(
        sa.select(q.c.nik, q.c.name, q.c.village_code, vr.c.result)
        .select_from(q.outerjoin(vr, sa.and_(vr.c.nik == q.c.nik, vr.c.round_id == round_id)))
        .order_by(q.c.village_code, q.c.nik).limit(limit).offset(offset))).all()
    return total, list(rows)


async def lock_conflict(session, conflict_id: uuid.UUID) -> sa.Row | None:
    t = data_quality
    return (await session.execute(sa.select(t).where(t.c.id == conflict_id).with_for_update())).first()


async def resolve_conflict(session, conflict_id: uuid.UUID, by: str, resolution: str) -> None:
    await session.execute(sa.update(data_quality).where(data_quality.c.id == conflict_id).values(
        status="resolved", resolved_by=by, resolved_at=sa.func.now(), resolution=resolution))


# ---- life status (issue 17; services/registry/life.py decides what to announce) ----

_LIFE = [life_status.c[f] for f in Life.__dataclass_fields__]


async def lives(session, niks: list[str], *, lock: bool = False) -> dict[str, Life]:
    """The life status of these people that have one (no row: alive), in one query."""
    if not niks:
        return {}
    q = sa.select(life_status.c.nik, *_LIFE).where(life_status.c.nik == sa.func.any(
        sa.cast(sorted(set(niks)), ARRAY(sa.Text))))
    rows = (await session.execute(q.order_by(life_status.c.nik).with_for_update() if lock else q)).all()
    return {r[0]: Life(*r[1:]) for r in rows}


async def write_lives(session, rows: list[dict], history: list[dict]) -> None:
    """Upsert life_status rows (nik, status, source, effective_date, reported_by, reason_code,
    reason[, conflict_id]) and append their history, one statement each."""
    if rows:
        cols = [c for c in rows[0] if c != "nik"]
        await bulk_insert(session, life_status, sorted(rows, key=lambda r: r["nik"]),
                          "on conflict (nik) do update set " + ", ".join(f"{c} = excluded.{c}" for c in cols)
                          + ", updated_at = now()")
    await bulk_insert(session, life_history, history)


async def write_life_plan(session, plan: LifePlan) -> None:
    await write_lives(session, list(plan.rows), list(plan.history))


async def open_death_conflicts(session, niks: list[str]) -> dict[str, uuid.UUID]:
    """The open `death_while_active` data-quality item of each of these people (the newest)."""
    if not niks:
        return {}
    t = data_quality
    rows = (await session.execute(sa.select(t.c.nik, t.c.id).where(
        t.c.nik == sa.func.any(sa.cast(sorted(set(niks)), ARRAY(sa.Text))), t.c.kind == "death_while_active",
        t.c.status == "open").order_by(t.c.created_at))).all()
    return {r[0]: r[1] for r in rows}


async def set_life_conflicts(session, ids: dict[str, uuid.UUID]) -> None:
    for nik, cid in ids.items():
        await session.execute(sa.update(life_status).where(life_status.c.nik == nik).values(conflict_id=cid))
        await session.execute(sa.update(life_history).where(
            life_history.c.id == sa.select(sa.func.max(life_history.c.id)).where(life_history.c.nik == nik)
            .scalar_subquery()).values(conflict_id=cid))


async def active_programs(session, niks: list[str]) -> dict[str, list[str]]:
    """The programs each person is enrolled in (any status), sorted: an announcement's
    programme_identifiers."""
    if not niks:
        return {}
    e = enrolments
    rows = (await session.execute(sa.select(e.c.nik, e.c.programme_identifier).where(
        e.c.nik == sa.func.any(sa.cast(sorted(set(niks)), ARRAY(sa.Text)))).order_by(
        e.c.nik, e.c.programme_identifier))).all()
    out: dict[str, list[str]] = {}
    for nik, program in rows:
        out.setdefault(nik, []).append(program)
    return out


async def village_of(session, niks: list[str]) -> dict[str, str]:
    if not niks:
        return {}
    rows = (await session.execute(sa.select(people.c.nik, people.c.village_code).where(
        people.c.nik == sa.func.any(sa.cast(sorted(set(niks)), ARRAY(sa.Text)))))).all()
    return {r[0]: r[1] for r in rows}


async def life_history_of(session, nik: str) -> list[dict]:
    h = life_history
    rows = (await session.execute(sa.select(h).where(h.c.nik == nik).order_by(h.c.id))).all()
    return [{"status": r.status, "previous_status": r.previous_status, "source": r.source,
             "effective_date": r.effective_date.isoformat(), "reported_by": r.reported_by,
             "reason_code": r.reason_code, "reason": r.reason,
             "conflict_id": str(r.conflict_id) if r.conflict_id else None,
             "recorded_at": r.recorded_at.isoformat()} for r in rows]


async def unannounced_lives(session, limit: int) -> list[str]:
    """People in the registry with a stop (not alive) that was never announced: a life status
    with no life_history row (history holds what was announced)."""
    ls, h = life_status, life_history
    q = (sa.select(ls.c.nik).join(people, people.c.nik == ls.c.nik)
         .where(ls.c.status != "alive", ~sa.exists().where(h.c.nik == ls.c.nik))
         .order_by(ls.c.nik).limit(limit))
    return list((await session.execute(q)).scalars().all())


async def conflict(session, conflict_id: uuid.UUID) -> sa.Row | None:
    """A data-quality item as committed, without a lock."""
    return (await session.execute(sa.select(data_quality).where(data_quality.c.id == conflict_id))).first()


async def resolve_open_death_conflicts(session, nik: str, by: str, resolution: str) -> list[uuid.UUID]:
    """Close a person's open death_while_active items (Dukcapil recorded the death)."""
    t = data_quality
    rows = (await session.execute(sa.update(t).where(t.c.nik == nik, t.c.kind == "death_while_active",
                                                     t.c.status == "open")
                                  .values(status="resolved", resolved_by=by, resolved_at=sa.func.now(),
                                          resolution=resolution).returning(t.c.id))).all()
    return [r[0] for r in rows]
