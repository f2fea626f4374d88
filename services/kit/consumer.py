"""A JetStream batch consumer that cannot be blocked by one poison message.

`batch_subscriber(rt, subject, stream, durable, handler)` registers a FastStream pull batch
subscriber (ack after the handler returns, NACK_ON_ERROR so a database error is retried).
Bad *input* is the handler's job (receipt, dead letter). This helper covers the other case:
the handler keeps raising on a batch (a bug, a value it did not foresee). Without it that
batch would be redelivered forever and block everything behind it.

After a batch has been delivered `poison_after` times, the batch is split and each message
is handled on its own; the ones that still raise go to `deadletter.<service>` through the
outbox, with the exception as the reason, and the whole batch is acked. Because the handler
is transactional and idempotent (kit inbox), the messages that succeed one by one are
processed exactly once. A database outage does not dead-letter anything: writing the dead
letter needs the database too, so the batch is nacked and tried again.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from faststream import AckPolicy, Context
from faststream.nats import JStream, PullSub
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from services.kit import logging as klog
from services.kit.outbox import add, deadletter_row

log = klog.get(__name__)

BatchHandler = Callable[[Any, list[Msg]], Awaitable[Any]]
REASON_CODE = "rjct.handler.error"


def deliveries(msgs: list[Msg]) -> int:
    """How many times the most-redelivered message of this batch has been delivered."""
    return max((m.metadata.num_delivered or 1) for m in msgs) if msgs else 0


def _msg_id(m: Msg) -> str | None:
    return (m.headers or {}).get("Nats-Msg-Id")


async def dead_letter(rt: Any, m: Msg, exc: BaseException) -> None:
    """Record one message the handler cannot process, with the exception as the reason."""
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    async with rt.sessions.begin() as s:
        await add(s, rt.outbox, [deadletter_row(rt.names, rt.service, m.subject, m.data, REASON_CODE, reason,
                                                _msg_id(m))])
    rt.kick()


async def one_by_one(rt: Any, msgs: list[Msg], handler: BatchHandler) -> tuple[int, int]:
    """Handle each message alone; dead-letter those that still fail. Returns (ok, dead-lettered)."""
    ok = dead = 0
    for i, m in enumerate(msgs):
        if i and i % 50 == 0:  # one by one is slow: keep the rest of the batch from timing out
            for rest in msgs[i:]:
                await rest.in_progress()
        try:
            await handler(rt, [m])
            ok += 1
        except Exception as exc:  # noqa: BLE001 - any failure of a lone message makes it a dead letter
            await dead_letter(rt, m, exc)
            dead += 1
            log.error("consumer.dead_lettered", subject=m.subject, msg_id=_msg_id(m),
                      deliveries=m.metadata.num_delivered, error=f"{type(exc).__name__}: {exc}"[:300])
    return ok, dead


def batch_subscriber(rt: Any, subject: str, stream: str, durable: str, handler: BatchHandler, *,
                     batch_size: int = 500, timeout: float = 0.1, poison_after: int = 3,
                     retry_delay: float = 0.2, ack_wait: float | None = 10.0) -> Any:
    """Register `handler(rt, msgs)` for batches of raw nats messages on `subject` (in `stream`).

    `subject` and `stream` are full names (already through `rt.names`). The stream is never
    declared here (`declare=False`): `kit.streams.ensure_streams` owns stream configuration.
    A failing batch is retried after `retry_delay * delivery` seconds (NACK_ON_ERROR alone
    would redeliver at once and burn the retries on a database blip in milliseconds).

    `ack_wait` (seconds) bounds how long a fetched batch that never reached the handler
    waits for redelivery (server default 30 s). FastStream 0.7.8 used to drop such batches on
    a timeout-class mix-up (fixed by `kit.natsfix`); this is the defence if another path does.
    Set when the durable is first created: nats-py ignores a changed config for an existing
    durable.
    """

    async def on_batch(body: list[Any], msg: Any = Context("message")) -> None:
        msgs: list[Msg] = msg.raw_message
        try:
            await handler(rt, msgs)
            return
        except Exception as exc:
            n = deliveries(msgs)
            if n < poison_after:
                log.warning("consumer.batch_failed", subject=subject, durable=durable, size=len(msgs),
                            deliveries=n, error=f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(retry_delay * n)
                raise
            log.error("consumer.poison_batch", subject=subject, durable=durable, size=len(msgs), deliveries=n,
                      error=f"{type(exc).__name__}: {exc}"[:300])
        # outside the except block: a failure here (database down) nacks the batch for a later try
        ok, dead = await one_by_one(rt, msgs, handler)
        log.warning("consumer.poison_batch_split", subject=subject, durable=durable, processed=ok, dead_lettered=dead)

    on_batch.__name__ = f"on_{durable.replace('-', '_')}"
    return rt.broker.subscriber(
        subject, stream=JStream(stream, declare=False), durable=durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=timeout, batch=True),
        config=ConsumerConfig(ack_wait=ack_wait) if ack_wait else None,
        ack_policy=AckPolicy.NACK_ON_ERROR)(on_batch)
