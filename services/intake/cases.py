"""The Puskesos case flow: register (with one registry lookup), handle, answer, refer up the
SLRT chain, resolve, escalate overdue cases. Each step is a row in `case_steps` and an event
in the outbox, in one transaction. Used by the JSON API, the web pages and the CLI."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from contracts.envelope import utcnow
from contracts.intake import (CaseCategory, CaseEscalated, CaseKind, CaseLevel, CaseReferred, CaseRegistered,
                              CaseResolved, CaseStatus, CaseStatusChanged, Channel, PersonStatus,
                              ProposalSubmitted)
from contracts.lookup import LookupReply, LookupRequest
from contracts.registry import ProposalDecided, ProposalDecision
from contracts.values import NIK, NoKK, ProgramCode, VillageCode, nik_problems, parse_nik, village_problems
from services.intake import domain, store
from services.intake.config import IntakeSettings
from services.intake.domain import RuleError
from services.kit import audit
from services.kit import logging as klog
from services.kit.auth import Principal, Role
from services.kit.outbox import add, event_row
from services.kit.runtime import ServiceRuntime

log = klog.get(__name__)
SERVICE = "intake"


class Reporter(BaseModel):
    """Who the case is about. NIK if known; otherwise the name (searched within the village)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    nik: NIK | None = None
    name: str | None = Field(default=None, max_length=200)
    no_kk: NoKK | None = Field(default=None, description="needed to propose a person missing from the registry")
    address: str = Field(default="", max_length=500)
    contact: str = Field(default="", max_length=100, description="phone number or how to reach them")

    @model_validator(mode="after")
    def _who(self) -> "Reporter":
        if not self.nik and not self.name:
            raise ValueError("give the reporter's NIK, or their name when the NIK is not known")
        return self


class CaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reporter: Reporter
    village_code: VillageCode
    kind: CaseKind = CaseKind.complaint
    category: CaseCategory
    channel: Channel
    text: str = Field(min_length=3, max_length=5000, description="the complaint or request in the citizen's words")
    programme_identifier: ProgramCode | None = Field(default=None, description="program concerned, if any")


class RegistryUnavailable(Exception):
    pass


async def lookup(rt: ServiceRuntime, req: LookupRequest, timeout: float) -> LookupReply:
    """One round trip to the registry's `registry.lookup` responder."""
    try:
        msg = await rt.nc.request(rt.names.lookup(), req.model_dump_json(exclude_none=True).encode(),
                                  timeout=timeout)
    except (NoRespondersError, NatsTimeout) as exc:
        raise RegistryUnavailable(f"the registry did not answer the lookup ({type(exc).__name__})") from exc
    reply = LookupReply.model_validate_json(msg.data)
    if reply.error:
        raise RegistryUnavailable(f"the registry could not answer: {reply.error}")
    return reply


async def check_person(rt: ServiceRuntime, cfg: IntakeSettings, p: Principal, *, nik: str | None,
                       name: str | None, village_code: str | None) -> dict:
    """A look-up at the counter, before (or without) registering a case. Only people of the
    caller's regency are shown: the front office serves its own residents."""
    nik, name, village_code = (nik or "").strip() or None, (name or "").strip() or None, (village_code or "").strip() or None
    problems = [x.message for x in nik_problems(nik)] if nik else []
    if not nik:
        if not (name and village_code):
            problems.append("give nik, or name with village_code")
        elif village_code:
            problems += [x.message for x in village_problems(village_code)]
    if problems:
        raise RuleError("; ".join(problems), 422)
    req = LookupRequest(nik=nik) if nik else LookupRequest(name=name, village_code=village_code)
    reply = await lookup(rt, req, cfg.lookup_timeout_seconds)
    people = [x.model_dump() for x in reply.people if x.village_code.startswith(p.area[:4])]
    return {"found": bool(people), "people": people}


async def _next_ticket(s, village_code: str, year: int) -> str:
    seq = (await s.execute(
        pg_insert(store.ticket_counters).values(village_code=village_code, year=year, last=1)
        .on_conflict_do_update(index_elements=["village_code", "year"],
                               set_={"last": store.ticket_counters.c.last + 1})
        .returning(store.ticket_counters.c.last))).scalar_one()
    return domain.ticket(village_code, year, seq)


