"""Issue 12, guessable ids in a shared de-duplication window, on real NATS and PostgreSQL.

Every party's messages on the CHANNEL stream (Sinergi's instructions and cancellations, each
channel's settlements and statements) share one JetStream duplicate window, keyed by
`Nats-Msg-Id` alone, and any publisher may set any header. An id another party can compute can
therefore be published first, and JetStream then drops the real message as a "duplicate"
(acknowledging it, so the sender believes it went). Instruction ids are uuid5 of program,
period and NIK; before, a batch's id was uuid5 of its first instruction: computable by any
channel that knows one payee."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid

import pytest
import sqlalchemy as sa

from contracts.envelope import envelope
from contracts.registry import LifeStatusChange, LifeStatusChanged
from services.disbursement import domain, store
from tests import disbursement_support as ds
from tests.conftest import eventually

pytestmark = pytest.mark.integration
PROGRAM = "kamalia_merekah"
RULES = {"name": "Kamalia Merekah", "amount": {"kind": "fixed", "amount": 300_000}, "require_verified": True,
         "funding": [{"source": "csr"}], "channel": "bank"}


def _guessed(first: uuid.UUID, kind: str = "disburse") -> str:
    """What anyone could compute for a message named by its first instruction (the old ids)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sinergi/{kind}/{first}"))


async def _bank_messages(js, settings, want: int) -> list[dict]:
    sub = await js.pull_subscribe(settings.names.subject("channel.bank.instructions"),
                                  stream=settings.names.stream("CHANNEL"))
    got: list[dict] = []

    async def enough():
        with contextlib.suppress(Exception):
            got.extend(json.loads(m.data) for m in await sub.fetch(10, timeout=0.5))
        return len(got) >= want
    await eventually(enough, timeout=10)
    return got


async def test_another_channel_cannot_suppress_the_banks_instructions_or_cancellations(settings, nc, start):
    js = nc.jetstream()
    persons = sorted(ds.people(2, seed=121), key=lambda p: p["nik"])
    first = domain.instruction_id(PROGRAM, "2026-11", persons[0]["nik"])
    pos = settings.names.subject("channel.pos.settlements")
    # the post office, on its own subject, claims the ids it can compute for the bank's messages
    for kind in ("disburse", "cancel"):
        ack = await js.publish(pos, b'{"settlement_id": "x"}', headers={"Nats-Msg-Id": _guessed(first, kind)})
        assert not ack.duplicate
    async with start("disbursement", settings) as svc:
        h = ds.headers(settings)
        assert (await svc.http.put(f"/programs/{PROGRAM}", json=RULES, headers=h)).status_code == 200
        r = await svc.http.put(f"/allocations/csr/{PROGRAM}/2026", json={"ceiling": 10**7, "reason": "MoU"}, headers=h)
        assert r.status_code == 200, r.text
        await ds.publish_enrolments(js, settings, persons, PROGRAM)

        async def enrolled():
            async with svc.rt.sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(store.verifications))).scalar_one() == 2
        await eventually(enrolled)
        r = await ds.run_cycle(svc.http, settings, PROGRAM, "2026-11")
        assert r.status_code == 200 and r.json()["created"] == 2, r.text
        # the bank still gets its batch: its id is not one anybody outside could compute
        [batch] = await _bank_messages(js, settings, 1)
        assert batch["disbursements"][0]["disbursement_id"] == str(first)
        assert batch["transaction_id"] != _guessed(first)
        # and the cancellation when the first payee dies
        ch = LifeStatusChange(nik=persons[0]["nik"], village_code=persons[0]["village_code"], life_status="deceased",
                              previous_status="alive", effective_date=dt.date(2026, 11, 1), source="crvs",
                              reported_by="dukcapil", reason_code="crvs.death_notification")
        await js.publish(settings.names.event("registry.life_status_changed"),
                         envelope(LifeStatusChanged(changes=[ch]), "registry").model_dump_json().encode())
        got = await _bank_messages(js, settings, 2)
        cancel = next(m for m in got if "cancellations" in m)
        assert cancel["cancellations"][0]["disbursement_id"] == str(first)
        assert cancel["transaction_id"] != _guessed(first, "cancel")
        # nothing the relay sent was swallowed as a duplicate
        assert svc.rt.relay.duplicates == 0


async def test_the_same_settlement_id_from_two_channels_is_two_settlements(settings, nc, start):
    """Settlement ids are unique per channel: with the documented `<channel>:<id>` Nats-Msg-Id,
    the post office's `s-9` does not suppress the bank's `s-9`, in the stream or in the inbox."""
    js = nc.jetstream()
    persons = ds.people(1, seed=122)
    async with start("disbursement", settings) as svc:
        h = ds.headers(settings)
        assert (await svc.http.put(f"/programs/{PROGRAM}", json=RULES, headers=h)).status_code == 200
        r = await svc.http.put(f"/allocations/csr/{PROGRAM}/2026", json={"ceiling": 10**7, "reason": "MoU"}, headers=h)
        assert r.status_code == 200
        await ds.publish_enrolments(js, settings, persons, PROGRAM)

        async def enrolled():
            async with svc.rt.sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(store.verifications))).scalar_one() == 1
        await eventually(enrolled)
        assert (await ds.run_cycle(svc.http, settings, PROGRAM, "2026-11")).status_code == 200
        iid = domain.instruction_id(PROGRAM, "2026-11", persons[0]["nik"])
        now = dt.datetime.now(dt.UTC).isoformat()
        body = {"settlement_id": "s-9", "instruction_id": str(iid), "status": "paid", "settled_at": now}
        a = await js.publish(settings.names.subject("channel.pos.settlements"), json.dumps(body).encode(),
                             headers={"Nats-Msg-Id": "pos:s-9"})
        b = await js.publish(settings.names.subject("channel.bank.settlements"), json.dumps(body).encode(),
                             headers={"Nats-Msg-Id": "bank:s-9"})
        assert not a.duplicate and not b.duplicate

        async def paid():
            async with svc.rt.sessions() as s:
                return (await s.execute(sa.select(store.instructions.c.status)
                                        .where(store.instructions.c.id == iid))).scalar() == "paid"
        await eventually(paid)  # the bank's own report applied; the post office's refused (wrong channel)
