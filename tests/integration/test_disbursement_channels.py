"""Issue 12, the payment channels' side, on real NATS and PostgreSQL: a settlement binds to the
channel it was issued to; settlement ids are unique per channel."""
from __future__ import annotations

import contextlib
import datetime as dt
import json

import pytest
import sqlalchemy as sa

from services.disbursement import store
from tests import disbursement_support as ds
from tests.conftest import eventually

pytestmark = pytest.mark.integration
PERIOD = "2026-11"
BANK_PROGRAM = {**ds.KAMALIA, "channel": "bank", "exclusivity_class": None}


async def _issue(svc, settings, js, persons, rules=BANK_PROGRAM, period=PERIOD, program="kamalia_merekah"):
    """Program, poverty line, allocations, enrolments, then a committed cycle: the instructions."""
    h = ds.headers(settings)
    assert (await svc.http.put(f"/programs/{program}", json=rules, headers=h)).status_code == 200
    r = await svc.http.put("/poverty-lines/3317/2026", json={"amount": 600_000, "reason": "BPS 2026"}, headers=h)
    assert r.status_code == 200, r.text
    for src in ("csr", "donation"):
        r = await svc.http.put(f"/allocations/{src}/{program}/2026",
                               json={"ceiling": 100 * 600_000, "reason": "MoU 2026"}, headers=h)
        assert r.status_code == 200, r.text
    await ds.publish_enrolments(js, settings, persons, program)

    async def all_in():
        async with svc.rt.sessions() as s:
            n = (await s.execute(sa.select(sa.func.count()).select_from(store.enrolments)
                                 .where(store.enrolments.c.programme_identifier == program))).scalar_one()
        return n == len(persons)
    await eventually(all_in, timeout=15)
    r = await ds.run_cycle(svc.http, settings, program, period)  # maker-checker: prepared, then approved
    assert r.status_code == 200, r.text
    async with svc.rt.sessions() as s:
        rows = (await s.execute(sa.select(store.instructions).where(
            store.instructions.c.programme_identifier == program, store.instructions.c.period == period))).all()
    assert len(rows) == len(persons)
    return rows


async def _status(svc, iid):
    async with svc.rt.sessions() as s:
        return (await s.execute(sa.select(store.instructions.c.status).where(store.instructions.c.id == iid))).scalar()


async def _letters(js, settings, want: int) -> list[dict]:
    dl = await js.pull_subscribe(settings.names.deadletter("disbursement"), stream=settings.names.stream("DEADLETTER"))
    got: list[dict] = []

    async def enough():
        with contextlib.suppress(Exception):
            got.extend(json.loads(m.data) for m in await dl.fetch(10, timeout=0.5))
        return len(got) >= want
    await eventually(enough)
    return got


def _settlement(sid: str, iid, status: str, reason: str | None = None) -> bytes:
    return json.dumps({"settlement_id": sid, "instruction_id": str(iid), "status": status, "reason": reason,
                       "settled_at": dt.datetime.now(dt.UTC).isoformat()}).encode()


async def test_a_channel_cannot_settle_another_channels_instruction(settings, nc, start):
    """The attack from the issue: `failed` on channel.pos for an instruction issued to bank was
    accepted (money back to the budget) and the bank's own `paid` then dead-lettered."""
    js = nc.jetstream()
    async with start("disbursement", settings) as svc:
        ins = (await _issue(svc, settings, js, ds.people(2, seed=21)))[0]
        assert ins.channel == "bank"
        pos, bank = settings.names.subject("channel.pos.settlements"), settings.names.subject("channel.bank.settlements")
        await js.publish(pos, _settlement("s-1", ins.id, "failed", "forged"), headers={"Nats-Msg-Id": "pos:s-1"})
        letters = await _letters(js, settings, 1)
        assert letters[0]["reason_code"] == "rjct.settlement.wrong_channel", letters
        assert await _status(svc, ins.id) == "issued"
        # the bank's own report, even with the same settlement id (ids are unique per channel), is applied
        # (Nats-Msg-Id is `<channel>:<settlement_id>`: JetStream's duplicate window spans the stream)
        await js.publish(bank, _settlement("s-1", ins.id, "paid"), headers={"Nats-Msg-Id": "bank:s-1"})

        async def paid():
            return await _status(svc, ins.id) == "paid"
        await eventually(paid)
        allocs = (await svc.http.get("/allocations", headers=ds.headers(settings))).json()["items"]
        assert sum(a["paid"] for a in allocs) == 600_000
