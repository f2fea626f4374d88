"""Home visits (pendampingan): companions' caseloads, visit reports, the monthly rule.

Beneficiaries come from the registry's enrolment events for programs with home visits; the
coordinator assigns each to a companion; a companion files one report per beneficiary per
calendar month. Notes stay here; the event carries ratings and need codes only.
"""
from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from contracts.agency import EnrolmentStatus
from contracts.envelope import utcnow
from contracts.intake import AidUse, CompanionAssigned, Condition, Need, VisitReportFiled
from contracts.registry import EnrolmentChange
from contracts.values import NIK
from services.intake import domain, store
from services.intake.config import IntakeSettings
from services.intake.domain import RuleError
from services.kit import audit
from services.kit.auth import Principal, Role
from services.kit.outbox import add, event_row
from services.kit.runtime import ServiceRuntime

SERVICE = "intake"


class AssignmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    companion: str = Field(min_length=1, max_length=100, description="the companion's user id")
    nik: NIK
    programme_identifier: str | None = Field(default=None, description="needed if the person is in several "
                                                                       "programs with home visits")


class VisitIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    nik: NIK
    programme_identifier: str | None = None
    visit_date: dt.date
    physical_condition: Condition
    social_condition: Condition
    aid_use: AidUse
    needs: list[Need] = Field(default_factory=list)
    notes: str = Field(default="", max_length=2000, description="free text; stays in intake")


async def apply_enrolments(rt: ServiceRuntime, cfg: IntakeSettings, s, events: list[EnrolmentChange],
                           now: dt.datetime) -> list[dict]:
    """Keep the home-visit caseload in step with enrolments; end assignments of people who left."""
    latest: dict[tuple[str, str], EnrolmentChange] = {}
    for e in events:
        if e.programme_identifier not in cfg.visit_programs:
            continue
        k = (e.nik, e.programme_identifier)
        if k not in latest or e.status_change_date >= latest[k].status_change_date:
            latest[k] = e
    if not latest:
        return []
    b = store.beneficiaries
    rows = [{"nik": e.nik, "programme_identifier": e.programme_identifier, "village_code": e.village_code,
             "enrolment_status": e.enrolment_status.value, "status_change_date": e.status_change_date}
            for e in latest.values()]
    ins = pg_insert(b).values(rows)
    # an older event arriving late never overwrites a newer status
    await s.execute(ins.on_conflict_do_update(
        index_elements=["nik", "programme_identifier"],
        set_={"village_code": ins.excluded.village_code, "enrolment_status": ins.excluded.enrolment_status,
              "status_change_date": ins.excluded.status_change_date, "updated_at": sa.func.now()},
        where=b.c.status_change_date <= ins.excluded.status_change_date))
    out = []
    a = store.assignments
    for e in latest.values():
        if e.enrolment_status is EnrolmentStatus.active:
            continue
        ended = (await s.execute(sa.update(a).where(
            a.c.nik == e.nik, a.c.programme_identifier == e.programme_identifier, a.c.active)
            .values(active=False, ended_at=now).returning(a.c.id, a.c.companion, a.c.village_code))).all()
        out += [event_row(rt.names, CompanionAssigned(
            assignment_id=r.id, companion=r.companion, nik=e.nik, village_code=r.village_code,
            programme_identifier=e.programme_identifier, active=False, actor="registry"), SERVICE) for r in ended]
    return out


def _coordinator(p: Principal) -> None:
    if p.role is not Role.coordinator:
        raise RuleError("only the companions' coordinator (coordinator) may do this", 403)


