"""Registry subscribers: agency enrolment reports in; people, enrolments, receipts and
registry events out (through the outbox, in the same transaction)."""
from __future__ import annotations

import datetime as dt
import json
import uuid

from nats.aio.msg import Msg

from contracts.agency import ReceiptStatus
from contracts.registry import ConflictFlagged, EnrolmentChanged, PersonRegistered
from services.kit import logging as klog
from services.kit.outbox import deadletter_row, event_row, message_row
from services.kit.runtime import ServiceRuntime
from services.registry import domain, names, store
from services.registry.consumer import batch_consumer

log = klog.get(__name__)
CONSUMER = "registry-enrolments-v1"
SERVICE = "registry"


def _message_key(m: Msg, raw: dict) -> str:
    mid = raw.get("message_id") if isinstance(raw.get("message_id"), str) and raw.get("message_id") else None
    if mid is None and m.headers:
        mid = m.headers.get("Nats-Msg-Id")
    return mid or f"seq-{m.metadata.sequence.stream}"


def _receipt(program: str, message_id: str, raw: dict, status: ReceiptStatus, problems=(), corr=None) -> dict:
    """A contracts.agency.Receipt as a plain dict (built per message on the bulk path; tested
    to validate as a Receipt)."""
    ref = raw.get("reference_id") if isinstance(raw.get("reference_id"), str) else ""
    return {"message_id": message_id, "reference_id": ref, "programme_identifier": program, "status": status.value,
            "status_reasons": [{"status_reason_code": f"rjct.{p.code}", "status_reason_message": p.message,
                                "field": p.field} for p in problems],
            "timestamp": _now_iso(), "correlation_id": corr}


def event_row_fast(names_, cls: type, data: dict, producer: str = SERVICE) -> dict:
    """kit.outbox.event_row for the bulk path: the same envelope JSON, built without pydantic
    (the values come from reports that passed every rule already; validating them again per
    event cost more than the database writes). Tested equal to the validated form."""
    eid = uuid.uuid4()
    env = {"event_id": str(eid), "event_type": cls.event_type, "schema_version": cls.schema_version,
           "occurred_at": _now_iso(), "producer": producer, "correlation_id": None, "causation_id": None,
           "data": data}
    return {"id": eid, "subject": names_.event(cls.event_type), "payload": json.dumps(env, default=str).encode()}


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _receipt_id(program: str, message_id: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"receipt/{program}/{message_id}")


async def ingest(rt: ServiceRuntime, msgs: list[Msg]) -> dict[str, int]:
    """One batch: check every report, write the accepted ones in bulk, answer every message.
    All in one transaction; the caller acknowledges the batch only after it commits."""
    names_ = rt.names
    parsed = []
    for m in msgs:
        program = names_.bare(m.subject).split(".")[1]
        checked, raw, problems = domain.check_report(m.data, program)
        parsed.append((m, program, _message_key(m, raw), checked, raw, problems))

    out: list[dict] = []
    counts = {"accepted": 0, "rejected": 0, "duplicate": 0}
    async with rt.sessions.begin() as s:
        fresh = await store.claim_bulk(s, CONSUMER, [f"{p[1]}/{p[2]}" for p in parsed])
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
                out.append(deadletter_row(names_, SERVICE, m.subject, m.data, f"rjct.{problems[0].code}",
                                          "; ".join(p.message for p in problems), mid))
                receipts_rows.append(rc)
                counts["rejected"] += 1
            else:
                valid.append(checked)
        events_by_key = await apply(rt, s, valid, out)
        for c in valid:
            corr = events_by_key.get((c.nik, c.program))
            receipts_rows.append(_receipt(c.program, c.report.message_id, {"reference_id": c.report.reference_id},
                                          ReceiptStatus.succ, corr=str(corr) if corr else None))
            counts["accepted"] += 1
        if receipts_rows:
            bodies = [json.dumps(r) for r in receipts_rows]
            await store.bulk_insert(s, store.receipts, [
                {"programme_identifier": r["programme_identifier"], "message_id": r["message_id"], "receipt": b}
                for r, b in zip(receipts_rows, bodies)], "on conflict do nothing")
            out += [{"id": _receipt_id(r["programme_identifier"], r["message_id"]),
                     "subject": names_.receipts(r["programme_identifier"]), "payload": b.encode()}
                    for r, b in zip(receipts_rows, bodies)]
        if duplicates:
            # the same message again gets the same answer, once per copy (as a new message:
            # the first may be long gone from the agency's view)
            stored = await store.stored_receipts(s, duplicates)
            out += [message_row(names_.receipts(key[0]), stored[key]) for key in duplicates if key in stored]
            counts["duplicate"] = len(duplicates)
        await store.add_outbox(s, out)
    rt.kick()
    log.info("registry.ingested", **counts)
    return counts


