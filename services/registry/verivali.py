"""Verification and validation (verivali): proposals to add a person (usulan) wait as
`proposed` until a verifier decides; verification rounds record each person's result.

Proposals arrive from intake (`intake.proposal_submitted` on the INTAKE stream) and from staff
over HTTP. Every decision and result is a registry event, written through the outbox.
"""
from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from nats.aio.msg import Msg
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.dialects.postgresql import insert

from contracts.agency import Sex
from contracts.catalog import EVENTS
from contracts.intake import ProposalSubmitted
from contracts.registry import (PeopleRegistered, PersonIdentity, ProposalDecided, ProposalDecision,
                                VerificationRecorded, VerificationResult, VerificationRoundClosed,
                                VerificationRoundOpened)
from contracts.values import NIK, NoKK, VillageCode, nik_consistency, parse_nik
from services.kit import logging as klog
from services.kit.auth import Principal, Role, require, require_area
from services.kit.outbox import add, claim, deadletter_row, decode_envelope, event_row
from services.kit.runtime import ServiceRuntime
from services.registry import domain, names, store
from services.registry.consumer import batch_consumer

log = klog.get(__name__)
CONSUMER = "registry-proposals-v1"
SERVICE = "registry"
VERIFIED = [r.value for r in VerificationResult if r.counts_as_verified]

front_office = require(Role.village_office, Role.kecamatan, Role.kabupaten, Role.verifier)
verifier = require(Role.verifier)
field_staff = require(Role.verifier, Role.companion)
staff = require()


# ---- proposals ----

class ProposalIn(BaseModel):
    """A person proposed for the registry by staff (the same fields intake sends)."""

    nik: NIK
    no_kk: NoKK
    name: str = Field(min_length=1, max_length=200)
    sex: Sex
    birth_date: dt.date
    village_code: VillageCode
    address: str = Field(default="", max_length=500)
    programme_identifier: str | None = Field(default=None, description="program asked for, if any")
    case_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ProposalIn":
        parts, _ = parse_nik(self.nik)
        bad = nik_consistency(parts, self.birth_date, self.sex) if parts else []
        if bad:
            raise ValueError("; ".join(p.message for p in bad))
        return self


class DecisionIn(BaseModel):
    decision: ProposalDecision
    reason: str = Field(default="", max_length=1000, description="required when rejecting")

    @model_validator(mode="after")
    def _reason(self) -> "DecisionIn":
        if self.decision == ProposalDecision.rejected and not self.reason.strip():
            raise ValueError("a rejection needs a reason")
        return self


def _proposal_row(p: ProposalIn | ProposalSubmitted, proposal_id: uuid.UUID, source: str, by: str) -> dict:
    return {"proposal_id": proposal_id, "source": source, "nik": p.nik, "no_kk": p.no_kk, "name": p.name,
            "sex": str(p.sex), "birth_date": p.birth_date, "village_code": p.village_code, "address": p.address,
            "programme_identifier": p.programme_identifier, "submitted_by": by, "case_id": p.case_id}


def _proposal_json(r) -> dict:
    return {"proposal_id": str(r.proposal_id), "source": r.source, "nik": r.nik, "no_kk": r.no_kk, "name": r.name,
            "sex": r.sex, "birth_date": r.birth_date.isoformat(), "village_code": r.village_code,
            "address": r.address, "programme_identifier": r.programme_identifier, "submitted_by": r.submitted_by,
            "case_id": str(r.case_id) if r.case_id else None, "status": r.status, "reason": r.reason,
            "decided_by": r.decided_by, "decided_at": r.decided_at.isoformat() if r.decided_at else None,
            "created_at": r.created_at.isoformat()}


async def consume_proposals(rt: ServiceRuntime, msgs: list[Msg]) -> None:
    """intake.proposal_submitted -> a `proposed` row, once per event (inbox) and per proposal_id."""
    decoded, bad = [], []
    for m in msgs:
        try:
            env = decode_envelope(m.data, EVENTS)
            if not isinstance(env.data, ProposalSubmitted):
                raise ValueError(f"expected intake.proposal_submitted, got {env.event_type}")
            decoded.append(env)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            bad.append(deadletter_row(rt.names, SERVICE, m.subject, m.data, "rjct.event.invalid", str(exc)[:2000],
                                      (m.headers or {}).get("Nats-Msg-Id")))
    async with rt.sessions.begin() as s:
        fresh = await claim(s, rt.inbox, CONSUMER, [str(e.event_id) for e in decoded])
        rows = [_proposal_row(e.data, e.data.proposal_id, "intake", e.data.submitted_by)
                for e in decoded if str(e.event_id) in fresh]
        if rows:
            await s.execute(insert(store.proposals).on_conflict_do_nothing(), rows)
        await add(s, rt.outbox, bad)
    if bad:
        log.warning("registry.proposals_dead_lettered", count=len(bad))
        rt.kick()


