"""Home visits (pendampingan): companions' caseloads, visit reports, the monthly rule.

Beneficiaries come from the registry's enrolment events for programs with home visits; the
coordinator assigns each to a companion; a companion files one report per beneficiary per
calendar month. Notes stay here; the event carries ratings and need codes only.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from contracts.agency import EnrolmentStatus
from contracts.envelope import utcnow
from contracts.intake import AidUse, CompanionAssigned, Condition, Need, VisitReportFiled
from contracts.registry import EnrolmentChange
from contracts.values import NIK
from services.intake import domain, store
from services.intake.config import IntakeSettings
from services.intake.domain import RuleError
from services.kit import audit
from services.kit.principal import Principal, Role
from services.kit.uow import UnitOfWork

if TYPE_CHECKING:
    from services.intake.app import Intake


class AssignmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    companion: str = Field(min_length=1, max_length=100, description="the companion's user id")
    nik: NIK
    programme_identifier: str | None = Field(default=None, description="needed if the person is in several "
                                                                       "programs with home visits")


class VisitIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    visit_id: uuid.UUID | None = Field(default=None, description=(
        "chosen by the client (the companion's phone keeps a report offline and sends it again until "
        "it hears back): the same id again returns the first report with replayed: true"))
    nik: NIK
    programme_identifier: str | None = None
    visit_date: dt.date
    physical_condition: Condition
    social_condition: Condition
    aid_use: AidUse
    needs: list[Need] = Field(default_factory=list)
    notes: str = Field(default="", max_length=2000, description="free text; stays in intake")


def _latest(cfg: IntakeSettings, changes: Sequence[EnrolmentChange]) -> dict[tuple[str, str], EnrolmentChange]:
    """The newest change per (NIK, program with home visits) in a batch."""
    latest: dict[tuple[str, str], EnrolmentChange] = {}
    for e in changes:
        if e.programme_identifier not in cfg.visit_programs:
            continue
        k = (e.nik, e.programme_identifier)
        if k not in latest or e.status_change_date >= latest[k].status_change_date:
            latest[k] = e
    return latest


async def apply_enrolments(cfg: IntakeSettings, uow: UnitOfWork, changes: Sequence[EnrolmentChange],
                           now: dt.datetime) -> None:
    """Keep the home-visit caseload in step with enrolments (in the consumer's unit of work);
    end the assignments of people who left. A change older than the one stored is ignored,
    and so it ends nothing."""
    latest = _latest(cfg, changes)
    if not latest:
        return
    written = await store.upsert_beneficiaries(uow.session, [
        {"nik": e.nik, "programme_identifier": e.programme_identifier, "village_code": e.village_code,
         "enrolment_status": e.enrolment_status.value, "status_change_date": e.status_change_date}
        for e in latest.values()])
    left = [(w.nik, w.programme_identifier) for w in written if w.enrolment_status != EnrolmentStatus.active]
    for r in await store.end_assignments(uow.session, left, now):
        uow.emit(CompanionAssigned(assignment_id=r.id, companion=r.companion, nik=r.nik, village_code=r.village_code,
                                   programme_identifier=r.programme_identifier, active=False, actor="registry"))


def _coordinator(p: Principal) -> None:
    if p.role is not Role.coordinator:
        raise RuleError("only the companions' coordinator (coordinator) may do this", 403)


async def assign(deps: Intake, p: Principal, data: AssignmentIn, now: dt.datetime | None = None) -> dict[str, Any]:
    _coordinator(p)
    now = now or utcnow()
    async with deps.kit.unit_of_work() as uow:
        found = await store.active_beneficiaries(uow.session, data.nik, data.programme_identifier)
        if not found:
            raise RuleError(f"NIK {data.nik} is not an active beneficiary of a program with home visits"
                            + (f" ({data.programme_identifier})" if data.programme_identifier else ""), 404)
        if len(found) > 1:
            raise RuleError("the person is in several programs with home visits: give programme_identifier "
                            f"({', '.join(r.programme_identifier for r in found)})", 422)
        ben = found[0]
        if not p.covers(ben.village_code):
            raise RuleError(f"village {ben.village_code} is outside your area {p.area or '-'}", 403)
        # reassigning ends the previous companion's assignment
        for r in await store.end_assignments(uow.session, [(ben.nik, ben.programme_identifier)], now):
            uow.emit(CompanionAssigned(assignment_id=r.id, companion=r.companion, nik=ben.nik,
                                       village_code=ben.village_code, programme_identifier=ben.programme_identifier,
                                       active=False, actor=p.user))
        aid = uuid.uuid4()
        await store.insert_assignment(uow.session, dict(
            id=aid, companion=data.companion, nik=ben.nik, programme_identifier=ben.programme_identifier,
            village_code=ben.village_code, assigned_by=p.user, assigned_at=now))
        uow.emit(CompanionAssigned(assignment_id=aid, companion=data.companion, nik=ben.nik,
                                   village_code=ben.village_code, programme_identifier=ben.programme_identifier,
                                   active=True, actor=p.user))
        await audit.record(uow.session, store.audit_log, p, "visit.assign", target=str(aid), area=ben.village_code,
                           detail={"companion": data.companion, "programme": ben.programme_identifier})
    return {"assignment_id": str(aid), "companion": data.companion, "nik": ben.nik,
            "programme_identifier": ben.programme_identifier, "village_code": ben.village_code}


async def file_visit(deps: Intake, p: Principal, data: VisitIn, now: dt.datetime | None = None) -> dict[str, Any]:
    if p.role is not Role.companion:
        raise RuleError("only a companion (companion) files visit reports", 403)
    now = now or utcnow()
    if data.visit_id is not None:
        # a report sent again (the phone did not hear the answer): the first one, whatever
        # changed since (the month, the assignment)
        async with deps.kit.sessions() as s:
            if (same := await _replay(s, p, data.visit_id)) is not None:
                return same
    domain.check_visit_date(data.visit_date, domain.today_wib(now))
    period = domain.period_of(data.visit_date)
    try:
        async with deps.kit.unit_of_work() as uow:
            s = uow.session
            found = await store.assignments_of(s, p.user, data.nik, data.programme_identifier)
            if not found:
                raise RuleError(f"NIK {data.nik} is not assigned to you", 403)
            if len(found) > 1:
                raise RuleError("you visit this person for several programs: give programme_identifier", 422)
            asg = found[0]
            prev = await store.visit_date_in(s, data.nik, asg.programme_identifier, period)
            if prev is not None:
                raise RuleError(f"already visited in {period} (on {prev.isoformat()}): one visit per month", 409)
            vid = data.visit_id or uuid.uuid4()
            await store.insert_visit(s, dict(
                id=vid, companion=p.user, nik=data.nik, programme_identifier=asg.programme_identifier,
                village_code=asg.village_code, visit_date=data.visit_date, period=period,
                physical_condition=data.physical_condition, social_condition=data.social_condition,
                aid_use=data.aid_use, needs=[n.value for n in data.needs], notes=data.notes, filed_at=now))
            uow.emit(VisitReportFiled(
                visit_id=vid, companion=p.user, nik=data.nik, village_code=asg.village_code,
                programme_identifier=asg.programme_identifier, visit_date=data.visit_date, period=period,
                physical_condition=data.physical_condition, social_condition=data.social_condition,
                aid_use=data.aid_use, needs=data.needs))
            await audit.record(s, store.audit_log, p, "visit.file", target=str(vid), area=asg.village_code,
                               detail={"period": period})
    except IntegrityError:
        # two reports for the same month raced (or the same report, sent twice at once): the
        # primary key or the unique constraint kept only one
        if data.visit_id is not None:
            async with deps.kit.sessions() as s:
                if (same := await _replay(s, p, data.visit_id)) is not None:
                    return same
        raise RuleError(f"already visited in {period}: one visit per month", 409) from None
    return {"visit_id": str(vid), "period": period, "programme_identifier": asg.programme_identifier,
            "replayed": False}


async def _replay(s: AsyncSession, p: Principal, visit_id: uuid.UUID) -> dict[str, Any] | None:
    """The report already filed under this client id, if any. The id is the companion's own:
    another companion's id is refused (409), never shown."""
    row = await store.visit_by_id(s, visit_id)
    if row is None:
        return None
    if row.companion != p.user:
        raise RuleError("this visit_id is already used: give a new one", 409)
    return {"visit_id": str(row.id), "period": row.period, "programme_identifier": row.programme_identifier,
            "replayed": True}


async def caseload(deps: Intake, p: Principal, companion: str, period: str) -> list[dict[str, Any]]:
    """A companion's active assignments, each with this period's visit (if any)."""
    if not (p.role is Role.coordinator or (p.role is Role.companion and p.user == companion)):
        raise RuleError("a companion sees only their own caseload", 403)
    async with deps.kit.sessions() as s:
        rows = await store.caseload(s, companion, p.area, period)
    return [{"assignment_id": str(r.id), "nik": r.nik, "programme_identifier": r.programme_identifier,
             "village_code": r.village_code, "visited_on": r.visit_date.isoformat() if r.visit_date else None}
            for r in rows]


def _companion(companion: str) -> dict[str, Any]:
    return {"companion": companion, "assigned": 0, "visits_done": 0, "visits_due": 0, "not_visited": []}


async def summary(deps: Intake, p: Principal, period: str, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """Per companion: assigned, visits done this period, visits still due, who is not visited yet."""
    _coordinator(p)
    async with deps.kit.sessions() as s:
        rows = await store.all_caseloads(s, p.area, period)
        done = await store.visits_done(s, p.area, period)
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        d = per.setdefault(r.companion, _companion(r.companion))
        d["assigned"] += 1
        if r.visit_date is None:
            d["visits_due"] += 1
            d["not_visited"].append({"nik": r.nik, "programme_identifier": r.programme_identifier,
                                     "village_code": r.village_code})
    for comp, n in done.items():
        per.setdefault(comp, _companion(comp))["visits_done"] = n
    items = sorted(per.values(), key=lambda d: d["companion"])
    return {"period": period, "total": len(items), "limit": limit, "offset": offset,
            "items": items[offset:offset + limit]}


async def list_visits(deps: Intake, p: Principal, *, companion: str | None, period: str | None,
                      limit: int, offset: int) -> dict[str, Any]:
    if p.role is Role.companion:
        companion = p.user
    elif p.role is not Role.coordinator:
        raise RuleError("visit reports are for companions and their coordinator", 403)
    async with deps.kit.sessions() as s:
        total, rows = await store.visit_page(s, p.area, companion, period, limit, offset)
    return {"total": total, "limit": limit, "offset": offset, "items": [
        {"visit_id": str(r.id), "companion": r.companion, "nik": r.nik, "programme_identifier": r.programme_identifier,
         "village_code": r.village_code, "visit_date": r.visit_date.isoformat(), "period": r.period,
         "physical_condition": r.physical_condition, "social_condition": r.social_condition,
         "aid_use": r.aid_use, "needs": r.needs, "notes": r.notes} for r in rows]}
