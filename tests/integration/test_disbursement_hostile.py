"""Hostile bytes on the subjects disbursement consumes, on real NATS and PostgreSQL (issue 11):
a payment channel (an outside party) or a broken producer sends a 900 KB settlement, a
30,000-deep array, a 5,000-digit number, a NUL in a text, invalid UTF-8, truncated JSON, an
empty body, wrong types. Each gets a dead letter with its reason code on
`deadletter.disbursement` that fits in a NATS message; the relay is not blocked (later
enrolments and a valid settlement are applied, no outbox row waits); `/readyz` stays 200.

Before the kit's consumer, the 900 KB settlement became a 1.2 MB dead letter that blocked the
outbox relay for good, and the deep array or the long number made the registry batch fail
before any poison handling, redelivered forever: enrolments stopped."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import uuid

import pytest
import sqlalchemy as sa

from services.disbursement import store
from tests import disbursement_support as ds
from tests.conftest import eventually
from tests.integration.test_disbursement_cycle import PERIOD, _setup

pytestmark = pytest.mark.integration
NOW = dt.datetime.now(dt.UTC).isoformat()


def settlement(**kw) -> dict:
    return {"settlement_id": "s-1", "instruction_id": str(uuid.uuid4()), "status": "paid", "settled_at": NOW} | kw


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _envelope_with(change: dict) -> bytes:
    """A registry.enrolments_changed whose one change is `change` (valid fields elsewhere)."""
    p = ds.people(1, seed=99)[0]
    good = json.loads(ds.enrolments_event([p], "kamalia_merekah"))
    good["data"]["changes"][0] |= change
    return _json(good)


# name -> (bytes, the reason code expected); the same corpus on both subjects, with the
# differences a subject's own limits make (a settlement message is at most 256 KiB)
SETTLEMENTS = {
    "oversize": (_json(settlement(channel_reference="x" * 900_000)), "rjct.message.too_large"),
    "deep-30000": (b"[" * 30_000 + b"]" * 30_000, "rjct.json.too_deep"),  # 60 KB: within 256 KiB, too deep
    "deep-5000": (b"[" * 5_000 + b"]" * 5_000, "rjct.json.too_deep"),
    "number-5000-digits": (b'{"settlement_id": "s", "amount": ' + b"9" * 5_000 + b"}", "rjct.json.number_too_large"),
    "number-beyond-64-bits": (b'{"settlement_id": "s", "amount": ' + b"9" * 30 + b"}", "rjct.json.number_too_large"),
    "nul": (_json(settlement(status="failed", reason="closed\u0000")), "rjct.text.nul"),
    "invalid-utf8": (b'{"settlement_id": "\xff\xfe", "status": "paid"}', "rjct.message.encoding"),
    "truncated": (_json(settlement())[:40], "rjct.json.invalid"),
    "empty": (b"", "rjct.message.empty"),
    "wrong-types": (_json({"settlement_id": 5, "instruction_id": [], "status": 1, "settled_at": {}}),
                    "rjct.settlement.invalid"),
    "not-an-object": (b"[1, 2, 3]", "rjct.settlement.invalid"),
}
REGISTRY = {
    "oversize": (_json({"event_type": "registry.whatever", "junk": "x" * 900_000}), "rjct.event.unknown_type"),
    "deep-30000": (b"[" * 30_000 + b"]" * 30_000, "rjct.json.too_deep"),
    "number-5000-digits": (_envelope_with({"birth_date": "NUMBER"}).replace(b'"NUMBER"', b"9" * 5_000),
                           "rjct.json.number_too_large"),
    "nul": (_envelope_with({"reference_id": "ref\u0000"}), "rjct.text.nul"),
    "invalid-utf8": (_envelope_with({"reference_id": "REF"}).replace(b"REF", b"\xc3\x28"), "rjct.message.encoding"),
    "truncated": (_envelope_with({})[:-30], "rjct.json.invalid"),
    "empty": (b"", "rjct.message.empty"),
    "wrong-types": (_envelope_with({"nik": 3317, "birth_date": [1]}), "rjct.event.invalid"),
    "unknown-type": (_json({"event_type": "registry.new_kind", "data": {}}), "rjct.event.unknown_type"),
}


async def _dead_letters(js, settings, want: int) -> dict[str, dict]:
    sub = await js.pull_subscribe(settings.names.deadletter("disbursement"), stream=settings.names.stream("DEADLETTER"))
    got: dict[str, dict] = {}

    async def enough():
        with contextlib.suppress(Exception):
            for m in await sub.fetch(50, timeout=0.5):
                assert len(m.data) < 1024 * 1024  # a dead letter always fits in a NATS message
                dl = json.loads(m.data)
                got[dl["msg_id"]] = dl
                await m.ack()
        return len(got) >= want
    await eventually(enough, timeout=30)
    await sub.unsubscribe()
    return got


async def test_hostile_bytes_are_dead_lettered_and_block_nothing(settings, nc, start):
    js = nc.jetstream()
    names = settings.names
    async with start("disbursement", settings) as svc:
        h = await _setup(svc, settings, js, ds.people(3, seed=61))
        assert (await ds.run_cycle(svc.http, settings, "kamalia_merekah", PERIOD)).json()["created"] == 3
        async with svc.rt.sessions() as s:
            issued = (await s.execute(sa.select(store.instructions.c.id))).scalars().all()

        for name, (data, _code) in SETTLEMENTS.items():
            await js.publish(names.subject("channel.pos.settlements"), data, headers={"Nats-Msg-Id": f"st-{name}"})
        for name, (data, _code) in REGISTRY.items():
            await js.publish(names.subject("registry.events.enrolments_changed"), data,
                             headers={"Nats-Msg-Id": f"reg-{name}"})
        # behind them: valid work, including a settlement whose Nats-Msg-Id is 5,000 random
        # characters (kept as its digest: PostgreSQL refuses an index row over 2,704 bytes, so
        # the inbox claim, and with it every batch holding the message, would fail)
        later = ds.people(4, seed=62)
        await ds.publish_enrolments(js, settings, later, "kamalia_merekah")
        long_id = os.urandom(2_500).hex()
        await js.publish(names.subject("channel.pos.settlements"),
                         _json(settlement(settlement_id="ok-1", instruction_id=str(issued[0]))),
                         headers={"Nats-Msg-Id": long_id})
        await js.publish(names.subject("channel.pos.settlements"),
                         _json(settlement(settlement_id="ok-2", instruction_id=str(issued[1]), status="failed",
                                          reason="account closed")),
                         headers={"Nats-Msg-Id": "ok-2"})

        async def applied():
            async with svc.rt.sessions() as s:
                n = (await s.execute(sa.select(sa.func.count()).select_from(store.enrolments))).scalar()
                st = dict((await s.execute(sa.select(store.instructions.c.id, store.instructions.c.status))).all())
            return n == 3 + 4 and st[issued[0]] == "paid" and st[issued[1]] == "failed"
        await eventually(applied, timeout=30)

        letters = await _dead_letters(js, settings, len(SETTLEMENTS) + len(REGISTRY))
        codes = {k: v["reason_code"] for k, v in letters.items()}
        expected = {f"pos:st-{k}": c for k, (_d, c) in SETTLEMENTS.items()} | {f"reg-{k}": c for k, (_d, c) in REGISTRY.items()}
        assert codes == expected
        big = letters["pos:st-oversize"]  # settlement keys are per channel
        assert big["payload_truncated"] and big["payload_size"] == len(SETTLEMENTS["oversize"][0])
        assert big["stream"] == names.stream("CHANNEL") and big["stream_seq"] > 0 and big["reason"]

        # the relay is not blocked: nothing waits, nothing had to be set aside
        async def outbox_clear():
            b = await svc.rt.relay.backlog()
            return b.pending == 0 and b.set_aside == 0
        await eventually(outbox_clear, timeout=15)
        for c in svc.rt.consumers:
            info = await js.consumer_info(c.spec.stream, c.spec.durable)
            assert info.num_pending == 0 and info.num_ack_pending == 0, (c.spec.durable, info)
        r = await svc.http.get("/readyz")
        assert r.status_code == 200, r.text
        proof = (await svc.http.get("/ledger/proof", headers=h)).json()
        assert proof["balanced"], proof
