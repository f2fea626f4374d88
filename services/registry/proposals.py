"""Proposals (usulan) to their end (issue 17).

A proposal names the programs asked for. When a verifier accepts it (verivali.decide):

- each program the regency owns enrols the person at once: an ordinary enrolment
  (registry.enrolments_changed, `reported_by: usulan`, `reference_id`: the proposal id), so
  disbursement and reporting see it like any agency's;
- each program an outside agency owns gets the proposal on `agency.<program>.proposals`
  (contracts.agency.ProposalToAgency); the agency answers with an ordinary enrolment report.
  The registry matches that report by NIK and program (not by a reference: agencies keep
  their own reference ids, and the first report for that NIK and program after the forward is
  the agency's decision), and announces registry.proposal_fulfilled with its status;
- a program with no settings in the registry (programs.py) is neither: the answer names it.

Accepting counts as a verification (the verifier saw the household): the person's
verification status becomes `verified` for the current round period.

Every message goes through the unit of work's outbox, with uuid5 ids: the same decision or
fulfilment gives the same ids.
"""
from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from nats.aio.msg import Msg
from sqlalchemy.dialects.postgresql import insert

from contracts.agency import Identifier, ProposalToAgency
from contracts.registry import EnrolmentChange, EnrolmentsChanged, ProposalFulfilled, VerificationResult
from services.kit import logging as klog
from services.kit.consumer import ConsumerSpec, Delivery
from services.kit.decode import Limits, Rejection, load_json
from services.kit.uow import UnitOfWork
from services.registry import programs, store

if TYPE_CHECKING:
    from services.registry.app import Registry

log = klog.get(__name__)
REPORTED_BY = "usulan"
FULFILMENT_CONSUMER = "registry-proposal-fulfilment-v1"
PROGRAM_CODE = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
MAX_REQUESTED = 20


def requested(programmes_requested: Sequence[str], programme_identifier: str | None) -> list[str]:
    """The programs a proposal asks for: the list, plus the older single field; codes that
    cannot be a program are dropped (they could never be enrolled or forwarded)."""
    out: list[str] = []
    for code in [*programmes_requested, *([programme_identifier] if programme_identifier else [])]:
        if PROGRAM_CODE.match(code) and code not in out:
            out.append(code)
    return out[:MAX_REQUESTED]


def _id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, "sinergi/proposal/" + "/".join(str(p) for p in parts))


def decided_event_id(proposal_id: uuid.UUID) -> uuid.UUID:
    return _id(proposal_id, "decided")


@dataclass
class Outcome:
    enrolled_in: list[str] = field(default_factory=list)
    forwarded_to: list[str] = field(default_factory=list)
    not_configured: list[str] = field(default_factory=list)


async def accept(uow: UnitOfWork, prop: Any, period: str, today: dt.date | None = None) -> Outcome:
    """The accepted proposal `prop` (its row) reaches every program it asked for. The caller
    holds the proposal's row; the person exists (created or found)."""
    s = uow.session
    today = today or dt.date.today()
    codes = requested(prop.programmes_requested or [], prop.programme_identifier)
    settings = await programs.of(s, codes)
    person = await store.lock_person(s, prop.nik)  # ingest changes a person only under this lock
    assert person is not None
    await s.execute(sa.update(store.people).where(store.people.c.nik == prop.nik).values(
        verification_status=VerificationResult.verified.value, verification_period=period))
    current = await store.fetch_enrolments(s, [prop.nik])
    out = Outcome()
    changes: list[EnrolmentChange] = []
    for code in codes:
        setting = settings.get(code)
        cur = current.get((prop.nik, code))
        if setting is None:
            out.not_configured.append(code)
        elif cur is not None and cur.enrolment_status == "active":
            # already enrolled (an agency may have enrolled them meanwhile): nothing to change or ask
            out.enrolled_in.append(code)
        elif setting.owner == "regency":
            out.enrolled_in.append(code)
            changes.append(await _enrol(uow, prop, person, code, cur, period, today))
        else:
            out.forwarded_to.append(code)
            await _forward(uow, prop, person, code, today)
    if changes:
        uow.emit(EnrolmentsChanged(changes=changes), event_id=_id(prop.proposal_id, "enrolled"))
    log.info("registry.proposal_accepted", enrolled=len(out.enrolled_in), forwarded=len(out.forwarded_to),
             not_configured=len(out.not_configured))
    return out


