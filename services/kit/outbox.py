"""Transactional outbox: events are rows written in the same transaction as the change they
describe; a relay publishes them to JetStream with `Nats-Msg-Id` = the row id and marks them
published. A crash between publish and mark makes the relay publish again, and JetStream's
de-duplication window (and every consumer's inbox) drops the repeat.

Rows are claimed with `FOR UPDATE SKIP LOCKED`, never by tailing an id: concurrent
transactions commit out of id order. Published rows are kept (`published_at` set) so a
damaged stream can be re-published from the database.
"""
from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import sqlalchemy as sa
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from contracts.deadletter import DeadLetter
from contracts.envelope import Envelope, Event, envelope, utcnow
from contracts.subjects import Names
from services.kit import logging as klog

log = klog.get(__name__)


ACK_TIMEOUT = 30.0  # seconds to wait for a batch's PubAcks before trying the batch again


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "outbox", metadata,
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Index("outbox_unpublished", "seq", postgresql_where=sa.text("published_at is null")),
    )


def inbox_table(metadata: sa.MetaData) -> sa.Table:
    """Message ids each consumer has processed: the idempotent-consumer record."""
    return sa.Table(
        "inbox", metadata,
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def event_row(names: Names, event: Event, producer: str, **meta: Any) -> dict:
    env = envelope(event, producer, **meta)
    return {"id": env.event_id, "subject": names.event(event.event_type),
            "payload": env.model_dump_json().encode(), "headers": {}}


def message_row(subject: str, body: BaseModel | bytes, msg_id: uuid.UUID | None = None) -> dict:
    payload = body if isinstance(body, bytes) else body.model_dump_json().encode()
    return {"id": msg_id or uuid.uuid4(), "subject": subject, "payload": payload, "headers": {}}


def deadletter_row(names: Names, service: str, subject: str, data: bytes, reason_code: str, reason: str,
                   msg_id: str | None) -> dict:
    dl = DeadLetter(service=service, subject=subject, reason_code=reason_code, reason=reason, msg_id=msg_id,
                    payload_b64=base64.b64encode(data).decode(), received_at=utcnow())
    # deterministic id: a redelivered bad message dead-letters once
    return message_row(names.deadletter(service), dl,
                       uuid.uuid5(uuid.NAMESPACE_URL, f"deadletter/{service}/{subject}/{msg_id or data.hex()[:200]}"))


async def add(session: AsyncSession | AsyncConnection, table: sa.Table, rows: list[dict]) -> None:
    if rows:
        # on conflict: the same deterministic row twice (a retried batch) is one event
        await session.execute(insert(table).on_conflict_do_nothing(index_elements=["id"]), rows)


class OutboxRelay:
    """Publishes unpublished outbox rows; run one per service process (several are safe)."""

    def __init__(self, engine: AsyncEngine, table: sa.Table, js: JetStreamContext, *, batch: int = 1000,
                 poll: float = 0.05) -> None:
        self.engine, self.table, self.js = engine, table, js
        self.batch, self.poll = batch, poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.published = 0
        self.duplicates = 0  # publishes JetStream reported as repeats (a relay died before marking)

    def kick(self) -> None:
        """Called after a commit that added rows, so they go out without waiting for a poll."""
        self._wake.set()

    async def drain_once(self) -> int:
        t = self.table
        async with self.engine.begin() as conn:
            rows = (await conn.execute(
                sa.select(t.c.id, t.c.subject, t.c.payload, t.c.headers)
                .where(t.c.published_at.is_(None)).order_by(t.c.seq).limit(self.batch)
                .with_for_update(skip_locked=True))).all()
            if not rows:
                return 0
            # pipelined: send the whole batch, then wait for every PubAck (one round trip per
            # publish capped the relay at the round-trip rate). Rows are marked only when all acks
            # are in; any error or timeout leaves them, and the re-send is dropped by Nats-Msg-Id.
            futures = [await self.js.publish_async(r.subject, r.payload,
                                                   headers={**(r.headers or {}), "Nats-Msg-Id": str(r.id)})
                       for r in rows]
            acks = await asyncio.wait_for(asyncio.gather(*futures), ACK_TIMEOUT)
            await conn.execute(sa.update(t).where(t.c.id == sa.func.any(sa.cast([r.id for r in rows],
                                                                                  sa.ARRAY(sa.Uuid))))
                               .values(published_at=sa.func.now()))
        dups = sum(1 for a in acks if a.duplicate)
        self.published += len(rows)
        self.duplicates += dups
        if dups:
            log.info("outbox.republished", rows=len(rows), duplicates=dups)
        return len(rows)

    async def run(self) -> None:
        while not self._stopping:
            try:
                n = await self.drain_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database away: keep the rows, try again
                if self._stopping:  # a cancellation the driver turned into an error: stop anyway
                    return
                log.warning("outbox.publish_failed", error=str(exc)[:300])
                await asyncio.sleep(1.0)
                continue
            if n < self.batch:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll if n == 0 else 0)
                except (asyncio.TimeoutError, TimeoutError):
                    pass

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            # bounded: a service must stop even if a driver swallowed the cancellation
            done, _ = await asyncio.wait({self._task}, timeout=10)
            if not done:
                log.warning("outbox.stop_timeout")


async def claim(session: AsyncSession, inbox: sa.Table, consumer: str, message_ids: list[str]) -> set[str]:
    """Record message ids as processed by `consumer`; return only those not seen before.

    Runs in the same transaction as the effects, so a rollback un-claims them.
    """
    if not message_ids:
        return set()
    # sorted: two transactions claiming overlapping ids (a redelivery race) wait, never deadlock
    res = await session.execute(
        insert(inbox).values([{"consumer": consumer, "message_id": m} for m in sorted(set(message_ids))])
        .on_conflict_do_nothing().returning(inbox.c.message_id))
    return set(res.scalars().all())


def decode_envelope(data: bytes, events: dict[str, type[Event]]) -> Envelope:
    """Decode an envelope and its `data` by `event_type`; raises ValueError with a reason."""
    raw = json.loads(data)
    cls = events.get(raw.get("event_type")) if isinstance(raw, dict) else None
    if cls is None:
        raise ValueError(f"unknown event_type {raw.get('event_type') if isinstance(raw, dict) else None!r}")
    return Envelope[cls].model_validate(raw)  # type: ignore[valid-type]
