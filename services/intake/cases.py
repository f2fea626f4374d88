"""The Puskesos case flow: register (with one registry lookup), handle, answer, refer up the
SLRT chain, resolve, escalate overdue cases, follow the registry's proposal decisions. Each
step is a row in `case_steps`, an audit row and an event, in one unit of work. Used by the
JSON API, the web pages, the registry follower and the CLI."""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import nats.errors
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from contracts.envelope import Envelope, Event, utcnow
from contracts.intake import (CaseCategory, CaseEscalated, CaseKind, CaseLevel, CaseReferred, CaseRegistered,
                              CaseResolved, CaseStatus, CaseStatusChanged, Channel, PersonStatus)
from contracts.lookup import LookupReply, LookupRequest
from contracts.registry import ProposalDecided, ProposalDecision
from contracts.values import NIK, NoKK, ProgramCode, VillageCode, nik_problems, village_problems
from services.intake import domain, store
from services.intake.config import IntakeSettings
from services.intake.domain import RuleError
from services.kit import audit
from services.kit import logging as klog
from services.kit.http import NoNul
from services.kit.principal import Principal, Role
from services.kit.uow import UnitOfWork

if TYPE_CHECKING:
    from services.intake.app import Intake
    from services.kit.runtime import Kit

log = klog.get(__name__)


