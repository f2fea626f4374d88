"""Registry subscribers: agency enrolment reports in; people, enrolments, receipts and
registry events out (through the outbox, in the same transaction)."""
from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from faststream import AckPolicy, Context
from faststream.nats import JStream, PullSub
from nats.aio.msg import Msg
from sqlalchemy.dialects.postgresql import insert as pg_insert

from contracts.agency import Receipt, ReceiptStatus, StatusReason
from contracts.envelope import utcnow
from contracts.registry import EnrolmentChanged, PersonRegistered
from services.kit import logging as klog
from services.kit.outbox import add, claim, deadletter_row, event_row, message_row
from services.kit.runtime import ServiceRuntime
from services.registry import domain, store

log = klog.get(__name__)
CONSUMER = "registry-enrolments-v1"
SERVICE = "registry"


def _message_key(m: Msg, raw: dict) -> str:
    mid = raw.get("message_id") if isinstance(raw.get("message_id"), str) and raw.get("message_id") else None
    if mid is None and m.headers:
        mid = m.headers.get("Nats-Msg-Id")
    return mid or f"seq-{m.metadata.sequence.stream}"


def _receipt(program: str, message_id: str, raw: dict, status: ReceiptStatus, problems=(), corr=None) -> Receipt:
    ref = raw.get("reference_id") if isinstance(raw.get("reference_id"), str) else ""
    return Receipt(message_id=message_id, reference_id=ref, programme_identifier=program, status=status,
                   status_reasons=[StatusReason(status_reason_code=f"rjct.{p.code}", status_reason_message=p.message,
                                                field=p.field) for p in problems],
                   timestamp=utcnow(), correlation_id=corr)


async def ingest(rt: ServiceRuntime, msgs: list[Msg]) -> dict[str, int]:
    names = rt.names
    parsed = []
    for m in msgs:
        program = names.bare(m.subject).split(".")[1]
        checked, raw, problems = domain.check_report(m.data, program)
        parsed.append((m, program, _message_key(m, raw), checked, raw, problems))

    out: list[dict] = []
    counts = {"accepted": 0, "rejected": 0, "duplicate": 0}
    async with rt.sessions.begin() as s:
        fresh = await claim(s, rt.inbox, CONSUMER, [f"{p[1]}/{p[2]}" for p in parsed])
        seen: set[str] = set()
        valid, receipts_rows, duplicates = [], [], []
        for m, program, mid, checked, raw, problems in parsed:
            key = f"{program}/{mid}"
            if key not in fresh or key in seen:
                duplicates.append((program, mid))
                continue
            seen.add(key)
            if problems:
                rc = _receipt(program, mid, raw, ReceiptStatus.rjct, problems)
                out.append(deadletter_row(names, SERVICE, m.subject, m.data, rc.status_reasons[0].status_reason_code,
                                          "; ".join(p.message for p in problems), mid))
                receipts_rows.append(rc)
                counts["rejected"] += 1
            else:
                valid.append(checked)
        events_by_key = await _apply(rt, s, valid, out)
        for c in valid:
            corr = events_by_key.get((c.nik, c.program))
            receipts_rows.append(_receipt(c.program, c.report.message_id, c.report.model_dump(), ReceiptStatus.succ,
                                          corr=str(corr) if corr else None))
            counts["accepted"] += 1
        if receipts_rows:
            await s.execute(pg_insert(store.receipts).on_conflict_do_nothing(), [
                {"programme_identifier": r.programme_identifier, "message_id": r.message_id,
                 "receipt": r.model_dump(mode="json")} for r in receipts_rows])
            out += [message_row(names.receipts(r.programme_identifier), r,
                                uuid.uuid5(uuid.NAMESPACE_URL, f"receipt/{r.programme_identifier}/{r.message_id}"))
                    for r in receipts_rows]
        if duplicates:
            # the same message again gets the same answer (as a new message: the first may be long gone)
            stored = await store.stored_receipts(s, duplicates)
            # one answer per copy, even for copies within one batch
            out += [message_row(names.receipts(key[0]), stored[key]) for key in duplicates if key in stored]
            counts["duplicate"] = len(duplicates)
        await add(s, rt.outbox, out)
    rt.kick()
    log.info("registry.ingested", **counts)
    return counts