async def _add_person(rt: ServiceRuntime, s, prop, out: list[dict]) -> bool:
    """Create the proposed person if the NIK is new; True if created."""
    key = names.normalise(prop.name)
    row = {"nik": prop.nik, "no_kk": prop.no_kk, "name": prop.name, "sex": prop.sex, "birth_date": prop.birth_date,
           "village_code": prop.village_code, "address": prop.address, "name_key": key, "reported_by": "verivali"}
    # the insert is the lock: a concurrent ingest inserting this NIK is waited for, and a person
    # who exists is never created twice
    created = (await s.execute(insert(store.people).values(row).on_conflict_do_nothing()
                               .returning(store.people.c.nik))).first()
    if not created:
        return False
    await s.execute(sa.insert(store.person_history).values(
        {k: row[k] for k in ("nik", "no_kk", "name", "sex", "birth_date", "village_code", "address", "reported_by")}
        | {"message_id": f"proposal/{prop.proposal_id}"}))
    await store.upsert_households(s, [{"no_kk": prop.no_kk, "village_code": prop.village_code, "head_nik": None}])
    if not rt.name_search_trgm:
        await store.replace_name_trigrams(s, [(prop.nik, prop.village_code, names.trigrams(key))])
    out.append(event_row(rt.names, PeopleRegistered(people=[PersonIdentity(
        nik=prop.nik, no_kk=prop.no_kk, name=prop.name, sex=prop.sex, birth_date=prop.birth_date,
        village_code=prop.village_code, is_new=True, reported_by="verivali")]), SERVICE))
    return True


# ---- verification rounds ----

class RoundIn(BaseModel):
    area: str = Field(default="", pattern=r"^(\d{2}(\d{2}(\d{2}(\d{4})?)?)?)?$",
                      description="region code prefix the round covers (empty: the whole regency)")


class ResultIn(BaseModel):
    nik: NIK
    result: VerificationResult
    note: str = Field(default="", max_length=1000)


def _round_json(r) -> dict:
    return {"round_id": str(r.round_id), "period": r.period, "cadence": r.cadence, "area": r.area,
            "status": r.status, "opened_by": r.opened_by, "opened_at": r.opened_at.isoformat(),
            "closed_by": r.closed_by, "closed_at": r.closed_at.isoformat() if r.closed_at else None}


async def _round(s, round_id: uuid.UUID, lock: bool = False):
    q = sa.select(store.verification_rounds).where(store.verification_rounds.c.round_id == round_id)
    r = (await s.execute(q.with_for_update() if lock else q)).first()
    if r is None:
        raise HTTPException(404, detail={"error": f"no verification round {round_id}"})
    return r


def _not_verified(round_id: uuid.UUID, area: str):
    """People in the round's area without a result that counts as verified."""
    p, vr = store.people, store.verification_results
    done = sa.select(vr.c.nik).where(vr.c.round_id == round_id, vr.c.result.in_(VERIFIED))
    return sa.select(p).where(p.c.village_code.startswith(area), p.c.nik.not_in(done))


