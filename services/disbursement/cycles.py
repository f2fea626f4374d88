"""Payment cycles: entitlements, exclusivity, budget reservation and instructions for one
(program, period), in chunks of `chunk_size` people per unit of work; and the program rules
and poverty lines a cycle pays by.

Each chunk is one unit of work (kit.unit_of_work) that locks the chain, then the allocations (FOR UPDATE), picks
people without an instruction, reserves exactly what the allocations can fund and writes the
instructions, ledger transfers, channel messages and audit events together. A crash loses at
most the chunk in flight; running the cycle again continues where it stopped and never issues
a second instruction for the same (program, period, NIK).
"""
from __future__ import annotations

import datetime as dt
import hmac
import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.disbursement import BudgetReserved, CycleCompleted, FundingLine, PaymentInstructionsIssued
from contracts.envelope import utcnow
from services.disbursement import disburse, domain, ledger, store
from services.disbursement.config import DisbursementSettings
from services.disbursement.domain import ProgramRules
from services.kit import logging as klog
from services.kit.outbox import OutboxRow

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement

log = klog.get(__name__)
ITEMS_PER_EVENT = 1000  # about 250 bytes each


class CycleError(domain.Refused):
    """A cycle cannot run; the message says why (HTTP 409/404/422)."""


# program rules and poverty lines are changed in approval.py (audited, with a reason)


# --- cycles ------------------------------------------------------------------------------------

@dataclass
class CycleTerms:
    """What one cycle pays: the program's rules and the amount for the period."""

    program: str
    period: str
    rules: ProgramRules
    amount: int
    fiscal_year: int
    preparation: uuid.UUID | None = None  # the approved preparation: pay only its frozen list

    @property
    def min_birth(self) -> dt.date | None:
        return domain.min_birth_date(self.period, self.rules.min_age)

    @property
    def month(self) -> str:
        """The month the cycle pays in: the audit stream's `period` (domain.cycle_month)."""
        return domain.cycle_month(self.period)

    @property
    def start(self) -> dt.date:
        """The cycle's first day: life statuses stop or hold it from there (domain.payable)."""
        return domain.period_start(self.period)

    @property
    def cycle_key(self) -> str | None:
        """The key on the audit stream when it is not the month itself (a stage, a one-off)."""
        return None if self.period == self.month else self.period


async def load_terms(s: AsyncSession, program: str, period: str) -> CycleTerms:
    try:
        domain.check_cycle_key(period)
    except ValueError as e:
        raise CycleError(str(e), 422) from None
    raw = await store.program_rules(s, program)
    if raw is None:
        raise CycleError(f"no program {program!r}: define its rules with PUT /programs/{program}", 404)
    rules = ProgramRules.model_validate(raw)
    try:  # the key follows the program's frequency (monthly, quarterly stage, one-off)
        domain.check_cycle_key(period, rules.frequency)
    except ValueError as e:
        raise CycleError(f"{program} pays {rules.frequency}: {e}", 422) from None
    year = int(period[:4])
    if rules.amount.kind == "fixed":
        amount = int(rules.amount.amount or 0)
    else:
        assert rules.amount.regency is not None  # ProgramRules requires it for a poverty-line amount
        line = await store.poverty_line(s, rules.amount.regency, year)
        if line is None:
            raise CycleError(f"no poverty line for regency {rules.amount.regency} in {year}: set it with "
                             f"PUT /poverty-lines/{rules.amount.regency}/{year}")
        amount = int(line)
    return CycleTerms(program, period, rules, amount, year)


def _life_stop_sql(alias: str = "l") -> str:
    """domain.payable, negated, in SQL over `life_statuses {alias}` (parameters :start, :arrears):
    true when this person's life status stops or holds the cycle starting on :start."""
    stop = ", ".join(f"'{x}'" for x in sorted(domain.STOPPING))
    return (f"(({alias}.life_status in ({stop}) and :start >= {alias}.effective_date) or "
            f"({alias}.life_status not in ({stop}) and not :arrears and {alias}.held_from is not null "
            f"and {alias}.held_until is not null and :start >= {alias}.held_from and :start < {alias}.held_until))")


