"""Program data in the registry (issue 17): who owns each program (the regency, or an outside
agency), whether it requires a verivali verification, and for how long one stays valid.

- Ownership decides where an accepted proposal goes (services/registry/proposals.py): the
  regency's programs enrol the person at once, an agency's get the proposal forwarded.
- Validity: a person's latest verification (a `verified`/`corrected` verivali result, or a
  verifier accepting their proposal) counts for `validity_months`; after that, a program that
  requires one treats them as not verified. `expire_verifications` (a singleton timer of the
  registry, and `sinergi registry expire-verifications`) announces each expiry once
  (registry.verifications_expired); the verifier's round worklist shows who is due.

Settings are written by a program manager over HTTP (PUT /programs/{code}, with a reason, one
audit row); the clock is the server's, except for an operator's command or a test (`now=`).
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.registry import MAX_ITEMS, VerificationExpiry, VerificationResult, VerificationsExpired
from services.kit import logging as klog
from services.kit.runtime import Kit
from services.registry import store

log = klog.get(__name__)
VERIFIED = [r.value for r in VerificationResult if r.counts_as_verified]
OWNERS = ("regency", "agency")
# candidates handled per transaction by the expiry scan: each becomes one row and at most one
# event item; 2,000 keeps a transaction short (a few hundred ms) at regency scale
EXPIRY_BATCH = 2000
# candidates read at once by one scan; the rest are found by the next read of the same scan
SCAN_LIMIT = 50_000

programs = sa.Table(
    "programs", store.metadata,
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("owner", sa.Text, nullable=False, comment="regency or agency"),
    sa.Column("agency_name", sa.Text, nullable=False, server_default=""),
    sa.Column("requires_verification", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("validity_months", sa.Integer, comment="how long a verification counts; null: no limit"),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# an accepted proposal forwarded to the agency owning a program, until its enrolment report
proposal_forwards = sa.Table(
    "proposal_forwards", store.metadata,
    sa.Column("proposal_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("nik", sa.String(16), nullable=False),
    sa.Column("village_code", sa.String(10), nullable=False),
    sa.Column("case_id", UUID(as_uuid=True)),
    sa.Column("forwarded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("fulfilled_at", sa.DateTime(timezone=True)),
    sa.Column("enrolment_status", sa.Text),
)

# each expiry announced, once: (person, program, the verification that ran out)
verification_expiries = sa.Table(
    "verification_expiries", store.metadata,
    sa.Column("nik", sa.String(16), primary_key=True),
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("verified_at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("expired_on", sa.Date, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


@dataclass(frozen=True)
class Program:
    code: str
    owner: str
    agency_name: str
    requires_verification: bool
    validity_months: int | None
    reason: str
    updated_by: str
    updated_at: dt.datetime

    def json(self) -> dict[str, Any]:
        return {"code": self.code, "owner": self.owner, "agency_name": self.agency_name,
                "requires_verification": self.requires_verification, "validity_months": self.validity_months,
                "reason": self.reason, "updated_by": self.updated_by, "updated_at": self.updated_at.isoformat()}


def _program(r: Any) -> Program:
    return Program(r.code, r.owner, r.agency_name, r.requires_verification, r.validity_months, r.reason,
                   r.updated_by, r.updated_at)


async def get(session: AsyncSession, code: str) -> Program | None:
    r = (await session.execute(sa.select(programs).where(programs.c.code == code))).first()
    return _program(r) if r else None


async def all_programs(session: AsyncSession) -> list[Program]:
    return [_program(r) for r in (await session.execute(sa.select(programs).order_by(programs.c.code))).all()]


async def of(session: AsyncSession, codes: Sequence[str]) -> dict[str, Program]:
    if not codes:
        return {}
    rows = (await session.execute(sa.select(programs).where(programs.c.code.in_(sorted(set(codes)))))).all()
    return {r.code: _program(r) for r in rows}


async def put(session: AsyncSession, code: str, owner: str, agency_name: str, requires_verification: bool,
              validity_months: int | None, reason: str, by: str) -> tuple[Program | None, Program]:
    """Define or change a program's settings; returns (before, after)."""
    before = (await session.execute(sa.select(programs).where(programs.c.code == code).with_for_update())).first()
    values = {"owner": owner, "agency_name": agency_name, "requires_verification": requires_verification,
              "validity_months": validity_months, "reason": reason, "updated_by": by}
    stmt = insert(programs).values(code=code, **values)
    row = (await session.execute(stmt.on_conflict_do_update(index_elements=["code"], set_={
        **values, "updated_at": sa.func.now()}).returning(*programs.c))).one()
    return (_program(before) if before else None), _program(row)