async def _apply(rt: ServiceRuntime, s, valid: list[domain.CheckedReport], out: list[dict]) -> dict[tuple[str, str], uuid.UUID]:
    """Write people, households and enrolments for accepted reports; queue their events."""
    if not valid:
        return {}
    names = rt.names
    win = domain.winners(valid)
    niks = [k[0] for k in win]
    await store.lock_people(s, niks)
    existing = await store.fetch_people(s, niks)
    current = await store.fetch_enrolments(s, list(win))

    latest_person: dict[str, domain.CheckedReport] = {}
    for r in valid:
        if r.nik not in latest_person or r.order > latest_person[r.nik].order:
            latest_person[r.nik] = r
    people_rows, household_rows = [], {}
    for nik, r in latest_person.items():
        rep = r.report
        row = {"nik": nik, "no_kk": rep.no_kk, "name": rep.name, "sex": rep.sex, "birth_date": r.birth_date,
               "village_code": r.village_code, "address": rep.address}
        old = existing.get(nik)
        changed = old is None or any(getattr(old, k) != v for k, v in row.items() if k != "address")
        people_rows.append(row)
        household_rows[rep.no_kk] = {"no_kk": rep.no_kk, "village_code": r.village_code,
                                     "head_nik": nik if rep.is_head_of_household else None}
        if changed:
            out.append(event_row(names, PersonRegistered(
                nik=nik, no_kk=rep.no_kk, name=rep.name, sex=rep.sex, birth_date=r.birth_date,
                village_code=r.village_code, is_new=old is None), SERVICE))
    await store.upsert_people(s, people_rows)
    await store.upsert_households(s, list(household_rows.values()))

    history = [{"nik": r.nik, "programme_identifier": r.program, "enrolment_status": r.report.enrolment_status,
                "status_change_date": r.status_change_date, "message_id": r.report.message_id,
                "reference_id": r.report.reference_id, "reported_by": r.program} for r in valid]
    await s.execute(sa.insert(store.enrolment_history), history)

    enrol_rows, event_ids = [], {}
    for key, r in win.items():
        cur = current.get(key)
        if not domain.supersedes(r, cur.status_change_date if cur else None, cur.message_id if cur else None):
            continue
        enrol_rows.append({"nik": r.nik, "programme_identifier": r.program,
                           "enrolment_status": r.report.enrolment_status, "status_change_date": r.status_change_date,
                           "message_id": r.report.message_id, "reference_id": r.report.reference_id,
                           "reported_by": r.program})
        row = event_row(names, EnrolmentChanged(
            nik=r.nik, no_kk=r.report.no_kk, village_code=r.village_code, birth_date=r.birth_date,
            programme_identifier=r.program, enrolment_status=r.report.enrolment_status,
            previous_status=cur.enrolment_status if cur else None, status_change_date=r.status_change_date,
            reported_by=r.program, reference_id=r.report.reference_id), SERVICE)
        out.append(row)
        event_ids[key] = row["id"]
    await store.upsert_enrolments(s, enrol_rows)
    return event_ids


def register(rt: ServiceRuntime) -> None:
    names = rt.names

    @rt.broker.subscriber(
        names.enrolments("*"), stream=JStream(names.stream("AGENCY_ENROLMENTS"), declare=False),
        durable=CONSUMER, pull_sub=PullSub(batch_size=500, timeout=0.1, batch=True),
        ack_policy=AckPolicy.NACK_ON_ERROR)
    async def on_enrolments(body: list[Any], msg: Any = Context("message")) -> None:
        # raw nats messages: every bad one becomes a rejected receipt, never a failed batch
        await ingest(rt, msg.raw_message)