def _step(case_id, at, actor, action, level, status, note="", from_level=None, event_id=None) -> dict:
    return {"case_id": case_id, "at": at, "actor": actor, "action": action, "from_level": from_level,
            "level": level, "status": status, "note": note, "event_id": event_id}


def _registered(r: Any, replayed: bool = False) -> dict:
    return {"case_id": str(r.id), "ticket": r.ticket, "level": r.level, "status": r.status,
            "person_status": r.person_status, "proposal_id": str(r.proposal_id) if r.proposal_id else None,
            "programs": r.programs, "matches": r.matches, "due_at": r.due_at.isoformat(), "replayed": replayed}


async def _by_request_key(rt: ServiceRuntime, key: str) -> dict | None:
    async with rt.sessions() as s:
        r = (await s.execute(sa.select(store.cases).where(store.cases.c.request_key == key))).first()
    return _registered(r, replayed=True) if r else None


async def register(rt: ServiceRuntime, cfg: IntakeSettings, p: Principal, data: CaseIn,
                   now: dt.datetime | None = None, request_key: str | None = None) -> dict:
    """Front office: record the case, check the registry once, propose the person if missing.

    With a `request_key` (the API's Idempotency-Key, the form's hidden key) a repeated
    submission returns the case the first one created (`replayed: true`) instead of a second.
    """
    if p.role is not Role.village_office:
        raise RuleError("only the village front office (village_office) registers cases", 403)
    if not p.covers(data.village_code):
        raise RuleError(f"village {data.village_code} is outside your area {p.area or '-'}", 403)
    key = f"{p.user}:{request_key}" if request_key else None
    if key and (done := await _by_request_key(rt, key)):
        return done
    now = now or utcnow()
    rep = data.reporter
    req = (LookupRequest(nik=rep.nik) if rep.nik else LookupRequest(name=rep.name, village_code=data.village_code))
    reply = await lookup(rt, req, cfg.lookup_timeout_seconds)

    programs: list[dict] = []
    matches: list[dict] = []
    proposal: ProposalSubmitted | None = None
    case_id = uuid.uuid4()
    if rep.nik and reply.found:
        person = reply.people[0]
        programs = [e.model_dump() for e in person.enrolments]
        person_status = PersonStatus.found
    elif rep.nik:
        parts, _ = parse_nik(rep.nik)
        if rep.no_kk and rep.name and parts:
            person_status = PersonStatus.proposed
            proposal = ProposalSubmitted(
                proposal_id=uuid.uuid4(), nik=rep.nik, no_kk=rep.no_kk, name=rep.name, sex=parts.sex,
                birth_date=parts.birth_date, village_code=data.village_code, address=rep.address,
                programme_identifier=data.programme_identifier, submitted_by=p.user, case_id=case_id)
        else:
            person_status = PersonStatus.not_found
    elif reply.found:
        matches = [m.model_dump() for m in reply.people]
        person_status = PersonStatus.possible_match
    else:
        person_status = PersonStatus.not_found

    due = domain.add_working_days(now, cfg.days(CaseLevel.village), cfg.holiday_set)
    try:
        ticket = await _insert_case(rt, p, data, case_id, person_status, proposal, programs, matches, due, now, key)
    except IntegrityError:
        # the same request_key raced us and won: its case is the answer
        if key and (done := await _by_request_key(rt, key)):
            return done
        raise
    rt.kick()
    log.info("intake.case_registered", case_id=str(case_id), person_status=person_status.value)
    return {"case_id": str(case_id), "ticket": ticket, "level": CaseLevel.village.value,
            "status": CaseStatus.open.value, "person_status": person_status.value,
            "proposal_id": str(proposal.proposal_id) if proposal else None,
            "programs": programs, "matches": matches, "due_at": due.isoformat(), "replayed": False}