class Reporter(BaseModel):
    """Who the case is about. NIK if known; otherwise the name (searched within the village)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    nik: NIK | None = None
    name: Annotated[str | None, NoNul] = Field(default=None, max_length=200)
    no_kk: NoKK | None = Field(default=None, description="needed to propose a person missing from the registry")
    address: Annotated[str, NoNul] = Field(default="", max_length=500)
    contact: Annotated[str, NoNul] = Field(default="", max_length=100, description="phone number or how to reach them")

    @model_validator(mode="after")
    def _who(self) -> Reporter:
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
    text: Annotated[str, NoNul] = Field(min_length=3, max_length=5000, description="the complaint or request in the citizen's words")
    programme_identifier: ProgramCode | None = Field(default=None, description="program concerned, if any")


class RegistryUnavailable(Exception):
    pass


# --- the registry lookup ----------------------------------------------------------------

async def lookup(deps: Intake, req: LookupRequest) -> LookupReply:
    """One round trip to the registry's `registry.lookup` responder, bounded by
    `lookup_timeout_seconds`; any failure is RegistryUnavailable (the caller answers 503)."""
    try:
        msg = await deps.kit.bus.nc.request(deps.kit.names.lookup(),
                                            req.model_dump_json(exclude_none=True).encode(),
                                            timeout=deps.cfg.lookup_timeout_seconds,
                                            headers=deps.kit.tracing.headers())  # trace context (kit.tracing)
    except (nats.errors.Error, TimeoutError, RuntimeError) as exc:  # RuntimeError: not connected yet
        raise RegistryUnavailable(f"the registry did not answer the lookup ({type(exc).__name__})") from exc
    try:
        reply = LookupReply.model_validate_json(msg.data)
    except ValidationError:
        raise RegistryUnavailable("the registry's answer could not be read") from None
    if reply.error:
        raise RegistryUnavailable(f"the registry could not answer: {reply.error}")
    return reply


def in_area(reply: LookupReply, p: Principal) -> LookupReply:
    """The registry's answer as the caller may see it: people outside their area are left out,
    so a match elsewhere reads exactly as no match (issue 17: a village office saw NIK, KK,
    name and programs of other villages). A NIK registered elsewhere is then proposed, and the
    verifier, who sees the whole regency, finds the existing record (docs/INTAKE.md)."""
    people = [x for x in reply.people if p.covers(x.village_code)]
    return LookupReply(found=bool(people), people=people)


async def check_person(deps: Intake, p: Principal, *, nik: str | None, name: str | None,
                       village_code: str | None) -> dict[str, Any]:
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
    if name and not nik and not any(ch.isalpha() for ch in name):
        # the registry would refuse it (and intake answered 503 for `name=%`, issue 15)
        raise RuleError("name has no letters to search for", 422)
    reply = in_area(await lookup(deps, req), p)
    return {"found": reply.found, "people": [x.model_dump() for x in reply.people]}


# --- registration -----------------------------------------------------------------------

def _step(case_id: uuid.UUID, at: dt.datetime, actor: str, action: str, level: CaseLevel | str,
          status: CaseStatus | str, note: str = "", from_level: CaseLevel | str | None = None,
          event_id: uuid.UUID | None = None) -> dict[str, Any]:
    return {"case_id": case_id, "at": at, "actor": actor, "action": action, "from_level": from_level,
            "level": level, "status": status, "note": note, "event_id": event_id}


def _registered(r: Row[Any], replayed: bool = False) -> dict[str, Any]:
    return {"case_id": str(r.id), "ticket": r.ticket, "level": r.level, "status": r.status,
            "person_status": r.person_status, "proposal_id": str(r.proposal_id) if r.proposal_id else None,
            "programs": r.programs, "matches": r.matches, "due_at": r.due_at.isoformat(), "replayed": replayed}


async def _by_request_key(deps: Intake, key: str) -> dict[str, Any] | None:
    async with deps.kit.sessions() as s:
        r = await store.case_by_request_key(s, key)
    return _registered(r, replayed=True) if r else None


def _check_registrar(p: Principal, data: CaseIn) -> None:
    if p.role is not Role.village_office:
        raise RuleError("only the village front office (village_office) registers cases", 403)
    if not p.covers(data.village_code):
        raise RuleError(f"village {data.village_code} is outside your area {p.area or '-'}", 403)


async def register(deps: Intake, p: Principal, data: CaseIn, now: dt.datetime | None = None,
                   request_key: str | None = None) -> dict[str, Any]:
    """Front office: record the case, check the registry once, propose the person if missing.

    With a `request_key` (the API's Idempotency-Key, the form's hidden key) a repeated
    submission returns the case the first one created (`replayed: true`) instead of a second.
    """
    _check_registrar(p, data)
    key = f"{p.user}:{request_key}" if request_key else None
    if key and (done := await _by_request_key(deps, key)):
        return done
    now = now or utcnow()
    rep = data.reporter
    reply = in_area(await lookup(deps, LookupRequest(nik=rep.nik) if rep.nik
                                 else LookupRequest(name=rep.name, village_code=data.village_code)), p)
    case_id = uuid.uuid4()
    found = domain.finding(domain.Reported(nik=rep.nik, name=rep.name, no_kk=rep.no_kk, address=rep.address,
                                           village_code=data.village_code, programme=data.programme_identifier),
                           reply, case_id=case_id, proposal_id=uuid.uuid4(), submitted_by=p.user)
    due = domain.add_working_days(now, deps.cfg.days(CaseLevel.village), deps.cfg.holiday_set)
    try:
        ticket = await _insert_case(deps, p, data, case_id, found, due, now, key)
    except IntegrityError:
        # the same request_key raced us and won: its case is the answer
        if key and (done := await _by_request_key(deps, key)):
            return done
        raise
    log.info("intake.case_registered", case_id=str(case_id), person_status=found.person_status.value)
    return {"case_id": str(case_id), "ticket": ticket, "level": CaseLevel.village.value,
            "status": CaseStatus.open.value, "person_status": found.person_status.value,
            "proposal_id": str(found.proposal.proposal_id) if found.proposal else None,
            "programs": found.programs, "matches": found.matches, "due_at": due.isoformat(), "replayed": False}


async def _insert_case(deps: Intake, p: Principal, data: CaseIn, case_id: uuid.UUID, found: domain.Finding,
                       due: dt.datetime, now: dt.datetime, key: str | None) -> str:
    # the serial comes from its own short transaction: holding the village's counter row
    # until the case commits would queue every registration of a village behind one another.
    # A case that then fails to commit leaves a gap in the serials, never a duplicate.
    async with deps.kit.unit_of_work() as uow:
        serial = await store.next_ticket_serial(uow.session, data.village_code, domain.today_wib(now).year)
    ticket = domain.ticket(data.village_code, domain.today_wib(now).year, serial)
    rep, proposal = data.reporter, found.proposal
    async with deps.kit.unit_of_work() as uow:
        s = uow.session
        event_id = uow.emit(CaseRegistered(
            case_id=case_id, ticket=ticket, kind=data.kind, category=data.category, channel=data.channel,
            village_code=data.village_code, level=CaseLevel.village, status=CaseStatus.open,
            person_status=found.person_status, proposal_id=proposal.proposal_id if proposal else None,
            due_at=due, actor=p.user), correlation_id=case_id)
        if proposal:
            uow.emit(proposal, correlation_id=case_id)
        await store.insert_case(s, dict(
            id=case_id, ticket=ticket, kind=data.kind, category=data.category, channel=data.channel,
            village_code=data.village_code, level=CaseLevel.village, status=CaseStatus.open,
            person_status=found.person_status, nik=rep.nik, reporter_name=rep.name or "", contact=rep.contact,
            profile={"no_kk": rep.no_kk, "address": rep.address}, text=data.text, programs=found.programs,
            matches=found.matches, proposal_id=proposal.proposal_id if proposal else None,
            programme_identifier=data.programme_identifier, due_at=due, registered_by=p.user, created_at=now,
            updated_at=now, request_key=key))
        await store.add_steps(s, [_step(case_id, now, p.user, "register", CaseLevel.village, CaseStatus.open,
                                        note=f"registry: {found.person_status.value}", event_id=event_id)])
        await audit.record(s, store.audit_log, p, "case.register", target=str(case_id), area=data.village_code,
                           detail={"category": data.category.value, "person_status": found.person_status.value})
    return ticket


# --- reading ----------------------------------------------------------------------------

def _case_dict(r: Row[Any], full: bool) -> dict[str, Any]:
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


async def get_case(deps: Intake, p: Principal, ref: str) -> dict[str, Any] | None:
    """The full case, or None if it does not exist or lies outside the caller's scope."""
    async with deps.kit.unit_of_work() as uow:
        r = await store.find_case(uow.session, ref, p)
        if r is not None:  # the complaint text is confidential: every reading is on the trail
            await audit.record(uow.session, store.audit_log, p, "case.read", target=str(r.id), area=r.village_code)
    return _case_dict(r, True) if r else None