def router(rt: ServiceRuntime) -> APIRouter:
    r = APIRouter(tags=["verivali"])

    @r.post("/proposals", status_code=201, summary="propose adding a person (usulan); waits as `proposed`")
    async def propose(body: ProposalIn, p: Principal = Depends(front_office)) -> dict:
        require_area(p, body.village_code)
        pid = uuid.uuid4()
        async with rt.sessions.begin() as s:
            await s.execute(sa.insert(store.proposals).values(_proposal_row(body, pid, "http", p.user)))
        return {"proposal_id": str(pid), "status": "proposed"}

    @r.get("/proposals", summary="proposals, oldest first (default: those waiting for a decision)")
    async def list_proposals(status: str | None = Query("proposed", description="proposed, accepted, rejected"),
                             limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
                             p: Principal = Depends(staff)) -> dict:
        t = store.proposals
        q = sa.select(t).where(t.c.village_code.startswith(p.area))
        if status:
            q = q.where(t.c.status == status)
        async with rt.sessions() as s:
            total = (await s.execute(sa.select(sa.func.count()).select_from(q.subquery()))).scalar()
            rows = (await s.execute(q.order_by(t.c.created_at, t.c.proposal_id).limit(limit).offset(offset))).all()
        return {"total": total, "limit": limit, "offset": offset, "items": [_proposal_json(x) for x in rows]}

    @r.get("/proposals/{proposal_id}")
    async def get_proposal(proposal_id: uuid.UUID, p: Principal = Depends(staff)) -> dict:
        async with rt.sessions() as s:
            row = (await s.execute(sa.select(store.proposals)
                                   .where(store.proposals.c.proposal_id == proposal_id))).first()
        if row is None:
            raise HTTPException(404, detail={"error": f"no proposal {proposal_id}"})
        require_area(p, row.village_code)
        return _proposal_json(row)

    @r.post("/proposals/{proposal_id}/decision", summary="a verifier accepts (the person enters the registry) "
                                                          "or rejects with a reason")
    async def decide(body: DecisionIn, proposal_id: uuid.UUID = Path(), p: Principal = Depends(verifier)) -> dict:
        out: list[dict] = []
        async with rt.sessions.begin() as s:
            t = store.proposals
            row = (await s.execute(sa.select(t).where(t.c.proposal_id == proposal_id).with_for_update())).first()
            if row is None:
                raise HTTPException(404, detail={"error": f"no proposal {proposal_id}"})
            require_area(p, row.village_code)
            if row.status != "proposed":
                raise HTTPException(409, detail={"error": f"proposal already {row.status} by {row.decided_by}"})
            created = False
            if body.decision == ProposalDecision.accepted:
                created = await _add_person(rt, s, row, out)
            await s.execute(sa.update(t).where(t.c.proposal_id == proposal_id).values(
                status=body.decision.value, reason=body.reason, decided_by=p.user, decided_at=sa.func.now()))
            out.append(event_row(rt.names, ProposalDecided(
                proposal_id=proposal_id, nik=row.nik, village_code=row.village_code, decision=body.decision,
                reason=body.reason, decided_by=p.user, programme_identifier=row.programme_identifier,
                case_id=row.case_id), SERVICE))
            await add(s, rt.outbox, out)
        rt.kick()
        return {"proposal_id": str(proposal_id), "status": body.decision.value, "person_created": created,
                "reason": body.reason}

    @r.post("/verification-rounds", status_code=201,
            summary="open a verification round for the current period (cadence: SINERGI_REGISTRY_VERIFICATION_CADENCE)")
    async def open_round(body: RoundIn, p: Principal = Depends(verifier)) -> dict:
        require_area(p, body.area)
        cadence = rt.registry_settings.verification_cadence
        period = domain.round_period(dt.date.today(), cadence)
        rid = uuid.uuid4()
        async with rt.sessions.begin() as s:
            t = store.verification_rounds
            done = (await s.execute(insert(t).values(round_id=rid, period=period, cadence=cadence, area=body.area,
                                                     opened_by=p.user)
                                    .on_conflict_do_nothing(constraint="verification_round_once")
                                    .returning(t.c.round_id))).first()
            if not done:
                raise HTTPException(409, detail={"error": f"a round for {period} (area {body.area or 'all'}) "
                                                          "already exists"})
            await add(s, rt.outbox, [event_row(rt.names, VerificationRoundOpened(
                round_id=rid, period=period, cadence=cadence, area=body.area), SERVICE)])
            row = await _round(s, rid)
        rt.kick()
        return _round_json(row)

    @r.get("/verification-rounds", summary="verification rounds, newest first")
    async def list_rounds(p: Principal = Depends(staff)) -> list[dict]:
        t = store.verification_rounds
        async with rt.sessions() as s:
            rows = (await s.execute(sa.select(t).order_by(t.c.opened_at.desc()).limit(100))).all()
        return [_round_json(x) for x in rows]

    @r.post("/verification-rounds/{round_id}/results", summary="record one person's verification result")
    async def record(body: ResultIn, round_id: uuid.UUID = Path(), p: Principal = Depends(field_staff)) -> dict:
        out: list[dict] = []
        async with rt.sessions.begin() as s:
            rnd = await _round(s, round_id, lock=False)
            if rnd.status != "open":
                raise HTTPException(409, detail={"error": f"round {rnd.period} is closed"})
            person = (await s.execute(sa.select(store.people).where(store.people.c.nik == body.nik)
                                      .with_for_update())).first()
            if person is None:
                raise HTTPException(404, detail={"error": f"no person with NIK {body.nik} in the registry"})
            if not person.village_code.startswith(rnd.area):
                raise HTTPException(400, detail={"error": f"NIK {body.nik} lives outside the round's area {rnd.area}"})
            require_area(p, person.village_code)
            vr = store.verification_results
            stmt = insert(vr).values(round_id=round_id, nik=body.nik, result=body.result.value, note=body.note,
                                     recorded_by=p.user)
            await s.execute(stmt.on_conflict_do_update(index_elements=["round_id", "nik"], set_={
                "result": stmt.excluded.result, "note": stmt.excluded.note, "recorded_by": stmt.excluded.recorded_by,
                "recorded_at": sa.func.now()}))
            await s.execute(sa.update(store.people).where(store.people.c.nik == body.nik).values(
                verification_status=body.result.value, verification_period=rnd.period))
            active = (await s.execute(sa.select(store.enrolments.c.programme_identifier).where(
                store.enrolments.c.nik == body.nik, store.enrolments.c.enrolment_status == "active")
                .order_by(store.enrolments.c.programme_identifier))).scalars().all()
            out.append(event_row(rt.names, VerificationRecorded(
                round_id=round_id, period=rnd.period, nik=body.nik, village_code=person.village_code,
                result=body.result, verified=body.result.counts_as_verified, programme_identifiers=list(active),
                recorded_by=p.user), SERVICE))
            await add(s, rt.outbox, out)
        rt.kick()
        return {"round_id": str(round_id), "nik": body.nik, "result": body.result.value,
                "verified": body.result.counts_as_verified, "programme_identifiers": list(active)}

    @r.post("/verification-rounds/{round_id}/close", summary="close a round; counts verified and not verified")
    async def close(round_id: uuid.UUID = Path(), p: Principal = Depends(verifier)) -> dict:
        async with rt.sessions.begin() as s:
            rnd = await _round(s, round_id, lock=True)
            if rnd.status != "open":
                raise HTTPException(409, detail={"error": f"round {rnd.period} is already closed"})
            missing = (await s.execute(sa.select(sa.func.count()).select_from(
                _not_verified(round_id, rnd.area).subquery()))).scalar()
            vr = store.verification_results
            verified = (await s.execute(sa.select(sa.func.count()).select_from(vr).where(
                vr.c.round_id == round_id, vr.c.result.in_(VERIFIED)))).scalar()
            t = store.verification_rounds
            await s.execute(sa.update(t).where(t.c.round_id == round_id).values(
                status="closed", closed_by=p.user, closed_at=sa.func.now()))
            await add(s, rt.outbox, [event_row(rt.names, VerificationRoundClosed(
                round_id=round_id, period=rnd.period, verified=verified, not_verified=missing), SERVICE)])
            row = await _round(s, round_id)
        rt.kick()
        return _round_json(row) | {"verified": verified, "not_verified": missing}

    @r.get("/verification-rounds/{round_id}/unverified",
           summary="people in the round's area not (yet) verified in it, with the result recorded if any")
    async def unverified(round_id: uuid.UUID = Path(), village_code: str | None = Query(None),
                         limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                         p: Principal = Depends(staff)) -> dict:
        async with rt.sessions() as s:
            rnd = await _round(s, round_id)
            area = max(rnd.area, p.area, village_code or "", key=len)
            if not area.startswith(p.area) or not area.startswith(rnd.area):
                raise HTTPException(403, detail={"error": f"{area} is outside your area or the round's"})
            q = _not_verified(round_id, area).subquery()
            total = (await s.execute(sa.select(sa.func.count()).select_from(q))).scalar()
            vr = store.verification_results
            rows = (await s.execute(
                sa.select(q.c.nik, q.c.name, q.c.village_code, vr.c.result)
                .select_from(q.outerjoin(vr, sa.and_(vr.c.nik == q.c.nik, vr.c.round_id == round_id)))
                .order_by(q.c.village_code, q.c.nik).limit(limit).offset(offset))).all()
        return {"round_id": str(round_id), "period": rnd.period, "total": total, "limit": limit, "offset": offset,
                "items": [{"nik": x.nik, "name": x.name, "village_code": x.village_code, "result": x.result}
                          for x in rows]}

    return r


def register(rt: ServiceRuntime) -> None:
    async def on_proposals(msgs: list[Msg]) -> None:
        await consume_proposals(rt, msgs)

    batch_consumer(rt, subject=rt.names.event(ProposalSubmitted.event_type), stream=rt.names.stream("INTAKE"),
                   durable=CONSUMER, batch=100, timeout=0.2, handler=on_proposals)
