"""Rebuild every read model from the streams, from the first event, then swap it in.

1. Fresh tables in a side schema (`reporting_rebuild`), the same definitions as the live ones.
2. Each source stream is read from sequence 1 by a throw-away (ephemeral, no-ack) consumer
   and folded in with the live code path (`handlers.decode` + `handlers.fold`: the inbox
   claim and `store.apply`), in batches. Messages the live consumers dead-lettered are skipped.
3. Swap, in one transaction: lock the live tables (the live consumers wait), read what
   arrived meanwhile, move the live tables out and the rebuilt ones in, drop the old.
   A live batch that was waiting fails on the vanished table and is redelivered; the rebuilt
   inbox already holds every event up to the lock, so it is not counted twice.

The durable consumers are untouched: after the swap they simply carry on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit import logging as klog
from services.kit.db import make_engine
from services.kit.settings import Settings
from services.kit.streams import connect
from services.reporting import handlers, store
from services.reporting.adapters import Pseudonym, Pseudonyms
from services.reporting.settings import ReportingSettings

log = klog.get(__name__)
SIDE, OLD = "reporting_rebuild", "reporting_old"


@dataclass
class Progress:
    events: dict[str, int] = field(default_factory=dict)      # stream -> events read
    position: dict[str, int] = field(default_factory=dict)    # stream -> last sequence folded in
    seconds: float = 0.0


def _decoded(msgs, pseudonym: Pseudonym) -> list[handlers.Folded]:
    out = []
    for m in msgs:
        try:
            folded = handlers.decode(m.data, pseudonym)
        except Exception:  # a Rejection, or whatever else the kit turned into one
            continue  # dead-lettered by the live consumer already
        if folded is not None:
            out.append(folded)
    return out


async def _read(js, conn: AsyncConnection, settings: Settings, progress: Progress, *, upto: dict[str, int]) -> None:
    """Fold each stream's events after `progress.position` up to sequence `upto[stream]`."""
    names = settings.names
    pseudonym = Pseudonyms(settings.auth_secret)  # the same pseudonyms as the live service
    sizes = ReportingSettings()  # events per fold as the live consumers batch them
    for src in handlers.SOURCES:
        bare, subject, durable = src
        stream = names.stream(bare)
        start, target = progress.position.get(stream, 0) + 1, upto[stream]
        if target < start:
            continue
        sub = await js.pull_subscribe(names.subject(subject), stream=stream, config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start, ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0, max_ack_pending=-1))
        try:
            while progress.position.get(stream, 0) < target:
                try:
                    msgs = await sub.fetch(src.batch(sizes), timeout=2)
                except (FetchTimeoutError, TimeoutError):
                    break  # nothing more (the rest of the range was removed by the stream's limits)
                msgs = [m for m in msgs if m.metadata.sequence.stream <= target]
                if not msgs:
                    break
                await handlers.fold(conn, durable, _decoded(msgs, pseudonym))
                progress.position[stream] = msgs[-1].metadata.sequence.stream
                progress.events[stream] = progress.events.get(stream, 0) + len(msgs)
        finally:
            await sub.unsubscribe()


async def _into_side_schema(conn: AsyncConnection) -> None:
    """Unqualified table names mean the side schema's until the transaction ends: the live
    code path (store.py, bulk.py) names its tables without a schema, and nothing else of the
    live database can be written by mistake (no other schema is searched)."""
    await conn.execute(sa.text(f"set local search_path to {SIDE}"))


async def _last_seqs(js, settings: Settings) -> dict[str, int]:
    out = {}
    for bare, _subject, _durable in handlers.SOURCES:
        name = settings.names.stream(bare)
        out[name] = (await js.stream_info(name)).state.last_seq
    return out


async def rebuild(settings: Settings) -> Progress:
    t0 = time.perf_counter()
    engine = make_engine(settings.db_url("reporting"), pool_size=2)
    nc = await connect(settings, "sinergi-reporting-rebuild")
    js = nc.jetstream()
    progress = Progress()
    tables = [t.name for t in store.READ_MODELS]
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"drop schema if exists {SIDE} cascade"))
            await conn.execute(sa.text(f"create schema {SIDE}"))
            await _into_side_schema(conn)
            await conn.run_sync(lambda c: store.metadata.create_all(c, tables=store.READ_MODELS))
        # the bulk of the history, in its own transaction: the live service keeps running
        async with engine.begin() as conn:
            await _into_side_schema(conn)
            await _read(js, conn, settings, progress, upto=await _last_seqs(js, settings))
        async with engine.begin() as conn:
            await conn.execute(sa.text("lock table " + ", ".join(f"public.{t}" for t in tables)
                                       + " in access exclusive mode"))
            await _into_side_schema(conn)
            await _read(js, conn, settings, progress, upto=await _last_seqs(js, settings))
            await conn.execute(sa.text(f"drop schema if exists {OLD} cascade"))
            await conn.execute(sa.text(f"create schema {OLD}"))
            for t in tables:
                await conn.execute(sa.text(f"alter table public.{t} set schema {OLD}"))
                await conn.execute(sa.text(f"alter table {SIDE}.{t} set schema public"))
            await conn.execute(sa.text(f"drop schema {OLD} cascade"))
            await conn.execute(sa.text(f"drop schema {SIDE} cascade"))
    finally:
        await nc.close()
        await engine.dispose()
    progress.seconds = time.perf_counter() - t0
    log.info("reporting.rebuilt", events=sum(progress.events.values()), seconds=round(progress.seconds, 2))
    return progress