def _eligible_sql(ctx: CycleTerms, *, exclusivity: bool) -> tuple[str, dict]:
    """People eligible in this cycle who have no instruction for it yet; with `exclusivity`,
    also without one from another program of the same class this month."""
    sql = ["select e.nik, e.no_kk, e.village_code from enrolments e",
           "where e.programme_identifier = :p and e.enrolment_status = 'active'",
           "and not exists (select 1 from instructions i where i.programme_identifier = :p "
           "and i.period = :per and i.nik = e.nik)",
           # life status (issue 17): a set-based anti-join on a table of the few people with a change
           f"and not exists (select 1 from life_statuses l where l.nik = e.nik and {_life_stop_sql()})"]
    params: dict = {"p": ctx.program, "per": ctx.period, "start": ctx.start, "arrears": ctx.rules.pays_arrears}
    if ctx.rules.require_verified:
        sql.append("and exists (select 1 from verifications v where v.nik = e.nik and v.verified)")
        # an expired verification counts as none for this program until a new result arrives
        sql.append("and not exists (select 1 from verification_expiries x where x.programme_identifier = :p "
                   "and x.nik = e.nik)")
    if ctx.min_birth:
        sql.append("and e.birth_date <= :mb")
        params["mb"] = ctx.min_birth
    if exclusivity and ctx.rules.exclusivity_class:
        sql.append("and not exists (select 1 from instructions x where x.exclusivity_class = :cls "
                   "and x.period = :per and x.nik = e.nik)")
        params["cls"] = ctx.rules.exclusivity_class
    return "\n".join(sql), params


async def _budgets(s: AsyncSession, ctx: CycleTerms, *, lock: bool) -> list[domain.Budget]:
    a = store.allocations
    q = sa.select(a).where(a.c.programme_identifier == ctx.program, a.c.fiscal_year == ctx.fiscal_year,
                           a.c.source.in_([f.source.value for f in ctx.rules.funding])).order_by(a.c.id)
    rows = {r.source: r for r in (await s.execute(q.with_for_update() if lock else q)).all()}
    out = []
    for f in ctx.rules.funding:
        r = rows.get(f.source.value)
        out.append(domain.Budget(f.source.value, r.id if r else None, (r.ceiling - r.reserved) if r else 0, f.share))
    return out


async def preview(deps: Disbursement, program: str, period: str) -> dict[str, Any]:
    """Dry run: what a commit would do now, with totals per source. Writes nothing."""
    async with deps.kit.sessions() as s:
        return await _preview(s, program, period)


async def _preview(s: AsyncSession, program: str, period: str) -> dict[str, Any]:
    ctx = await load_terms(s, program, period)
    await s.execute(sa.text("analyze enrolments, instructions, verifications"))  # fresh plans after bulk loads
    sql, params = _eligible_sql(ctx, exclusivity=False)
    pending = (await s.execute(sa.text(f"select count(*) from ({sql}) q"), params)).scalar_one()
    sql2, params2 = _eligible_sql(ctx, exclusivity=True)
    allowed = (await s.execute(sa.text(f"select count(*) from ({sql2}) q"), params2)).scalar_one()
    budgets = await _budgets(s, ctx, lock=False)
    tranches = domain.plan(ctx.amount, ctx.rules.funding_mode, budgets, allowed)
    per_source: dict[str, dict] = {b.source: {"source": b.source, "allocation_id": str(b.allocation_id)
                                              if b.allocation_id else None, "remaining": b.remaining,
                                              "people": 0, "amount": 0} for b in budgets}
    funded = 0
    for t in tranches:
        funded += t.count
        for src, _a, amt in t.lines:
            per_source[src]["people"] += t.count
            per_source[src]["amount"] += amt * t.count
    done = await _issued_totals(s, ctx)
    arrears = {"instructions": 0, "total": 0}
    if ctx.rules.pays_arrears:  # shown beside the cycle's own total, so the checker sees them too
        for period, owed in (await _arrears_due(s, ctx, preview=True)).items():
            try:
                amount = (await load_terms(s, program, period)).amount
            except CycleError:  # the run skips it too (_arrears)
                continue
            arrears["instructions"] += len(owed)
            arrears["total"] += len(owed) * amount
    return {"arrears": arrears, "programme_identifier": program, "period": period, "dry_run": True, "amount_per_person": ctx.amount,
            "already_issued": done, "eligible_pending": pending, "excluded_exclusivity": pending - allowed,
            "would_issue": funded, "unfunded": allowed - funded, "total": sum(v["amount"] for v in per_source.values()),
            "per_source": list(per_source.values())}