# ---- verification validity ----

def _last_verified(niks: Sequence[str] | None = None) -> sa.Subquery:
    """Each person's latest verification (of `niks` only, when given: PostgreSQL does not push a
    NIK list into the grouped subquery by itself): a verified/corrected result in a round, or a
    verifier accepting their proposal (the verifier saw the household)."""
    vr, p = store.verification_results, store.proposals
    results = sa.select(vr.c.nik, vr.c.recorded_at.label("at")).where(vr.c.result.in_(VERIFIED))
    accepted = sa.select(p.c.nik, p.c.decided_at.label("at")).where(p.c.status == "accepted",
                                                                    p.c.decided_at.is_not(None))
    if niks is not None:
        some = sa.cast(sorted(set(niks)), ARRAY(sa.Text))
        results, accepted = results.where(vr.c.nik == sa.func.any(some)), accepted.where(p.c.nik == sa.func.any(some))
    events = sa.union_all(results, accepted).subquery()
    return sa.select(events.c.nik, sa.func.max(events.c.at).label("verified_at")).group_by(events.c.nik).subquery()


def _validity(niks: Sequence[str] | None = None) -> sa.Select:
    """(nik, program, village, verified_at, expires_at) for every active enrolment in a program
    that requires a verification with a limited validity; verified_at null: never verified."""
    e, pe, lv = store.enrolments, store.people, _last_verified(niks)
    expires = lv.c.verified_at + sa.func.make_interval(0, programs.c.validity_months)
    return (sa.select(e.c.nik, e.c.programme_identifier, pe.c.village_code, pe.c.verification_period,
                      lv.c.verified_at, expires.label("expires_at"))
            .select_from(e.join(programs, sa.and_(programs.c.code == e.c.programme_identifier,
                                                  programs.c.requires_verification,
                                                  programs.c.validity_months.is_not(None)))
                         .join(pe, pe.c.nik == e.c.nik)
                         .outerjoin(lv, lv.c.nik == e.c.nik))
            .where(e.c.enrolment_status == "active"))


def _expiry_event_id(items: list[tuple[str, str, dt.datetime]]) -> uuid.UUID:
    """The same expiries give the same event id (a retried scan is dropped by JetStream)."""
    key = ";".join(f"{n}:{p}:{v.isoformat()}" for n, p, v in items)
    return uuid.uuid5(uuid.NAMESPACE_URL, f"sinergi/verifications-expired/{key}")


async def expire_verifications(kit: Kit, now: dt.datetime | None = None, batch: int = EXPIRY_BATCH) -> int:
    """Announce every verification past its program's validity at `now` (default: the server's
    clock), once per (person, program, verification): registry.verifications_expired, at most
    MAX_ITEMS people per event. Returns how many (person, program) expiries were new.

    One read finds the candidates (up to SCAN_LIMIT), then each `batch` of them is claimed and
    announced in its own transaction: re-reading per batch made the first scan of 20,000
    expiries take 12.5 s (ten full reads of 0.45-0.8 s each on a shared 2-core machine)."""
    now = now or dt.datetime.now(dt.UTC)
    total = 0
    async with kit.sessions() as s:
        limited = (await s.execute(sa.select(sa.func.count()).select_from(programs).where(
            programs.c.requires_verification, programs.c.validity_months.is_not(None)))).scalar_one()
    if not limited:
        return 0  # no program limits validity: nothing can expire (the usual case before settings exist)
    ex = verification_expiries
    while True:
        v = _validity().subquery()
        seen = sa.select(ex.c.nik).where(ex.c.nik == v.c.nik, ex.c.programme_identifier == v.c.programme_identifier,
                                         ex.c.verified_at == v.c.verified_at)
        async with kit.sessions() as s:
            found = (await s.execute(
                sa.select(v).where(v.c.verified_at.is_not(None), v.c.expires_at <= now, ~seen.exists())
                .order_by(v.c.nik, v.c.programme_identifier).limit(SCAN_LIMIT))).all()
        for i in range(0, len(found), batch):
            total += await _announce(kit, found[i:i + batch])
        if len(found) < SCAN_LIMIT:
            return total


