"""What the companions' coordinator looks at (issue 14): the assignment board of the area,
ending an assignment, visit coverage per companion and village, and overdue cases per office.
Counts and codes only: no complaint text, no reporter. Used by the coordinator's pages; the
assigning itself and the visit reports stay in visits.py.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from contracts.envelope import utcnow
from contracts.intake import CaseLevel, CompanionAssigned
from services.intake import store
from services.intake.domain import RuleError
from services.kit import audit
from services.kit.principal import Principal, Role

if TYPE_CHECKING:
    from services.intake.app import Intake

# who sees overdue cases per office: the coordinator (whose companions often carry the
# complaint to the office) and the SLRT supervisors above the village
OVERDUE_READERS = (Role.coordinator, Role.kecamatan, Role.kabupaten)


def _coordinator(p: Principal) -> None:
    if p.role is not Role.coordinator:
        raise RuleError("only the companions' coordinator (coordinator) may do this", 403)


async def board(deps: Intake, p: Principal, *, village: str | None = None, unassigned_only: bool = False,
                limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """Active beneficiaries in the coordinator's area with their current companion."""
    _coordinator(p)
    async with deps.kit.sessions() as s:
        total, rows = await store.beneficiary_board(s, p.area, village or None, unassigned_only, limit, offset)
    return {"total": total, "limit": limit, "offset": offset, "items": [
        {"nik": r.nik, "programme_identifier": r.programme_identifier, "village_code": r.village_code,
         "companion": r.companion, "assigned_at": r.assigned_at.isoformat() if r.assigned_at else None}
        for r in rows]}


async def unassign(deps: Intake, p: Principal, nik: str, programme: str, now: dt.datetime | None = None) -> dict[str, Any]:
    """End a beneficiary's current assignment (the companion leaves, or the coordinator
    re-plans). Outside the area is the same 404 as no assignment at all."""
    _coordinator(p)
    now = now or utcnow()
    async with deps.kit.unit_of_work() as uow:
        row = await store.active_assignment(uow.session, nik, programme)
        if row is None or not p.covers(row.village_code):
            raise RuleError(f"no active assignment for NIK {nik} in {programme} in your area", 404)
        for r in await store.end_assignments(uow.session, [(nik, programme)], now):
            uow.emit(CompanionAssigned(assignment_id=r.id, companion=r.companion, nik=r.nik,
                                       village_code=r.village_code, programme_identifier=r.programme_identifier,
                                       active=False, actor=p.user))
        await audit.record(uow.session, store.audit_log, p, "visit.unassign", target=str(row.id),
                           area=row.village_code, detail={"companion": row.companion, "programme": programme})
    return {"assignment_id": str(row.id), "companion": row.companion, "nik": nik, "programme_identifier": programme}


async def coverage(deps: Intake, p: Principal, period: str) -> dict[str, Any]:
    """Visited / assigned in the period for each companion and village of the area (the
    current assignments; a visit by a companion since replaced counts for the beneficiary)."""
    _coordinator(p)
    async with deps.kit.sessions() as s:
        rows = await store.all_caseloads(s, p.area, period)
    per: dict[tuple[str, str], dict[str, Any]] = {}
    companions: dict[str, dict[str, Any]] = {}
    for r in rows:
        for d in (per.setdefault((r.companion, r.village_code), {"companion": r.companion,
                                                                 "village_code": r.village_code,
                                                                 "assigned": 0, "visited": 0}),
                  companions.setdefault(r.companion, {"companion": r.companion, "assigned": 0, "visited": 0})):
            d["assigned"] += 1
            d["visited"] += r.visit_date is not None
    assigned = sum(d["assigned"] for d in companions.values())
    visited = sum(d["visited"] for d in companions.values())
    return {"period": period, "assigned": assigned, "visited": visited,
            "companions": sorted(companions.values(), key=lambda d: d["companion"]),
            "items": sorted(per.values(), key=lambda d: (d["companion"], d["village_code"]))}


def _office(level: str, village_code: str, programme: str | None) -> tuple[str, str]:
    """(level, office code) of the office that holds a case at this level."""
    if level == CaseLevel.village:
        return level, village_code
    if level == CaseLevel.kecamatan:
        return level, village_code[:6]
    if level == CaseLevel.kabupaten:
        return level, village_code[:4]
    return level, programme or "-"


async def overdue_by_office(deps: Intake, p: Principal, now: dt.datetime | None = None) -> dict[str, Any]:
    """Open cases past their deadline in the caller's area, per office that holds them (the
    village Puskesos, the kecamatan, the kabupaten, a program's agency): how many and since when."""
    if p.role not in OVERDUE_READERS:
        raise RuleError("overdue cases per office are for the coordinator and the SLRT supervisors", 403)
    now = now or utcnow()
    async with deps.kit.sessions() as s:
        rows = await store.overdue_counts(s, p.area, now)
    offices: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        level, office = _office(r.level, r.village_code, r.programme_identifier)
        d = offices.setdefault((level, office), {"level": level, "office": office, "overdue": 0,
                                                 "oldest_due": r.oldest_due})
        d["overdue"] += r.n
        d["oldest_due"] = min(d["oldest_due"], r.oldest_due)
    order = [lv.value for lv in CaseLevel]
    items = sorted(offices.values(), key=lambda d: (order.index(d["level"]) if d["level"] in order else 99,
                                                   d["oldest_due"]))
    for d in items:
        d["days_late"] = (now - d["oldest_due"]).days
        d["oldest_due"] = d["oldest_due"].isoformat()
    return {"now": now.isoformat(), "total": sum(d["overdue"] for d in items), "items": items}