async def _insert_case(rt, p, data: CaseIn, case_id, person_status, proposal, programs, matches, due, now,
                       key) -> str:
    rep = data.reporter
    # the serial comes from its own short transaction: holding the village's counter row
    # until the case commits would queue every registration of a village behind one another.
    # A case that then fails to commit leaves a gap in the serials, never a duplicate.
    async with rt.sessions.begin() as s:
        ticket = await _next_ticket(s, data.village_code, domain.today_wib(now).year)
    async with rt.sessions.begin() as s:
        ev = CaseRegistered(case_id=case_id, ticket=ticket, kind=data.kind, category=data.category,
                            channel=data.channel, village_code=data.village_code, level=CaseLevel.village,
                            status=CaseStatus.open, person_status=person_status,
                            proposal_id=proposal.proposal_id if proposal else None, due_at=due, actor=p.user)
        rows = [event_row(rt.names, ev, SERVICE, correlation_id=case_id)]
        if proposal:
            rows.append(event_row(rt.names, proposal, SERVICE, correlation_id=case_id))
        profile = {"no_kk": rep.no_kk, "address": rep.address}
        await s.execute(sa.insert(store.cases).values(
            id=case_id, ticket=ticket, kind=data.kind, category=data.category, channel=data.channel,
            village_code=data.village_code, level=CaseLevel.village, status=CaseStatus.open,
            person_status=person_status, nik=rep.nik, reporter_name=rep.name or "", contact=rep.contact,
            profile=profile, text=data.text, programs=programs, matches=matches,
            proposal_id=proposal.proposal_id if proposal else None, programme_identifier=data.programme_identifier,
            due_at=due, registered_by=p.user, created_at=now, updated_at=now, request_key=key))
        await s.execute(sa.insert(store.case_steps).values(_step(
            case_id, now, p.user, "register", CaseLevel.village, CaseStatus.open,
            note=f"registry: {person_status.value}", event_id=rows[0]["id"])))
        await audit.record(s, store.audit_log, p, "case.register", target=str(case_id), area=data.village_code,
                           detail={"category": data.category.value, "person_status": person_status.value})
        await add(s, rt.outbox, rows)
    return ticket


def _ref_clause(ref: str):
    try:
        return store.cases.c.id == uuid.UUID(ref)
    except ValueError:
        return store.cases.c.ticket == ref.strip().upper()


def scope_clause(p: Principal):
    """What a principal may see: their area (village prefix); a program manager only the cases
    referred to their programs' agencies."""
    c = store.cases.c
    clause = c.village_code.like(f"{p.area}%") if p.area else sa.true()
    if p.role is Role.program_manager:
        clause = sa.and_(clause, c.level == CaseLevel.agency, c.programme_identifier.in_(list(p.programs)))
    elif p.role not in domain.CASE_READERS:
        clause = sa.false()
    return clause


def _case_dict(r: Any, full: bool) -> dict:
    d = {"case_id": str(r.id), "ticket": r.ticket, "kind": r.kind, "category": r.category, "channel": r.channel,
         "village_code": r.village_code, "level": r.level, "status": r.status, "person_status": r.person_status,
         "programme_identifier": r.programme_identifier, "due_at": r.due_at.isoformat(),
         "created_at": r.created_at.isoformat(), "updated_at": r.updated_at.isoformat(),
         "resolved_at": r.resolved_at.isoformat() if r.resolved_at else None, "outcome": r.outcome}
    if full:
        d.update({"reporter": {"nik": r.nik, "name": r.reporter_name, "contact": r.contact, **(r.profile or {})},
                  "text": r.text, "answer": r.answer, "programs": r.programs, "matches": r.matches,
                  "proposal_id": str(r.proposal_id) if r.proposal_id else None, "registered_by": r.registered_by})
    return d


async def get_case(rt: ServiceRuntime, p: Principal, ref: str) -> dict | None:
    """The full case, or None if it does not exist or lies outside the caller's scope."""
    async with rt.sessions.begin() as s:
        r = (await s.execute(sa.select(store.cases).where(_ref_clause(ref), scope_clause(p)))).first()
        if r is not None:  # the complaint text is confidential: every reading is on the trail
            await audit.record(s, store.audit_log, p, "case.read", target=str(r.id), area=r.village_code)
    return _case_dict(r, True) if r else None


