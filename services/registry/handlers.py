"""Registry subscribers: agency enrolment reports in; people, enrolments, receipts and
registry events out (through the outbox, in the same transaction)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from typing import TYPE_CHECKING, NamedTuple

from nats.aio.msg import Msg

from contracts.agency import MAX_RECEIPTS, ReceiptStatus
from contracts.registry import MAX_ITEMS, ConflictFlagged, EnrolmentsChanged, LifeStatusChanged, PeopleRegistered
from contracts.values import Problem
from services.kit import logging as klog
from services.kit.consumer import ConsumerSpec, Delivery
from services.kit.decode import Rejection
from services.kit.uow import UnitOfWork
from services.registry import domain, life, store

if TYPE_CHECKING:
    from services.registry.app import Registry

log = klog.get(__name__)
CONSUMER = "registry-enrolments-v1"
SERVICE = "registry"
# a report is a few short fields (under 2 KB; the longest, address, is 500 characters); the
# bytes beyond this are not parsed, and the report is answered with rjct.message.too_large
MAX_REPORT_BYTES = 64 * 1024


def _message_key(m: Msg, raw: dict, program: str) -> str:
    """The agency's message_id: from the report, or (unreadable report) from its Nats-Msg-Id
    header without the `<program>:` scope, or else the stream sequence."""
    mid = raw.get("message_id") if isinstance(raw.get("message_id"), str) and raw.get("message_id") else None
    if mid is None and m.headers and m.headers.get("Nats-Msg-Id"):
        header = m.headers["Nats-Msg-Id"]
        mid = header.removeprefix(program + ":") or header
    return mid or f"seq-{m.metadata.sequence.stream}"


def _stored_key(message_id: str) -> str:
    """The message id as the receipts table keys it: an id beyond the contract's 128 characters
    (rejected, but still answered) is keyed by its digest, since a database index entry cannot
    hold a few kilobytes and the whole batch would fail with it; so is one PostgreSQL cannot
    store as text (a NUL, an unpaired surrogate)."""
    if len(message_id) <= 128 and domain.is_storable(message_id):
        return message_id
    return "sha256:" + hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()


def _receipt(program: str, message_id: str, raw: dict, status: ReceiptStatus, problems, corr: str,
             now: str) -> dict:
    """A contracts.agency.Receipt as a plain dict (built per message on the bulk path; tested
    to validate as a Receipt). A rejected message's texts are made storable (receipts are kept
    in jsonb); an accepted one's passed that rule already."""
    ref = raw.get("reference_id") if isinstance(raw.get("reference_id"), str) else ""
    reasons = [{"status_reason_code": f"rjct.{p.code}", "status_reason_message": p.message, "field": p.field}
               for p in problems]
    if status is ReceiptStatus.rjct:
        message_id, ref = domain.storable(message_id), domain.storable(ref)
        for r in reasons:
            r["status_reason_message"] = domain.storable(r["status_reason_message"])
    return {"message_id": message_id, "reference_id": ref, "programme_identifier": program, "status": status.value,
            "status_reasons": reasons, "timestamp": now, "correlation_id": corr}


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
        rows += [{"id": uuid.uuid4(), "subject": names_.receipts(program),
                  "payload": head + b", ".join(items[i:i + MAX_RECEIPTS]) + b"]}"}
                 for i in range(0, len(items), MAX_RECEIPTS)]
    return rows


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class _Checked(NamedTuple):
    """One message of a batch, checked and answered (not yet stored)."""

    delivery: Delivery[bytes]
    message_id: str
    report: domain.CheckedReport | None
    problems: list
    receipt: bytes


def _check(d: Delivery[bytes], program: str) -> tuple[domain.CheckedReport | None, dict, list[Problem]]:
    """domain.check_report, or the kit's rejection (e.g. too large) as the receipt's one reason."""
    if d.rejection is not None:
        return None, {}, [Problem(d.rejection.code.removeprefix("rjct."), d.rejection.reason)]
    return domain.check_report(d.data, program, header_id=d.msg.headers.get("Nats-Msg-Id") if d.msg.headers else None)


async def ingest(reg: Registry, uow: UnitOfWork, batch: list[Delivery[bytes]]) -> dict[str, int]:
    """One batch: check every report, write the accepted ones in bulk, answer every message.
    All in the caller's unit of work (the kit consumer's: it commits, then acknowledges).

    The `receipts` table is this consumer's idempotency record: a report whose (program,
    message_id) already has a receipt changes nothing and gets that receipt again."""
    names_ = reg.kit.names
    corr, now = str(uuid.uuid4()), _now_iso()
    first: dict[tuple[str, str], _Checked] = {}  # by (program, stored key of message_id)
    copies: list[tuple[str, str]] = []
    for d in batch:
        m = d.msg
        program = names_.bare(m.subject).split(".")[1]
        checked, raw, problems = _check(d, program)
        mid = _message_key(m, raw, program)
        key = (program, _stored_key(mid))
        if key in first:
            copies.append(key)
            continue
        status = ReceiptStatus.rjct if problems else ReceiptStatus.succ
        body = json.dumps(_receipt(program, mid, raw, status, problems, corr, now)).encode()
        first[key] = _Checked(d, mid, checked, problems, body)

    answers: dict[str, list[bytes]] = {}
    counts = {"accepted": 0, "rejected": 0, "duplicate": 0}
    s = uow.session
    fresh = await store.record_receipts(s, [(*k, c.receipt) for k, c in first.items()])
    valid = []
    for key, (d, mid, checked, problems, body) in first.items():
        if key not in fresh:
            copies.append(key)
            continue
        answers.setdefault(key[0], []).append(body)
        if problems:
            uow.dead_letter(d.subject, d.data, f"rjct.{problems[0].code}",
                            domain.storable("; ".join(p.message for p in problems)), msg_id=domain.storable(mid),
                            **d.where())
            counts["rejected"] += 1
        else:
            valid.append(checked)
    counts["accepted"] = len(valid)
    recorded_deceased = await apply(reg, uow, valid, corr)
    if recorded_deceased:
        await _note_recorded_deceased(uow, first, answers, recorded_deceased, corr, now)
    if copies:
        # the same message again gets the same answer, once per copy (the first answer may be
        # long gone from the agency's view)
        stored = await store.stored_receipts(s, [k for k in copies if k not in fresh])
        for key in copies:
            body = first[key].receipt if key in fresh else stored.get(key)
            if body is not None:
                answers.setdefault(key[0], []).append(body)
        counts["duplicate"] = len(copies)
    uow.add_rows(receipt_rows(names_, answers))
    log.info("registry.ingested", **counts)
    return counts


