"""Disbursement subscribers: registry events into our own copy of enrolments; payment channel
settlements into the ledger. Both idempotent through the inbox, acked after commit."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from faststream import AckPolicy, Context
from faststream.nats import JStream, PullSub
from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert

from contracts.catalog import EVENTS
from contracts.disbursement import Settlement
from services.disbursement import budgets, store
from services.disbursement.config import DisbursementSettings
from services.kit import logging as klog
from services.kit.outbox import add, claim, deadletter_row, decode_envelope
from services.kit.runtime import ServiceRuntime

log = klog.get(__name__)
SERVICE = "disbursement"
REGISTRY_CONSUMER = "disbursement-registry-v1"
SETTLEMENT_CONSUMER = "disbursement-settlements-v1"
VERIFIED = {"verified", "corrected"}


def _msg_id(m: Msg) -> str | None:
    return (m.headers or {}).get("Nats-Msg-Id")


async def consume_registry(rt: ServiceRuntime, msgs: list[Msg]) -> None:
    decoded, bad = [], []
    for m in msgs:
        try:
            decoded.append(decode_envelope(m.data, EVENTS))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            bad.append(deadletter_row(rt.names, SERVICE, m.subject, m.data, "rjct.event.invalid", str(exc)[:2000],
                                      _msg_id(m)))
    async with rt.sessions.begin() as s:
        fresh = await claim(s, rt.inbox, REGISTRY_CONSUMER, [str(e.event_id) for e in decoded])
        enrol: dict[tuple[str, str], dict] = {}
        verif: dict[str, dict] = {}
        for env in decoded:
            if str(env.event_id) not in fresh:
                continue
            d = env.data
            if env.event_type == "registry.enrolments_changed":
                for c in d.changes:
                    row = {"nik": c.nik, "programme_identifier": c.programme_identifier, "no_kk": c.no_kk,
                           "village_code": c.village_code, "birth_date": c.birth_date,
                           "enrolment_status": str(c.enrolment_status), "status_change_date": c.status_change_date}
                    k = (c.nik, c.programme_identifier)
                    if k not in enrol or row["status_change_date"] >= enrol[k]["status_change_date"]:
                        enrol[k] = row
                    if c.verification_status is not None:
                        verif.setdefault(c.nik, {"nik": c.nik, "verified": str(c.verification_status) in VERIFIED,
                                                 "result": str(c.verification_status),
                                                 "recorded_at": env.occurred_at})
            elif env.event_type == "registry.verification_recorded":
                cur = verif.get(d.nik)
                if cur is None or env.occurred_at >= cur["recorded_at"]:
                    verif[d.nik] = {"nik": d.nik, "verified": bool(d.verified), "result": str(d.result),
                                    "recorded_at": env.occurred_at}
        if enrol:
            t = store.enrolments
            stmt = insert(t)
            await s.execute(stmt.on_conflict_do_update(
                index_elements=["nik", "programme_identifier"],
                set_={c: stmt.excluded[c] for c in ("no_kk", "village_code", "birth_date", "enrolment_status",
                                                    "status_change_date")} | {"updated_at": sa.func.now()},
                where=stmt.excluded.status_change_date >= t.c.status_change_date), list(enrol.values()))
        if verif:
            v = store.verifications
            stmt = insert(v)
            await s.execute(stmt.on_conflict_do_update(
                index_elements=["nik"], set_={c: stmt.excluded[c] for c in ("verified", "result", "recorded_at")},
                where=stmt.excluded.recorded_at >= v.c.recorded_at), list(verif.values()))
        await add(s, rt.outbox, bad)
    if bad:
        rt.kick()


async def consume_settlements(rt: ServiceRuntime, cfg: DisbursementSettings, msgs: list[Msg]) -> dict[str, int]:
    """One transaction per settlement (each locks the chain); a bad one is dead-lettered."""
    counts: dict[str, int] = {}
    for m in msgs:
        mid = _msg_id(m)
        try:
            st = Settlement.model_validate_json(m.data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in exc.errors())
            await _dead(rt, m, "rjct.settlement.invalid", f"not a valid settlement: {problems}", mid)
            counts["invalid"] = counts.get("invalid", 0) + 1
            continue
        key = mid or st.settlement_id
        try:
            async with rt.sessions.begin() as s:
                if not await claim(s, rt.inbox, SETTLEMENT_CONSUMER, [key]):
                    outcome = "seen"
                else:
                    outcome = await budgets.settle(s, rt.names, cfg, st)
        except budgets.SettlementRejected as exc:
            await _dead(rt, m, exc.code, str(exc), key)
            outcome = "rejected"
        counts[outcome] = counts.get(outcome, 0) + 1
    rt.kick()
    log.info("disbursement.settlements", **counts)
    return counts


async def _dead(rt: ServiceRuntime, m: Msg, code: str, reason: str, mid: str | None) -> None:
    async with rt.sessions.begin() as s:
        await add(s, rt.outbox, [deadletter_row(rt.names, SERVICE, m.subject, m.data, code, reason, mid)])
    log.warning("disbursement.dead_lettered", code=code, reason=reason)


def register(rt: ServiceRuntime, cfg: DisbursementSettings) -> None:
    names = rt.names

    @rt.broker.subscriber(
        names.subject("registry.events.>"), stream=JStream(names.stream("REGISTRY"), declare=False),
        durable=REGISTRY_CONSUMER, pull_sub=PullSub(batch_size=500, timeout=0.1, batch=True),
        ack_policy=AckPolicy.NACK_ON_ERROR)
    async def on_registry(body: list[Any], msg: Any = Context("message")) -> None:
        await consume_registry(rt, msg.raw_message)

    @rt.broker.subscriber(
        names.subject("channel.*.settlements"), stream=JStream(names.stream("CHANNEL"), declare=False),
        durable=SETTLEMENT_CONSUMER, pull_sub=PullSub(batch_size=200, timeout=0.1, batch=True),
        ack_policy=AckPolicy.NACK_ON_ERROR)
    async def on_settlements(body: list[Any], msg: Any = Context("message")) -> None:
        await consume_settlements(rt, cfg, msg.raw_message)

