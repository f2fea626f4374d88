"""Verification and validation (verivali): proposals to add a person (usulan) wait as
`proposed` until a verifier decides; verification rounds record each person's result.

Proposals arrive from intake (`intake.proposal_submitted` on the INTAKE stream, through the
kit's consumer) and from staff over HTTP. Every decision and result is a registry event,
emitted in the unit of work that makes the change.
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from nats.aio.msg import Msg
from pydantic import BaseModel, Field, model_validator

from contracts.agency import Sex
from contracts.envelope import Envelope
from contracts.intake import ProposalSubmitted
from contracts.registry import (PeopleRegistered, PersonIdentity, ProposalDecided, ProposalDecision,
                                VerificationRecorded, VerificationResult, VerificationRoundClosed,
                                VerificationRoundOpened)
from contracts.values import NIK, NoKK, ProgramCode, VillageCode, nik_consistency, parse_nik
from services.kit.auth import Principal, Role, require, require_area
from services.kit.consumer import ConsumerSpec, Delivery
from services.kit.http import NoNul, Offset
from services.kit.decode import Limits, decode_envelope
from services.kit.uow import UnitOfWork
from services.registry import domain, life, names, programs, proposals, store

if TYPE_CHECKING:
    from services.registry.app import Registry

CONSUMER = "registry-proposals-v1"
VERIFIED = [r.value for r in VerificationResult if r.counts_as_verified]
# one person's fields in an envelope: about 700 bytes
PROPOSAL_LIMITS = Limits(max_bytes=64 * 1024)

FrontOffice = Annotated[Principal, Depends(require(Role.village_office, Role.kecamatan, Role.kabupaten,
                                                   Role.verifier))]
Verifier = Annotated[Principal, Depends(require(Role.verifier))]
FieldStaff = Annotated[Principal, Depends(require(Role.verifier, Role.companion))]
Staff = Annotated[Principal, Depends(require())]


# ---- answers (the OpenAPI shows these shapes; kit.http.ErrorBody for every error) ----

class ProposalOut(BaseModel):
    proposal_id: str
    source: str
    nik: str
    no_kk: str
    name: str
    sex: str
    birth_date: str
    village_code: str
    address: str
    programme_identifier: str | None
    programmes_requested: list[str] = Field(default_factory=list, description="the programs asked for")
    submitted_by: str | None
    case_id: str | None
    status: str
    reason: str | None
    decided_by: str | None
    decided_at: str | None
    created_at: str
    forwards: list[ForwardOut] = Field(default_factory=list, description="programs of outside agencies the "
                                                                         "accepted proposal went to, and their "
                                                                         "answers (GET /proposals/{id} only)")


class ForwardOut(BaseModel):
    """An accepted proposal sent to the agency owning a program, and its answer so far."""

    programme_identifier: str
    forwarded_at: str
    fulfilled_at: str | None = Field(description="when the agency's enrolment report answered it; null: waiting")
    enrolment_status: str | None = Field(description="the status the agency reported (active: enrolled)")


class ProposalPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ProposalOut]


class ProposalAccepted(BaseModel):
    proposal_id: str
    status: str


class DecisionOut(BaseModel):
    proposal_id: str
    status: str
    person_created: bool
    reason: str
    enrolled_in: list[str] = Field(default_factory=list, description="programs the regency owns: enrolled now")
    forwarded_to: list[str] = Field(default_factory=list, description="outside agencies' programs: the proposal "
                                                                      "went to each on agency.<program>.proposals")
    not_configured: list[str] = Field(default_factory=list, description="programs asked for that have no settings "
                                                                        "in the registry (PUT /programs/{code}): "
                                                                        "neither enrolled nor forwarded")


class RoundOut(BaseModel):
    round_id: str
    period: str
    cadence: str
    area: str
    status: str
    opened_by: str
    opened_at: str
    closed_by: str | None
    closed_at: str | None


class ClosedRoundOut(RoundOut):
    verified: int
    not_verified: int


class ResultOut(BaseModel):
    round_id: str
    nik: str
    result: str
    verified: bool
    programme_identifiers: list[str]


class UnverifiedItem(BaseModel):
    nik: str
    name: str
    village_code: str
    result: str | None
    verification_due_on: str | None = Field(default=None, description="when the person's verification runs out "
                                                                      "in a program that requires one (null: no "
                                                                      "such program, or never verified: see "
                                                                      "due_programmes)")
    due_programmes: list[str] = Field(default_factory=list, description="programs requiring a verification the "
                                                                        "person is active in")
    due: bool = Field(default=False, description="expired, expiring by the round's last day, or never verified, "
                                                 "in a program that requires a verification")


class UnverifiedPage(BaseModel):
    round_id: str
    period: str
    total: int
    limit: int
    offset: int
    items: list[UnverifiedItem]


# ---- proposals ----

class ProposalIn(BaseModel):
    """A person proposed for the registry by staff (the same fields intake sends)."""

    nik: NIK
    no_kk: NoKK
    name: Annotated[str, NoNul] = Field(min_length=1, max_length=200)
    sex: Sex
    birth_date: dt.date
    village_code: VillageCode
    address: Annotated[str, NoNul] = Field(default="", max_length=500)
    programme_identifier: str | None = Field(default=None, description="program asked for, if any (older form "
                                                                     "of programmes_requested)")
    programmes_requested: list[ProgramCode] = Field(default_factory=list, max_length=proposals.MAX_REQUESTED,
                                                    description="the programs the person is proposed for")
    case_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ProposalIn:
        parts, _ = parse_nik(self.nik)
        bad = nik_consistency(parts, self.birth_date, self.sex) if parts else []
        if bad:
            raise ValueError("; ".join(p.message for p in bad))
        return self


class DecisionIn(BaseModel):
    decision: ProposalDecision
    reason: Annotated[str, NoNul] = Field(default="", max_length=1000, description="required when rejecting")

    @model_validator(mode="after")
    def _reason(self) -> DecisionIn:
        if self.decision == ProposalDecision.rejected and not self.reason.strip():
            raise ValueError("a rejection needs a reason")
        return self


def _proposal_row(p: ProposalIn | ProposalSubmitted, proposal_id: uuid.UUID, source: str, by: str) -> dict:
    return {"proposal_id": proposal_id, "source": source, "nik": p.nik, "no_kk": p.no_kk, "name": p.name,
            "sex": str(p.sex), "birth_date": p.birth_date, "village_code": p.village_code, "address": p.address,
            "programme_identifier": p.programme_identifier,
            "programmes_requested": proposals.requested(p.programmes_requested, p.programme_identifier),
            "submitted_by": by, "case_id": p.case_id}


def _proposal_json(r: Any) -> dict:
    return {"proposal_id": str(r.proposal_id), "source": r.source, "nik": r.nik, "no_kk": r.no_kk, "name": r.name,
            "sex": r.sex, "birth_date": r.birth_date.isoformat(), "village_code": r.village_code,
            "address": r.address, "programme_identifier": r.programme_identifier,
            "programmes_requested": list(r.programmes_requested or []), "submitted_by": r.submitted_by,
            "case_id": str(r.case_id) if r.case_id else None, "status": r.status, "reason": r.reason,
            "decided_by": r.decided_by, "decided_at": r.decided_at.isoformat() if r.decided_at else None,
            "created_at": r.created_at.isoformat()}


def decode_proposal(msg: Msg) -> Envelope[ProposalSubmitted]:
    """intake.proposal_submitted, or a `Rejection` naming what is wrong (kit.decode)."""
    env = decode_envelope(msg.data, {ProposalSubmitted.event_type: ProposalSubmitted}, PROPOSAL_LIMITS)
    assert env is not None  # nothing is skipped: this subject carries proposals only
    return env


async def take_proposals(uow: UnitOfWork, batch: list[Delivery[Envelope[ProposalSubmitted]]]) -> None:
    """Each proposal waits as `proposed`, once per proposal_id (the kit's inbox drops repeats
    of an event; a proposal re-sent as another event is still one row)."""
    rows = []
    for d in batch:
        assert d.value is not None  # the kit hands over accepted deliveries only
        p = d.value.data
        rows.append(_proposal_row(p, p.proposal_id, "intake", p.submitted_by))
    await store.add_proposals(uow.session, rows)


async def _add_person(reg: Registry, uow: UnitOfWork, prop: Any) -> bool:
    """Create the proposed person if the NIK is new; True if created."""
    key = names.normalise(prop.name)
    row = {"nik": prop.nik, "no_kk": prop.no_kk, "name": prop.name, "sex": prop.sex, "birth_date": prop.birth_date,
           "village_code": prop.village_code, "address": prop.address, "name_key": key, "reported_by": "verivali"}
    if not await store.insert_proposed_person(uow.session, row, f"proposal/{prop.proposal_id}"):
        return False
    await store.upsert_households(uow.session, [{"no_kk": prop.no_kk, "village_code": prop.village_code,
                                                 "head_nik": None}])
    if not reg.name_search.trgm:
        await store.replace_name_trigrams(uow.session, [(prop.nik, prop.village_code, names.trigrams(key))])
    uow.emit(PeopleRegistered(people=[PersonIdentity(
        nik=prop.nik, no_kk=prop.no_kk, name=prop.name, sex=prop.sex, birth_date=prop.birth_date,
        village_code=prop.village_code, is_new=True, reported_by="verivali")]))
    return True


async def decide(reg: Registry, proposal_id: uuid.UUID, body: DecisionIn, p: Principal) -> dict:
    """A verifier's decision: accepted, the person enters the registry (if new) and reaches the
    programs asked for (services/registry/proposals.py: enrolled in the regency's, forwarded to
    an agency's); either way `registry.proposal_decided` goes out with the change."""
    async with reg.kit.unit_of_work() as uow:
        row = await store.proposal(uow.session, proposal_id, lock=True)
        if row is None or not p.covers(row.village_code):  # outside your area: as if missing (issue 15)
            raise HTTPException(404, detail={"error": f"no proposal {proposal_id} in your area"})
        if row.status != "proposed":
            raise HTTPException(409, detail={"error": f"proposal already {row.status} by {row.decided_by}"})
        created = body.decision == ProposalDecision.accepted and await _add_person(reg, uow, row)
        outcome = proposals.Outcome()
        if body.decision == ProposalDecision.accepted:
            period = domain.round_period(dt.date.today(), reg.cfg.verification_cadence)
            outcome = await proposals.accept(uow, row, period)
        await store.decide_proposal(uow.session, proposal_id, body.decision.value, body.reason, p.user)
        uow.emit(ProposalDecided(
            proposal_id=proposal_id, nik=row.nik, village_code=row.village_code, decision=body.decision,
            reason=body.reason, decided_by=p.user, programme_identifier=row.programme_identifier,
            case_id=row.case_id,
            programmes_requested=proposals.requested(row.programmes_requested or [], row.programme_identifier),
            enrolled_in=outcome.enrolled_in, forwarded_to=outcome.forwarded_to),
            event_id=proposals.decided_event_id(proposal_id))
    return {"proposal_id": str(proposal_id), "status": body.decision.value, "person_created": created,
            "reason": body.reason, "enrolled_in": outcome.enrolled_in, "forwarded_to": outcome.forwarded_to,
            "not_configured": outcome.not_configured}


# ---- verification rounds ----

class RoundIn(BaseModel):
    area: str = Field(default="", pattern=r"^(\d{2}(\d{2}(\d{2}(\d{4})?)?)?)?$",
                      description="region code prefix the round covers (empty: the whole regency)")


class ResultIn(BaseModel):
    nik: NIK
    result: VerificationResult
    note: Annotated[str, NoNul] = Field(default="", max_length=1000)


def _round_json(r: Any) -> dict:
    return {"round_id": str(r.round_id), "period": r.period, "cadence": r.cadence, "area": r.area,
            "status": r.status, "opened_by": r.opened_by, "opened_at": r.opened_at.isoformat(),
            "closed_by": r.closed_by, "closed_at": r.closed_at.isoformat() if r.closed_at else None}


async def _round(s: Any, round_id: uuid.UUID, lock: bool = False) -> Any:
    r = await store.verification_round(s, round_id, lock=lock)
    if r is None:
        raise HTTPException(404, detail={"error": f"no verification round {round_id}"})
    return r


async def open_round(reg: Registry, area: str, p: Principal) -> dict:
    cadence = reg.cfg.verification_cadence
    period = domain.round_period(dt.date.today(), cadence)
    rid = uuid.uuid4()
    async with reg.kit.unit_of_work() as uow:
        if not await store.add_round(uow.session, rid, period, cadence, area, p.user):
            raise HTTPException(409, detail={"error": f"a round for {period} (area {area or 'all'}) already exists"})
        uow.emit(VerificationRoundOpened(round_id=rid, period=period, cadence=cadence, area=area))
        row = await _round(uow.session, rid)
    return _round_json(row)


async def record_result(reg: Registry, round_id: uuid.UUID, body: ResultIn, p: Principal) -> dict:
    async with reg.kit.unit_of_work() as uow:
        rnd = await _round(uow.session, round_id)
        if rnd.status != "open":
            raise HTTPException(409, detail={"error": f"round {rnd.period} is closed"})
        person = await store.lock_person(uow.session, body.nik)
        if person is None or not p.covers(person.village_code):
            raise HTTPException(404, detail={"error": f"no person with NIK {body.nik} in your area"})
        if not person.village_code.startswith(rnd.area):
            raise HTTPException(400, detail={"error": f"NIK {body.nik} lives outside the round's area {rnd.area}"})
        active = await store.record_result(uow.session, round_id, rnd.period, body.nik, body.result.value,
                                           body.note, p.user)
        await life.after_verification(uow, body.nik, person.village_code, body.result, dt.date.today())
        uow.emit(VerificationRecorded(
            round_id=round_id, period=rnd.period, nik=body.nik, village_code=person.village_code,
            result=body.result, verified=body.result.counts_as_verified, programme_identifiers=active,
            recorded_by=p.user))
    return {"round_id": str(round_id), "nik": body.nik, "result": body.result.value,
            "verified": body.result.counts_as_verified, "programme_identifiers": active}


async def close_round(reg: Registry, round_id: uuid.UUID, p: Principal) -> dict:
    async with reg.kit.unit_of_work() as uow:
        rnd = await _round(uow.session, round_id, lock=True)
        if rnd.status != "open":
            raise HTTPException(409, detail={"error": f"round {rnd.period} is already closed"})
        verified, missing = await store.close_round(uow.session, round_id, rnd.area, VERIFIED, p.user)
        uow.emit(VerificationRoundClosed(round_id=round_id, period=rnd.period, verified=verified,
                                         not_verified=missing))
        row = await _round(uow.session, round_id)
    return _round_json(row) | {"verified": verified, "not_verified": missing}


async def unverified(reg: Registry, round_id: uuid.UUID, village_code: str | None, limit: int, offset: int,
                     p: Principal, due_only: bool = False) -> dict:
    async with reg.kit.sessions() as s:
        rnd = await _round(s, round_id)
        area = max(rnd.area, p.area, village_code or "", key=len)
        if not area.startswith(p.area) or not area.startswith(rnd.area):
            raise HTTPException(403, detail={"error": f"{area} is outside your area or the round's"})
        until = programs.round_end(rnd.period)
        if due_only:
            total, rows = await programs.due_page(s, round_id, area, until, limit, offset)
        else:
            total, rows = await store.unverified_page(s, round_id, area, VERIFIED, limit, offset)
        dues = await programs.due(s, [x.nik for x in rows])
    items = []
    for x in rows:
        on, progs = dues.get(x.nik, (None, []))
        items.append({"nik": x.nik, "name": x.name, "village_code": x.village_code, "result": x.result,
                      "verification_due_on": on.isoformat() if on else None, "due_programmes": progs,
                      "due": bool(progs) and (on is None or on <= until)})
    return {"round_id": str(round_id), "period": rnd.period, "total": total, "limit": limit, "offset": offset,
            "items": items}


# ---- HTTP ----

def router(reg: Registry) -> APIRouter:
    r = APIRouter(tags=["verivali"])

    @r.post("/proposals", status_code=201, summary="propose adding a person (usulan); waits as `proposed`")
    async def propose(body: ProposalIn, p: FrontOffice) -> ProposalAccepted:
        require_area(p, body.village_code)
        pid = uuid.uuid4()
        async with reg.kit.unit_of_work() as uow:
            await store.add_proposals(uow.session, [_proposal_row(body, pid, "http", p.user)])
        return ProposalAccepted(proposal_id=str(pid), status="proposed")

    @r.get("/proposals", summary="proposals, oldest first (default: those waiting for a decision)")
    async def list_proposals(
            p: Staff,
            status: Annotated[str | None, Query(description="proposed, accepted, rejected")] = "proposed",
            limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Offset = 0) -> ProposalPage:
        async with reg.kit.sessions() as s:
            total, rows = await store.proposals_page(s, status, p.area, limit, offset)
        return ProposalPage.model_validate({"total": total, "limit": limit, "offset": offset,
                                            "items": [_proposal_json(x) for x in rows]})

    @r.get("/proposals/{proposal_id}", summary="one proposal and its decision, if any")
    async def get_proposal(proposal_id: uuid.UUID, p: Staff) -> ProposalOut:
        async with reg.kit.sessions() as s:
            row = await store.proposal(s, proposal_id)
            forwards = await proposals.forwards(s, proposal_id) if row is not None else []
        if row is None or not p.covers(row.village_code):
            raise HTTPException(404, detail={"error": f"no proposal {proposal_id} in your area"})
        return ProposalOut.model_validate(_proposal_json(row) | {"forwards": forwards})

    @r.post("/proposals/{proposal_id}/decision", summary="a verifier accepts (the person enters the registry) "
                                                          "or rejects with a reason")
    async def post_decision(body: DecisionIn, proposal_id: Annotated[uuid.UUID, Path()], p: Verifier) -> DecisionOut:
        return DecisionOut.model_validate(await decide(reg, proposal_id, body, p))

    @r.post("/verification-rounds", status_code=201,
            summary="open a verification round for the current period (cadence: SINERGI_REGISTRY_VERIFICATION_CADENCE)")
    async def post_round(body: RoundIn, p: Verifier) -> RoundOut:
        require_area(p, body.area)
        return RoundOut.model_validate(await open_round(reg, body.area, p))

    @r.get("/verification-rounds", summary="verification rounds, newest first")
    async def list_rounds(p: Staff) -> list[RoundOut]:
        async with reg.kit.sessions() as s:
            rows = await store.latest_rounds(s)
        return [RoundOut.model_validate(_round_json(x)) for x in rows]

    @r.post("/verification-rounds/{round_id}/results", summary="record one person's verification result")
    async def post_result(body: ResultIn, round_id: Annotated[uuid.UUID, Path()], p: FieldStaff) -> ResultOut:
        return ResultOut.model_validate(await record_result(reg, round_id, body, p))

    @r.post("/verification-rounds/{round_id}/close", summary="close a round; counts verified and not verified")
    async def post_close(round_id: Annotated[uuid.UUID, Path()], p: Verifier) -> ClosedRoundOut:
        return ClosedRoundOut.model_validate(await close_round(reg, round_id, p))

    @r.get("/verification-rounds/{round_id}/unverified",
           summary="people in the round's area not (yet) verified in it, with the result recorded if any")
    async def get_unverified(round_id: Annotated[uuid.UUID, Path()], p: Staff,
                             village_code: Annotated[str | None, Query()] = None,
                             due_only: Annotated[bool, Query(description="only people due for verification by the "
                                                                         "round's last day (expired, expiring, or "
                                                                         "never verified, in a program that "
                                                                         "requires one)")] = False,
                             limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                             offset: Offset = 0) -> UnverifiedPage:
        return UnverifiedPage.model_validate(await unverified(reg, round_id, village_code, limit, offset, p,
                                                             due_only))

    return r


def register(reg: Registry) -> None:
    names_ = reg.kit.names
    reg.kit.consume(ConsumerSpec(
        durable=CONSUMER, stream=names_.stream("INTAKE"), subject=names_.event(ProposalSubmitted.event_type),
        decode=decode_proposal, handle=take_proposals, batch=100))