async def _note_recorded_deceased(uow: UnitOfWork, first: dict[tuple[str, str], _Checked],
                                  answers: dict[str, list[bytes]], keys: set[tuple[str, str]], corr: str,
                                  now: str) -> None:
    """An `active` report about a person Dukcapil recorded deceased is stored (`succ`: the
    enrolment is the agency's own) but changes nothing: its receipt says why, so the agency can
    close the enrolment (rare: a few per batch at most, so row by row)."""
    info = [Problem(domain.RECORDED_DECEASED.removeprefix("info."),
                    "the civil registry (Dukcapil) recorded this person deceased: the enrolment is kept, but no "
                    "program pays them; report the enrolment `deceased` or `exited`")]
    for key, c in first.items():
        if (key[0], c.message_id) not in keys:
            continue
        receipt = _receipt(key[0], c.message_id, {"reference_id": c.report.report.reference_id if c.report else ""},
                           ReceiptStatus.succ, [], corr, now)
        receipt["status_reasons"] = [{"status_reason_code": domain.RECORDED_DECEASED, "status_reason_message":
                                      p.message, "field": None} for p in info]
        body = json.dumps(receipt).encode()
        await store.replace_receipt(uow.session, key[0], key[1], body)
        answers[key[0]] = [body if b == c.receipt else b for b in answers.get(key[0], [])]


async def apply(reg: Registry, uow: UnitOfWork, valid: list[domain.CheckedReport], corr: str
                ) -> set[tuple[str, str]]:
    """Write people, households and enrolments for accepted reports (domain.plan_ingest decides,
    store.write_plan writes); queue their events (a few batch events per transaction) and any
    new cross-program conflicts, and life status changes (services/registry/life.py). Returns
    the (program, message_id) of `active` reports about people Dukcapil recorded deceased.

    Concurrency (several registry processes): a person is only changed by a transaction holding
    their `people` row. New people are inserted first (a concurrent insert of the same NIK waits
    for this commit, then finds it existing); existing ones are locked `FOR UPDATE`; both in NIK
    order, so no deadlocks. Row locks, not advisory locks: thousands of those per batch filled
    PostgreSQL's shared lock table ("out of shared memory") for every database on the server."""
    if not valid:
        return set()
    names_, s = reg.kit.names, uow.session
    batch = domain.Batch.of(valid)
    created = await store.insert_new_people(s, batch.new_people())
    people = await store.lock_people(s, sorted(batch.niks - created))
    enrolments = await store.current_enrolments(s, sorted(batch.niks))
    lives = await store.lives(s, sorted(batch.niks))
    plan = domain.plan_ingest(batch, people, enrolments, created, trigram_table=not reg.name_search.trgm,
                              lives=lives)
    flagged = await store.write_plan(s, plan)
    life_changes = await life.after_ingest(uow, plan.life, flagged)
    uow.add_rows(event_rows(names_, PeopleRegistered, "people", list(plan.registered), corr))
    uow.add_rows(event_rows(names_, EnrolmentsChanged, "changes", list(plan.changes), corr))
    uow.add_rows(event_rows(names_, LifeStatusChanged, "changes", life_changes, corr))
    for c in flagged:
        uow.emit(ConflictFlagged(conflict_id=c["id"], nik=c["nik"], kind=c["kind"], village_code=c["village_code"],
                                 programme_identifiers=c["programme_identifiers"]), correlation_id=uuid.UUID(corr))
    return set(plan.life.recorded_deceased)


def decode_report(msg: Msg) -> bytes:
    """Only the size here: domain.check_report reads the rest, naming every failed rule."""
    if len(msg.data) > MAX_REPORT_BYTES:
        raise Rejection("rjct.message.too_large",
                        f"the report has {len(msg.data)} bytes; a report has at most {MAX_REPORT_BYTES}")
    return msg.data


def register(reg: Registry) -> None:
    cfg, names_ = reg.cfg, reg.kit.names

    async def handle(uow: UnitOfWork, batch: list[Delivery[bytes]]) -> None:
        # every report gets a receipt, whatever its bytes (a kit rejection too: handles_rejections)
        await ingest(reg, uow, batch)

    # inbox=False: the receipts table is this consumer's idempotency record
    reg.kit.consume(ConsumerSpec(
        durable=CONSUMER, stream=names_.stream("AGENCY_ENROLMENTS"), subject=names_.enrolments("*"),
        decode=decode_report, handle=handle, inbox=False, handles_rejections=True, batch=cfg.batch_size,
        fetch_wait=cfg.batch_timeout, ack_wait=cfg.ack_wait))
