"""Registry subscribers: agency enrolment reports in; people, enrolments, receipts and
registry events out (through the outbox, in the same transaction)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

from nats.aio.msg import Msg

from contracts.agency import MAX_RECEIPTS, ReceiptStatus
from contracts.registry import MAX_ITEMS, ConflictFlagged, EnrolmentsChanged, PeopleRegistered
from services.kit import logging as klog
from services.kit.outbox import deadletter_row, event_row
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


def _stored_key(message_id: str) -> str:
    """The message id as the receipts table keys it: an id beyond the contract's 128 characters
    (rejected, but still answered) is keyed by its digest, since a database index entry cannot
    hold a few kilobytes and the whole batch would fail with it."""
    if len(message_id) <= 128:
        return message_id
    return "sha256:" + hashlib.sha256(message_id.encode()).hexdigest()


def _receipt(program: str, message_id: str, raw: dict, status: ReceiptStatus, problems, corr: str,
             now: str) -> dict:
    """A contracts.agency.Receipt as a plain dict (built per message on the bulk path; tested
    to validate as a Receipt)."""
    ref = raw.get("reference_id") if isinstance(raw.get("reference_id"), str) else ""
    return {"message_id": message_id, "reference_id": ref, "programme_identifier": program, "status": status.value,
            "status_reasons": [{"status_reason_code": f"rjct.{p.code}", "status_reason_message": p.message,
                                "field": p.field} for p in problems],
            "timestamp": now, "correlation_id": corr}


def event_rows(names_, cls: type, field: str, items: list[dict], corr: str, producer: str = SERVICE) -> list[dict]:
    """Outbox rows for a batch event (`cls` with its list in `field`), MAX_ITEMS items per event,
    built without pydantic: the values come from reports that passed every rule already, and
    validating them again cost more than the database writes. Tested to validate as `cls`."""
    rows, now = [], _now_iso()
    for i in range(0, len(items), MAX_ITEMS):
        eid = uuid.uuid4()
        env = {"event_id": str(eid), "event_type": cls.event_type, "schema_version": cls.schema_version,
               "occurred_at": now, "producer": producer, "correlation_id": corr, "causation_id": None,
               "data": {field: items[i:i + MAX_ITEMS]}}
        rows.append({"id": eid, "subject": names_.event(cls.event_type), "payload": json.dumps(env).encode()})
    return rows


def receipt_rows(names_, bodies: dict[str, list[bytes]]) -> list[dict]:
    """Outbox rows answering the reports of one transaction: per program, receipt batches of at
    most MAX_RECEIPTS (each body is one receipt's JSON, already stored for repeats)."""
    rows = []
    for program, items in bodies.items():
        head = b'{"programme_identifier": ' + json.dumps(program).encode() + b', "receipts": ['
        for i in range(0, len(items), MAX_RECEIPTS):
            rows.append({"id": uuid.uuid4(), "subject": names_.receipts(program),
                         "payload": head + b", ".join(items[i:i + MAX_RECEIPTS]) + b"]}"})
    return rows


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


async def ingest(rt: ServiceRuntime, msgs: list[Msg]) -> dict[str, int]:
    """One batch: check every report, write the accepted ones in bulk, answer every message.
    All in one transaction; the caller acknowledges the batch only after it commits.

    The `receipts` table is this consumer's idempotency record: a report whose (program,
    message_id) already has a receipt changes nothing and gets that receipt again."""
    names_ = rt.names
    corr, now = str(uuid.uuid4()), _now_iso()
    # (program, stored key of message_id) -> (msg, message_id, checked, problems, receipt JSON)
    first: dict[tuple[str, str], tuple] = {}
    copies: list[tuple[str, str]] = []
    for m in msgs:
        program = names_.bare(m.subject).split(".")[1]
        checked, raw, problems = domain.check_report(m.data, program)
        mid = _message_key(m, raw)
        key = (program, _stored_key(mid))
        if key in first:
            copies.append(key)
            continue
        status = ReceiptStatus.rjct if problems else ReceiptStatus.succ
        body = json.dumps(_receipt(program, mid, raw, status, problems, corr, now)).encode()
        first[key] = (m, mid, checked, problems, body)

    out: list[dict] = []
    answers: dict[str, list[bytes]] = {}
    counts = {"accepted": 0, "rejected": 0, "duplicate": 0}
    async with rt.sessions.begin() as s:
        fresh = await store.record_receipts(s, [(k[0], k[1], v[4]) for k, v in first.items()])
        valid = []
        for key, (m, mid, checked, problems, body) in first.items():
            if key not in fresh:
                copies.append(key)
                continue
            answers.setdefault(key[0], []).append(body)
            if problems:
                out.append(deadletter_row(names_, SERVICE, m.subject, m.data, f"rjct.{problems[0].code}",
                                          "; ".join(p.message for p in problems), mid))
                counts["rejected"] += 1
            else:
                valid.append(checked)
        counts["accepted"] = len(valid)
        await apply(rt, s, valid, out, corr)
        if copies:
            # the same message again gets the same answer, once per copy (the first answer may be
            # long gone from the agency's view)
            stored = await store.stored_receipts(s, [k for k in copies if k not in fresh])
            for key in copies:
                body = first[key][4] if key in fresh else stored.get(key)
                if body is not None:
                    answers.setdefault(key[0], []).append(body)
            counts["duplicate"] = len(copies)
        out += receipt_rows(names_, answers)
        await store.add_outbox(s, out)
    rt.kick()
    log.info("registry.ingested", **counts)
    return counts


_IDENTITY = ("no_kk", "name", "sex", "birth_date", "village_code", "address")


def _identity(nik: str, old: dict | None, reports: list[domain.CheckedReport]
              ) -> tuple[dict | None, list[dict], list[dict]]:
    """A person's identity after this batch's reports (in effective order) on top of `old`
    (None: new to the registry). Returns (identity if it changed else None, history rows,
    conflicts). Pure: the caller decides whether the person is new."""
    cur, history, conflicts = old, [], []
    for r in reports:
        rep = r.report
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
        row = {"no_kk": rep.no_kk, "name": rep.name, "sex": rep.sex, "birth_date": r.birth_date,
               "village_code": r.village_code, "address": rep.address, "name_key": names.normalise(rep.name),
               "reported_by": r.program}
        if cur is not None and cur["reported_by"] and cur["reported_by"] != r.program:
            # another program agreeing on the identity: it may update the household and
            # address, but the name keeps the spelling of the program that set it
            row |= {k: cur[k] for k in ("name", "name_key", "birth_date", "reported_by")}
        if cur is None or any(cur[k] != row[k] for k in _IDENTITY):
            history.append({"nik": nik, **{k: row[k] for k in _IDENTITY}, "reported_by": row["reported_by"],
                            "message_id": rep.message_id})
        cur = row
    return (cur if history else None), history, conflicts


async def apply(rt: ServiceRuntime, s, valid: list[domain.CheckedReport], out: list[dict], corr: str) -> None:
    """Write people, households and enrolments for accepted reports; queue their events (a few
    batch events per transaction) and any cross-program conflicts.

    Concurrency (several registry processes): a person is only changed by a transaction holding
    their `people` row. New people are inserted first (a concurrent insert of the same NIK waits
    for this commit, then finds it existing); existing ones are locked `FOR UPDATE`; both in NIK
    order, so no deadlocks. Row locks, not advisory locks: thousands of those per batch filled
    PostgreSQL's shared lock table ("out of shared memory") for every database on the server."""
    if not valid:
        return
    names_ = rt.names
    win = domain.winners(valid)
    by_nik: dict[str, list[domain.CheckedReport]] = {}
    for r in valid:
        by_nik.setdefault(r.nik, []).append(r)
    for reports in by_nik.values():
        if len(reports) > 1:
            reports.sort(key=lambda x: x.order)

    as_new = {nik: _identity(nik, None, reports) for nik, reports in sorted(by_nik.items())}
    created = await store.insert_new_people(s, [{"nik": nik, **{k: ident[k] for k in store._PEOPLE_SET}}
                                                for nik, (ident, _h, _c) in as_new.items()])
    existing = await store.lock_people(s, sorted(set(by_nik) - created))
    current = await store.fetch_enrolments(s, sorted(by_nik))

    people_rows, history_rows, household_rows, conflicts, trigram_rows = [], [], {}, [], []
    registered: list[dict] = []
    for nik, reports in by_nik.items():
        for r in reports:
            rep = r.report
            if rep.is_head_of_household or rep.no_kk not in household_rows:
                household_rows[rep.no_kk] = {"no_kk": rep.no_kk, "village_code": r.village_code,
                                             "head_nik": nik if rep.is_head_of_household else None}
        old = existing.get(nik)
        if nik in created:
            ident, hist, conf = as_new[nik]
        else:
            # (old is None only if the person vanished between the two statements: then the upsert
            # below writes them again)
            ident, hist, conf = _identity(
                nik, {k: getattr(old, k) for k in (*_IDENTITY, "reported_by", "name_key")} if old else None, reports)
            if ident is not None:
                people_rows.append({"nik": nik, **{k: ident[k] for k in store._PEOPLE_SET}})
        history_rows += hist
        conflicts += conf
        if ident is not None:
            if not rt.name_search_trgm and (old is None or old.name_key != ident["name_key"]
                                            or old.village_code != ident["village_code"]):
                trigram_rows.append((nik, ident["village_code"], names.trigrams(ident["name_key"])))
            registered.append({"nik": nik, "no_kk": ident["no_kk"], "name": ident["name"], "sex": ident["sex"],
                               "birth_date": ident["birth_date"].isoformat(), "village_code": ident["village_code"],
                               "is_new": nik in created, "reported_by": ident["reported_by"]})
    await store.upsert_people(s, people_rows)
    await store.bulk_insert(s, store.person_history, history_rows)
    await store.replace_name_trigrams(s, trigram_rows)
    # in key order: two batches sharing households then lock them in the same order
    await store.upsert_households(s, [household_rows[k] for k in sorted(household_rows)])

    await store.bulk_insert(s, store.enrolment_history, [
        {"nik": r.nik, "programme_identifier": r.program, "enrolment_status": r.report.enrolment_status,
         "status_change_date": r.status_change_date, "message_id": r.report.message_id,
         "reference_id": r.report.reference_id, "reported_by": r.program} for r in valid])

    enrol_rows, changes = [], []
    status = {k: e.enrolment_status for k, e in current.items()}  # (nik, program) -> status after this batch
    for key, r in win.items():
        cur_e = current.get(key)
        if not domain.supersedes(r, cur_e.status_change_date if cur_e else None, cur_e.message_id if cur_e else None):
            continue
        rep = r.report
        status[key] = rep.enrolment_status
        person = existing.get(r.nik)
        enrol_rows.append({"nik": r.nik, "programme_identifier": r.program,
                           "enrolment_status": rep.enrolment_status, "status_change_date": r.status_change_date,
                           "message_id": rep.message_id, "reference_id": rep.reference_id, "reported_by": r.program})
        changes.append({
            "nik": r.nik, "no_kk": rep.no_kk, "village_code": r.village_code, "birth_date": r.birth_date.isoformat(),
            "programme_identifier": r.program, "enrolment_status": rep.enrolment_status,
            "previous_status": cur_e.enrolment_status if cur_e else None,
            "status_change_date": r.status_change_date.isoformat(), "reported_by": r.program,
            "reference_id": rep.reference_id,
            "verification_status": person.verification_status if person else None,
            "verification_period": person.verification_period if person else None})
    await store.upsert_enrolments(s, enrol_rows)
    out += event_rows(names_, PeopleRegistered, "people", registered, corr)
    out += event_rows(names_, EnrolmentsChanged, "changes", changes, corr)

    # a death reported by one program while another still pays: flag it (once per situation).
    # Computed from what was read under the people locks plus this batch's winners: exact.
    programs: dict[str, dict[str, list[str]]] = {}
    for (nik, program), st in sorted(status.items()):
        if st in ("deceased", "active"):
            programs.setdefault(nik, {"deceased": [], "active": []})[st].append(program)
    for nik, p in programs.items():
        if p["deceased"] and p["active"] and nik in by_nik:
            conflicts.append({
                "id": uuid.uuid4(), "nik": nik, "kind": "death_while_active",
                "village_code": by_nik[nik][-1].village_code,
                "fingerprint": domain.fingerprint("death_while_active", *[f"deceased={x}" for x in p["deceased"]],
                                                  *[f"active={x}" for x in p["active"]]),
                "programme_identifiers": sorted({*p["deceased"], *p["active"]}),
                "details": {"deceased_in": p["deceased"], "active_in": p["active"]}})
    for c in await store.flag(s, conflicts):
        out.append(event_row(names_, ConflictFlagged(
            conflict_id=c["id"], nik=c["nik"], kind=c["kind"], village_code=c["village_code"],
            programme_identifiers=c["programme_identifiers"]), SERVICE, correlation_id=uuid.UUID(corr)))


def register(rt: ServiceRuntime) -> None:
    cfg = rt.registry_settings

    async def on_enrolments(msgs: list[Msg]) -> None:
        # raw nats messages: every bad one becomes a rejected receipt, never a failed batch;
        # an exception (database away) naks the whole batch for redelivery
        await ingest(rt, msgs)

    batch_consumer(rt, subject=rt.names.enrolments("*"), stream=rt.names.stream("AGENCY_ENROLMENTS"),
                   durable=CONSUMER, batch=cfg.batch_size, timeout=cfg.batch_timeout, handler=on_enrolments,
                   ack_wait=cfg.ack_wait)
