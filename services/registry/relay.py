"""The kit's outbox relay with pipelined publishing, for the registry's bulk volume.

Each accepted enrolment report puts three rows in the outbox (person, enrolment, receipt);
awaiting a PubAck per message (the kit's `gather` of `js.publish`) made the relay the slowest
stage. `publish_async` sends the whole claimed batch and then awaits every PubAck; rows are
marked published only when all acks are in, inside the same transaction that claimed them, so
the guarantees are the kit's: a failure leaves the rows for the next attempt, and the
`Nats-Msg-Id` (the row id) lets JetStream drop a repeat.
"""
from __future__ import annotations

import asyncio

import sqlalchemy as sa

from services.kit import logging as klog
from services.kit.outbox import OutboxRelay
from services.kit.runtime import ServiceRuntime

log = klog.get(__name__)


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
            acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
            await conn.execute(sa.update(t).where(t.c.id == sa.func.any(sa.cast([r.id for r in rows],
                                                                                  sa.ARRAY(sa.Uuid))))
                               .values(published_at=sa.func.now()))
        dups = sum(1 for a in acks if a.duplicate)
        self.published += len(rows)
        self.duplicates += dups
        if dups:
            log.info("outbox.republished", rows=len(rows), duplicates=dups)
        return len(rows)


def install(rt: ServiceRuntime) -> None:
    """Swap the runtime's relay for the pipelined one at start-up (the kit builds its own in start())."""
    async def _swap() -> None:
        old = rt.relay
        if old is None or isinstance(old, PipelinedRelay):
            return
        await old.stop()
        rt.relay = PipelinedRelay(old.engine, old.table, old.js, batch=max(old.batch, 3000), poll=old.poll)
        rt.relay.start()
    rt.on_start.insert(0, _swap)