async def history(rt: ServiceRuntime, p: Principal, ref: str) -> list[dict] | None:
    async with rt.sessions.begin() as s:
        found = (await s.execute(sa.select(store.cases.c.id, store.cases.c.village_code)
                                 .where(_ref_clause(ref), scope_clause(p)))).first()
        if found is None:
            return None
        case_id = found.id
        await audit.record(s, store.audit_log, p, "case.history", target=str(case_id), area=found.village_code)
        st = store.case_steps.c
        rows = (await s.execute(sa.select(store.case_steps).where(st.case_id == case_id).order_by(st.id))).all()
    return [{"at": r.at.isoformat(), "actor": r.actor, "action": r.action, "from_level": r.from_level,
             "level": r.level, "status": r.status, "note": r.note,
             "event_id": str(r.event_id) if r.event_id else None} for r in rows]


async def list_cases(rt: ServiceRuntime, p: Principal, *, status: str | None = None, level: str | None = None,
                     queue: bool = False, overdue_at: dt.datetime | None = None, limit: int = 50,
                     offset: int = 0) -> dict:
    """A page of cases in the caller's scope, oldest deadline first, with the total."""
    c = store.cases.c
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
    async with rt.sessions() as s:
        total = (await s.execute(sa.select(sa.func.count()).select_from(store.cases).where(*where))).scalar_one()
        rows = (await s.execute(sa.select(store.cases).where(*where).order_by(c.due_at, c.id)
                                .limit(limit).offset(offset))).all()
    return {"total": total, "limit": limit, "offset": offset, "items": [_case_dict(r, False) for r in rows]}


async def _locked(s, ref: str):
    r = (await s.execute(sa.select(store.cases).where(_ref_clause(ref)).with_for_update())).first()
    if r is None:
        raise RuleError(f"no case {ref}", 404)
    return r


async def act(rt: ServiceRuntime, cfg: IntakeSettings, p: Principal, ref: str, action: str, *, note: str = "",
              answer: str | None = None, outcome: str | None = None, programme: str | None = None,
              now: dt.datetime | None = None) -> dict:
    """Back office step on one case: handle, answer, refer or resolve."""
    now = now or utcnow()
    async with rt.sessions.begin() as s:
        r = await _locked(s, ref)
        if not domain.can_read(p, r.village_code) and p.role is not Role.program_manager:
            raise RuleError(f"no case {ref}", 404)  # outside the caller's area: do not reveal it exists
        level, status = CaseLevel(r.level), CaseStatus(r.status)
        domain.check_can_act(p, level, r.village_code, r.programme_identifier)
        domain.check_open(status)
        common = {"case_id": r.id, "category": r.category, "village_code": r.village_code}
        values: dict[str, Any] = {"updated_at": now}
        from_level = None
        if action in ("handle", "answer"):
            new_status = CaseStatus.in_progress if action == "handle" else CaseStatus.answered
            if action == "answer":
                if not answer:
                    raise RuleError("answer needs the text given to the citizen", 422)
                values["answer"] = answer
                note = note or answer
            ev = CaseStatusChanged(**common, level=level, status=new_status, previous_status=status, action=action,
                                   actor=p.user)
            new_level = level
        elif action == "refer":
            new_level = domain.refer_target(level, programme or r.programme_identifier)
            new_status, from_level = CaseStatus.open, level
            due = domain.add_working_days(now, cfg.days(new_level), cfg.holiday_set)
            values.update(level=new_level, due_at=due, programme_identifier=programme or r.programme_identifier)
            ev = CaseReferred(**common, from_level=level, level=new_level, status=new_status,
                              programme_identifier=values["programme_identifier"], due_at=due, actor=p.user)
        elif action == "resolve":
            new_status, new_level = CaseStatus.resolved, level
            values.update(outcome=outcome or "resolved", resolved_at=now)
            ev = CaseResolved(**common, level=level, outcome=values["outcome"], actor=p.user)
        else:
            raise RuleError(f"unknown action {action!r}", 422)
        values["status"] = new_status
        row = event_row(rt.names, ev, SERVICE, correlation_id=r.id)
        await s.execute(sa.update(store.cases).where(store.cases.c.id == r.id).values(**values))
        await s.execute(sa.insert(store.case_steps).values(_step(
            r.id, now, p.user, action, new_level, new_status, note=note, from_level=from_level,
            event_id=row["id"])))
        await audit.record(s, store.audit_log, p, f"case.{action}", target=str(r.id), area=r.village_code,
                           detail={"level": new_level.value, "status": new_status.value})
        await add(s, rt.outbox, [row])
        case_id = r.id
    rt.kick()
    return {"case_id": str(case_id), "level": new_level.value, "status": new_status.value}


