"""Disbursement end to end against real NATS and PostgreSQL: enrolments from registry events,
allocations, a previewed and committed cycle, idempotent re-run, settlements, the ledger proof."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from typing import NamedTuple

import pytest
import sqlalchemy as sa

from contracts.channel import DisburseRequest
from services.disbursement import store
from services.kit.auth import Role
from tests import disbursement_support as ds
from tests.conftest import eventually

pytestmark = pytest.mark.integration
PERIOD = "2026-11"


class _Instr(NamedTuple):
    instruction_id: uuid.UUID
    nik: str
    amount: int


async def _count(svc, table, *where):
    async with svc.rt.sessions() as s:
        return (await s.execute(sa.select(sa.func.count()).select_from(table).where(*where))).scalar_one()


async def _setup(svc, settings, js, persons, *, csr=10 * 600_000, donation=2 * 600_000):
    h = ds.headers(settings)
    r = await svc.http.put("/programs/kamalia_merekah", json=ds.KAMALIA, headers=h)
    assert r.status_code == 200, r.text
    r = await svc.http.put("/poverty-lines/3317/2026", json={"amount": 600_000, "reason": "BPS 2026"}, headers=h)
    assert r.status_code == 200, r.text
    for src, ceiling in (("csr", csr), ("donation", donation)):
        r = await svc.http.put(f"/allocations/{src}/kamalia_merekah/2026",
                               json={"ceiling": ceiling, "reason": "MoU 2026"}, headers=h)
        assert r.status_code == 200, r.text
    await ds.publish_enrolments(js, settings, persons, "kamalia_merekah")
    async def all_in():
        return await _count(svc, store.enrolments) == len(persons)
    await eventually(all_in, timeout=15)
    return h


async def test_cycle_preview_commit_rerun_and_settlements(settings, nc, start):
    js = nc.jetstream()
    persons = ds.people(15)
    young = ds.people(1, seed=7, birth=dt.date(1990, 1, 1))  # under min_age 60
    async with start("disbursement", settings) as svc:
        h = await _setup(svc, settings, js, persons + young)
        # an unverified person: the latest verification says ineligible
        await ds.publish_enrolments(js, settings, [persons[0]], "kamalia_merekah", verified=False,
                                    effective=dt.date(2026, 2, 1))
        async def unverified():
            async with svc.rt.sessions() as s:
                return (await s.execute(sa.select(store.verifications.c.verified)
                                        .where(store.verifications.c.nik == persons[0]["nik"]))).scalar() is False
        await eventually(unverified)

        # only a program manager may run a cycle
        r = await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}", headers=ds.headers(settings, Role.auditor))
        assert r.status_code == 403
        assert (await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}")).status_code == 401
        r = await svc.http.post("/cycles/kamalia_merekah/2026-13", headers=h)
        assert r.status_code == 422 and "YYYY-MM" in r.text
        r = await svc.http.post(f"/cycles/nope/{PERIOD}", headers=h)
        assert r.status_code == 404

        r = await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}/preview", headers=h)
        assert r.status_code == 200, r.text
        pv = r.json()
        # 14 eligible (one unverified, one too young); budget for 10 + 2
        assert pv["eligible_pending"] == 14 and pv["would_issue"] == 12 and pv["unfunded"] == 2
        assert {s["source"]: s["amount"] for s in pv["per_source"]} == {"csr": 6_000_000, "donation": 1_200_000}
        assert await _count(svc, store.instructions) == 0  # a dry run writes nothing

        sub = await js.pull_subscribe(settings.names.subject("channel.pos.instructions"),
                                      stream=settings.names.stream("CHANNEL"))
        # nothing leaves before a second program manager approves the prepared cycle
        r = await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}", headers=h)
        assert r.status_code == 409 and "approved preparation" in r.text
        r = await ds.run_cycle(svc.http, settings, "kamalia_merekah", PERIOD)
        assert r.status_code == 200, r.text
        res = r.json()
        assert res["created"] == 12 and res["total"] == 7_200_000 and res["unfunded"] == 2
        got = []
        async def fetched():
            with contextlib.suppress(Exception):
                got.extend(await sub.fetch(20, timeout=0.5))
            return got
        await eventually(fetched)
        # one message (G2P Connect disburse) carries the cycle's twelve
        assert len(got) == 1 and got[0].headers["Nats-Msg-Id"] == str(DisburseRequest.model_validate_json(
            got[0].data).transaction_id)
        instr = [_Instr(d.disbursement_id, d.payee_id, d.amount)
                 for d in DisburseRequest.model_validate_json(got[0].data).disbursements]
        assert len({i.instruction_id for i in instr}) == 12 and all(i.amount == 600_000 for i in instr)
        assert persons[0]["nik"] not in {i.nik for i in instr} and young[0]["nik"] not in {i.nik for i in instr}

        # again: nothing new
        r = await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}", headers=h)
        assert r.json()["created"] == 0 and await _count(svc, store.instructions) == 12

        # raise the donation ceiling: the rerun pays the two left
        r = await svc.http.put("/allocations/donation/kamalia_merekah/2026",
                               json={"ceiling": 4 * 600_000, "reason": "extra donations"}, headers=h)
        assert r.status_code == 200 and r.json()["previous_ceiling"] == 1_200_000
        r = await svc.http.put("/allocations/donation/kamalia_merekah/2026",
                               json={"ceiling": 1, "reason": "too low"}, headers=h)
        assert r.status_code == 409 and "already reserved" in r.text
        r = await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}", headers=h)
        assert r.json()["created"] == 0  # the approved list was the 12 funded then
        r = await ds.run_cycle(svc.http, settings, "kamalia_merekah", PERIOD)  # a new list, approved again
        assert r.json()["created"] == 2 and r.json()["unfunded"] == 0

        # settlements: paid, failed (releases), late duplicate, unknown instruction
        settle = settings.names.subject("channel.pos.settlements")
        now = dt.datetime.now(dt.UTC).isoformat()
        def st(iid, status, reason=None, sid=None):
            return json.dumps({"settlement_id": sid or str(uuid.uuid4()), "instruction_id": str(iid),
                               "status": status, "reason": reason, "settled_at": now}).encode()
        a, b = instr[0].instruction_id, instr[1].instruction_id
        await js.publish(settle, st(a, "paid", sid="s-a"), headers={"Nats-Msg-Id": "s-a"})
        await js.publish(settle, st(b, "failed", "account closed", sid="s-b"), headers={"Nats-Msg-Id": "s-b"})
        await js.publish(settle, st(a, "paid", sid="s-a2"), headers={"Nats-Msg-Id": "s-a2"})  # late duplicate
        await js.publish(settle, st(uuid.uuid4(), "paid", sid="s-x"), headers={"Nats-Msg-Id": "s-x"})
        await js.publish(settle, b"{nonsense", headers={"Nats-Msg-Id": "s-bad"})

        async def settled():
            async with svc.rt.sessions() as s:
                rows = dict((await s.execute(sa.select(store.instructions.c.id, store.instructions.c.status)
                                             .where(store.instructions.c.id.in_([a, b])))).all())
            return rows == {a: "paid", b: "failed"}
        await eventually(settled)
        dl = await js.pull_subscribe(settings.names.deadletter("disbursement"), stream=settings.names.stream("DEADLETTER"))
        letters = []
        async def dead():
            with contextlib.suppress(Exception):
                letters.extend(await dl.fetch(10, timeout=0.5))
            return len(letters) >= 2
        await eventually(dead)
        reasons = {json.loads(m.data)["reason_code"] for m in letters}
        assert reasons == {"rjct.instruction.unknown", "rjct.json.invalid"}

        # the audit stream's settlements name the payee's village (for realisation per area), not the payee
        recorded = await js.pull_subscribe(settings.names.subject("disbursement.settlement_recorded"),
                                           stream=settings.names.stream("DISBURSEMENT"))
        events: list = []
        async def both_recorded():
            with contextlib.suppress(Exception):
                events.extend(json.loads(m.data)["data"] for m in await recorded.fetch(10, timeout=0.5))
            return len(events) >= 2
        await eventually(both_recorded)
        village_of = {p["nik"]: p["village_code"] for p in persons}
        expected = {str(i.instruction_id): village_of[i.nik] for i in instr[:2]}
        assert {e["instruction_id"]: e["village_code"] for e in events} == expected
        assert not any(i.nik in json.dumps(events) for i in instr)

        allocs = {x["source"]: x for x in (await svc.http.get("/allocations", headers=h)).json()["items"]}
        assert allocs["csr"]["reserved"] + allocs["donation"]["reserved"] == 13 * 600_000  # 14 issued, 1 released
        assert allocs["csr"]["paid"] + allocs["donation"]["paid"] == 600_000
        proof = (await svc.http.get("/ledger/proof", headers=ds.headers(settings, Role.auditor))).json()
        assert proof["balanced"], proof
        async with svc.rt.sessions() as s:
            await s.execute(sa.text("update allocations set paid = paid + 1 where source = 'csr'"))
            await s.commit()
        proof = (await svc.http.get("/ledger/proof", headers=h)).json()
        assert not proof["balanced"] and "paid account" in json.dumps(proof)


async def test_concurrent_cycles_never_overspend(settings, nc, start):
    """Two programs share nothing but run at once with many workers against tight ceilings."""
    js = nc.jetstream()
    persons = ds.people(60, seed=3)
    async with start("disbursement", settings) as svc:
        h = await _setup(svc, settings, js, persons, csr=7 * 600_000 + 599_999, donation=3 * 600_000)
        pid = (await svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}/prepare", headers=h)).json()["preparation_id"]
        results = await asyncio.gather(
            svc.http.post(f"/cycles/preparations/{pid}/approve", headers=ds.headers(settings, user="kadis")),
            *[svc.http.post(f"/cycles/kamalia_merekah/{PERIOD}", headers=h) for _ in range(7)])
        assert results[0].status_code == 200, results[0].text
        # a continuation that came before the approval committed is refused (409), the others wait
        assert all(r.status_code in (200, 409) for r in results), [r.text for r in results]
        assert sum(r.json()["created"] for r in results if r.status_code == 200) == 10
        allocs = {x["source"]: x for x in (await svc.http.get("/allocations", headers=h)).json()["items"]}
        assert allocs["csr"]["reserved"] == 7 * 600_000 <= allocs["csr"]["ceiling"]
        assert allocs["donation"]["reserved"] == 3 * 600_000 == allocs["donation"]["ceiling"]
        assert await _count(svc, store.instructions) == 10
        assert (await svc.http.get("/ledger/proof", headers=h)).json()["balanced"]
