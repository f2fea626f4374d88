"""Intake rules with no I/O: tickets, working-day deadlines, who may act at which level, what
a registry lookup means for a new case, what a back-office step changes, and the monthly
home-visit rule. Everything here is unit-tested without servers."""
from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from contracts import wilayah
from contracts.intake import CaseLevel, CaseStatus, PersonStatus, ProposalSubmitted
from contracts.lookup import LookupReply
from contracts.values import parse_nik
from services.kit.principal import Principal, Role

# deadlines count working days in the regency's own time (WIB), not UTC
WIB = ZoneInfo("Asia/Jakarta")

# the office that handles a case at each level of the SLRT chain
LEVEL_ROLES: dict[CaseLevel, tuple[Role, ...]] = {
    CaseLevel.village: (Role.village_office,),
    CaseLevel.kecamatan: (Role.kecamatan,),
    CaseLevel.kabupaten: (Role.kabupaten,),
    CaseLevel.agency: (Role.kabupaten, Role.program_manager),
}
# roles that may read cases (within their area): those who handle them. Complaint text is
# confidential (Puskesos guideline), so auditors follow cases through the events instead.
CASE_READERS = (Role.village_office, Role.kecamatan, Role.kabupaten, Role.program_manager)

# what each action may do from which status
OPEN_STATUSES = (CaseStatus.open, CaseStatus.in_progress, CaseStatus.answered)


class RuleError(Exception):
    """A request that breaks a rule; `status` is the HTTP status it maps to."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def ticket(village_code: str, year: int, seq: int) -> str:
    """The number a citizen quotes: PSK-<village>-<year>-<serial per village and year>."""
    return f"PSK-{wilayah.digits(village_code)}-{year}-{seq:06d}"


def add_working_days(start: dt.datetime, days: int, holidays: frozenset[dt.date] = frozenset()) -> dt.datetime:
    """`start` plus `days` working days (Monday-Friday, not a holiday), same time of day.

    A case registered on Friday at 10:00 with 3 days is due Wednesday 10:00; one registered
    on Saturday is due Wednesday too (the weekend does not count).
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    local = start.astimezone(WIB)
    left = days
    while left > 0:
        local += dt.timedelta(days=1)
        if local.weekday() < 5 and local.date() not in holidays:
            left -= 1
    return local.astimezone(dt.UTC)


def handler_roles(level: CaseLevel) -> tuple[Role, ...]:
    return LEVEL_ROLES[level]


def can_read(p: Principal, village_code: str) -> bool:
    return p.role in CASE_READERS and p.covers(village_code)


def check_can_act(p: Principal, level: CaseLevel, village_code: str, programme: str | None = None) -> None:
    """The caller must be the office for the case's current level and cover its village."""
    if p.role not in LEVEL_ROLES[level]:
        raise RuleError(f"the case is at {level.value} level; role {p.role.value} cannot act on it "
                        f"(needs {', '.join(r.value for r in LEVEL_ROLES[level])})", 403)
    if not p.covers(village_code):
        raise RuleError(f"village {village_code} is outside your area {p.area or '-'}", 403)
    if p.role is Role.program_manager and programme not in p.programs:
        raise RuleError(f"the case is referred to program {programme or '-'}, not one of yours", 403)


def check_open(status: CaseStatus) -> None:
    if status not in OPEN_STATUSES:
        raise RuleError(f"the case is {status.value}; it cannot change any more")


def refer_target(level: CaseLevel, programme: str | None) -> CaseLevel:
    nxt = level.next()
    if nxt is None:
        raise RuleError("the case is already with the program's agency, the end of the SLRT chain")
    if nxt is CaseLevel.agency and not programme:
        raise RuleError("referring to the agency needs programme_identifier (which program's agency)", 422)
    if programme and not re.fullmatch(r"[a-z][a-z0-9_]{1,31}", programme):
        raise RuleError(f"programme_identifier {programme!r} is not a program code (lower case, e.g. pkh)", 422)
    return nxt


def period_of(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def check_visit_date(visit_date: dt.date, today: dt.date) -> None:
    if visit_date > today:
        raise RuleError(f"visit date {visit_date.isoformat()} is in the future", 422)
    if (today - visit_date).days > 62:
        raise RuleError(f"visit date {visit_date.isoformat()} is more than two months ago; "
                        "the coordinator must correct old reports", 422)


def today_wib(now: dt.datetime) -> dt.date:
    return now.astimezone(WIB).date()


# --- registration -------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """What the registry's answer means for a new case."""

    person_status: PersonStatus
    programs: list[dict[str, Any]] = field(default_factory=list)  # found: the person's enrolments
    matches: list[dict[str, Any]] = field(default_factory=list)   # name search: candidates to confirm
    proposal: ProposalSubmitted | None = None                     # missing from the registry: proposed


@dataclass(frozen=True)
class Reported:
    """Who the case is about, as the front office recorded them."""

    nik: str | None
    name: str | None
    no_kk: str | None
    address: str
    village_code: str
    programme: str | None


def finding(who: Reported, reply: LookupReply, *, case_id: uuid.UUID, proposal_id: uuid.UUID,
            submitted_by: str) -> Finding:
    """Found (with programs), possible match (a name search's candidates), proposed (a NIK the
    registry does not know, with KK and name to propose them), or not found."""
    if who.nik and reply.found:
        return Finding(PersonStatus.found, programs=[e.model_dump() for e in reply.people[0].enrolments])
    if not who.nik:
        if reply.found:
            return Finding(PersonStatus.possible_match, matches=[m.model_dump() for m in reply.people])
        return Finding(PersonStatus.not_found)
    parts, _ = parse_nik(who.nik)
    if not (who.no_kk and who.name and parts):
        return Finding(PersonStatus.not_found)
    return Finding(PersonStatus.proposed, proposal=ProposalSubmitted(
        proposal_id=proposal_id, nik=who.nik, no_kk=who.no_kk, name=who.name, sex=parts.sex,
        birth_date=parts.birth_date, village_code=who.village_code, address=who.address,
        programme_identifier=who.programme, submitted_by=submitted_by, case_id=case_id))


# --- back-office steps --------------------------------------------------------------------

ACTIONS = ("handle", "answer", "refer", "resolve")


@dataclass(frozen=True)
class Step:
    """One back-office step on a case, decided before anything is written."""

    action: str
    level: CaseLevel
    status: CaseStatus
    note: str
    changes: dict[str, Any] = field(default_factory=dict)  # further columns of the case that change
    from_level: CaseLevel | None = None                      # a referral's level of origin


def plan_step(action: str, level: CaseLevel, programme_now: str | None, *, note: str = "",
              answer: str | None = None, outcome: str | None = None, programme: str | None = None,
              now: dt.datetime, deadline: Callable[[CaseLevel], dt.datetime]) -> Step:
    """What `action` does to a case at `level` (already checked: open, and the caller may act).
    `deadline(level)` is the due time a case gets on arriving at `level` now."""
    if action == "handle":
        return Step(action, level, CaseStatus.in_progress, note)
    if action == "answer":
        if not answer:
            raise RuleError("answer needs the text given to the citizen", 422)
        return Step(action, level, CaseStatus.answered, note or answer, {"answer": answer})
    if action == "refer":
        target = refer_target(level, programme or programme_now)
        return Step(action, target, CaseStatus.open, note,
                    {"due_at": deadline(target), "programme_identifier": programme or programme_now},
                    from_level=level)
    if action == "resolve":
        return Step(action, level, CaseStatus.resolved, note, {"outcome": outcome or "resolved", "resolved_at": now})
    raise RuleError(f"unknown action {action!r}", 422)