async def _announce(kit: Kit, rows: Sequence[Any]) -> int:
    """Claim these expiries and announce the ones this scan claimed (a concurrent scan, the
    timer and an operator's command, claims each once)."""
    ex = verification_expiries
    async with kit.unit_of_work() as uow:
        # one statement over arrays: a multi-row VALUES of 2,000 rows cost SQLAlchemy 0.3 s to compile
        claimed = (await uow.session.execute(sa.text(
            f"insert into {ex.name} (nik, programme_identifier, verified_at, expired_on) "
            "select * from unnest(cast(:n as text[]), cast(:p as text[]), cast(:v as timestamptz[]), "
            "cast(:e as date[])) on conflict do nothing returning nik, programme_identifier"),
            {"n": [r.nik for r in rows], "p": [r.programme_identifier for r in rows],
             "v": [r.verified_at for r in rows], "e": [r.expires_at.date() for r in rows]})).all()
        mine = {(c[0], c[1]) for c in claimed}
        people: dict[str, dict[str, Any]] = {}
        keys: dict[str, list[tuple[str, str, dt.datetime]]] = {}
        for r in rows:
            if (r.nik, r.programme_identifier) not in mine:
                continue
            item = people.setdefault(r.nik, {"nik": r.nik, "village_code": r.village_code,
                                             "programme_identifiers": [],
                                             "verification_period": r.verification_period,
                                             "expired_on": r.expires_at.date()})
            item["programme_identifiers"].append(r.programme_identifier)
            item["expired_on"] = min(item["expired_on"], r.expires_at.date())
            keys.setdefault(r.nik, []).append((r.nik, r.programme_identifier, r.verified_at))
        niks = list(people)
        for i in range(0, len(niks), MAX_ITEMS):
            chunk = niks[i:i + MAX_ITEMS]
            # the items come from rows that passed every rule on the way in: validating their NIKs
            # again cost 60 us each (1.3 s of a 20,000-expiry scan)
            uow.emit(VerificationsExpired(expiries=[VerificationExpiry.model_construct(**people[n]) for n in chunk]),
                     event_id=_expiry_event_id([k for n in chunk for k in keys[n]]))
    if mine:
        log.info("registry.verifications_expired", expiries=len(mine))
    return len(mine)


def round_end(period: str) -> dt.date:
    """The last day of a verification round's period: 2026-11 -> 2026-11-30, 2026-H2 -> 2026-12-31."""
    year, _, part = period.partition("-")
    y = int(year)
    if part.startswith("H"):
        return dt.date(y, 6, 30) if part == "H1" else dt.date(y, 12, 31)
    m = int(part)
    return dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1)


async def due(session: AsyncSession, niks: Sequence[str]) -> dict[str, tuple[dt.date | None, list[str]]]:
    """For these people: when their verification runs out in the programs that require one
    (None: never verified, due now) and which programs, the earliest first."""
    if not niks:
        return {}
    v = _validity(niks).subquery()
    rows = (await session.execute(sa.select(v).where(v.c.nik == sa.func.any(sa.cast(sorted(set(niks)),
                                                                                     ARRAY(sa.Text))))
                                  .order_by(v.c.nik, v.c.programme_identifier))).all()
    out: dict[str, tuple[dt.date | None, list[str]]] = {}
    for r in rows:
        on = r.expires_at.date() if r.expires_at is not None else None
        cur_on, progs = out.get(r.nik, (on, []))
        earliest = None if (cur_on is None or on is None) else min(cur_on, on)
        out[r.nik] = (earliest, [*progs, r.programme_identifier])
    return out


def due_filter(people_nik: sa.ColumnElement[Any], until: dt.date) -> sa.ColumnElement[bool]:
    """True for a person whose verification, in some program that requires one, runs out by
    `until` (end of day) or who was never verified."""
    v = _validity().subquery()
    limit = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return sa.select(v.c.nik).where(v.c.nik == people_nik, sa.or_(
        v.c.verified_at.is_(None), v.c.expires_at < limit)).exists()


async def due_page(session: AsyncSession, round_id: uuid.UUID, area: str, until: dt.date, limit: int, offset: int
                   ) -> tuple[int, list[Any]]:
    """The round's worklist narrowed to people due for verification by `until` (the round's
    last day): not verified in the round, and expired, expiring by then, or never verified in
    a program that requires a verification."""
    q = store._not_verified(round_id, area, VERIFIED)
    q = q.where(due_filter(store.people.c.nik, until)).subquery()
    total = (await session.execute(sa.select(sa.func.count()).select_from(q))).scalar_one()
    vr = store.verification_results
    rows = (await session.execute(
        sa.select(q.c.nik, q.c.name, q.c.village_code, vr.c.result)
        .select_from(q.outerjoin(vr, sa.and_(vr.c.nik == q.c.nik, vr.c.round_id == round_id)))
        .order_by(q.c.village_code, q.c.nik).limit(limit).offset(offset))).all()
    return total, list(rows)
