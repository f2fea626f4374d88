"""Reporting's read-model tables and how facts update them, incrementally.

No NIK or name is kept here: counts and sums per area and month, plus the few per-item rows
(case, visit, KUBE group, a payee's pseudonym with a 12-bit mask of months paid) needed to
count each thing once. Every aggregate is a sum over a handful of rows per month, so the
monthly recap never scans events.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.kit.outbox import inbox_table, outbox_table
from services.reporting import bulk, domain
from services.reporting.facts import (AllocationFact, Assignment, ComplaintReceived, ComplaintReferred,
                                      ComplaintResolved, EnrolmentFact, Fact, KubeFlow, KubeGroup, LifeFact,
                                      PaymentFact, VisitDone)

metadata = sa.MetaData()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

V = sa.String(10)  # village code, digits
P = sa.String(7)   # period, YYYY-MM


def _n(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


# people per (program, village, status) now, from registry.enrolments_changed
enrolment_counts = sa.Table(
    "enrolment_counts", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("village_code", V, primary_key=True),
    sa.Column("enrolment_status", sa.Text, primary_key=True),
    _n("people"),
)
# where each person is counted now, per program (keyed pseudonym, never the NIK): a change
# takes them out of their old village and status, even when the event does not name those
enrolment_state = sa.Table(
    "enrolment_state", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("person_ref", sa.Text, primary_key=True),
    sa.Column("village_code", V),
    sa.Column("enrolment_status", sa.Text),
    sa.Column("effective", sa.Date),
    # the exit counted for this person and program (deceased, moved_out, ineligible) and its day,
    # while they are out: a verifier's `alive` takes it back from that month
    sa.Column("exit_reason", sa.Text),
    sa.Column("exit_on", sa.Date),
    sa.Index("enrolment_state_person", "person_ref"),
)
# each person's life status (pseudonym), from registry.life_status_changed; no row: alive
life_state = sa.Table(
    "life_state", metadata,
    sa.Column("person_ref", sa.Text, primary_key=True),
    sa.Column("life_status", sa.Text, nullable=False),
    sa.Column("effective", sa.Date, nullable=False),
)
# people leaving a program per month and reason (deceased, moved_out, ineligible)
enrolment_exits = sa.Table(
    "enrolment_exits", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("village_code", V, primary_key=True),
    sa.Column("period", P, primary_key=True),
    sa.Column("reason", sa.Text, primary_key=True),
    _n("people"),
)
# the same as monthly changes by effective date: the sum over months <= P is the state at P
enrolment_flow = sa.Table(
    "enrolment_flow", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("village_code", V, primary_key=True),
    sa.Column("period", P, primary_key=True),
    sa.Column("enrolment_status", sa.Text, primary_key=True),
    _n("people"),
)
payment_monthly = sa.Table(
    "payment_monthly", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("village_code", V, primary_key=True),
    sa.Column("funding_source", sa.Text, primary_key=True),
    sa.Column("period", P, primary_key=True),
    _n("amount"), _n("payments"),
)
# distinct people paid per program and month (a person paid twice in a month counts once)
people_paid = sa.Table(
    "people_paid", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("village_code", V, primary_key=True),
    sa.Column("period", P, primary_key=True),
    _n("people"),
)
# per payee pseudonym, program and year: bit m-1 set once month m was paid
paid_months = sa.Table(
    "paid_months", metadata,
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("person_ref", sa.Text, primary_key=True),
    sa.Column("year", sa.SmallInteger, primary_key=True),
    sa.Column("months", sa.Integer, nullable=False, server_default="0"),
)
allocations = sa.Table(
    "allocations", metadata,
    sa.Column("funding_source", sa.Text, primary_key=True),
    sa.Column("programme_identifier", sa.Text, primary_key=True),
    sa.Column("fiscal_year", sa.SmallInteger, primary_key=True),
    _n("amount"),
)
complaint_cases = sa.Table(
    "complaint_cases", metadata,
    sa.Column("case_id", sa.Text, primary_key=True),
    sa.Column("village_code", V, nullable=False),
    sa.Column("level", sa.Text, nullable=False, server_default="village"),
    sa.Column("received_on", sa.Date),
    sa.Column("due_on", sa.Date),
    sa.Column("resolved_on", sa.Date),
    sa.Column("received_seen", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("days_counted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("complaint_cases_open_due", "due_on", postgresql_where=sa.text("resolved_on is null")),
)
complaint_referrals = sa.Table(
    "complaint_referrals", metadata,
    sa.Column("case_id", sa.Text, primary_key=True),
    sa.Column("level", sa.Text, primary_key=True),
)
# per level (village, kecamatan, kabupaten, agency): cases registered there, referred or
# escalated to it, and resolved while there
complaint_monthly = sa.Table(
    "complaint_monthly", metadata,
    sa.Column("period", P, primary_key=True),
    sa.Column("village_code", V, primary_key=True),
    sa.Column("level", sa.Text, primary_key=True),
    _n("registered"), _n("referred_in"), _n("resolved"),
)
complaint_days = sa.Table(
    "complaint_days", metadata,
    sa.Column("period", P, primary_key=True),
    sa.Column("days", sa.Integer, primary_key=True),
    _n("cases"),
)
# companion assignments (no NIK): each active one is a visit due every month
assignments = sa.Table(
    "assignments", metadata,
    sa.Column("assignment_id", sa.Text, primary_key=True),
    sa.Column("companion", sa.Text, nullable=False),
    sa.Column("village_code", V, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
)
# changes in active assignments by month: the sum over months <= P is the visits due in P
assignment_flow = sa.Table(
    "assignment_flow", metadata,
    sa.Column("companion", sa.Text, primary_key=True),
    sa.Column("village_code", V, primary_key=True),
    sa.Column("period", P, primary_key=True),
    _n("assigned"),
)
visits = sa.Table(
    "visits", metadata,
    sa.Column("visit_id", sa.Text, primary_key=True),
)
visit_monthly = sa.Table(
    "visit_monthly", metadata,
    sa.Column("period", P, primary_key=True),
    sa.Column("companion", sa.Text, primary_key=True),
    sa.Column("village_code", V, primary_key=True),
    _n("done"),
)
visit_conditions = sa.Table(
    "visit_conditions", metadata,
    sa.Column("period", P, primary_key=True),
    sa.Column("companion", sa.Text, primary_key=True),
    sa.Column("aspect", sa.Text, primary_key=True),  # fisik (physical) or sosial (social)
    sa.Column("condition", sa.Text, primary_key=True),
    _n("visits"),
)
kube_groups = sa.Table(
    "kube_groups", metadata,
    sa.Column("group_id", sa.Text, primary_key=True),
    sa.Column("village_code", V, nullable=False),
    sa.Column("members", sa.Integer, nullable=False, server_default="0"),
    sa.Column("formed_period", P, nullable=False),
)
kube_monthly = sa.Table(
    "kube_monthly", metadata,
    sa.Column("group_id", sa.Text, primary_key=True),
    sa.Column("period", P, primary_key=True),
    _n("funded"), _n("disbursed"), _n("due"), _n("repaid"),
)

# every read-model table (what `rebuild` recreates and swaps); the inbox goes with them
READ_MODELS = [t for t in metadata.sorted_tables if t.name != "outbox"]


def _rows(counter: Counter | dict, keys: list[str], col: str) -> list[dict]:
    return [dict(zip(keys, k, strict=True)) | {col: v} for k, v in counter.items()]


async def _add(session, table: sa.Table, keys: list[str], rows: list[dict], cols: list[str]) -> None:
    """Upsert rows adding their `cols` to what is there. A row is written even when its sum is
    zero, so that which rows exist does not depend on how events were batched (a rebuild
    folds in larger batches than the live consumers and must give the same tables)."""
    await bulk.add(session, table, keys, rows, cols)


async def apply(session, facts: list[Fact]) -> None:
    """Fold a batch of facts into the read models, in the caller's transaction: facts are
    summed in memory first, then each table gets one statement (a few for the per-person
    tables), whatever the batch size."""
    by: dict[type, list] = defaultdict(list)
    for f in facts:
        by[type(f)].append(f)
    if by[EnrolmentFact] or by[LifeFact]:
        await _people(session, [f for f in facts if isinstance(f, EnrolmentFact | LifeFact)])
    if by[PaymentFact]:
        await _payments(session, by[PaymentFact])
    if by[AllocationFact]:
        c: Counter = Counter()
        for a in by[AllocationFact]:
            c[(a.funding_source, a.program, a.fiscal_year)] += a.amount
        keys = ["funding_source", "programme_identifier", "fiscal_year"]
        await _add(session, allocations, keys, _rows(c, keys, "amount"), ["amount"])
    if by[ComplaintReceived] or by[ComplaintReferred] or by[ComplaintResolved]:
        await _complaints(session, by[ComplaintReceived], by[ComplaintReferred], by[ComplaintResolved])
    if by[Assignment]:
        await _assignments(session, by[Assignment])
    if by[VisitDone]:
        await _visits(session, by[VisitDone])
    if by[KubeGroup] or by[KubeFlow]:
        await _kube(session, by[KubeGroup], by[KubeFlow])


async def _current(session, t: sa.Table, keys: list[str], cols: list[str], guess: dict[tuple, tuple]
                   ) -> tuple[dict[tuple, tuple | None], set[tuple]]:
    """Each key's row as it is now, locked: (key -> values of `cols`, None for a key that had
    no row; the keys inserted now).

    A key without a row is inserted at once with `guess[key]`, its state after this batch's
    facts when it had none before (one statement for a batch of new payees); only the others
    are locked and read, in key order. A concurrent batch on the same keys waits on the insert
    or the lock and then reads what the first one wrote.
    """
    inserted = await bulk.insert_new(session, t, keys, cols, guess)
    prior = await bulk.lock(session, t, keys, cols, (k for k in guess if k not in inserted))
    return {k: None for k in inserted} | prior, inserted


async def _people(session, facts: list[EnrolmentFact | LifeFact]) -> None:
    """Enrolment and life status changes, in their order: both move people between statuses."""
    t, keys, cols = enrolment_state, ["programme_identifier", "person_ref"], list(domain.EnrolmentRow._fields)
    cols[1] = "enrolment_status"
    guess: dict = {}
    domain.people_changes([f for f in facts if isinstance(f, EnrolmentFact)], guess, {})  # if they were nowhere
    stored, inserted = await _current(session, t, keys, cols, guess)
    # the other programs of people whose life status changes: they leave those too
    life_refs = sorted({f.person_ref for f in facts if isinstance(f, LifeFact)})
    if life_refs:
        others = (await session.execute(sa.select(t.c.programme_identifier, t.c.person_ref)
                                        .where(t.c.person_ref == sa.any_(_texts(life_refs))))).all()
        stored |= await bulk.lock(session, t, keys, cols, (tuple(k) for k in others if tuple(k) not in stored))
    rows = {k: (domain.EnrolmentRow(*v) if v is not None and v[1] is not None else None) for k, v in stored.items()}
    written = {k: (domain.EnrolmentRow(*guess[k]) if k in inserted else v) for k, v in rows.items()}
    lives = await _lives(session, facts)
    lives_before = dict(lives)
    changes = domain.people_changes(facts, rows, lives)
    await bulk.update(session, t, keys, cols, {k: tuple(v) for k, v in rows.items()
                                               if v is not None and v != written[k]})
    await bulk.update(session, life_state, ["person_ref"], ["life_status", "effective"],
                      {(k,): tuple(v) for k, v in lives.items() if v is not None and v != lives_before[k]})
    await _add(session, enrolment_counts, ["programme_identifier", "village_code", "enrolment_status"],
               _rows(changes.now, ["programme_identifier", "village_code", "enrolment_status"], "people"), ["people"])
    flow_keys = ["programme_identifier", "village_code", "period", "enrolment_status"]
    await _add(session, enrolment_flow, flow_keys, _rows(changes.flow, flow_keys, "people"), ["people"])
    exit_keys = ["programme_identifier", "village_code", "period", "reason"]
    await _add(session, enrolment_exits, exit_keys, _rows(changes.exits, exit_keys, "people"), ["people"])


async def _lives(session, facts: list[EnrolmentFact | LifeFact]) -> dict[str, domain.LifeRow | None]:
    """The life status of everyone in the facts (None: alive, no row). Rows a life fact changes
    are locked (a new one is inserted at once, as `_current` does); the others only read: one
    array-parameter select, 16-38 ms of a 360-470 ms fold of 10,000 enrolment changes (measured
    on the 2-core test machine, empty life_state)."""
    changing = {f.person_ref: (f.life_status, f.effective) for f in facts if isinstance(f, LifeFact)}
    out: dict[str, domain.LifeRow | None] = {}
    if changing:
        got, _inserted = await _current(session, life_state, ["person_ref"], ["life_status", "effective"],
                                        {(k,): v for k, v in changing.items()})
        out |= {k[0]: (domain.LifeRow(*v) if v is not None else None) for k, v in got.items()}
    rest = sorted({f.person_ref for f in facts} - changing.keys())
    if rest:
        out |= {r[0]: domain.LifeRow(r[1], r[2]) for r in (await session.execute(
            sa.select(life_state.c.person_ref, life_state.c.life_status, life_state.c.effective)
            .where(life_state.c.person_ref == sa.any_(_texts(rest))))).all()}
    return out


def _texts(values: list[str]) -> sa.BindParameter:
    """One array parameter: the statement's text is the same for 5 people or 10,000, so it is
    prepared once (an IN list is a new statement per size: bulk.py)."""
    return sa.bindparam("refs", values, type_=ARRAY(sa.Text))


async def _payments(session, pays: list[PaymentFact]) -> None:
    money: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for p in pays:
        m = money[(p.program, p.village_code, p.funding_source, p.period)]
        m[0] += p.amount
        m[1] += p.payments
    await _add(session, payment_monthly, ["programme_identifier", "village_code", "funding_source", "period"],
               [{"programme_identifier": k[0], "village_code": k[1], "funding_source": k[2], "period": k[3],
                 "amount": a, "payments": n} for k, (a, n) in money.items()], ["amount", "payments"])

    # distinct people: set the month's bit in each payee's mask; only a bit not yet set counts
    t, keys = paid_months, ["programme_identifier", "person_ref", "year"]
    guess: dict[tuple, int] = {}
    domain.months_paid(pays, guess)  # each payee's months if none were paid before
    state, inserted = await _current(session, t, keys, ["months"], {k: (m,) for k, m in guess.items()})
    masks = {k: (v[0] if v else 0) for k, v in state.items()}
    before = dict(masks)
    newly = domain.months_paid(pays, masks)
    await bulk.update(session, t, keys, ["months"],
                      {k: (m,) for k, m in masks.items() if k not in inserted and m != before[k]})
    keys3 = ["programme_identifier", "village_code", "period"]
    await _add(session, people_paid, keys3, _rows(newly, keys3, "people"), ["people"])


async def _complaints(session, received: list[ComplaintReceived], referred: list[ComplaintReferred],
                      resolved: list[ComplaintResolved]) -> None:
    t = complaint_cases
    monthly: Counter = Counter()  # (period, village, level, column) -> n
    if received:
        stmt = insert(t)
        got = (await session.execute(stmt.on_conflict_do_update(
            index_elements=["case_id"],
            set_={"received_on": stmt.excluded.received_on, "due_on": stmt.excluded.due_on, "received_seen": True},
            where=~t.c.received_seen).returning(t.c.village_code, t.c.received_on, t.c.level),
            [{"case_id": r.case_id, "village_code": r.village_code, "received_on": r.received_on,
              "due_on": r.due_on, "level": r.level, "received_seen": True} for r in _last(received)])).all()
        for village, day, level in got:
            monthly[(domain.period_of(day), village, level, "registered")] += 1
    for r in sorted(referred, key=lambda r: (r.referred_on, _RANK.get(r.level, 0))):
        await session.execute(insert(t).on_conflict_do_nothing(),
                              [{"case_id": r.case_id, "village_code": r.village_code}])
        new = (await session.execute(insert(complaint_referrals).on_conflict_do_nothing().returning(
            complaint_referrals.c.case_id), [{"case_id": r.case_id, "level": r.level}])).first()
        if new is None:
            continue  # this case already reached this level
        monthly[(domain.period_of(r.referred_on), r.village_code, r.level, "referred_in")] += 1
        # the case now sits at the highest level it reached, with that level's deadline
        higher = _rank(t.c.level) <= _RANK.get(r.level, 0)
        await session.execute(sa.update(t).where(t.c.case_id == r.case_id).values(
            level=sa.case((higher, r.level), else_=t.c.level),
            due_on=sa.case((higher, sa.literal(r.due_on, sa.Date)), else_=t.c.due_on) if r.due_on else t.c.due_on))
    if resolved:
        stmt = insert(t)
        got = (await session.execute(stmt.on_conflict_do_update(
            index_elements=["case_id"],
            set_={"resolved_on": stmt.excluded.resolved_on,
                  "received_on": sa.func.coalesce(t.c.received_on, stmt.excluded.received_on)},
            where=t.c.resolved_on.is_(None)).returning(t.c.village_code, t.c.level, t.c.resolved_on),
            [{"case_id": r.case_id, "village_code": r.village_code, "resolved_on": r.resolved_on,
              "received_on": r.received_on} for r in _last(resolved)])).all()
        for village, level, day in got:
            monthly[(domain.period_of(day), village, level, "resolved")] += 1
    # days to resolve, once per case, as soon as both dates are known (events may come in any order)
    touched = sorted({f.case_id for f in (*received, *resolved)})
    days: Counter = Counter()
    if touched:
        for rec, res in (await session.execute(
                sa.update(t).where(t.c.case_id.in_(touched), t.c.received_on.is_not(None),
                                   t.c.resolved_on.is_not(None), ~t.c.days_counted)
                .values(days_counted=True).returning(t.c.received_on, t.c.resolved_on))).all():
            days[(domain.period_of(res), max((res - rec).days, 0))] += 1
    await _add(session, complaint_days, ["period", "days"], _rows(days, ["period", "days"], "cases"), ["cases"])
    cols = ("registered", "referred_in", "resolved")
    rows: dict[tuple, dict] = {}
    for (period, village, level, col), n in monthly.items():
        rows.setdefault((period, village, level), {"period": period, "village_code": village, "level": level}
                        | dict.fromkeys(cols, 0))[col] += n
    await _add(session, complaint_monthly, ["period", "village_code", "level"], list(rows.values()), list(cols))


LEVELS = ("village", "kecamatan", "kabupaten", "agency")
_RANK = {lv: i for i, lv in enumerate(LEVELS)}


def _rank(col):
    return sa.case(*((col == lv, i) for lv, i in _RANK.items()), else_=0)


def _last(items: list) -> list:
    """One fact per case (the last): a batch may not upsert the same row twice."""
    return list({f.case_id: f for f in items}.values())


async def _assignments(session, facts: list[Assignment]) -> None:
    """+1 due visit a month from when an assignment becomes active, -1 from when it ends."""
    t = assignments
    ids = sorted({f.assignment_id for f in facts})
    await session.execute(insert(t).on_conflict_do_nothing(),
                          [{"assignment_id": f.assignment_id, "companion": f.companion,
                            "village_code": f.village_code} for f in {f.assignment_id: f for f in facts}.values()])
    state = {r[0]: (r[1], r[2], r[3]) for r in (await session.execute(
        sa.select(t.c.assignment_id, t.c.companion, t.c.village_code, t.c.active)
        .where(t.c.assignment_id.in_(ids)).order_by(t.c.assignment_id).with_for_update())).all()}
    before = dict(state)
    flow: Counter = Counter()
    for f in facts:
        companion, village, active = state[f.assignment_id]
        if active:
            flow[(companion, village, f.period)] -= 1
        if f.active:
            flow[(f.companion, f.village_code, f.period)] += 1
        state[f.assignment_id] = (f.companion, f.village_code, f.active)
    changed = [{"i": k, "c": v[0], "v": v[1], "a": v[2]} for k, v in state.items() if v != before[k]]
    if changed:
        await session.execute(sa.update(t).where(t.c.assignment_id == sa.bindparam("i")).values(
            companion=sa.bindparam("c"), village_code=sa.bindparam("v"), active=sa.bindparam("a"))
            .execution_options(synchronize_session=False), changed)
    keys = ["companion", "village_code", "period"]
    await _add(session, assignment_flow, keys, _rows(flow, keys, "assigned"),
               ["assigned"])


async def _visits(session, done: list[VisitDone]) -> None:
    uniq = {f.visit_id: f for f in done}
    new = set((await session.execute(insert(visits).on_conflict_do_nothing().returning(visits.c.visit_id),
                                     [{"visit_id": v} for v in uniq])).scalars())
    monthly: Counter = Counter()
    conditions: Counter = Counter()
    for v in new:
        f = uniq[v]
        monthly[(f.period, f.companion, f.village_code)] += 1
        conditions[(f.period, f.companion, "fisik", f.physical)] += 1
        conditions[(f.period, f.companion, "sosial", f.social)] += 1
    keys = ["period", "companion", "village_code"]
    await _add(session, visit_monthly, keys, _rows(monthly, keys, "done"), ["done"])
    keys = ["period", "companion", "aspect", "condition"]
    await _add(session, visit_conditions, keys, _rows(conditions, keys, "visits"), ["visits"])


async def _kube(session, groups: list[KubeGroup], flows: list[KubeFlow]) -> None:
    if groups:
        stmt = insert(kube_groups)
        await session.execute(stmt.on_conflict_do_update(index_elements=["group_id"], set_={
            "village_code": stmt.excluded.village_code, "members": stmt.excluded.members,
            "formed_period": sa.func.least(kube_groups.c.formed_period, stmt.excluded.formed_period)}),
            list({g.group_id: {"group_id": g.group_id, "village_code": g.village_code, "members": g.members,
                               "formed_period": g.period} for g in groups}.values()))
    cols = ("funded", "disbursed", "due", "repaid")
    sums: dict[tuple, dict] = {}
    for f in flows:
        s = sums.setdefault((f.group_id, f.period), dict.fromkeys(cols, 0))
        for c in cols:
            s[c] += getattr(f, c)
    await _add(session, kube_monthly, ["group_id", "period"],
               [{"group_id": k[0], "period": k[1]} | v for k, v in sums.items()], list(cols))


Reader = AsyncSession  # what the read queries (here and in report.py) take


def reader(sessions: async_sessionmaker[AsyncSession]) -> Callable[[], AsyncIterator[AsyncSession]]:
    """A FastAPI dependency: one session per request, for reading."""
    async def session() -> AsyncIterator[AsyncSession]:
        async with sessions() as s:
            yield s
    return session


async def counts(session, program: str | None = None) -> list[dict]:
    q = sa.select(enrolment_counts).where(enrolment_counts.c.people != 0)
    if program:
        q = q.where(enrolment_counts.c.programme_identifier == program)
    rows = (await session.execute(q.order_by(*enrolment_counts.c))).all()
    return [dict(r._mapping) for r in rows]
