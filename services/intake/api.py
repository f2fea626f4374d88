"""Intake's JSON API. Staff authenticate with a bearer token (kit.auth); their role and area
decide what they see and may do. Lists are paged with limit/offset and return `total`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.envelope import utcnow
from contracts.intake import CaseLevel, CaseStatus
from contracts.values import Period, ProgramCode
from services.intake import cases, visits
from services.intake.domain import RuleError, period_of, today_wib
from services.kit.auth import Principal, Role, require
from services.kit.http import NoNul, Offset, error_json

if TYPE_CHECKING:
    from services.intake.app import Intake

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
IdempotencyKey = Annotated[str | None, Header(max_length=100, description=(
    "any unique string per registration; a retry with the same key returns the first case "
    "(replayed: true) instead of registering it twice"))]
CaseRef = Annotated[str, Path(description="case id or ticket, e.g. PSK-3317012001-2026-000001")]

# who may call what (kit.auth checks the bearer token; the use cases check area and level)
Staff = Annotated[Principal, Depends(require(Role.village_office, Role.kecamatan, Role.kabupaten,
                                             Role.program_manager))]
FrontOffice = Annotated[Principal, Depends(require(Role.village_office))]
Counter = Annotated[Principal, Depends(require(Role.village_office, Role.kecamatan, Role.kabupaten))]
Kabupaten = Annotated[Principal, Depends(require(Role.kabupaten))]
Coordinator = Annotated[Principal, Depends(require(Role.coordinator))]
Companion = Annotated[Principal, Depends(require(Role.companion))]
VisitStaff = Annotated[Principal, Depends(require(Role.companion, Role.coordinator))]


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    note: Annotated[str, NoNul] = Field(default="", max_length=2000)


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    answer: Annotated[str, NoNul] = Field(min_length=1, max_length=5000, description="what the citizen was told")


class ReferIn(NoteIn):
    programme_identifier: ProgramCode | None = Field(default=None, description="required when referring to the agency")


class ResolveIn(NoteIn):
    outcome: Literal["resolved", "not_eligible", "withdrawn", "referred_out"] = "resolved"


# --- answers: the fields staff and tools rely on, typed; the rest of each object kept as is --

class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class CaseRegisteredOut(Open):
    case_id: str
    ticket: str
    level: str
    status: str
    person_status: str | None
    due_at: str
    replayed: bool


class LookupOut(BaseModel):
    found: bool
    people: list[dict[str, Any]]


class CaseOut(Open):
    case_id: str
    ticket: str
    village_code: str
    level: str
    status: str
    due_at: str


class CasePage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[CaseOut]


class EscalatedOut(BaseModel):
    escalated: int
    cases: list[Any]


class CaseHistoryOut(BaseModel):
    case: str
    steps: list[dict[str, Any]]


class StepOut(Open):
    case_id: str
    level: str
    status: str


class AssignmentOut(Open):
    assignment_id: str
    companion: str
    nik: str


class CaseloadOut(BaseModel):
    companion: str
    period: str
    items: list[dict[str, Any]]


class VisitOut(Open):
    visit_id: str
    period: str
    programme_identifier: str


class Page(Open):
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(RuleError)
    async def _rule(_req: Request, exc: RuleError) -> JSONResponse:
        return error_json(exc.status, exc.message)

    @app.exception_handler(cases.RegistryUnavailable)
    async def _registry(_req: Request, exc: cases.RegistryUnavailable) -> JSONResponse:
        return error_json(503, f"{exc}; the case was not registered, try again")


def router(deps: Intake) -> APIRouter:
    r = APIRouter()

    @r.post("/cases", status_code=201, tags=["cases"],
            summary="front office: register a complaint or request; returns the ticket number")
    async def register(body: cases.CaseIn, p: FrontOffice, idempotency_key: IdempotencyKey = None) -> CaseRegisteredOut:
        return CaseRegisteredOut.model_validate(await cases.register(deps, p, body, request_key=idempotency_key))

    @r.get("/lookup", tags=["cases"],
           summary="front office: check a citizen in the registry (by NIK, or name within a village) "
                   "without registering a case")
    async def lookup(p: Counter, nik: str | None = None, name: str | None = None,
                     village_code: str | None = None) -> LookupOut:
        return LookupOut.model_validate(await cases.check_person(deps, p, nik=nik, name=name, village_code=village_code))

    @r.get("/cases", response_model=CasePage, tags=["cases"], summary="cases in your area (filter by status, level)")
    async def list_cases(p: Staff, status: CaseStatus | None = None, level: CaseLevel | None = None,
                         limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
        return await cases.list_cases(deps, p, status=status, level=level, limit=limit, offset=offset)

    @r.get("/cases/queue", response_model=CasePage, tags=["cases"], summary="back office: open cases at your level in your area")
    async def queue(p: Staff, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
        return await cases.list_cases(deps, p, queue=True, limit=limit, offset=offset)

    @r.get("/cases/overdue", response_model=CasePage, tags=["cases"], summary="open cases past their deadline in your area")
    async def overdue(p: Staff, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
        # no clock override on a staff route (issue 15: `?now=2099-...` pushed every due date to
        # 2099); operators and tests evaluate at another time through cases.* and `sinergi intake`
        return await cases.list_cases(deps, p, overdue_at=utcnow(), limit=limit, offset=offset)

    @r.post("/cases/escalate", response_model=EscalatedOut, tags=["cases"],
            summary="escalate every overdue case now (the background task does this periodically)")
    async def escalate(p: Kabupaten) -> dict[str, Any]:
        done = await cases.escalate_overdue(deps.kit, deps.cfg)
        return {"escalated": len(done), "cases": done}

    @r.get("/cases/{ref}", response_model=CaseOut, tags=["cases"], summary="one case by id or ticket number, with the complaint text")
    async def get_case(ref: CaseRef, p: Staff) -> dict[str, Any]:
        c = await cases.get_case(deps, p, ref)
        if c is None:
            raise HTTPException(404, detail={"error": f"no case {ref} in your area"})
        return c

    @r.get("/cases/{ref}/history", response_model=CaseHistoryOut, tags=["cases"], summary="every step of a case: who, what, when")
    async def case_history(ref: CaseRef, p: Staff) -> dict[str, Any]:
        steps = await cases.history(deps, p, ref)
        if steps is None:
            raise HTTPException(404, detail={"error": f"no case {ref} in your area"})
        return {"case": ref, "steps": steps}

    @r.post("/cases/{ref}/handle", response_model=StepOut, tags=["cases"], summary="back office: start handling the case")
    async def handle(ref: CaseRef, body: NoteIn, p: Staff) -> dict[str, Any]:
        return await cases.act(deps, p, ref, "handle", note=body.note)

    @r.post("/cases/{ref}/answer", response_model=StepOut, tags=["cases"], summary="back office: record the answer given to the citizen")
    async def answer(ref: CaseRef, body: AnswerIn, p: Staff) -> dict[str, Any]:
        return await cases.act(deps, p, ref, "answer", answer=body.answer)

    @r.post("/cases/{ref}/refer", response_model=StepOut, tags=["cases"], summary="refer the case to the next level of the SLRT chain")
    async def refer(ref: CaseRef, body: ReferIn, p: Staff) -> dict[str, Any]:
        return await cases.act(deps, p, ref, "refer", note=body.note, programme=body.programme_identifier)

    @r.post("/cases/{ref}/resolve", response_model=StepOut, tags=["cases"], summary="close the case with an outcome")
    async def resolve(ref: CaseRef, body: ResolveIn, p: Staff) -> dict[str, Any]:
        return await cases.act(deps, p, ref, "resolve", note=body.note, outcome=body.outcome)

    @r.post("/assignments", response_model=AssignmentOut, status_code=201, tags=["home visits"],
            summary="coordinator: assign a beneficiary to a companion (ends any previous assignment)")
    async def assign(body: visits.AssignmentIn, p: Coordinator) -> dict[str, Any]:
        return await visits.assign(deps, p, body)

    @r.get("/companions/{companion}/caseload", response_model=CaseloadOut, tags=["home visits"],
           summary="a companion's beneficiaries and whether each was visited in the period")
    async def caseload(companion: str, p: VisitStaff, period: Period | None = None) -> dict[str, Any]:
        period = period or _this_month()
        return {"companion": companion, "period": period,
                "items": await visits.caseload(deps, p, companion, period)}

    @r.post("/visits", response_model=VisitOut, status_code=201, tags=["home visits"], summary="companion: file a home-visit report")
    async def file_visit(body: visits.VisitIn, p: Companion) -> dict[str, Any]:
        return await visits.file_visit(deps, p, body)

    @r.get("/visits", response_model=Page, tags=["home visits"], summary="visit reports (a companion sees their own)")
    async def list_visits(p: VisitStaff, companion: str | None = None, period: Period | None = None,
                          limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
        return await visits.list_visits(deps, p, companion=companion, period=period, limit=limit, offset=offset)

    @r.get("/visits/summary", response_model=Page, tags=["home visits"],
           summary="coordinator: per companion, visits done and due, and who is not visited in the period")
    async def visit_summary(p: Coordinator, period: Period | None = None, limit: Limit = 50,
                            offset: Offset = 0) -> dict[str, Any]:
        return await visits.summary(deps, p, period or _this_month(), limit, offset)

    return r


def _this_month() -> str:
    return period_of(today_wib(utcnow()))