async def escalate_overdue(rt: ServiceRuntime, cfg: IntakeSettings, now: dt.datetime | None = None,
                           limit: int = 500) -> list[dict]:
    """Move every overdue open case one level up (village -> kecamatan -> kabupaten).

    Automatic escalation stops at the kabupaten: handing a case to a program's agency needs a
    person who names the program. Several processes may run this at once (SKIP LOCKED).
    """
    now = now or utcnow()
    c = store.cases.c
    done: list[dict] = []
    async with rt.sessions.begin() as s:
        rows = (await s.execute(
            sa.select(store.cases).where(c.status != CaseStatus.resolved, c.due_at < now,
                                         c.level.in_([CaseLevel.village, CaseLevel.kecamatan]))
            .order_by(c.due_at).limit(limit).with_for_update(skip_locked=True))).all()
        out, updates, steps, trail = [], [], [], []
        for r in rows:
            level = CaseLevel(r.level)
            nxt = level.next()
            due = domain.add_working_days(now, cfg.days(nxt), cfg.holiday_set)
            ev = CaseEscalated(case_id=r.id, category=r.category, village_code=r.village_code, from_level=level,
                               level=nxt, status=CaseStatus.open, overdue_since=r.due_at, due_at=due)
            row = event_row(rt.names, ev, SERVICE, correlation_id=r.id)
            out.append(row)
            updates.append({"b_id": r.id, "b_level": nxt.value, "b_due": due})
            steps.append(_step(r.id, now, "system", "escalate", nxt, CaseStatus.open, from_level=level,
                               note=f"overdue since {r.due_at.isoformat()}", event_id=row["id"]))
            trail.append(audit.row(None, "case.escalate", target=str(r.id), area=r.village_code,
                                   detail={"from_level": level.value, "level": nxt.value}, system="escalation"))
            done.append({"case_id": str(r.id), "ticket": r.ticket, "from_level": level.value, "level": nxt.value})
        if rows:  # one round trip per table, not three per case
            await s.execute(sa.update(store.cases).where(c.id == sa.bindparam("b_id")).values(
                level=sa.bindparam("b_level"), due_at=sa.bindparam("b_due"), status=CaseStatus.open.value,
                updated_at=now), updates, execution_options={"synchronize_session": False})
            await s.execute(sa.insert(store.case_steps), steps)
            await s.execute(sa.insert(store.audit_log), trail)
        await add(s, rt.outbox, out)
    if done:
        rt.kick()
        log.info("intake.escalated", cases=len(done))
    return done


async def apply_decisions(rt: ServiceRuntime, s, decided: list[ProposalDecided], now: dt.datetime) -> list[dict]:
    """Follow the registry's decision on proposals intake submitted (inside the caller's transaction)."""
    out = []
    c = store.cases.c
    for d in decided:
        r = (await s.execute(sa.select(store.cases).where(c.proposal_id == d.proposal_id).with_for_update())).first()
        if r is None:
            continue  # a proposal from another source (e.g. the registry's own staff)
        ps = PersonStatus.accepted if d.decision is ProposalDecision.accepted else PersonStatus.rejected
        action = f"proposal_{d.decision.value}"
        ev = CaseStatusChanged(case_id=r.id, category=r.category, village_code=r.village_code, level=r.level,
                               status=r.status, previous_status=r.status, action=action, person_status=ps,
                               actor=d.decided_by)
        row = event_row(rt.names, ev, SERVICE, correlation_id=r.id)
        await s.execute(sa.update(store.cases).where(c.id == r.id).values(person_status=ps, updated_at=now))
        await s.execute(sa.insert(store.case_steps).values(_step(
            r.id, now, d.decided_by, action, r.level, r.status, note=d.reason, event_id=row["id"])))
        out.append(row)
    return out