async def _issued_totals(s: AsyncSession, ctx: CycleTerms) -> dict:
    i = store.instructions
    r = (await s.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(i.c.amount), 0))
                         .where(i.c.programme_identifier == ctx.program, i.c.period == ctx.period))).one()
    return {"instructions": r[0], "total": int(r[1])}


@dataclass
class RunResult:
    created: int = 0
    total: int = 0
    chunks: int = 0
    per_source: dict = field(default_factory=lambda: defaultdict(int))


def _issued_sql(match: str) -> str:
    """NIKs in [:lo, :hi] with an instruction of any status in cycle :per matching `match`, as two
    index ranges: the live ones through their partial unique index, the failed and cancelled
    ones through `instruction_not_live`. One query without the status terms used no index (the
    partial ones do not cover it) and scanned every instruction once per chunk: 51 ms a chunk at
    300,000 instructions on a quiet machine, so a cycle grew quadratically (measured 23 Nov 2026)."""
    rest = f"{match} and period = :per and nik between :lo and :hi"
    return (f"select nik from instructions where {rest} and status not in ('failed', 'cancelled') "
            f"union all select nik from instructions where {rest} and status in ('failed', 'cancelled')")


# the literal status terms matter: they make the planner use the partial indexes (test_disbursement_cycle_plan)
ISSUED_SQL = {"program": _issued_sql("programme_identifier = :p"),
              "class": _issued_sql("exclusivity_class = :cls")}


async def _next_people(s: AsyncSession, ctx: CycleTerms, after: str, limit: int) -> tuple[list, str | None]:
    """The next `limit` enrolled people after NIK `after` (keyset: an index range, never a scan of
    everyone) minus those already paid, excluded, or unverified. The anti-joins are done on the
    same NIK range through each table's index, so the cost per chunk does not grow with the
    cycle. Returns (eligible people in NIK order, last NIK looked at; None at the end)."""
    q = ["select nik, no_kk, village_code, payee from enrolments where programme_identifier = :p",
         "and enrolment_status = 'active' and nik > :after"]
    params: dict = {"p": ctx.program, "after": after, "lim": limit}
    if ctx.min_birth:
        q.append("and birth_date <= :mb")
        params["mb"] = ctx.min_birth
    cands = (await s.execute(sa.text(" ".join(q) + " order by nik limit :lim"), params)).all()
    if not cands:
        return [], None
    rng = {"lo": cands[0][0], "hi": cands[-1][0], "p": ctx.program, "per": ctx.period}
    skip = set((await s.execute(sa.text(ISSUED_SQL["program"]), rng)).scalars())
    if ctx.rules.exclusivity_class:
        skip |= set((await s.execute(sa.text(ISSUED_SQL["class"]),
                                     rng | {"cls": ctx.rules.exclusivity_class})).scalars())
    # life status (issue 17): the few people in this NIK range whose status stops or holds the cycle
    skip |= set((await s.execute(sa.text(
        f"select nik from life_statuses l where nik between :lo and :hi and {_life_stop_sql()}"),
        rng | {"start": ctx.start, "arrears": ctx.rules.pays_arrears})).scalars())
    frozen = None
    if ctx.preparation is not None:  # maker-checker: nobody outside the approved, frozen list
        frozen = set((await s.execute(sa.text(
            "select nik from cycle_preparation_people where preparation_id = :prep and nik between :lo and :hi"),
            rng | {"prep": ctx.preparation})).scalars())
    verified = None
    if ctx.rules.require_verified:
        verified = set((await s.execute(sa.text(
            "select nik from verifications where verified and nik between :lo and :hi"), rng)).scalars())
        verified -= set((await s.execute(sa.text(
            "select nik from verification_expiries where programme_identifier = :p and nik between :lo and :hi"),
            rng)).scalars())
    people = [c for c in cands if c[0] not in skip and (verified is None or c[0] in verified)
              and (frozen is None or c[0] in frozen)]
    return people, cands[-1][0]


