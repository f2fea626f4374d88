"""Reporting subscribers: registry events into read models, idempotently."""
from __future__ import annotations

from typing import Any

from faststream import AckPolicy, Context
from faststream.nats import JStream, PullSub
from nats.aio.msg import Msg

from contracts.catalog import EVENTS
from contracts.registry import EnrolmentChanged
from services.kit import logging as klog
from services.kit.outbox import add, claim, deadletter_row, decode_envelope
from services.kit.runtime import ServiceRuntime
from services.reporting import domain, store

log = klog.get(__name__)
CONSUMER = "reporting-registry-v1"


async def consume_registry(rt: ServiceRuntime, msgs: list[Msg]) -> None:
    decoded, bad = [], []
    for m in msgs:
        try:
            decoded.append((m, decode_envelope(m.data, EVENTS)))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            bad.append(deadletter_row(rt.names, "reporting", m.subject, m.data, "rjct.event.invalid",
                                      str(exc)[:2000], (m.headers or {}).get("Nats-Msg-Id")))
    async with rt.sessions.begin() as s:
        fresh = await claim(s, rt.inbox, CONSUMER, [str(env.event_id) for _m, env in decoded])
        changed = [env.data for _m, env in decoded
                   if str(env.event_id) in fresh and isinstance(env.data, EnrolmentChanged)]
        await store.bump_counts(s, domain.enrolment_deltas(changed))
        await add(s, rt.outbox, bad)
    if bad:
        log.warning("reporting.dead_lettered", count=len(bad))
        rt.kick()


def register(rt: ServiceRuntime) -> None:
    names = rt.names

    @rt.broker.subscriber(
        names.subject("registry.events.>"), stream=JStream(names.stream("REGISTRY"), declare=False),
        durable=CONSUMER, pull_sub=PullSub(batch_size=500, timeout=0.1, batch=True),
        ack_policy=AckPolicy.NACK_ON_ERROR)
    async def on_registry(body: list[Any], msg: Any = Context("message")) -> None:
        await consume_registry(rt, msg.raw_message)
