"""Registry HTTP routes for staff: people, households, history, lookups, data-quality queue."""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from contracts.lookup import LookupReply, LookupRequest
from contracts.values import Problem, kk_problems, nik_problems
from services.kit.auth import Principal, Role, require, require_area
from services.kit.http import NoNul, Offset
from services.registry import life, lookup, store

if TYPE_CHECKING:
    from services.registry.app import Registry

# any signed-in staff role; area checks narrow it down
Staff = Annotated[Principal, Depends(require())]
Verifier = Annotated[Principal, Depends(require(Role.verifier))]
Nik = Annotated[str, Path(description="NIK, 16 digits")]
NoKK = Annotated[str, Path(description="No. KK, 16 digits")]


class Resolution(BaseModel):
    resolution: Annotated[str, NoNul] = Field(min_length=3, max_length=1000, description="what the verifier found and did")
    life_status: Literal["alive", "deceased", "moved_out"] | None = Field(
        default=None, description="required for a `death_while_active` item, refused for the others: what the "
                                  "verifier found; `alive` resumes payments, `deceased`/`moved_out` end them")


# answers: the main fields typed; enrolment entries stay open objects (their fields follow the
# agency's report, contracts.agency)
class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class PersonOut(Open):
    nik: str
    no_kk: str
    name: str
    sex: str
    birth_date: str
    village_code: str
    address: str
    enrolments: list[dict[str, Any]]
    life_status: dict[str, Any] = Field(default_factory=dict, description="alive, deceased, moved_out, ineligible "
                                        "or disputed, with its source, effective date and reason (issue 17)")


class HistoryOut(Open):
    nik: str
    identity: list[dict[str, Any]]
    enrolments: list[dict[str, Any]]
    life: list[dict[str, Any]] = Field(default_factory=list, description="every life status change")
    as_of: dict[str, Any] | None = None


class MemberOut(Open):
    nik: str
    name: str
    is_head: bool
    enrolments: list[dict[str, Any]]


class HouseholdOut(Open):
    no_kk: str
    village_code: str
    head_nik: str | None
    members: list[MemberOut]


class ConflictOut(BaseModel):
    id: str
    nik: str
    kind: str
    village_code: str
    programme_identifiers: list[str]
    details: dict[str, Any]
    status: str
    created_at: str
    resolved_at: str | None
    resolved_by: str | None
    resolution: str | None


class ConflictPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ConflictOut]


class ResolvedOut(BaseModel):
    id: str
    status: str
    resolution: str
    life_status: str | None = Field(default=None, description="the person's life status after the decision")


def _check(problems: Sequence[Problem], what: str) -> None:
    if problems:
        raise HTTPException(400, detail={"error": f"invalid {what}", "problems": [p.message for p in problems]})


def _not_found(nik: str) -> HTTPException:
    """The one answer for a NIK the caller may not see, whether it is unknown or lives outside
    their area (issue 17): the same status and the same body, so nothing tells them apart."""
    return HTTPException(404, detail={"error": f"no person with NIK {nik} in your area"})


def _conflict_json(q: Any) -> dict:
    return {"id": str(q.id), "nik": q.nik, "kind": q.kind, "village_code": q.village_code,
            "programme_identifiers": q.programme_identifiers, "details": q.details, "status": q.status,
            "created_at": q.created_at.isoformat(), "resolved_at": q.resolved_at.isoformat() if q.resolved_at else None,
            "resolved_by": q.resolved_by, "resolution": q.resolution}


async def resolve_conflict(reg: Registry, conflict_id: uuid.UUID, resolution: str, p: Principal,
                           life_status: str | None = None) -> dict:
    """A verifier closes a data-quality item (once: a second resolution is refused). A death
    reported while another program pays (`death_while_active`) is decided: the person's life
    status becomes `life_status` (services/registry/life.py announces it)."""
    async with reg.kit.unit_of_work() as uow:
        seen = await store.conflict(uow.session, conflict_id)
        if seen is not None and seen.kind == "death_while_active":
            # the person first, then the item: the order ingest and Dukcapil's consumer lock in
            await store.lock_people(uow.session, [seen.nik])
        row = await store.lock_conflict(uow.session, conflict_id)
        if row is None or not p.covers(row.village_code):  # outside your area: as if missing (issue 15)
            raise HTTPException(404, detail={"error": f"no data-quality item {conflict_id} in your area"})
        if row.status != "open":
            raise HTTPException(409, detail={"error": f"already resolved by {row.resolved_by}"})
        after = None
        if row.kind == "death_while_active":
            if life_status is None:
                raise HTTPException(400, detail={"error": "a death reported while another program pays needs "
                                                          "life_status: alive, deceased or moved_out"})
            before, decision = await life.decide_conflict(uow, row, life_status, resolution, dt.date.today())
            if decision.life.status != life_status:
                raise HTTPException(409, detail={"error": f"the person is recorded {before.status} by "
                                                          f"{before.reported_by or before.source}, which a verifier "
                                                          "cannot overturn"})
            after = decision.life.status
        elif life_status is not None:
            raise HTTPException(400, detail={"error": f"life_status decides only death_while_active items, not "
                                                      f"{row.kind}"})
        await store.resolve_conflict(uow.session, conflict_id, p.user, resolution)
    return {"id": str(conflict_id), "status": "resolved", "resolution": resolution, "life_status": after}