async def _enrol(uow: UnitOfWork, prop: Any, person: Any, code: str, cur: Any, period: str,
                 today: dt.date) -> EnrolmentChange:
    s = uow.session
    message_id = f"usulan/{prop.proposal_id}"
    row = {"nik": prop.nik, "programme_identifier": code, "enrolment_status": "active",
           "status_change_date": today, "message_id": message_id, "reference_id": str(prop.proposal_id),
           "reported_by": REPORTED_BY}
    await s.execute(insert(store.enrolment_history).values(row))
    stmt = insert(store.enrolments).values(row)
    await s.execute(stmt.on_conflict_do_update(index_elements=["nik", "programme_identifier"], set_={
        k: stmt.excluded[k] for k in ("enrolment_status", "status_change_date", "message_id", "reference_id",
                                      "reported_by")} | {"updated_at": sa.func.now()}))
    return EnrolmentChange(
        nik=prop.nik, no_kk=person.no_kk, village_code=person.village_code, birth_date=person.birth_date,
        programme_identifier=code, enrolment_status="active",
        previous_status=cur.enrolment_status if cur is not None else None, status_change_date=today,
        reported_by=REPORTED_BY, reference_id=str(prop.proposal_id),
        verification_status=VerificationResult.verified, verification_period=period)


async def _forward(uow: UnitOfWork, prop: Any, person: Any, code: str, today: dt.date) -> None:
    """The agency gets the person as the registry knows them (`person`, locked): for someone
    already registered, the proposal's spelling is not the registry's."""
    await uow.session.execute(insert(programs.proposal_forwards).values(
        proposal_id=prop.proposal_id, programme_identifier=code, nik=prop.nik, village_code=person.village_code,
        case_id=prop.case_id).on_conflict_do_nothing())
    mid = _id(prop.proposal_id, "forward", code)
    body = ProposalToAgency(
        message_id=str(mid), reference_id=str(prop.proposal_id), programme_identifier=code,
        identifier=[Identifier(identifier_type="NIK", identifier_value=prop.nik),
                    Identifier(identifier_type="KK", identifier_value=person.no_kk)],
        name=person.name, sex=person.sex, birth_date=person.birth_date, village_code=person.village_code,
        address=person.address, registration_date=today, timestamp=dt.datetime.now(dt.UTC))
    uow.send(uow.names.agency_proposals(code), body, msg_id=mid)


async def forwards(session: Any, proposal_id: uuid.UUID) -> list[dict[str, Any]]:
    """The programs this proposal was forwarded to, with the agency's answer so far."""
    f = programs.proposal_forwards
    rows = (await session.execute(sa.select(f).where(f.c.proposal_id == proposal_id)
                                  .order_by(f.c.programme_identifier))).all()
    return [{"programme_identifier": r.programme_identifier, "forwarded_at": r.forwarded_at.isoformat(),
             "fulfilled_at": r.fulfilled_at.isoformat() if r.fulfilled_at else None,
             "enrolment_status": r.enrolment_status} for r in rows]


# ---- the agency's answer closes the loop ----

# an enrolments_changed event holds at most 500 changes of ~600 bytes
CHANGES_LIMITS = Limits(max_bytes=1024 * 1024)


def decode_changes(msg: Msg) -> list[tuple[str, str, str]]:
    """(nik, program, enrolment_status) of each change an agency reported (reported_by is the
    program itself), read without building the pydantic model: only three fields matter here
    and bulk ingest sends thousands of these events."""
    raw = load_json(msg.data, CHANGES_LIMITS)
    try:
        changes = raw["data"]["changes"]
        return [(c["nik"], c["programme_identifier"], c["enrolment_status"]) for c in changes
                if c.get("reported_by") == c["programme_identifier"]]
    except (KeyError, TypeError) as exc:
        raise Rejection("rjct.event.invalid", f"not an enrolments_changed event: {exc!r}"[:200]) from None


async def fulfil(uow: UnitOfWork, batch: list[Delivery[list[tuple[str, str, str]]]]) -> None:
    """Forwarded proposals answered by these enrolment changes: each is marked and announced once."""
    latest: dict[tuple[str, str], str] = {}
    for d in batch:
        for nik, program, status in d.value or []:
            latest[(nik, program)] = status
    if not latest:
        return
    f = programs.proposal_forwards
    s = uow.session
    rows = (await s.execute(sa.select(f).where(f.c.fulfilled_at.is_(None), sa.tuple_(f.c.nik, f.c.programme_identifier)
                                                                          .in_(list(latest)))
                            .order_by(f.c.proposal_id, f.c.programme_identifier).with_for_update())).all()
    for r in rows:
        status = latest[(r.nik, r.programme_identifier)]
        await s.execute(sa.update(f).where(f.c.proposal_id == r.proposal_id,
                                           f.c.programme_identifier == r.programme_identifier)
                        .values(fulfilled_at=sa.func.now(), enrolment_status=status))
        uow.emit(ProposalFulfilled(proposal_id=r.proposal_id, case_id=r.case_id, nik=r.nik,
                                   village_code=r.village_code, programme_identifier=r.programme_identifier,
                                   enrolment_status=status),
                 event_id=_id(r.proposal_id, "fulfilled", r.programme_identifier))
    if rows:
        log.info("registry.proposals_fulfilled", count=len(rows))


def register(reg: Registry) -> None:
    names_ = reg.kit.names
    reg.kit.consume(ConsumerSpec(
        durable=FULFILMENT_CONSUMER, stream=names_.stream("REGISTRY"),
        subject=names_.event(EnrolmentsChanged.event_type), decode=decode_changes, handle=fulfil, batch=200))

