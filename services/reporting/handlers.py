"""Reporting subscribers: REGISTRY, INTAKE and DISBURSEMENT events into read models, idempotently.

One batch pull subscriber per stream; a batch is decoded, claimed in the inbox and folded
into the aggregates in one transaction, and acknowledged after the commit. Undecodable
events are dead-lettered; event types reporting does not use are acknowledged and skipped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from contracts.envelope import Envelope
from contracts.subjects import Names
from services.kit import logging as klog
from services.kit.consumer import batch_subscriber
from services.kit.outbox import add, claim, deadletter_row
from services.kit.runtime import ServiceRuntime
from services.reporting import adapters, store
from services.reporting.adapters import ADAPTERS
from services.reporting.facts import Fact

log = klog.get(__name__)
SERVICE = "reporting"
# (stream, subject filter, durable consumer): the registry durable keeps its first name
SOURCES = (
    ("REGISTRY", "registry.events.>", "reporting-registry-v1"),
    ("INTAKE", "intake.events.>", "reporting-intake-v1"),
    ("DISBURSEMENT", "disbursement.>", "reporting-disbursement-v1"),
)


@dataclass
class Decoded:
    facts: dict[str, list[Fact]] = field(default_factory=dict)  # event id -> its facts
    bad: list[dict] = field(default_factory=list)                # dead-letter outbox rows
    skipped: int = 0


def decode(names: Names, msgs: list[Msg]) -> Decoded:
    """Facts per event id for the event types reporting uses; the rest skipped or dead-lettered."""
    out = Decoded()
    for m in msgs:
        msg_id = (m.headers or {}).get("Nats-Msg-Id")
        try:
            raw = json.loads(m.data)
            if not isinstance(raw, dict):
                raise ValueError("an event must be a JSON object (an envelope)")
            adapter = ADAPTERS.get(raw.get("event_type"))
            if adapter is None:
                out.skipped += 1
                continue
            model, to_facts = adapter
            env = Envelope[model].model_validate(raw)  # type: ignore[valid-type]
            out.facts[str(env.event_id)] = to_facts(env)
        except ValueError as exc:  # JSON and pydantic errors are ValueErrors
            out.bad.append(deadletter_row(names, SERVICE, m.subject, m.data, "rjct.event.invalid",
                                          str(exc)[:2000], msg_id))
    return out


async def consume(rt: ServiceRuntime, consumer: str, msgs: list[Msg]) -> None:
    d = decode(rt.names, msgs)
    async with rt.sessions.begin() as s:
        fresh = await claim(s, rt.inbox, consumer, list(d.facts))
        await store.apply(s, [f for eid, facts in d.facts.items() if eid in fresh for f in facts])
        await add(s, rt.outbox, d.bad)
    if d.bad:
        log.warning("reporting.dead_lettered", count=len(d.bad), consumer=consumer)
        rt.kick()


def register(rt: ServiceRuntime) -> None:
    names = rt.names
    adapters.set_secret(rt.settings.auth_secret)
    for stream, subject, durable in SOURCES:
        # kit's batch subscriber: ack after commit, retry with delay, split a poison batch
        batch_subscriber(rt, names.subject(subject), names.stream(stream), durable,
                         lambda rt_, msgs, durable=durable: consume(rt_, durable, msgs))
