"""Dukcapil (the civil registry) as a source: death notifications in DCI's CRVS `notify` shape
(contracts.crvs) on `crvs.dukcapil.deaths`, through the kit consumer, under NATS identity
`dukcapil`. The strongest life-status source: a recorded death stands against every program's
report (domain.decide_life).

Every message is answered on `crvs.dukcapil.receipts`, whatever its bytes: a message that
cannot be read is `rjct` with a reason code (and a dead letter for operators); a readable one
gets a status per event. The `receipts` table (key `crvs:dukcapil`, the message_id) is this
consumer's idempotency record: a message sent again gets the same receipt and changes nothing.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from pydantic import ValidationError

from contracts.agency import ReceiptStatus
from contracts.crvs import DEATH, NIK_TYPES, DeathNotification, NotifyEvent
from contracts.values import Problem, parse_nik
from services.kit import logging as klog
from services.kit.consumer import ConsumerSpec, Delivery
from services.kit.decode import Rejection
from services.kit.uow import UnitOfWork
from services.registry import domain, life, store

if TYPE_CHECKING:
    from services.registry.app import Registry

log = klog.get(__name__)
CONSUMER = "registry-crvs-v1"
SOURCE = "dukcapil"
RECEIPT_KEY = "crvs:dukcapil"  # in `receipts`; not a program code (a program code has no colon)
# 100 events of about 600 bytes each, with room; beyond this the bytes are not parsed
MAX_NOTIFY_BYTES = 256 * 1024
_MISSING = {"missing": "is required", "string_type": "must be text", "list_type": "must be a list",
            "model_type": "must be an object"}


@dataclass(frozen=True)
class Death:
    """One DEATH event that passed every rule."""

    reference_id: str
    nik: str
    death_date: dt.date
    registration_number: str


def _date(value: str) -> dt.date | None:
    """YYYY-MM-DD, or an ISO date-time (DCI's examples use date-time): its date."""
    try:
        return dt.date.fromisoformat(value) if len(value) == 10 else dt.datetime.fromisoformat(
            value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def check_event(ev: NotifyEvent, today: dt.date) -> tuple[Death | None, list[Problem]]:
    """Every rule one DEATH event must pass; the parsed death or every failed rule."""
    problems: list[Problem] = []
    data = ev.data
    texts = [ev.reference_id, data.reg_event_type, data.reg_records.registration_number, data.reg_records.death_date,
             *(i.identifier_value for i in data.reg_records.identifier)]
    if not all(domain.is_storable(t) for t in texts):
        return None, [Problem("text.unstorable", "a text holds a NUL character or an unpaired surrogate, which the "
                                                 "registry cannot store")]
    if data.reg_event_type != DEATH:
        problems.append(Problem("reg_event_type.unsupported", f"reg_event_type {data.reg_event_type!r}: the "
                                                              "registry acts on DEATH only", "reg_event_type"))
    niks = [i.identifier_value for i in data.reg_records.identifier if i.identifier_type.upper() in NIK_TYPES]
    parts = None
    if not niks:
        problems.append(Problem("identifier.no_nik", "no identifier of type NIK (or NIN)", "identifier"))
    elif len(set(niks)) > 1:
        problems.append(Problem("identifier.ambiguous", "more than one NIK in one record", "identifier"))
    else:
        parts, nik_problems = parse_nik(niks[0], today)
        problems += nik_problems
    died = _date(data.reg_records.death_date)
    if died is None:
        problems.append(Problem("death_date.format", "death_date is not a date (YYYY-MM-DD or an ISO date-time)",
                                "death_date"))
    elif died > today:
        problems.append(Problem("death_date.in_future", f"death_date {died} is after today", "death_date"))
    elif parts is not None and died < parts.birth_date:
        problems.append(Problem("death_date.before_birth", "death_date is before the birth date in the NIK",
                                "death_date"))
    if problems or died is None:
        return None, problems
    return Death(ev.reference_id, niks[0], died, data.reg_records.registration_number), []


def check_notification(data: bytes, header_id: str | None, today: dt.date
                       ) -> tuple[DeathNotification | None, dict[str, Any], list[Problem]]:
    """The notification, or what could be read of it (for the receipt's ids) and every reason
    it cannot be read as a whole."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, {}, [Problem("json.invalid", f"the message is not valid JSON ({exc})")]
    if not isinstance(raw, dict):
        return None, {}, [Problem("json.not_object", "the message must be one JSON object (DCI's notify envelope)")]
    header: dict[str, Any] = raw["header"] if isinstance(raw.get("header"), dict) else {}
    message: dict[str, Any] = raw["message"] if isinstance(raw.get("message"), dict) else {}
    ids = {"message_id": header.get("message_id"), "transaction_id": message.get("transaction_id")}
    try:
        note = DeathNotification.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:20]:
            field = ".".join(str(p) for p in err["loc"])
            # codes are stable: without list positions (the message names them)
            where = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
            code = "text.unstorable" if err["type"] == "string_unicode" else f"{where}.{err['type']}"
            problems.append(Problem(code, f"{field} {_MISSING.get(err['type'], err['msg'])}", field))
        return None, ids, problems
    problems = []
    if note.header.action != "notify":
        problems.append(Problem("header.action", f"header.action is {note.header.action!r}, not 'notify'",
                                "header.action"))
    if not (domain.is_storable(note.header.message_id) and domain.is_storable(note.message.transaction_id)):
        problems.append(Problem("text.unstorable", "message_id or transaction_id holds a NUL character or an "
                                                   "unpaired surrogate"))
    if header_id is not None and header_id != f"{SOURCE}:{note.header.message_id}":
        problems.append(Problem("message_id.unscoped", f"the Nats-Msg-Id header must be "
                                                       f"{SOURCE}:<header.message_id>", "header.message_id"))
    refs = [e.reference_id for e in note.message.notify_event]
    if len(set(refs)) != len(refs):
        problems.append(Problem("reference_id.duplicate", "two events share a reference_id", "reference_id"))
    return (None if problems else note), ids, problems


def _message_id(d: Delivery[bytes], ids: dict[str, Any]) -> str:
    mid = ids.get("message_id")
    if isinstance(mid, str) and mid:
        return mid
    header = (d.msg.headers or {}).get("Nats-Msg-Id")
    return header.removeprefix(SOURCE + ":") if header else f"seq-{d.stream_seq}"


def _stored_key(message_id: str) -> str:
    import hashlib
    if len(message_id) <= 128 and domain.is_storable(message_id):
        return message_id
    return "sha256:" + hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()


def _reason(p: Problem) -> dict[str, str]:
    return {"status_reason_code": f"rjct.{p.code}", "status_reason_message": domain.storable(p.message)}


async def _record(uow: UnitOfWork, death: Death, person: domain.Person | None, corr: uuid.UUID
                  ) -> dict[str, str] | None:
    """Apply one death (the caller holds the person's row); None, or an informational reason
    for its status."""
    s = uow.session
    fact = domain.LifeFact("deceased", "crvs", death.death_date, SOURCE, "crvs.death_notification",
                           f"akta kematian {death.registration_number}")
    await life.apply_fact(uow, death.nik, fact, village_code=person.village_code if person else None,
                          correlation_id=corr)
    if person is None:
        return {"status_reason_code": "info.crvs.not_in_registry",
                "status_reason_message": "no program knows this NIK: the death is kept, and applies when one enrols "
                                         "the person"}
    await store.resolve_open_death_conflicts(s, death.nik, SOURCE, "the civil registry recorded the death "
                                                                   f"(akta kematian {death.registration_number})")
    return None


async def handle(reg: Registry, uow: UnitOfWork, batch: list[Delivery[bytes]]) -> None:
    """Answer every message of the batch; apply the deaths of those that can be read."""
    names_, s = reg.kit.names, uow.session
    today, corr = dt.date.today(), uuid.uuid4()
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    read: list[tuple[Delivery[bytes], DeathNotification | None, dict[str, Any], list[Problem]]] = []
    for d in batch:
        ids: dict[str, Any] = {}
        if d.rejection is not None:
            note, problems = None, [Problem(d.rejection.code.removeprefix("rjct."), d.rejection.reason)]
        else:
            note, ids, problems = check_notification(d.data, (d.msg.headers or {}).get("Nats-Msg-Id"), today)
        read.append((d, note, ids, problems))
    # the people of every death in the batch, locked at once in NIK order (as ingest does): no
    # deadlock with a concurrent ingest batch holding some of them
    niks = {death.nik for _, note, _, _ in read if note for ev in note.message.notify_event
            for death in [check_event(ev, today)[0]] if death}
    people = await store.lock_people(s, sorted(niks))
    for d, note, ids, problems in read:
        mid = _message_id(d, ids)
        key = _stored_key(mid)
        txn = str(ids["transaction_id"]) if isinstance(ids.get("transaction_id"), str) else ""
        receipt: dict[str, Any] = {"message_id": domain.storable(mid), "transaction_id": domain.storable(txn),
                                   "status": ReceiptStatus.succ.value, "status_reason_code": None,
                                   "status_reason_message": None, "notify_status": [], "timestamp": now,
                                   "correlation_id": str(corr)}
        if not await store.record_receipts(s, [(RECEIPT_KEY, key, json.dumps(receipt).encode())]):
            stored = (await store.stored_receipts(s, [(RECEIPT_KEY, key)])).get((RECEIPT_KEY, key))
            if stored is not None:  # the same message again: the same answer, nothing applied twice
                uow.send(names_.crvs_receipts(), stored)
            continue
        if note is None:
            receipt |= {"status": ReceiptStatus.rjct.value, **_reason(problems[0]),
                        "status_reason_message": domain.storable("; ".join(p.message for p in problems))}
            uow.dead_letter(d.subject, d.data, f"rjct.{problems[0].code}", receipt["status_reason_message"],
                            msg_id=domain.storable(mid), **d.where())
        else:
            for ev in note.message.notify_event:
                death, bad = check_event(ev, today)
                item: dict[str, Any] = {"reference_id": domain.storable(ev.reference_id),
                                        "status": ReceiptStatus.succ.value, "status_reason_code": None,
                                        "status_reason_message": None}
                if death is None:
                    item |= {"status": ReceiptStatus.rjct.value, **_reason(bad[0]),
                             "status_reason_message": domain.storable("; ".join(p.message for p in bad))}
                else:
                    item |= await _record(uow, death, people.get(death.nik), corr) or {}
                receipt["notify_status"].append(item)
        body = json.dumps(receipt).encode()
        await store.replace_receipt(s, RECEIPT_KEY, key, body)
        uow.send(names_.crvs_receipts(), body)
        log.info("registry.crvs_notification", status=receipt["status"], events=len(receipt["notify_status"]))


def decode_notification(msg: Msg) -> bytes:
    """Only the size here: check_notification reads the rest, naming every failed rule."""
    if len(msg.data) > MAX_NOTIFY_BYTES:
        raise Rejection("rjct.message.too_large",
                        f"the message has {len(msg.data)} bytes; a notify message has at most {MAX_NOTIFY_BYTES}")
    return msg.data


def register(reg: Registry) -> None:
    names_ = reg.kit.names

    async def handle_batch(uow: UnitOfWork, batch: list[Delivery[bytes]]) -> None:
        await handle(reg, uow, batch)

    # inbox=False: the receipts table is this consumer's idempotency record; every message,
    # rejected or not, reaches the handler so that it gets its receipt
    reg.kit.consume(ConsumerSpec(
        durable=CONSUMER, stream=names_.stream("CRVS"), subject=names_.crvs_deaths(), decode=decode_notification,
        handle=handle_batch, inbox=False, handles_rejections=True, batch=50))
