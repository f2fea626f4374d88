"""Intake follows the registry: proposal decisions (for the cases that proposed someone) and
enrolments in programs with home visits (the companions' caseload). One durable batch
consumer on REGISTRY, idempotent through the inbox, ack after commit."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from faststream import AckPolicy, Context
from faststream.nats import JStream
from nats.aio.msg import Msg

from contracts.catalog import EVENTS
from contracts.envelope import utcnow
from contracts.registry import EnrolmentChange, EnrolmentsChanged, ProposalDecided
from services.intake import cases, visits
from services.intake.config import IntakeSettings
from services.kit import logging as klog
from services.kit.consumer import dead_letter
from services.kit.outbox import add, claim, deadletter_row, decode_envelope
from services.kit.runtime import ServiceRuntime

log = klog.get(__name__)
CONSUMER = "intake-registry-v1"
POISON_AFTER = 5
WANTED = {ProposalDecided.event_type: ProposalDecided, EnrolmentsChanged.event_type: EnrolmentsChanged}


def _parse(m: Msg) -> tuple[str, str | None]:
    """(idempotency key, event_type). The key is the envelope's event_id: a copy re-published
    outside JetStream's de-duplication window still carries it."""
    try:
        raw = json.loads(m.data)
    except (ValueError, UnicodeDecodeError):
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    eid = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
    key = eid or (m.headers or {}).get("Nats-Msg-Id") or f"seq-{m.metadata.sequence.stream}"
    etype = raw.get("event_type") if isinstance(raw.get("event_type"), str) else None
    return key, etype


async def follow_registry(rt: ServiceRuntime, cfg: IntakeSettings, msgs: list[Msg]) -> dict[str, int]:
    names = rt.names
    counts = {"decisions": 0, "enrolments": 0, "ignored": 0, "invalid": 0, "duplicate": 0}
    async with rt.sessions.begin() as s:
        parsed = [(m, *_parse(m)) for m in msgs]
        fresh = await claim(s, rt.inbox, CONSUMER, [k for _m, k, _t in parsed])
        decided: list[ProposalDecided] = []
        enrolments: list[EnrolmentChange] = []
        out: list[dict] = []
        seen: set[str] = set()
        for m, mid, etype in parsed:
            if mid not in fresh or mid in seen:
                counts["duplicate"] += 1
                continue
            seen.add(mid)
            if etype in EVENTS and etype not in WANTED:
                counts["ignored"] += 1  # other registry events are not intake's business
                continue
            try:
                env = decode_envelope(m.data, WANTED)
            except ValueError as exc:
                out.append(deadletter_row(names, "intake", m.subject, m.data, "rjct.intake.invalid_event",
                                          str(exc)[:1000], mid))
                counts["invalid"] += 1
                continue
            if isinstance(env.data, ProposalDecided):
                decided.append(env.data)
            else:
                enrolments.extend(env.data.changes)
        now = utcnow()
        out += await cases.apply_decisions(rt, s, decided, now)
        out += await visits.apply_enrolments(rt, cfg, s, enrolments, now)
        counts["decisions"], counts["enrolments"] = len(decided), len(enrolments)
        await add(s, rt.outbox, out)
    rt.kick()
    log.info("intake.followed_registry", **counts)
    return counts


def register(rt: ServiceRuntime, cfg: IntakeSettings) -> None:
    names = rt.names

    # a push consumer, one message per call: intake's traffic is a trickle, and the batch pull
    # subscriber (0.1 s fetches) was measured here to strand about one message in two for
    # `ack_wait` (30 s) when it arrives as a fetch expires (delivered, never handed over)
    @rt.broker.subscriber(
        names.subject("registry.events.>"), stream=JStream(names.stream("REGISTRY"), declare=False),
        queue=CONSUMER, ack_policy=AckPolicy.NACK_ON_ERROR)  # the queue names the durable too
    async def on_registry(body: Any, msg: Any = Context("message")) -> None:
        m = msg.raw_message
        try:
            await follow_registry(rt, cfg, [m])
        except Exception as exc:
            n = m.metadata.num_delivered or 1
            log.warning("intake.follow_failed", deliveries=n, error=f"{type(exc).__name__}: {exc}"[:500])
            if n < POISON_AFTER:
                await asyncio.sleep(0.2 * n)  # a database blip: nacked, tried again a little later
                raise
            # the same message keeps failing: a dead letter with the reason, not an endless loop
            await dead_letter(rt, m, exc)

    async def escalation_timer() -> None:
        while True:
            await asyncio.sleep(cfg.escalation_interval_seconds)
            try:
                await cases.escalate_overdue(rt, cfg)
            except Exception as exc:  # the database may be away; try again next round
                log.warning("intake.escalation_failed", error=str(exc)[:300])

    rt.background(escalation_timer, "intake-escalation")
