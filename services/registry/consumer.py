"""A batch pull consumer on nats-py directly: fetch up to N messages, hand them to a handler that
commits one transaction, then acknowledge each one (ack after commit).

Why not FastStream's batch subscriber: with FastStream 0.7.8 a message published while the
handler runs (~50 ms or more, e.g. a real bulk write) is sometimes delivered to a stale pull
request and only processed after `ack_wait` (30 s) - reproduced on the original registry slice
by adding a 50 ms sleep to its handler. A plain `fetch` loop does not lose it.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.kit import logging as klog
from services.kit.consumer import deliveries, one_by_one
from services.kit.runtime import ServiceRuntime

log = klog.get(__name__)


def batch_consumer(rt: ServiceRuntime, *, subject: str, stream: str, durable: str, batch: int, timeout: float,
                   handler: Callable[[list[Msg]], Awaitable[object]], ack_wait: float = 60.0,
                   poison_after: int = 3) -> None:
    """Run `handler` on batches from `durable` (created if missing) from start-up until stop.
    A handler exception naks the batch (redelivered after a short delay); from the `poison_after`th
    delivery the batch is handled one message at a time and what still fails is dead-lettered
    (kit.consumer). Nothing is acked before its transaction commits."""

    state: dict = {}

    async def run() -> None:
        cfg = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                             ack_wait=ack_wait, max_ack_pending=max(batch * 4, 1000), filter_subject=subject)
        psub = await rt.js.pull_subscribe(subject, durable=durable, stream=stream, config=cfg,
                                          pending_msgs_limit=batch * 8)
        state["psub"] = psub
        while not state.get("stopping"):
            try:
                msgs = await psub.fetch(batch, timeout=timeout)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection trouble: nats-py reconnects, try again shortly
                if state.get("stopping"):
                    return
                log.warning("consumer.fetch_failed", durable=durable, error=str(exc)[:300])
                await asyncio.sleep(1.0)
                continue
            if not msgs:  # nats-py may return an empty batch (only status messages)
                continue
            try:
                await handler(msgs)
            except asyncio.CancelledError:
                raise  # not acked: the server redelivers after ack_wait
            except Exception as exc:
                if state.get("stopping"):  # cancelled mid-batch (the driver may say so as an error)
                    return
                log.error("consumer.batch_failed", durable=durable, messages=len(msgs), error=str(exc)[:500])
                if deliveries(msgs) < poison_after:
                    await asyncio.gather(*(m.nak(delay=1.0) for m in msgs), return_exceptions=True)
                    continue
                # a batch that keeps failing (a bug, not bad input: that gets a receipt) must not
                # block everything behind it: one by one, and what still fails is dead-lettered
                try:
                    ok, dead = await one_by_one(rt, msgs, lambda _rt, one: handler(one))
                except Exception as exc2:  # database away: dead letters need it too; try later
                    log.error("consumer.split_failed", durable=durable, error=str(exc2)[:300])
                    await asyncio.gather(*(m.nak(delay=1.0) for m in msgs), return_exceptions=True)
                    continue
                log.warning("consumer.poison_batch_split", durable=durable, processed=ok, dead_lettered=dead)
            # one after another: an ack only appends to nats-py's write buffer, and a task per
            # message (gather) cost more than the ack itself
            for m in msgs:
                try:
                    await m.ack()
                except Exception:  # connection lost: not acked, redelivered, answered from receipts
                    pass

    async def start() -> None:
        state["task"] = asyncio.create_task(run(), name=f"consumer-{durable}")

    async def stop() -> None:
        # stop fetching before the connection drains (a pending pull would hold the drain for 30 s)
        state["stopping"] = True
        task = state.get("task")
        if task:
            task.cancel()
            # bounded: a service must stop even if a driver swallowed the cancellation
            done, _ = await asyncio.wait({task}, timeout=10)
            if not done:
                log.warning("consumer.stop_timeout", durable=durable)
        if state.get("psub"):
            await state["psub"].unsubscribe()

    rt.on_start.append(start)
    rt.on_stop.append(stop)