def _person_row(r: domain.CheckedReport) -> dict:
    rep = r.report
    return {"nik": r.nik, "no_kk": rep.no_kk, "name": rep.name, "sex": rep.sex, "birth_date": r.birth_date,
            "village_code": r.village_code, "address": rep.address, "name_key": names.normalise(rep.name),
            "reported_by": r.program}


_IDENTITY = ("no_kk", "name", "sex", "birth_date", "village_code", "address")


async def apply(rt: ServiceRuntime, s, valid: list[domain.CheckedReport], out: list[dict]
                ) -> dict[tuple[str, str], uuid.UUID]:
    """Write people, households and enrolments for accepted reports; queue their events and
    any cross-program conflicts. Returns the enrolment event id per (NIK, program)."""
    if not valid:
        return {}
    names_ = rt.names
    win = domain.winners(valid)
    niks = sorted({r.nik for r in valid})
    await store.lock_people(s, niks)
    existing = await store.fetch_people(s, niks)
    current = await store.fetch_enrolments(s, niks)

    people_rows, history_rows, household_rows, conflicts, trigram_rows = [], [], {}, [], []
    by_nik: dict[str, list[domain.CheckedReport]] = {}
    for r in valid:
        by_nik.setdefault(r.nik, []).append(r)
    for nik, reports in by_nik.items():
        old = existing.get(nik)
        cur = {k: getattr(old, k) for k in (*_IDENTITY, "reported_by", "name_key")} if old else None
        changed = False
        for r in sorted(reports, key=lambda x: x.order):
            rep = r.report
            if rep.is_head_of_household or rep.no_kk not in household_rows:
                household_rows[rep.no_kk] = {"no_kk": rep.no_kk, "village_code": r.village_code,
                                             "head_nik": nik if rep.is_head_of_household else None}
            if cur is not None:
                kinds = domain.identity_conflicts(cur["name"], cur["birth_date"], cur["reported_by"], r)
                if kinds:  # keep the identity we have; a verifier decides
                    for kind in kinds:
                        field = "name" if kind == "name_mismatch" else "birth_date"
                        conflicts.append({
                            "id": uuid.uuid4(), "nik": nik, "kind": kind, "village_code": cur["village_code"],
                            "fingerprint": domain.fingerprint(kind, f"{cur['reported_by']}={cur[field]}",
                                                              f"{r.program}={getattr(rep, field)}"),
                            "programme_identifiers": sorted({cur["reported_by"], r.program}),
                            "details": {"registry": {field: str(cur[field]), "reported_by": cur["reported_by"]},
                                        "report": {field: str(getattr(rep, field)), "reported_by": r.program,
                                                   "message_id": rep.message_id}}})
                    continue
            row = _person_row(r)
            if cur is not None and cur["reported_by"] and cur["reported_by"] != r.program:
                # another program agreeing on the identity: it may update the household and
                # address, but the name keeps the spelling of the program that set it
                row |= {k: cur[k] for k in ("name", "name_key", "birth_date", "reported_by")}
            if cur is None or any(cur[k] != row[k] for k in _IDENTITY):
                history_rows.append({k: row[k] for k in ("nik", *_IDENTITY, "reported_by")}
                                    | {"message_id": rep.message_id})
                changed = True
            cur = row
        if changed:
            people_rows.append(cur | {"nik": nik})
            if not rt.name_search_trgm and (old is None or old.name_key != cur["name_key"]
                                            or old.village_code != cur["village_code"]):
                trigram_rows.append((nik, cur["village_code"], names.trigrams(cur["name_key"])))
            out.append(event_row_fast(names_, PersonRegistered, {
                "nik": nik, "no_kk": cur["no_kk"], "name": cur["name"], "sex": cur["sex"],
                "birth_date": cur["birth_date"].isoformat(), "village_code": cur["village_code"],
                "is_new": old is None, "reported_by": cur["reported_by"]}))
    await store.upsert_people(s, [{k: p[k] for k in ("nik", *store._PEOPLE_SET)} for p in people_rows])
    await store.bulk_insert(s, store.person_history, history_rows)
    await store.replace_name_trigrams(s, trigram_rows)
    await store.upsert_households(s, list(household_rows.values()))

    await store.bulk_insert(s, store.enrolment_history, [
        {"nik": r.nik, "programme_identifier": r.program, "enrolment_status": r.report.enrolment_status,
         "status_change_date": r.status_change_date, "message_id": r.report.message_id,
         "reference_id": r.report.reference_id, "reported_by": r.program} for r in valid])

    enrol_rows, event_ids = [], {}
    for key, r in win.items():
        cur_e = current.get(key)
        if not domain.supersedes(r, cur_e.status_change_date if cur_e else None, cur_e.message_id if cur_e else None):
            continue
        person = existing.get(r.nik)
        enrol_rows.append({"nik": r.nik, "programme_identifier": r.program,
                           "enrolment_status": r.report.enrolment_status, "status_change_date": r.status_change_date,
                           "message_id": r.report.message_id, "reference_id": r.report.reference_id,
                           "reported_by": r.program})
        row = event_row_fast(names_, EnrolmentChanged, {
            "nik": r.nik, "no_kk": r.report.no_kk, "village_code": r.village_code,
            "birth_date": r.birth_date.isoformat(), "programme_identifier": r.program,
            "enrolment_status": r.report.enrolment_status,
            "previous_status": cur_e.enrolment_status if cur_e else None,
            "status_change_date": r.status_change_date.isoformat(), "reported_by": r.program,
            "reference_id": r.report.reference_id,
            "verification_status": person.verification_status if person else None,
            "verification_period": person.verification_period if person else None})
        out.append(row)
        event_ids[key] = row["id"]
    await store.upsert_enrolments(s, enrol_rows)

    # a death reported by one program while another still pays: flag it (once per situation)
    if any(r.report.enrolment_status in ("deceased", "active") for r in valid):
        villages = {nik: rs[-1].village_code for nik, rs in by_nik.items()}
        for row in await store.active_and_deceased(s, [r.nik for r in valid]):
            conflicts.append({
                "id": uuid.uuid4(), "nik": row.nik, "kind": "death_while_active",
                "village_code": villages[row.nik],
                "fingerprint": domain.fingerprint("death_while_active", *[f"deceased={p}" for p in row.deceased_in],
                                                  *[f"active={p}" for p in row.active_in]),
                "programme_identifiers": sorted({*row.deceased_in, *row.active_in}),
                "details": {"deceased_in": row.deceased_in, "active_in": row.active_in}})
    for c in await store.flag(s, conflicts):
        out.append(event_row(names_, ConflictFlagged(
            conflict_id=c["id"], nik=c["nik"], kind=c["kind"], village_code=c["village_code"],
            programme_identifiers=c["programme_identifiers"]), SERVICE))
    return event_ids


def register(rt: ServiceRuntime) -> None:
    cfg = rt.registry_settings

    async def on_enrolments(msgs: list[Msg]) -> None:
        # raw nats messages: every bad one becomes a rejected receipt, never a failed batch;
        # an exception (database away) naks the whole batch for redelivery
        await ingest(rt, msgs)

    batch_consumer(rt, subject=rt.names.enrolments("*"), stream=rt.names.stream("AGENCY_ENROLMENTS"),
                   durable=CONSUMER, batch=cfg.batch_size, timeout=cfg.batch_timeout, handler=on_enrolments)