async def history(deps: Intake, p: Principal, ref: str) -> list[dict[str, Any]] | None:
    async with deps.kit.unit_of_work() as uow:
        found = await store.find_case(uow.session, ref, p)
        if found is None:
            return None
        await audit.record(uow.session, store.audit_log, p, "case.history", target=str(found.id),
                           area=found.village_code)
        rows = await store.steps_of(uow.session, found.id)
    return [{"at": r.at.isoformat(), "actor": r.actor, "action": r.action, "from_level": r.from_level,
             "level": r.level, "status": r.status, "note": r.note,
             "event_id": str(r.event_id) if r.event_id else None} for r in rows]


async def list_cases(deps: Intake, p: Principal, *, status: str | None = None, level: str | None = None,
                     queue: bool = False, overdue_at: dt.datetime | None = None, limit: int = 50,
                     offset: int = 0) -> dict[str, Any]:
    """A page of cases in the caller's scope, oldest deadline first, with the total."""
    where = store.case_filters(p, status=status, level=level, queue=queue, overdue_at=overdue_at)
    async with deps.kit.sessions() as s:
        total, rows = await store.case_page(s, where, limit, offset)
    return {"total": total, "limit": limit, "offset": offset, "items": [_case_dict(r, False) for r in rows]}


# --- back office ------------------------------------------------------------------------

def _step_event(step: domain.Step, r: Row[Any], actor: str) -> Event:
    common: dict[str, Any] = {"case_id": r.id, "category": r.category, "village_code": r.village_code}
    if step.action == "refer":
        assert step.from_level is not None
        return CaseReferred(**common, from_level=step.from_level, level=step.level, status=step.status,
                            programme_identifier=step.changes["programme_identifier"],
                            due_at=step.changes["due_at"], actor=actor)
    if step.action == "resolve":
        return CaseResolved(**common, level=step.level, outcome=step.changes["outcome"], actor=actor)
    return CaseStatusChanged(**common, level=step.level, status=step.status, previous_status=r.status,
                             action=step.action, actor=actor)