@dataclass
class _Issue:
    """One chunk's writes, built in memory before anything is written."""

    instructions: list[tuple[Any, ...]] = field(default_factory=list)
    transfers: list[ledger.Transfer] = field(default_factory=list)
    messages: list[OutboxRow] = field(default_factory=list)
    items: list[str] = field(default_factory=list)  # contracts.disbursement.IssuedInstruction as JSON text
    amounts: list[int] = field(default_factory=list)  # each item's amount (an event's total)
    per_alloc: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))
    src_of: dict[uuid.UUID, str] = field(default_factory=dict)


def _funding_json(lines: tuple[tuple[str, uuid.UUID, int], ...]) -> str:
    """A tranche's funding lines as IssuedInstruction.funding's JSON text (rendered by pydantic, once)."""
    return json.dumps([FundingLine(source=src, allocation_id=aid, amount=amt).model_dump(mode="json")
                       for src, aid, amt in lines], separators=(",", ":"))


def _item_json(iid: str, pseud: str, amount: int, funding: str) -> str:
    """One IssuedInstruction as pydantic renders it (test_disbursement_render holds them equal):
    an id, a hex pseudonym, digits and pre-rendered funding need no escaping. A pydantic object per
    person (model_construct) was 1.3 s of a profiled 100,000-person cycle."""
    return f'{{"instruction_id":"{iid}","pseudonym":"{pseud}","amount":{amount},"funding":{funding},"retry_of":null}}'


def _build(cfg: DisbursementSettings, channel: str, ctx: CycleTerms, cid: uuid.UUID, people: list[Any],
           tranches: list[domain.Tranche], paid_in: str | None = None) -> _Issue:
    """Instructions, reservations, channel messages and audit items for the funded people;
    `paid_in`: arrears for the held cycle `ctx`, paid in cycle `paid_in` (ids of their own).

    Per person this is the cycle's only Python: ids and the pseudonym as text (asyncpg takes a
    uuid column as text), tuples for COPY, two f-strings; everything per tranche is done once."""
    w = _Issue()
    make_id: Callable[[str], str]
    if paid_in is None:
        make_id = domain.instruction_ids(ctx.program, ctx.period)
    else:
        make_id = lambda nik: str(domain.arrears_id(ctx.program, ctx.period, nik, paid_in))  # noqa: E731
    now = utcnow()
    now_s = now.isoformat()
    program, period, amount, chan, cls = ctx.program, ctx.period, ctx.amount, ctx.rules.channel, ctx.rules.exclusivity_class
    # config.pseudonym, from a keyed HMAC state copied per person: 1.8 us instead of 2.9 us with
    # hmac.digest, which sets the key up again each time (a million per cycle)
    mac = hmac.new(cfg.pseudonym_secret, digestmod="sha256")
    item, instructions, transfers, items = disburse.item, w.instructions, w.transfers, w.items
    it = iter(people)
    texts: list[tuple[str, str]] = []
    for t in tranches:
        funding = _funding_json(t.lines)
        legs = [("reserve", ledger.payable_account(aid), ledger.budget_account(aid), amt, aid)
                for _src, aid, amt in t.lines]
        for _src, aid, amt in t.lines:
            if amt <= 0:
                raise ValueError("a transfer moves a positive amount")  # ledger.transfer's rule
            w.per_alloc[aid] += amt * t.count
            w.src_of[aid] = _src
        for _ in range(t.count):
            nik, no_kk, village, payee = next(it)
            iid = make_id(nik)
            h = mac.copy()
            h.update(nik.encode())
            pseud = h.hexdigest()
            instructions.append((iid, program, period, nik, pseud, amount, chan, cls, cid, "issued", now))
            for kind, to, frm, amt, aid in legs:
                transfers.append((kind, to, frm, amt, aid, iid))
            texts.append((iid, item(iid, program, period, nik, no_kk, village, amount, payee, now_s)))
            items.append(_item_json(iid, pseud, amount, funding))
    w.amounts = [amount] * len(items)
    # prebuilt outbox rows (uow.add_rows), up to 500 disbursements each (G2P Connect disburse):
    # a million people are 2,000 channel messages, not a million
    w.messages = disburse.rows(channel, ctx.program, texts, cfg.pseudonym_secret)
    return w


