"""The kit's outbox relay with pipelined publishing: a cycle of a million people puts a
million channel instructions in the outbox, and one-request-per-publish (`js.publish`)
caps the relay at the round-trip rate. `publish_async` sends the whole batch and then waits
for every ack; the rows are marked sent only after all acks arrived (any error or timeout:
nothing is marked, the batch is sent again and JetStream drops the repeats by Nats-Msg-Id).
"""
from __future__ import annotations

import asyncio

import sqlalchemy as sa

from services.kit import logging as klog
from services.kit.outbox import OutboxRelay

log = klog.get(__name__)
ACK_TIMEOUT = 30.0


class PipelinedRelay(OutboxRelay):
    async def drain_once(self) -> int:
        t = self.table
        async with self.engine.begin() as conn:
            rows = (await conn.execute(
                sa.select(t.c.id, t.c.subject, t.c.payload, t.c.headers)
                .where(t.c.published_at.is_(None)).order_by(t.c.seq).limit(self.batch)
                .with_for_update(skip_locked=True))).all()
            if not rows:
                return 0
            futures = [await self.js.publish_async(r.subject, r.payload,
                                                   headers={**(r.headers or {}), "Nats-Msg-Id": str(r.id)})
                       for r in rows]
            acks = await asyncio.wait_for(asyncio.gather(*futures), ACK_TIMEOUT)
            await conn.execute(sa.update(t).where(t.c.id.in_([r.id for r in rows])).values(published_at=sa.func.now()))
        dups = sum(1 for a in acks if a.duplicate)
        self.published += len(rows)
        if dups:
            log.info("outbox.republished", rows=len(rows), duplicates=dups)
        return len(rows)


def install(rt, batch: int) -> None:
    """Swap the runtime's relay for the pipelined one once the runtime has started."""
    async def _swap() -> None:
        old = rt.relay
        rt.relay = PipelinedRelay(rt.engine, rt.outbox, rt.js, batch=batch,
                                  poll=rt.settings.outbox_poll_seconds)
        if old is not None:
            await old.stop()
        rt.relay.start()
    rt.on_start.insert(0, _swap)