def router(reg: Registry) -> APIRouter:
    r = APIRouter(tags=["people"])

    @r.get("/people/{nik}", summary="one person with their enrolments in every program")
    async def get_person(nik: Nik, p: Staff) -> PersonOut:
        _check(nik_problems(nik), "NIK")
        async with reg.kit.sessions() as s:
            person = await store.person_view(s, nik)
            current = await life.status_of(s, nik)
        if person is None or not p.covers(person["village_code"]):  # one answer: existence outside your area stays hidden
            raise _not_found(nik)
        return PersonOut.model_validate(person | {"life_status": {
            "status": current.status, "source": current.source or None,
            "effective_date": current.effective_date.isoformat() if current.effective_date else None,
            "reported_by": current.reported_by or None, "reason_code": current.reason_code or None}})

    @r.get("/people/{nik}/history", summary="every identity and enrolment report kept for a person; "
                                            "with as_of, the state on that date")
    async def get_history(nik: Nik, p: Staff,
                          as_of: Annotated[dt.date | None, Query(description="YYYY-MM-DD: show the state on that day")
                                           ] = None) -> HistoryOut:
        _check(nik_problems(nik), "NIK")
        async with reg.kit.sessions() as s:
            hist = await store.person_history_view(s, nik, as_of)
            changes = await store.life_history_of(s, nik) if hist else []
        # no identity kept: nothing to place in an area, so nothing is shown (the same answer)
        if hist is None or not hist["identity"] or not p.covers(hist["identity"][-1]["village_code"]):
            raise _not_found(nik)
        return HistoryOut.model_validate(hist | {"life": changes})

    @r.get("/households/{no_kk}", summary="a household (Kartu Keluarga): members, head, enrolments")
    async def get_household(no_kk: NoKK, p: Staff) -> HouseholdOut:
        _check(kk_problems(no_kk), "No. KK")
        async with reg.kit.sessions() as s:
            h = await store.household_view(s, no_kk)
        if h is None or not p.covers(h["village_code"]):
            raise HTTPException(404, detail={"error": f"no household with No. KK {no_kk} in your area"})
        return HouseholdOut.model_validate(h)

    @r.get("/people", summary="look people up by NIK, by No. KK, or by name within a village (tolerant)",
           response_model=LookupReply)
    async def find_people(p: Staff, nik: Annotated[str | None, Query()] = None,
                          no_kk: Annotated[str | None, Query()] = None,
                          name: Annotated[str | None, Query(description="any spelling; needs village_code")] = None,
                          village_code: Annotated[str | None, Query(description="10-digit village code")] = None,
                          limit: Annotated[int, Query(ge=1, le=50)] = 10) -> LookupReply:
        if not (nik or no_kk or name):
            raise HTTPException(400, detail={"error": "give nik, no_kk, or name with village_code"})
        req = LookupRequest.model_construct(nik=nik, no_kk=no_kk, name=name, village_code=village_code, limit=limit)
        bad = lookup.problems(req)
        if bad:
            raise HTTPException(400, detail={"error": "invalid lookup", "problems": bad})
        if village_code:
            require_area(p, village_code)
        return await lookup.answer(reg, req, area=p.area)

    @r.get("/data-quality", tags=["data quality"],
           summary="conflicts between programs waiting for a verifier, oldest first (paginated)")
    async def data_quality(
            p: Staff,
            status: Annotated[str | None, Query(description="open, resolved, or empty for all")] = "open",
            kind: Annotated[str | None, Query(description="name_mismatch, birth_date_mismatch, "
                                                          "death_while_active")] = None,
            limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Offset = 0) -> ConflictPage:
        async with reg.kit.sessions() as s:
            total, rows = await store.data_quality_page(s, status or None, kind, p.area, limit, offset)
        return ConflictPage.model_validate({"total": total, "limit": limit, "offset": offset,
                                            "items": [_conflict_json(q) for q in rows]})

    @r.post("/data-quality/{conflict_id}/resolve", tags=["data quality"],
            summary="a verifier closes a conflict, saying what was found")
    async def resolve(body: Resolution, conflict_id: Annotated[uuid.UUID, Path()], p: Verifier) -> ResolvedOut:
        return ResolvedOut.model_validate(await resolve_conflict(reg, conflict_id, body.resolution, p,
                                                                 body.life_status))

    return r