async def _reserve(s: AsyncSession, per_alloc: dict[uuid.UUID, int]) -> None:
    a = store.allocations
    for aid, amt in sorted(per_alloc.items()):
        # conditional: the CHECK constraint and this WHERE both refuse a ceiling breach
        r = await s.execute(sa.update(a).where(a.c.id == aid, a.c.reserved + amt <= a.c.ceiling)
                            .values(reserved=a.c.reserved + amt, updated_at=sa.func.now()))
        if r.rowcount != 1:
            raise RuntimeError(f"allocation {aid} would exceed its ceiling")  # rolls the chunk back


def _announce(chain: ledger.Chain, ctx: CycleTerms, cid: uuid.UUID, w: _Issue) -> None:
    lines = [FundingLine(source=w.src_of[aid], allocation_id=aid, amount=amt) for aid, amt in w.per_alloc.items()]
    chain.emit(BudgetReserved, cycle_id=cid, programme_identifier=ctx.program, period=ctx.month, lines=lines,
               instructions=len(w.items), cycle_key=ctx.cycle_key)
    for i in range(0, len(w.items), ITEMS_PER_EVENT):  # stay well under NATS's 1 MB max payload
        part = w.items[i:i + ITEMS_PER_EVENT]
        chain.emit(PaymentInstructionsIssued, cycle_id=cid, programme_identifier=ctx.program, period=ctx.month,
                   cycle_key=ctx.cycle_key, channel=ctx.rules.channel,
                   total=sum(w.amounts[i:i + ITEMS_PER_EVENT]), raw={"items": "[" + ",".join(part) + "]"})


async def _chunk(deps: Disbursement, ctx: CycleTerms, cid: uuid.UUID, res: RunResult,
                 after: str) -> str | None:
    """One unit of work for the people after NIK `after`. Returns the next cursor, or None when
    done (everyone seen, or the budget ran out)."""
    async with deps.kit.unit_of_work() as uow:
        s = uow.session
        chain = await ledger.Chain.lock(uow, deps.cfg)
        budgets = await _budgets(s, ctx, lock=True)
        people, last = await _next_people(s, ctx, after, deps.cfg.chunk_size)
        if last is None or not people:
            return last
        tranches = domain.plan(ctx.amount, ctx.rules.funding_mode, budgets, len(people))
        funded = sum(t.count for t in tranches)
        if funded == 0:
            return None
        w = _build(deps.cfg, uow.names.subject(f"channel.{ctx.rules.channel}.instructions"), ctx, cid, people, tranches)
        await ledger.copy(s, store.instructions, ["id", "programme_identifier", "period", "nik", "pseudonym", "amount",
                                                  "channel", "exclusivity_class", "cycle_id", "status", "created_at"],
                          w.instructions)
        await ledger.post(s, w.transfers)
        await _reserve(s, w.per_alloc)
        uow.add_rows(w.messages)
        _announce(chain, ctx, cid, w)
        await chain.save()
    res.created += funded
    res.total += ctx.amount * funded
    res.chunks += 1
    for aid, amt in w.per_alloc.items():
        res.per_source[w.src_of[aid]] += amt
    # all funded: go on after the last NIK looked at; budget ran out: stop here
    return last if funded == len(people) else None


async def run(deps: Disbursement, program: str, period: str, by: str, *, wait: bool = True,
              preparation: uuid.UUID | None = None) -> dict[str, Any] | None:
    """Commit a cycle. Safe to call again, concurrently, or after a crash.

    One copy of the service runs a given cycle at a time (kit.exclusive, a lock that dies with
    its process): a second call, on any copy, waits for the first and then finds nothing left
    to issue; with `wait=False` (resumption) it returns None at once instead."""
    async with deps.kit.exclusive(f"cycle/{program}/{period}", wait=wait) as mine:
        if not mine:
            return None
        return await _run(deps, program, period, by, preparation)


