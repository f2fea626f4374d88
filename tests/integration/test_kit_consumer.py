"""The kit's one consumer, relay and unit of work against real NATS and PostgreSQL: a poison
message is isolated by bisection and dead-lettered without blocking the stream, a database
error is retried, hostile bytes get a reason code, the inbox makes a redelivery harmless, the
relay's repeat publish after a crash is de-duplicated, and a row too large to publish is set
aside without blocking the rows behind it."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json

import pytest
import sqlalchemy as sa
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.kit.consumer import HANDLER_ERROR, ConsumerSpec
from services.kit.db import drop_database, ensure_database
from services.kit.decode import Limits, load_json
from services.kit.outbox import OutboxRelay, add, claim, inbox_table, message_row, outbox_table
from services.kit.runtime import Kit
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
    """A bare Kit with its own database (outbox, inbox, an effects table)."""
    md, effects = kit_metadata()
    url = settings.db_url(SERVICE)
    await ensure_database(url)
    kit = Kit(SERVICE, settings, md)
    try:
        async with kit.engine.begin() as conn:
            await conn.run_sync(md.create_all)
        if register:
            register(kit, effects)
        await kit.start()
        try:
            yield kit, effects
        finally:
            await kit.stop()
    finally:
        await kit.engine.dispose()
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


def text_decode(msg):
    load_json(msg.data, Limits(max_bytes=64 * 1024))
    return json.loads(msg.data)["key"]


def _work_subject(settings) -> tuple[str, str]:
    # the agency enrolments stream stands in for any work stream: a program nobody else uses
    return settings.names.enrolments("kittest"), settings.names.stream("AGENCY_ENROLMENTS")


def _body(key: str) -> bytes:
    return json.dumps({"key": key}).encode()


def effects_handler(effects, poison: set[str] = frozenset(), calls: list[int] | None = None):
    async def handle(uow, batch):
        if calls is not None:
            calls.append(len(batch))
        await uow.session.execute(sa.insert(effects), [{"key": d.value} for d in batch])
        if any(d.value in poison for d in batch):
            raise ZeroDivisionError("a bug meets an unforeseen value")
    return handle


async def test_poison_message_is_isolated_by_bisection_and_dead_lettered(settings, nc):
    js = nc.jetstream()
    subject, stream = _work_subject(settings)
    calls: list[int] = []
    keys = [f"m-{i:03d}" for i in range(200)]

    def register(kit, effects):
        kit.consume(ConsumerSpec(durable="kit-poison-v1", stream=stream, subject=subject, decode=text_decode,
                                 handle=effects_handler(effects, {"m-077"}, calls), batch=200,
                                 backoff=(0.05,), max_deliveries=3, idle_wait=0.5))

    # published before the consumer starts, so they arrive in one batch
    for k in keys:
        await js.publish(subject, _body(k), headers={"Nats-Msg-Id": k})
    async with kit_runtime(settings, register) as (kit, effects):
        await eventually(lambda: _has(kit, effects, 199), timeout=30)
        letters = await eventually(lambda: _letters(js, settings), timeout=15)
        assert await count_effects(kit, effects) == {k: 1 for k in keys if k != "m-077"}
        # a few small transactions per delivery of the bad message, never one per message
        assert len(calls) < 3 * 2 * 9, calls
        assert len(letters) == 1
        dl = json.loads(letters[0].data)
        assert dl["msg_id"] == "m-077" and dl["reason_code"] == HANDLER_ERROR and dl["deliveries"] == 3
        assert "ZeroDivisionError" in dl["reason"] and "unforeseen" in dl["reason"]
        assert dl["subject"] == subject and dl["service"] == SERVICE and dl["stream"] == stream

        # the consumer is not blocked: later messages flow
        await js.publish(subject, _body("late"), headers={"Nats-Msg-Id": "late"})
        await eventually(lambda: _has(kit, effects, 200), timeout=30)
        info = await js.consumer_info(stream, "kit-poison-v1")
        assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_database_error_is_retried_with_backoff_and_nothing_dead_lettered(settings, nc):
    import asyncpg
    js = nc.jetstream()
    subject, stream = _work_subject(settings)
    failures = [3]

    def register(kit, effects):
        inner = effects_handler(effects)

        async def handle(uow, batch):
            if failures[0]:
                failures[0] -= 1
                raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
            await inner(uow, batch)
        kit.consume(ConsumerSpec(durable="kit-transient-v1", stream=stream, subject=subject, decode=text_decode,
                                 handle=handle, backoff=(0.05, 0.1, 0.2), max_deliveries=2, idle_wait=0.5))

    async with kit_runtime(settings, register) as (kit, effects):
        for k in ("a", "b"):
            await js.publish(subject, _body(k), headers={"Nats-Msg-Id": k})
        await eventually(lambda: _has(kit, effects, 2), timeout=30)
        assert await count_effects(kit, effects) == {"a": 1, "b": 1}
        assert not await _letters(js, settings)  # a deadlock is no reason to give a message up


HOSTILE = {
    "oversize": (b'{"key": "' + b"x" * 70_000 + b'"}', "rjct.message.too_large"),
    "deep": (b"[" * 30_000 + b"]" * 30_000, "rjct.json.too_deep"),
    "huge_int": (b'{"key": ' + b"9" * 5000 + b"}", "rjct.json.number_too_large"),
    "big_int": (b'{"key": "k", "n": 99999999999999999999}', "rjct.json.number_too_large"),
    "nul": (b'{"key": "a\\u0000b"}', "rjct.text.nul"),
    "surrogate": (b'{"key": "a\\ud800b"}', "rjct.text.unstorable"),
    "utf8": (b'{"key": "\xff\xfe"}', "rjct.message.encoding"),
    "truncated": (b'{"key": "abc', "rjct.json.invalid"),
    "empty": (b"", "rjct.message.empty"),
    "wrong_type": (b'{"key": 12}', "rjct.message.invalid"),
    "not_object": (b"[1, 2]", "rjct.message.invalid"),
}


async def test_hostile_bytes_get_a_reason_code_and_never_block_the_valid_ones(settings, nc):
    js = nc.jetstream()
    subject, stream = _work_subject(settings)

    def decode(msg):
        key = text_decode(msg)
        if not isinstance(key, str):
            raise TypeError("key must be text")
        return key

    def register(kit, effects):
        kit.consume(ConsumerSpec(durable="kit-hostile-v1", stream=stream, subject=subject, decode=decode,
                                 handle=effects_handler(effects), idle_wait=0.5))

    async with kit_runtime(settings, register) as (kit, effects):
        for name, (data, _code) in HOSTILE.items():
            await js.publish(subject, data, headers={"Nats-Msg-Id": name})
            await js.publish(subject, _body(f"after-{name}"), headers={"Nats-Msg-Id": f"after-{name}"})
        # a valid message whose Nats-Msg-Id no index entry can hold is keyed by its digest
        await js.publish(subject, _body("long-key"), headers={"Nats-Msg-Id": "k" * 5000})
        await eventually(lambda: _has(kit, effects, len(HOSTILE) + 1), timeout=30)
        letters = await eventually(lambda: _letters(js, settings, len(HOSTILE)), timeout=15)
        got = {json.loads(m.data)["msg_id"]: json.loads(m.data) for m in letters}
        assert {k: v["reason_code"] for k, v in got.items()} == {k: code for k, (_d, code) in HOSTILE.items()}
        big = got["oversize"]
        assert big["payload_truncated"] and big["payload_size"] == len(HOSTILE["oversize"][0])
        assert big["payload_sha256"] == hashlib.sha256(HOSTILE["oversize"][0]).hexdigest()
        assert len(base64.b64decode(big["payload_b64"])) == 64 * 1024
        assert await count_effects(kit, effects) == {"long-key": 1, **{f"after-{k}": 1 for k in HOSTILE}}


async def _has(rt, effects, n: int) -> bool:
    return sum((await count_effects(rt, effects)).values()) >= n


async def _letters(js, settings, n: int = 1):
    got = await read_all(js, settings.names.deadletter(SERVICE), settings.names.stream("DEADLETTER"))
    return got if len(got) >= n else None


async def test_redelivery_after_commit_without_ack_changes_nothing(settings, nc):
    """The effect committed, then the process failed before the ack: the redelivered message
    is claimed already, so the effect happens once."""
    js = nc.jetstream()
    subject, stream = _work_subject(settings)

    def register(kit, effects):
        kit.consume(ConsumerSpec(durable="kit-redeliver-v1", stream=stream, subject=subject, decode=text_decode,
                                 handle=effects_handler(effects), ack_wait=2, idle_wait=0.5))

    async with kit_runtime(settings, register) as (kit, effects):
        consumer = kit.consumers[0]
        settle = consumer._settle

        async def lose_first_acks(msgs, *, ack, delay=None):  # committed, then "crashed" before the ack
            if ack and any(m.metadata.num_delivered == 1 for m in msgs):
                return
            await settle(msgs, ack=ack, delay=delay)
        consumer._settle = lose_first_acks
        await js.publish(subject, _body("x"), headers={"Nats-Msg-Id": "a-x"})

        async def settled():
            info = await js.consumer_info(stream, "kit-redeliver-v1")
            return info.num_pending == 0 and info.num_ack_pending == 0 and consumer.stats.duplicates >= 1
        await eventually(settled, timeout=30)
        assert await count_effects(kit, effects) == {"x": 1}
        assert consumer.stats.duplicates >= 1


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
    """A NATS client whose JetStream publishes reach the server, after which the relay 'dies'
    (as if killed between the broker's ack and marking the rows published)."""

    def __init__(self, nc):
        self.nc, self.max_payload = nc, nc.max_payload

    def jetstream(self):
        js = self.nc.jetstream()

        class JS:
            async def publish_async(self, *a, **kw):
                ack = await js.publish_async(*a, **kw)

                async def died():
                    await ack
                    raise Killed("killed after the broker acked")
                return asyncio.ensure_future(died())
        return JS()


async def test_relay_killed_after_ack_republishes_and_jetstream_drops_the_repeat(settings, nc):
    js = nc.jetstream()
    subject = settings.names.receipts("kitrelay")
    stream = settings.names.stream("AGENCY_RECEIPTS")
    async with kit_runtime(settings) as (kit, _effects):
        await kit.relay.stop()  # this test drives relays by hand
        row = message_row(subject, b'{"n": 1}')
        async with kit.sessions.begin() as s:
            await add(s, kit.outbox, [row])

        dying = OutboxRelay(kit.engine, kit.outbox, lambda: _DiesAfterPublish(nc), kit.names, SERVICE)
        with pytest.raises(RuntimeError, match="Killed"):
            await dying.drain_once()
        async with kit.sessions() as s:
            published_at = (await s.execute(sa.select(kit.outbox.c.published_at)
                                            .where(kit.outbox.c.id == row["id"]))).scalar_one()
        assert published_at is None  # not marked: the process died before it could
        assert len(await read_all(js, subject, stream)) == 1

        relay = OutboxRelay(kit.engine, kit.outbox, lambda: nc, kit.names, SERVICE)
        assert await relay.drain_once() == 1
        assert relay.duplicates == 1
        assert await relay.drain_once() == 0
        msgs = await read_all(js, subject, stream)
        assert [m.data for m in msgs] == [b'{"n": 1}']
        assert msgs[0].headers["Nats-Msg-Id"] == str(row["id"])


async def test_a_row_too_large_to_publish_is_set_aside_and_never_blocks_the_rows_behind(settings, nc):
    """Issue 11: a 1.33 MB row (a dead letter of a rejected 1 MiB report) was published oldest
    first, failed with 'maximum payload exceeded' forever, and every later row waited."""
    js = nc.jetstream()
    subject = settings.names.receipts("kitbig")
    stream = settings.names.stream("AGENCY_RECEIPTS")
    async with kit_runtime(settings) as (kit, _effects):
        await kit.relay.stop()
        big = message_row(subject, b'"' + b"x" * (nc.max_payload + 10) + b'"')
        small = [message_row(subject, json.dumps({"n": i}).encode()) for i in range(5)]
        async with kit.unit_of_work() as uow:
            uow.add_rows([big])
        async with kit.unit_of_work() as uow:
            uow.add_rows(small)
        relay = OutboxRelay(kit.engine, kit.outbox, lambda: nc, kit.names, SERVICE)
        while await relay.drain_once():
            pass
        got = await read_all(js, subject, stream)
        assert sorted(json.loads(m.data)["n"] for m in got) == list(range(5))
        assert relay.set_aside == 1
        async with kit.sessions() as s:
            failure = (await s.execute(sa.select(kit.outbox.c.failure)
                                       .where(kit.outbox.c.id == big["id"]))).scalar_one()
        assert failure.startswith("rjct.outbox.too_large")
        letters = await read_all(js, settings.names.deadletter(SERVICE), settings.names.stream("DEADLETTER"))
        assert len(letters) == 1
        dl = json.loads(letters[0].data)
        assert dl["reason_code"] == "rjct.outbox.too_large" and dl["msg_id"] == str(big["id"])
        assert dl["payload_truncated"] and dl["payload_size"] == len(big["payload"])
        assert dl["subject"] == subject
        b = await relay.backlog()
        assert (b.pending, b.set_aside) == (0, 1)


async def test_a_row_no_stream_takes_is_set_aside_after_a_few_rounds_while_others_flow(settings, nc):
    js = nc.jetstream()
    subject = settings.names.receipts("kitnostream")
    stream = settings.names.stream("AGENCY_RECEIPTS")
    async with kit_runtime(settings) as (kit, _effects):
        await kit.relay.stop()
        relay = OutboxRelay(kit.engine, kit.outbox, lambda: nc, kit.names, SERVICE, batch=10)
        lost = message_row(settings.names.subject("nowhere.at.all"), b"{}")
        async with kit.unit_of_work() as uow:
            uow.add_rows([lost])
        for i in range(6):
            async with kit.unit_of_work() as uow:
                uow.send(subject, json.dumps({"n": i}).encode())
            await relay.drain_once()
        assert len(await read_all(js, subject, stream)) == 6
        assert relay.set_aside == 1
        while await relay.drain_once():  # the replacement dead letter goes out too
            pass
        assert (await relay.backlog()).pending == 0


async def test_a_large_unit_of_work_is_copied_in_and_a_repeated_row_is_one_row(settings, nc):
    subject = settings.names.receipts("kitcopy")
    async with kit_runtime(settings) as (kit, _effects):
        await kit.relay.stop()
        rows = [message_row(subject, json.dumps({"n": i}).encode()) for i in range(1200)]
        rows[5]["headers"] = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        async with kit.unit_of_work() as uow:
            uow.add_rows(rows)
        async with kit.unit_of_work() as uow:  # the same deterministic rows again (a retried batch)
            uow.add_rows(rows[:700])
        async with kit.sessions() as s:
            n = (await s.execute(sa.select(sa.func.count()).select_from(kit.outbox))).scalar_one()
            headers = (await s.execute(sa.select(kit.outbox.c.headers)
                                       .where(kit.outbox.c.id == rows[5]["id"]))).scalar_one()
        assert n == 1200
        assert headers == rows[5]["headers"]