async def assign(rt: ServiceRuntime, p: Principal, data: AssignmentIn, now: dt.datetime | None = None) -> dict:
    _coordinator(p)
    now = now or utcnow()
    b, a = store.beneficiaries, store.assignments
    async with rt.sessions.begin() as s:
        q = sa.select(b).where(b.c.nik == data.nik, b.c.enrolment_status == EnrolmentStatus.active)
        if data.programme_identifier:
            q = q.where(b.c.programme_identifier == data.programme_identifier)
        found = (await s.execute(q)).all()
        if not found:
            raise RuleError(f"NIK {data.nik} is not an active beneficiary of a program with home visits"
                            + (f" ({data.programme_identifier})" if data.programme_identifier else ""), 404)
        if len(found) > 1:
            raise RuleError("the person is in several programs with home visits: give programme_identifier "
                            f"({', '.join(r.programme_identifier for r in found)})", 422)
        ben = found[0]
        if not p.covers(ben.village_code):
            raise RuleError(f"village {ben.village_code} is outside your area {p.area or '-'}", 403)
        out = []
        # reassigning ends the previous companion's assignment
        ended = (await s.execute(sa.update(a).where(
            a.c.nik == ben.nik, a.c.programme_identifier == ben.programme_identifier, a.c.active)
            .values(active=False, ended_at=now).returning(a.c.id, a.c.companion))).all()
        for r in ended:
            out.append(event_row(rt.names, CompanionAssigned(
                assignment_id=r.id, companion=r.companion, nik=ben.nik, village_code=ben.village_code,
                programme_identifier=ben.programme_identifier, active=False, actor=p.user), SERVICE))
        aid = uuid.uuid4()
        await s.execute(sa.insert(a).values(id=aid, companion=data.companion, nik=ben.nik,
                                            programme_identifier=ben.programme_identifier,
                                            village_code=ben.village_code, assigned_by=p.user, assigned_at=now))
        out.append(event_row(rt.names, CompanionAssigned(
            assignment_id=aid, companion=data.companion, nik=ben.nik, village_code=ben.village_code,
            programme_identifier=ben.programme_identifier, active=True, actor=p.user), SERVICE))
        await audit.record(s, store.audit_log, p, "visit.assign", target=str(aid), area=ben.village_code,
                           detail={"companion": data.companion, "programme": ben.programme_identifier})
        await add(s, rt.outbox, out)
    rt.kick()
    return {"assignment_id": str(aid), "companion": data.companion, "nik": ben.nik,
            "programme_identifier": ben.programme_identifier, "village_code": ben.village_code}


async def file_visit(rt: ServiceRuntime, p: Principal, data: VisitIn, now: dt.datetime | None = None) -> dict:
    if p.role is not Role.companion:
        raise RuleError("only a companion (companion) files visit reports", 403)
    now = now or utcnow()
    domain.check_visit_date(data.visit_date, domain.today_wib(now))
    a, v = store.assignments, store.visits
    period = domain.period_of(data.visit_date)
    try:
        async with rt.sessions.begin() as s:
            q = sa.select(a).where(a.c.companion == p.user, a.c.nik == data.nik, a.c.active)
            if data.programme_identifier:
                q = q.where(a.c.programme_identifier == data.programme_identifier)
            found = (await s.execute(q)).all()
            if not found:
                raise RuleError(f"NIK {data.nik} is not assigned to you", 403)
            if len(found) > 1:
                raise RuleError("you visit this person for several programs: give programme_identifier", 422)
            asg = found[0]
            prev = (await s.execute(sa.select(v.c.visit_date).where(
                v.c.nik == data.nik, v.c.programme_identifier == asg.programme_identifier,
                v.c.period == period))).scalar()
            if prev is not None:
                raise RuleError(f"already visited in {period} (on {prev.isoformat()}): one visit per month", 409)
            vid = uuid.uuid4()
            await s.execute(sa.insert(v).values(
                id=vid, companion=p.user, nik=data.nik, programme_identifier=asg.programme_identifier,
                village_code=asg.village_code, visit_date=data.visit_date, period=period,
                physical_condition=data.physical_condition, social_condition=data.social_condition,
                aid_use=data.aid_use, needs=[n.value for n in data.needs], notes=data.notes, filed_at=now))
            await add(s, rt.outbox, [event_row(rt.names, VisitReportFiled(
                visit_id=vid, companion=p.user, nik=data.nik, village_code=asg.village_code,
                programme_identifier=asg.programme_identifier, visit_date=data.visit_date, period=period,
                physical_condition=data.physical_condition, social_condition=data.social_condition,
                aid_use=data.aid_use, needs=data.needs), SERVICE)])
            await audit.record(s, store.audit_log, p, "visit.file", target=str(vid), area=asg.village_code,
                               detail={"period": period})
    except IntegrityError:
        # two reports for the same month raced: the unique constraint kept only one
        raise RuleError(f"already visited in {period}: one visit per month", 409) from None
    rt.kick()
    return {"visit_id": str(vid), "period": period, "programme_identifier": asg.programme_identifier}