async def act(deps: Intake, p: Principal, ref: str, action: str, *, note: str = "", answer: str | None = None,
              outcome: str | None = None, programme: str | None = None,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """Back office step on one case: handle, answer, refer or resolve."""
    now = now or utcnow()
    cfg = deps.cfg

    def deadline(level: CaseLevel) -> dt.datetime:
        return domain.add_working_days(now, cfg.days(level), cfg.holiday_set)

    async with deps.kit.unit_of_work() as uow:
        # outside the caller's scope (area; for a program manager, the agency level of their
        # programs): the same 404 as a case that does not exist; a 403 here told a program
        # manager that a village case existed and at which level (issue 15's area matrix)
        r = await store.lock_case(uow.session, ref, p)
        if r is None:
            raise RuleError(f"no case {ref} in your area", 404)
        level = CaseLevel(r.level)
        domain.check_can_act(p, level, r.village_code, r.programme_identifier)
        domain.check_open(CaseStatus(r.status))
        step = domain.plan_step(action, level, r.programme_identifier, note=note, answer=answer, outcome=outcome,
                                programme=programme, now=now, deadline=deadline)
        event_id = uow.emit(_step_event(step, r, p.user), correlation_id=r.id)
        await store.update_case(uow.session, r.id, {"level": step.level, "status": step.status, "updated_at": now,
                                                    **step.changes})
        await store.add_steps(uow.session, [_step(r.id, now, p.user, action, step.level, step.status,
                                                  note=step.note, from_level=step.from_level, event_id=event_id)])
        await audit.record(uow.session, store.audit_log, p, f"case.{action}", target=str(r.id), area=r.village_code,
                           detail={"level": step.level.value, "status": step.status.value})
    return {"case_id": str(r.id), "level": step.level.value, "status": step.status.value}


async def escalate_overdue(kit: Kit, cfg: IntakeSettings, now: dt.datetime | None = None,
                           limit: int = 500) -> list[dict[str, Any]]:
    """Move every overdue open case one level up (village -> kecamatan -> kabupaten).

    Automatic escalation stops at the kabupaten: handing a case to a program's agency needs a
    person who names the program. Several processes may run this at once (SKIP LOCKED).
    Takes the kit and settings rather than the composition: the CLI runs it too, with a kit of
    its own that is never started.
    """
    now = now or utcnow()
    done: list[dict[str, Any]] = []
    async with kit.unit_of_work() as uow:
        rows = await store.lock_overdue(uow.session, now, limit)
        moves, steps, trail = [], [], []
        for r in rows:
            level = CaseLevel(r.level)
            nxt = level.next()
            assert nxt is not None  # only village and kecamatan cases are selected
            due = domain.add_working_days(now, cfg.days(nxt), cfg.holiday_set)
            event_id = uow.emit(CaseEscalated(
                case_id=r.id, category=r.category, village_code=r.village_code, from_level=level, level=nxt,
                status=CaseStatus.open, overdue_since=r.due_at, due_at=due), correlation_id=r.id)
            moves.append({"b_id": r.id, "b_level": nxt.value, "b_due": due})
            steps.append(_step(r.id, now, "system", "escalate", nxt, CaseStatus.open, from_level=level,
                               note=f"overdue since {r.due_at.isoformat()}", event_id=event_id))
            trail.append(audit.row(None, "case.escalate", target=str(r.id), area=r.village_code,
                                   detail={"from_level": level.value, "level": nxt.value}, system="escalation"))
            done.append({"case_id": str(r.id), "ticket": r.ticket, "from_level": level.value, "level": nxt.value})
        # one round trip per table, not three per case
        await store.move_cases(uow.session, moves, now)
        await store.add_steps(uow.session, steps)
        await store.add_audit_rows(uow.session, trail)
    if done:
        log.info("intake.escalated", cases=len(done))
    return done


# --- following the registry -------------------------------------------------------------

async def apply_decisions(uow: UnitOfWork, decided: Sequence[Envelope[ProposalDecided]], now: dt.datetime) -> None:
    """Follow the registry's decisions on proposals intake submitted (in the consumer's unit
    of work); a decision on a proposal from elsewhere (the registry's own staff) is not ours.

    A decision the case already shows changes nothing: the inbox drops a repeated event_id,
    and this drops the same decision under another one (a new durable re-reading REGISTRY from
    its start, whose inbox has not seen the old consumer's keys)."""
    cases = await store.lock_by_proposal(uow.session, [e.data.proposal_id for e in decided])
    shown = {pid: r.person_status for pid, r in cases.items()}
    steps = []
    for env in decided:
        d, r = env.data, cases.get(env.data.proposal_id)
        ps = PersonStatus.accepted if d.decision is ProposalDecision.accepted else PersonStatus.rejected
        if r is None or shown[d.proposal_id] == ps:
            continue
        shown[d.proposal_id] = ps
        action = f"proposal_{d.decision.value}"
        event_id = uow.emit(CaseStatusChanged(
            case_id=r.id, category=r.category, village_code=r.village_code, level=r.level, status=r.status,
            previous_status=r.status, action=action, person_status=ps, actor=d.decided_by),
            correlation_id=r.id, causation_id=env.event_id)
        await store.update_case(uow.session, r.id, {"person_status": ps, "updated_at": now})
        steps.append(_step(r.id, now, d.decided_by, action, r.level, r.status, note=d.reason, event_id=event_id))
    await store.add_steps(uow.session, steps)