async def _run(deps: Disbursement, program: str, period: str, by: str, preparation: uuid.UUID | None,
               ) -> dict[str, Any]:
    """The engine. The HTTP routes only reach it through an approved preparation (approval.py);
    resumption keeps to the cycle's approved list."""
    async with deps.kit.sessions() as s:
        ctx = await load_terms(s, program, period)
        ctx.preparation = preparation or (await s.execute(sa.text(
            "select id from cycle_preparations where programme_identifier = :p and period = :per "
            "and status = 'approved' order by decided_at desc limit 1"), {"p": program, "per": period})).scalar()
    cid = domain.cycle_id(program, period)
    async with deps.kit.unit_of_work() as uow:
        await uow.session.execute(insert(store.cycles).values(
            id=cid, programme_identifier=program, period=period, status="running", started_by=by)
            .on_conflict_do_nothing())
    res = RunResult()
    cursor: str | None = ""
    while cursor is not None:
        cursor = await _chunk(deps, ctx, cid, res, cursor)
    arrears = await _arrears(deps, ctx) if ctx.rules.pays_arrears else {"instructions": 0, "total": 0}
    totals, unfunded = await _complete(deps, ctx, cid, res)
    log.info("cycle.committed", program=program, period=period, created=res.created, chunks=res.chunks)
    return {"programme_identifier": program, "period": period, "dry_run": False, "cycle_id": str(cid),
            "created": res.created, "created_total": res.total, "created_per_source": dict(res.per_source),
            "instructions": totals["instructions"], "total": totals["total"], "unfunded": unfunded,
            "arrears": arrears}


# People paid in this cycle whose hold ended (alive after a stop) and the program's earlier cycles
# in their hold window that they have no live instruction for: those are the arrears. Only people
# with a hold window are looked at (a handful), never the whole enrolment.
# (In a preview, "paid in this cycle" is "eligible for it": {who} is the one clause that differs.)
_ARREARS_SQL = """
select c.period, l.nik, l.held_from, l.held_until, e.no_kk, e.village_code, e.payee
from life_statuses l
join enrolments e on e.nik = l.nik and e.programme_identifier = :p
join cycles c on c.programme_identifier = :p and c.period <> :per
where l.life_status = 'alive' and l.held_from is not null and l.held_until is not null
  and {who}
  and not exists (select 1 from instructions x where x.programme_identifier = :p and x.period = c.period
                  and x.nik = l.nik and x.status not in ('failed', 'cancelled'))
  and not exists (select 1 from instructions x where cast(:cls as text) is not null
                  and x.exclusivity_class = cast(:cls as text)
                  and x.period = c.period and x.nik = l.nik and x.status not in ('failed', 'cancelled'))
order by c.period, l.nik"""


async def _arrears_due(s: AsyncSession, ctx: CycleTerms, *, preview: bool) -> dict[str, list[Any]]:
    """held cycle -> [(NIK, KK, village, payee)] owed as arrears with this cycle."""
    if preview:
        sql, params = _eligible_sql(ctx, exclusivity=True)
        who = f"l.nik in (select nik from ({sql}) q)"
    else:
        params = {"p": ctx.program, "per": ctx.period}
        who = ("exists (select 1 from instructions i where i.nik = l.nik and i.programme_identifier = :p "
               "and i.period = :per and i.status not in ('failed', 'cancelled'))")
    rows = (await s.execute(sa.text(_ARREARS_SQL.format(who=who)),
                            params | {"cls": ctx.rules.exclusivity_class})).all()
    held: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        st = domain.period_start(r.period)
        if r.held_from <= st < r.held_until and st < ctx.start:
            held[r.period].append((r.nik, r.no_kk, r.village_code, r.payee))
    return held


