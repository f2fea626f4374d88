"""The kit's consumer side against real NATS and PostgreSQL: a poison batch does not block
the stream, the inbox makes a redelivery harmless, and the outbox relay's repeat publish after
a crash is de-duplicated by JetStream."""
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid

import pytest
import sqlalchemy as sa
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.kit.consumer import REASON_CODE, batch_subscriber
from services.kit.db import drop_database, ensure_database
from services.kit.outbox import OutboxRelay, add, claim, inbox_table, message_row, outbox_table
from services.kit.runtime import ServiceRuntime
from tests.conftest import eventually

pytestmark = pytest.mark.integration
SERVICE = "kit"


def kit_metadata() -> tuple[sa.MetaData, sa.Table]:
    md = sa.MetaData()
    outbox_table(md)
    inbox_table(md)
    effects = sa.Table("effects", md, sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
                       sa.Column("key", sa.Text, nullable=False))
    return md, effects


@contextlib.asynccontextmanager
async def kit_runtime(settings, register=None):
    """A bare ServiceRuntime with its own database (outbox, inbox, an effects table)."""
    md, effects = kit_metadata()
    url = settings.db_url(SERVICE)
    await ensure_database(url)
    rt = ServiceRuntime(SERVICE, settings, md)
    try:
        async with rt.engine.begin() as conn:
            await conn.run_sync(md.create_all)
        if register:
            register(rt, effects)
        await rt.start()
        try:
            yield rt, effects
        finally:
            await rt.stop()
    finally:
        await rt.engine.dispose()
        await drop_database(url)


async def count_effects(rt, effects) -> dict[str, int]:
    async with rt.sessions() as s:
        rows = (await s.execute(sa.select(effects.c.key, sa.func.count()).group_by(effects.c.key))).all()
    return {k: n for k, n in rows}


