"""Disbursement's two consumers (the kit's one consumer, services/kit/consumer.py):

- `disbursement-registry-v1` on `registry.events.>`: enrolment changes and verification
  results into disbursement's own copy (the registry's tables are never read); life-status
  changes and verification expiries (life.py: a stopping status cancels unpaid instructions);
- `disbursement-settlements-v1` on `channel.*.settlements`: payment channels' reports (per-item
  on-disburse batches, or single settlements) into the ledger, a whole batch in one unit of
  work under one chain lock; a channel settles only what was issued to it;
- `disbursement-statements-v1` on `channel.*.statements`: a channel's daily statement,
  reconciled against the books (reconcile.py).

Bytes are decoded by the kit's decoders with limits, so whatever a channel (an outside
party) or a broken producer sends becomes a dead letter with a reason code on
`deadletter.disbursement`, never an exception that blocks the messages behind it.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from contracts.catalog import EVENTS
from contracts.channel import DisburseResult, DisburseStatus, OnDisburse, Statement
from contracts.disbursement import Settlement, SettlementStatus
from contracts.envelope import Envelope, Event
from contracts.registry import EnrolmentsChanged, LifeStatusChanged, VerificationRecorded, VerificationsExpired
from services.disbursement import budgets, life, reconcile, store
from services.disbursement.domain import SettlementRejected
from services.kit import logging as klog
from services.kit.consumer import ConsumerSpec, Delivery
from services.kit.decode import Limits, decode_envelope, decode_model, load_json
from services.kit.uow import UnitOfWork

if TYPE_CHECKING:
    from services.disbursement.app import Disbursement

log = klog.get(__name__)
REGISTRY_CONSUMER = "disbursement-registry-v1"
SETTLEMENT_CONSUMER = "disbursement-settlements-v1"
VERIFIED = {"verified", "corrected"}
WANTED: dict[str, type[Event]] = {"registry.enrolments_changed": EnrolmentsChanged,
                                  "registry.verification_recorded": VerificationRecorded,
                                  # issue 17: life status stops (and resumes) payments; expiries
                                  # make people unverified for the programs listed (life.py)
                                  "registry.life_status_changed": LifeStatusChanged,
                                  "registry.verifications_expired": VerificationsExpired}
# the registry's other events: acknowledged and skipped, not dead-lettered
SKIPPED = frozenset(t for t in EVENTS if t.startswith("registry.")) - set(WANTED)
STATEMENT_CONSUMER = "disbursement-statements-v1"
# an on-disburse batch is at most 500 results of ~300 bytes: 256 KiB leaves room, and a 900 KB
# message still becomes a dead letter that fits (issue 11)
SETTLEMENT_LIMITS = Limits(max_bytes=256 * 1024)
# a statement is at most 2,000 lines of ~150 bytes
STATEMENT_LIMITS = Limits(max_bytes=512 * 1024)
MAX_KEY = 128


def storable_key(key: str) -> str:
    """A key the inbox (a btree-indexed text column) can hold: a header of kilobytes or with a
    NUL would fail the claim, and with it the whole batch, every time; such a key is kept as its
    digest."""
    if len(key) <= MAX_KEY and "\x00" not in key:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def registry_key(msg: Msg) -> str:
    """The event id (the registry's relay sends it as Nats-Msg-Id), as before the kit."""
    mid = (msg.headers or {}).get("Nats-Msg-Id")
    return storable_key(mid) if mid else f"seq-{msg.metadata.sequence.stream}"


def channel_of(subject: str) -> str:
    """`[prefix.]channel.<name>.settlements` -> `<name>`: the subject is the channel's identity
    (NATS lets each channel publish only on its own), never a field it writes itself."""
    parts = subject.split(".")
    return parts[-2] if len(parts) >= 3 else ""


def settlement_key(msg: Msg) -> str:
    """`<channel>:<settlement_id>`, the channel taken from the subject: settlement ids are
    unique per channel, so one channel's ids can never shadow (and so suppress) another's.
    Channels send `<channel>:<settlement_id>` as Nats-Msg-Id (JetStream's duplicate window
    spans the whole CHANNEL stream); a bare id gets the prefix here, so both forms, and a
    dead letter's replay, are the same key. Without a header: the body's settlement_id."""
    ch = channel_of(msg.subject)
    mid = (msg.headers or {}).get("Nats-Msg-Id")
    if not mid:
        raw = load_json(msg.data, SETTLEMENT_LIMITS)  # unreadable: the kit keys it by stream sequence
        sid = raw.get("settlement_id") if isinstance(raw, dict) else None
        if not (isinstance(sid, str) and sid):
            return f"seq-{msg.metadata.sequence.stream}"
        mid = sid
    return storable_key(mid if mid.startswith(f"{ch}:") else f"{ch}:{mid}")


def statement_key(msg: Msg) -> str:
    """`<channel>:<statement_id>`, like settlements: one channel's ids never shadow another's."""
    ch = channel_of(msg.subject)
    raw = load_json(msg.data, STATEMENT_LIMITS)
    sid = raw.get("statement_id") if isinstance(raw, dict) else None
    return storable_key(f"{ch}:{sid}") if isinstance(sid, str) and sid else f"seq-{msg.metadata.sequence.stream}"


def decode_registry(msg: Msg) -> Envelope[Any] | None:
    return decode_envelope(msg.data, WANTED, skip=SKIPPED)


def decode_settlement(msg: Msg) -> Settlement | OnDisburse:
    """A batch of per-item results (on-disburse) or, as before, one settlement."""
    raw = load_json(msg.data, SETTLEMENT_LIMITS)
    model: type[Settlement] | type[OnDisburse] = OnDisburse if isinstance(raw, dict) and "results" in raw \
        else Settlement
    return decode_model(msg.data, model, SETTLEMENT_LIMITS, code="rjct.settlement.invalid")


def decode_statement(msg: Msg) -> Statement:
    return decode_model(msg.data, Statement, STATEMENT_LIMITS, code="rjct.statement.invalid")


def _as_settlement(batch: OnDisburse, k: int, r: DisburseResult) -> Settlement:
    """One on-disburse result in the ledger's terms: succ is paid, rjct is failed with its code."""
    reason = None
    if r.status == DisburseStatus.rjct and r.status_reason_code:
        reason = r.status_reason_code + (f": {r.status_reason_message}" if r.status_reason_message else "")
    return Settlement.model_construct(settlement_id=f"{batch.settlement_id}#{k}", instruction_id=r.disbursement_id,
                                      status=SettlementStatus.paid if r.status == DisburseStatus.succ
                                      else SettlementStatus.failed,
                                      reason=reason, channel_reference=r.channel_reference, settled_at=r.timestamp)


# --- registry events ---------------------------------------------------------------------------

def _enrolment_rows(envs: list[Envelope[Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The batch folded to one row per (NIK, program) and per NIK: the latest change wins."""
    enrol: dict[tuple[str, str], dict[str, Any]] = {}
    verif: dict[str, dict[str, Any]] = {}
    for env in envs:
        d = env.data
        if isinstance(d, EnrolmentsChanged):
            for c in d.changes:
                row = {"nik": c.nik, "programme_identifier": c.programme_identifier, "no_kk": c.no_kk,
                       "village_code": c.village_code, "birth_date": c.birth_date,
                       "enrolment_status": str(c.enrolment_status), "status_change_date": c.status_change_date,
                       "payee": c.payee.model_dump(mode="json") if c.payee else None}
                k = (c.nik, c.programme_identifier)
                if k not in enrol or row["status_change_date"] >= enrol[k]["status_change_date"]:
                    if row["payee"] is None and k in enrol:  # a change without payee details keeps the known ones
                        row["payee"] = enrol[k]["payee"]
                    enrol[k] = row
                if c.verification_status is not None:
                    verif.setdefault(c.nik, {"nik": c.nik, "verified": str(c.verification_status) in VERIFIED,
                                             "result": str(c.verification_status), "recorded_at": env.occurred_at})
        elif isinstance(d, VerificationRecorded):
            cur = verif.get(d.nik)
            if cur is None or env.occurred_at >= cur["recorded_at"]:
                verif[d.nik] = {"nik": d.nik, "verified": bool(d.verified), "result": str(d.result),
                                "recorded_at": env.occurred_at}
    return list(enrol.values()), list(verif.values())


async def follow_registry(deps: Disbursement, uow: UnitOfWork, batch: list[Delivery[Envelope[Any]]]) -> None:
    envs = [d.value for d in batch if d.value is not None]
    enrol, verif = _enrolment_rows(envs)
    await store.upsert_enrolments(uow.session, enrol)
    await store.upsert_verifications(uow.session, verif)
    await life.follow(uow, deps.cfg, envs)


# --- settlements -------------------------------------------------------------------------------

async def apply_settlements(deps: Disbursement, uow: UnitOfWork, batch: list[Delivery[Settlement]]) -> None:
    """One unit of work for the batch; a settlement the rules refuse is dead-lettered with its
    reason code and changes nothing (budgets.settle decides every outcome before writing)."""
    # every item of every message, in order, with what a refusal dead-letters: a single
    # settlement its message, an on-disburse item that item alone (keyed <message key>#<n>)
    items: list[tuple[Settlement, str, bytes, str, Delivery[Any]]] = []
    for d in batch:
        if isinstance(d.value, OnDisburse):
            for k, r in enumerate(d.value.results):
                items.append((_as_settlement(d.value, k, r), channel_of(d.subject),
                              r.model_dump_json().encode(), f"{d.key}#{k}", d))
        elif d.value is not None:
            items.append((d.value, channel_of(d.subject), d.data, d.key, d))
    outcomes = await budgets.settle(uow, deps.cfg, [i[0] for i in items], [i[1] for i in items])
    counts: dict[str, int] = {}
    for (_st, _ch, data, key, d), outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, SettlementRejected):
            uow.dead_letter(d.subject, data, outcome.code, outcome.reason, msg_id=key, **d.where())
            counts[outcome.code] = counts.get(outcome.code, 0) + 1
        else:
            counts[outcome] = counts.get(outcome, 0) + 1
    log.info("disbursement.settlements", **counts)


def register(deps: Disbursement) -> None:
    kit, names = deps.kit, deps.kit.names

    async def on_settlements(uow: UnitOfWork, batch: list[Delivery[Any]]) -> None:
        await apply_settlements(deps, uow, batch)

    async def on_registry(uow: UnitOfWork, batch: list[Delivery[Any]]) -> None:
        await follow_registry(deps, uow, batch)

    async def on_statements(uow: UnitOfWork, batch: list[Delivery[Any]]) -> None:
        for d in batch:
            await reconcile.statement(deps, uow, channel_of(d.subject), d.value)

    kit.consume(ConsumerSpec(durable=REGISTRY_CONSUMER, stream=names.stream("REGISTRY"),
                             subject=names.subject("registry.events.>"), decode=decode_registry,
                             handle=on_registry, key=registry_key))
    # every settlement takes the chain lock (money is serialised behind it): 200 at a time keeps
    # a batch's transaction, and the lock, short
    kit.consume(ConsumerSpec(durable=SETTLEMENT_CONSUMER, stream=names.stream("CHANNEL"),
                             subject=names.subject("channel.*.settlements"), decode=decode_settlement,
                             handle=on_settlements, key=settlement_key, batch=200))
    # a statement is a day's items of one channel: a few a day, each reconciled in full
    kit.consume(ConsumerSpec(durable=STATEMENT_CONSUMER, stream=names.stream("CHANNEL"),
                             subject=names.subject("channel.*.statements"), decode=decode_statement,
                             handle=on_statements, key=statement_key, batch=10))