async def caseload(rt: ServiceRuntime, p: Principal, companion: str, period: str) -> list[dict]:
    """A companion's active assignments, each with this period's visit (if any)."""
    if not (p.role is Role.coordinator or (p.role is Role.companion and p.user == companion)):
        raise RuleError("a companion sees only their own caseload", 403)
    a, v = store.assignments, store.visits
    async with rt.sessions() as s:
        rows = (await s.execute(
            sa.select(a.c.id, a.c.nik, a.c.programme_identifier, a.c.village_code, v.c.visit_date)
            .select_from(a.outerjoin(v, sa.and_(v.c.nik == a.c.nik, v.c.programme_identifier ==
                                                a.c.programme_identifier, v.c.period == period)))
            .where(a.c.companion == companion, a.c.active, a.c.village_code.like(f"{p.area}%"))
            .order_by(a.c.village_code, a.c.nik))).all()
    return [{"assignment_id": str(r.id), "nik": r.nik, "programme_identifier": r.programme_identifier,
             "village_code": r.village_code, "visited_on": r.visit_date.isoformat() if r.visit_date else None}
            for r in rows]


async def summary(rt: ServiceRuntime, p: Principal, period: str, limit: int = 50, offset: int = 0) -> dict:
    """Per companion: assigned, visits done this period, visits still due, who is not visited yet."""
    _coordinator(p)
    a, v = store.assignments, store.visits
    async with rt.sessions() as s:
        rows = (await s.execute(
            sa.select(a.c.companion, a.c.nik, a.c.programme_identifier, a.c.village_code, v.c.visit_date)
            .select_from(a.outerjoin(v, sa.and_(v.c.nik == a.c.nik, v.c.programme_identifier ==
                                                a.c.programme_identifier, v.c.period == period)))
            .where(a.c.active, a.c.village_code.like(f"{p.area}%"))
            .order_by(a.c.companion, a.c.village_code, a.c.nik))).all()
        # visits done also count reports by a companion for people since reassigned
        done = dict((await s.execute(
            sa.select(v.c.companion, sa.func.count()).where(v.c.period == period,
                                                            v.c.village_code.like(f"{p.area}%"))
            .group_by(v.c.companion))).all())
    per: dict[str, dict] = {}
    for r in rows:
        d = per.setdefault(r.companion, {"companion": r.companion, "assigned": 0, "visits_done": 0,
                                         "visits_due": 0, "not_visited": []})
        d["assigned"] += 1
        if r.visit_date is None:
            d["visits_due"] += 1
            d["not_visited"].append({"nik": r.nik, "programme_identifier": r.programme_identifier,
                                     "village_code": r.village_code})
    for comp, n in done.items():
        per.setdefault(comp, {"companion": comp, "assigned": 0, "visits_done": 0, "visits_due": 0,
                              "not_visited": []})["visits_done"] = n
    items = sorted(per.values(), key=lambda d: d["companion"])
    return {"period": period, "total": len(items), "limit": limit, "offset": offset,
            "items": items[offset:offset + limit]}


async def list_visits(rt: ServiceRuntime, p: Principal, *, companion: str | None, period: str | None,
                      limit: int, offset: int) -> dict:
    if p.role is Role.companion:
        companion = p.user
    elif p.role is not Role.coordinator:
        raise RuleError("visit reports are for companions and their coordinator", 403)
    v = store.visits
    where = [v.c.village_code.like(f"{p.area}%")]
    if companion:
        where.append(v.c.companion == companion)
    if period:
        where.append(v.c.period == period)
    async with rt.sessions() as s:
        total = (await s.execute(sa.select(sa.func.count()).select_from(v).where(*where))).scalar_one()
        rows = (await s.execute(sa.select(v).where(*where).order_by(v.c.visit_date.desc(), v.c.id)
                                .limit(limit).offset(offset))).all()
    return {"total": total, "limit": limit, "offset": offset, "items": [
        {"visit_id": str(r.id), "companion": r.companion, "nik": r.nik, "programme_identifier": r.programme_identifier,
         "village_code": r.village_code, "visit_date": r.visit_date.isoformat(), "period": r.period,
         "physical_condition": r.physical_condition, "social_condition": r.social_condition,
         "aid_use": r.aid_use, "needs": r.needs, "notes": r.notes} for r in rows]}