async def read_all(js, subject: str, stream: str) -> list:
    """Every message on `subject` in `stream` right now (an ephemeral ordered read)."""
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return []
    sub = await js.pull_subscribe(subject, stream=stream,
                                  config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    out = []
    with contextlib.suppress(Exception):
        while True:
            batch = await sub.fetch(100, timeout=0.5)
            out.extend(batch)
            for m in batch:
                await m.ack()
    await sub.unsubscribe()
    return out


def _work_subject(settings) -> tuple[str, str]:
    # the agency enrolments stream stands in for any work stream: a program nobody else uses
    return settings.names.enrolments("kittest"), settings.names.stream("AGENCY_ENROLMENTS")


async def test_poison_batch_is_split_and_the_bad_message_dead_lettered(settings, nc):
    js = nc.jetstream()
    subject, stream = _work_subject(settings)
    calls: list[int] = []

    async def handler(rt, msgs):
        calls.append(len(msgs))
        async with rt.sessions.begin() as s:
            fresh = await claim(s, rt.inbox, "kit-poison", [m.headers["Nats-Msg-Id"] for m in msgs])
            rows = [{"key": m.data.decode()} for m in msgs if m.headers["Nats-Msg-Id"] in fresh]
            if rows:
                await s.execute(sa.insert(rt.metadata.tables["effects"]), rows)
            if any(m.data == b"poison" for m in msgs):
                raise ZeroDivisionError("a bug meets an unforeseen value")

    def register(rt, _effects):
        batch_subscriber(rt, subject, stream, "kit-poison-v1", handler, poison_after=3, retry_delay=0.01, ack_wait=2)

    # published before the consumer starts, so the three arrive in one batch
    for body in (b"good-1", b"poison", b"good-2"):
        await js.publish(subject, body, headers={"Nats-Msg-Id": body.decode()})
    async with kit_runtime(settings, register) as (rt, effects):
        # a stalled fetch (see batch_subscriber's ack_wait) costs up to 2 s per delivery
        await eventually(lambda: _has(rt, effects, 2), timeout=30)
        assert await count_effects(rt, effects) == {"good-1": 1, "good-2": 1}
        # whole-batch attempts (3 unless a fetch stalled), then one by one
        assert calls[0] == 3 and set(calls) == {3, 1} and calls.count(3) <= 3, calls
        info = await js.consumer_info(stream, "kit-poison-v1")
        assert info.config.ack_wait == 2

        letters = await eventually(lambda: _letters(js, settings), timeout=10)
        assert len(letters) == 1
        dl = json.loads(letters[0].data)
        assert dl["msg_id"] == "poison" and dl["reason_code"] == REASON_CODE
        assert "ZeroDivisionError" in dl["reason"] and "unforeseen" in dl["reason"]
        assert dl["subject"] == subject and dl["service"] == SERVICE

        # the consumer is not blocked: later messages flow
        await js.publish(subject, b"good-3", headers={"Nats-Msg-Id": "good-3"})
        await eventually(lambda: _has(rt, effects, 3), timeout=30)
        assert await count_effects(rt, effects) == {"good-1": 1, "good-2": 1, "good-3": 1}
        info = await js.consumer_info(stream, "kit-poison-v1")
        assert info.num_pending == 0 and info.num_ack_pending == 0


async def _has(rt, effects, n: int) -> bool:
    return sum((await count_effects(rt, effects)).values()) >= n


async def _letters(js, settings):
    return await read_all(js, settings.names.deadletter(SERVICE), settings.names.stream("DEADLETTER")) or None


async def test_redelivery_after_commit_without_ack_changes_nothing(settings, nc):
    """The effect committed, then the process failed before the ack: the redelivered message
    is claimed already, so the effect happens once."""
    js = nc.jetstream()
    subject, stream = _work_subject(settings)
    handled: list[str] = []  # Nats-Msg-Id per handler call, in order

    async def handler(rt, msgs):
        ids = [m.headers["Nats-Msg-Id"] for m in msgs]
        first_time = [i for i in ids if i not in handled]
        handled.extend(ids)
        async with rt.sessions.begin() as s:
            fresh = await claim(s, rt.inbox, "kit-redeliver", [json.loads(m.data)["id"] for m in msgs])
            rows = [{"key": json.loads(m.data)["id"]} for m in msgs if json.loads(m.data)["id"] in fresh]
            if rows:
                await s.execute(sa.insert(rt.metadata.tables["effects"]), rows)
        if first_time:  # committed, then "crashed" before the ack: JetStream redelivers
            raise ConnectionError("lost the connection before acking")

    def register(rt, _effects):
        batch_subscriber(rt, subject, stream, "kit-redeliver-v1", handler, poison_after=5, retry_delay=0.01, ack_wait=2)

    mid = str(uuid.uuid4())
    async with kit_runtime(settings, register) as (rt, effects):
        await js.publish(subject, json.dumps({"id": mid}).encode(), headers={"Nats-Msg-Id": "a-" + mid})
        await eventually(lambda: handled.count("a-" + mid) >= 2, timeout=30)
        # the same business message again under another Nats-Msg-Id: JetStream keeps it, the inbox drops it
        await js.publish(subject, json.dumps({"id": mid}).encode(), headers={"Nats-Msg-Id": "b-" + mid})

        async def settled():
            info = await js.consumer_info(stream, "kit-redeliver-v1")
            return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= 2
        await eventually(settled, timeout=30)
        assert await count_effects(rt, effects) == {mid: 1}
        assert handled.count("a-" + mid) >= 2 and handled.count("b-" + mid) >= 2  # each redelivered


async def test_claim_returns_only_unseen_ids_and_a_rollback_unclaims(settings):
    async with kit_runtime(settings) as (rt, _effects):
        async with rt.sessions.begin() as s:
            assert await claim(s, rt.inbox, "c", ["1", "2", "2"]) == {"1", "2"}
        with contextlib.suppress(RuntimeError):
            async with rt.sessions.begin() as s:
                assert await claim(s, rt.inbox, "c", ["2", "3"]) == {"3"}
                raise RuntimeError("rolled back")
        async with rt.sessions.begin() as s:
            assert await claim(s, rt.inbox, "c", ["3"]) == {"3"}  # the rollback released it
            assert await claim(s, rt.inbox, "other", ["1"]) == {"1"}  # per consumer


class Killed(Exception):
    pass


class _DiesAfterPublish:
    """A JetStream context whose publishes reach the server, after which the relay 'dies'
    (as if killed between the broker's ack and marking the rows published)."""

    def __init__(self, js):
        self.js = js

    async def publish(self, *a, **kw):
        await self.js.publish(*a, **kw)
        raise Killed("killed after the broker acked")

    async def publish_async(self, *a, **kw):
        ack = await self.js.publish_async(*a, **kw)

        async def died():
            await ack
            raise Killed("killed after the broker acked")
        return asyncio.ensure_future(died())


async def test_relay_killed_after_ack_republishes_and_jetstream_drops_the_repeat(settings, nc):
    js = nc.jetstream()
    subject = settings.names.receipts("kitrelay")
    stream = settings.names.stream("AGENCY_RECEIPTS")
    async with kit_runtime(settings) as (rt, _effects):
        await rt.relay.stop()  # this test drives relays by hand
        row = message_row(subject, b'{"n": 1}')
        async with rt.sessions.begin() as s:
            await add(s, rt.outbox, [row])

        dying = OutboxRelay(rt.engine, rt.outbox, _DiesAfterPublish(js))
        with pytest.raises(Killed):
            await dying.drain_once()
        async with rt.sessions() as s:
            published_at = (await s.execute(sa.select(rt.outbox.c.published_at)
                                            .where(rt.outbox.c.id == row["id"]))).scalar_one()
        assert published_at is None  # the mark was rolled back with the process
        assert len(await read_all(js, subject, stream)) == 1

        relay = OutboxRelay(rt.engine, rt.outbox, js)
        assert await relay.drain_once() == 1
        assert relay.duplicates == 1
        assert await relay.drain_once() == 0
        msgs = await read_all(js, subject, stream)
        assert [m.data for m in msgs] == [b'{"n": 1}']
        assert msgs[0].headers["Nats-Msg-Id"] == str(row["id"])