async def _arrears(deps: Disbursement, ctx: CycleTerms) -> dict[str, int]:
    """A program with `pays_arrears`: the cycles held from people whom a verifier found alive are
    paid in this cycle, each as an instruction of the held cycle (its amount, its fiscal year's
    allocations, id domain.arrears_id), to the people this cycle pays. One unit of work."""
    out = {"instructions": 0, "total": 0}
    async with deps.kit.unit_of_work() as uow:
        s = uow.session
        chain = await ledger.Chain.lock(uow, deps.cfg)
        held = await _arrears_due(s, ctx, preview=False)
        for period, people in sorted(held.items()):
            try:
                then = await load_terms(s, ctx.program, period)
            except CycleError as e:  # e.g. no poverty line for that year any more: this cycle still completes
                log.warning("cycle.arrears_skipped", program=ctx.program, period=period, reason=str(e)[:300])
                continue
            tranches = domain.plan(then.amount, then.rules.funding_mode, await _budgets(s, then, lock=True),
                                   len(people))
            funded = sum(t.count for t in tranches)
            if funded < len(people):
                log.warning("cycle.arrears_unfunded", program=ctx.program, period=period, unfunded=len(people) - funded)
            if not funded:
                continue
            cid = domain.cycle_id(ctx.program, period)
            w = _build(deps.cfg, uow.names.subject(f"channel.{ctx.rules.channel}.instructions"), then, cid,
                       people[:funded], tranches, paid_in=ctx.period)
            await ledger.copy(s, store.instructions, ["id", "programme_identifier", "period", "nik", "pseudonym",
                                                      "amount", "channel", "exclusivity_class", "cycle_id", "status",
                                                      "created_at"], w.instructions)
            await ledger.post(s, w.transfers)
            await _reserve(s, w.per_alloc)
            uow.add_rows(w.messages)
            _announce(chain, then, cid, w)
            out["instructions"] += funded
            out["total"] += funded * then.amount
        await chain.save()
    if out["instructions"]:
        log.info("cycle.arrears", program=ctx.program, period=ctx.period, **out)
    return out


async def _complete(deps: Disbursement, ctx: CycleTerms, cid: uuid.UUID, res: RunResult) -> tuple[dict[str, int], int]:
    """Mark the cycle completed and announce its totals (again only if this run issued any)."""
    async with deps.kit.unit_of_work() as uow:
        s = uow.session
        chain = await ledger.Chain.lock(uow, deps.cfg)
        cyc = (await s.execute(sa.select(store.cycles).where(store.cycles.c.id == cid).with_for_update())).one()
        totals = await _issued_totals(s, ctx)
        if not res.created and cyc.status == "completed":
            return totals, 0
        # fresh statistics: right after a bulk load the planner would probe row by row
        await s.execute(sa.text("analyze enrolments, instructions, verifications"))
        sql, params = _eligible_sql(ctx, exclusivity=False)
        pending = (await s.execute(sa.text(f"select count(*) from ({sql}) q"), params)).scalar_one()
        sql, params = _eligible_sql(ctx, exclusivity=True)
        unfunded = (await s.execute(sa.text(f"select count(*) from ({sql}) q"), params)).scalar_one()
        chain.emit(CycleCompleted, cycle_id=cid, programme_identifier=ctx.program, period=ctx.month,
                   cycle_key=ctx.cycle_key,
                   instructions=totals["instructions"], total=totals["total"], unfunded=unfunded,
                   excluded_exclusivity=pending - unfunded)
        await s.execute(sa.update(store.cycles).where(store.cycles.c.id == cid)
                        .values(status="completed", completed_at=sa.func.now()))
        await chain.save()
    return totals, unfunded


async def resume(deps: Disbursement) -> None:
    """Cycles a crash left running are finished (idempotently): those no copy is running now."""
    c = store.cycles
    async with deps.kit.sessions() as s:
        todo = (await s.execute(sa.select(c.c.programme_identifier, c.c.period).where(c.c.status == "running"))).all()
    for program, period in todo:
        try:
            if await run(deps, program, period, "resume", wait=False) is not None:
                log.info("cycle.resumed", program=program, period=period)
        except Exception as exc:  # one cycle that cannot finish (e.g. its program was removed) must not stop the rest
            log.warning("disbursement.resume_failed", program=program, period=period, error=str(exc)[:300])
