"""Issue 17, disbursement's side, on real NATS and PostgreSQL: the registry's life-status
announcements stop (and resume) payments, cancel unpaid instructions (money back to the budget,
the audit stream, the channel told), hold disputed people, pay arrears only where a program's
rules say so; an expired verification makes a person unpaid until re-verified.

Registry events are published by hand here, in the registry's contract (contracts.registry)."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import uuid

import pytest
import sqlalchemy as sa

from contracts.channel import DisburseCancel
from contracts.envelope import envelope
from contracts.registry import (LifeStatusChange, LifeStatusChanged, VerificationExpiry, VerificationsExpired)
from services.disbursement import audit, cycles, domain, store
from services.disbursement.config import SIGNATURE_HEADER
from tests import disbursement_support as ds
from tests.conftest import eventually

pytestmark = pytest.mark.integration
PROGRAM = "kamalia_merekah"
AMOUNT = 300_000
RULES = {"name": "Kamalia Merekah", "amount": {"kind": "fixed", "amount": AMOUNT}, "frequency": "monthly",
         "require_verified": True, "funding": [{"source": "csr"}], "channel": "bank"}


async def _setup(svc, settings, js, persons, rules=RULES):
    h = ds.headers(settings)
    r = await svc.http.put(f"/programs/{PROGRAM}", json=rules, headers=h)
    assert r.status_code == 200, r.text
    r = await svc.http.put(f"/allocations/csr/{PROGRAM}/2026", json={"ceiling": 10_000 * AMOUNT, "reason": "MoU 2026"},
                           headers=h)
    assert r.status_code == 200, r.text
    await ds.publish_enrolments(js, settings, persons, PROGRAM)

    async def all_in():
        async with svc.rt.sessions() as s:
            n = (await s.execute(sa.select(sa.func.count()).select_from(store.verifications))).scalar_one()
        return n == len(persons)
    await eventually(all_in, timeout=15)


def _life(person, status: str, effective: dt.date, previous: str = "alive", source: str = "crvs",
          reason: str = "") -> bytes:
    ch = LifeStatusChange(nik=person["nik"], village_code=person["village_code"], life_status=status,
                          previous_status=previous, effective_date=effective, source=source,
                          reported_by="dukcapil" if source == "crvs" else "verivali", reason_code=reason,
                          programme_identifiers=[PROGRAM])
    return envelope(LifeStatusChanged(changes=[ch]), "registry").model_dump_json().encode()


async def _announce(svc, settings, js, data: bytes, person, status: str) -> None:
    """Publish a life-status announcement and wait until disbursement holds it."""
    await js.publish(settings.names.event("registry.life_status_changed"), data)

    async def held():
        async with svc.rt.sessions() as s:
            return (await s.execute(sa.select(store.life_statuses.c.life_status).where(
                store.life_statuses.c.nik == person["nik"]))).scalar() == status
    await eventually(held)


async def _instructions(svc, period: str | None = None) -> dict[tuple[str, str], list]:
    """(NIK, period) -> its instructions (status, amount, id)."""
    i = store.instructions
    q = sa.select(i.c.nik, i.c.period, i.c.status, i.c.amount, i.c.id, i.c.channel).order_by(i.c.created_at)
    if period:
        q = q.where(i.c.period == period)
    async with svc.rt.sessions() as s:
        rows = (await s.execute(q)).all()
    out: dict[tuple[str, str], list] = {}
    for r in rows:
        out.setdefault((r.nik, r.period), []).append(r)
    return out


async def _cycle(svc, settings, period: str, n=itertools.count()):
    # a different checker each time only to keep maker != checker obvious
    r = await ds.run_cycle(svc.http, settings, PROGRAM, period, checker=f"kadis{next(n)}")
    assert r.status_code == 200, r.text
    return r.json()


async def _marker(svc, settings, js, seed: int):
    """A later registry event, waited for: the consumer has handled everything published before it."""
    p = ds.people(1, seed=seed)[0]
    await ds.publish_enrolments(js, settings, [p], "marker_program")

    async def seen():
        async with svc.rt.sessions() as s:
            return (await s.execute(sa.select(sa.func.count()).select_from(store.enrolments).where(
                store.enrolments.c.nik == p["nik"]))).scalar_one() == 1
    await eventually(seen)


async def _audit(js, settings) -> list:
    return await audit.read_stream(js, settings.names.stream("DISBURSEMENT"), settings.names.subject("disbursement.>"),
                                   idle=0.5)


async def test_a_cycle_pays_nobody_whose_status_stops_payment_from_the_effective_date(settings, nc, start):
    """The first day of the cycle decides: a death on 10 November still pays November (alive on
    the 1st), a death on 1 November does not; December pays neither; moving out and a verivali
    `ineligible` stop the same way."""
    js = nc.jetstream()
    a, b, c, d, e = ds.people(5, seed=171)
    async with start("disbursement", settings) as svc:
        await _setup(svc, settings, js, [a, b, c, d, e])
        await _announce(svc, settings, js, _life(a, "deceased", dt.date(2026, 11, 10)), a, "deceased")
        await _announce(svc, settings, js, _life(b, "deceased", dt.date(2026, 11, 1)), b, "deceased")
        await _announce(svc, settings, js, _life(d, "moved_out", dt.date(2026, 10, 3), source="agency"), d,
                        "moved_out")
        await _announce(svc, settings, js, _life(e, "ineligible", dt.date(2026, 12, 1), source="verifier"), e,
                        "ineligible")
        nov = await _cycle(svc, settings, "2026-11")
        assert nov["created"] == 3
        paid = {nik for nik, _p in await _instructions(svc, "2026-11")}
        assert paid == {a["nik"], c["nik"], e["nik"]}
        dec = await _cycle(svc, settings, "2026-12")
        assert {nik for nik, _p in await _instructions(svc, "2026-12")} == {c["nik"]} and dec["created"] == 1
        # the preview agrees with the run (the same rule, counted set-wise)
        async with svc.rt.sessions() as s:
            pv = await cycles._preview(s, PROGRAM, "2026-12")
        assert pv["eligible_pending"] == 0


async def test_a_death_cancels_unpaid_instructions_money_back_audited_and_the_channel_told(settings, nc, start):
    js = nc.jetstream()
    a, b, c = ds.people(3, seed=172)
    async with start("disbursement", settings) as svc:
        await _setup(svc, settings, js, [a, b, c])
        await _cycle(svc, settings, "2026-11")
        await _cycle(svc, settings, "2026-12")
        ins = await _instructions(svc)
        # c's November payment was already made: it stays paid
        paid_c = ins[(c["nik"], "2026-11")][0].id
        st = {"settlement_id": "s-c", "instruction_id": str(paid_c), "status": "paid",
              "settled_at": dt.datetime.now(dt.UTC).isoformat()}
        await js.publish(settings.names.subject("channel.bank.settlements"), json.dumps(st).encode(),
                         headers={"Nats-Msg-Id": "bank:s-c"})

        async def settled():
            return (await _instructions(svc))[(c["nik"], "2026-11")][0].status == "paid"
        await eventually(settled)
        before = (await svc.http.get("/allocations", headers=ds.headers(settings))).json()["items"][0]
        assert before["reserved"] == 6 * AMOUNT

        # a dies on 20 November (November stays, December is cancelled); c on 1 November (paid
        # November untouched, December cancelled)
        death_a = _life(a, "deceased", dt.date(2026, 11, 20), reason="crvs.death_notification")
        await _announce(svc, settings, js, death_a, a, "deceased")
        await _announce(svc, settings, js, _life(c, "deceased", dt.date(2026, 11, 1)), c, "deceased")

        async def cancelled():
            got = await _instructions(svc)
            return got if got[(c["nik"], "2026-12")][0].status == "cancelled" else None
        ins = await eventually(cancelled)
        assert ins[(a["nik"], "2026-11")][0].status == "issued"
        assert ins[(a["nik"], "2026-12")][0].status == "cancelled"
        assert ins[(c["nik"], "2026-11")][0].status == "paid"
        assert ins[(b["nik"], "2026-12")][0].status == "issued"
        cancelled_ids = {str(ins[(a["nik"], "2026-12")][0].id), str(ins[(c["nik"], "2026-12")][0].id)}

        # money back to the budget, on the ledger; the books still prove
        after = (await svc.http.get("/allocations", headers=ds.headers(settings))).json()["items"][0]
        assert after["reserved"] == before["reserved"] - 2 * AMOUNT and after["paid"] == AMOUNT
        proof = (await svc.http.get("/ledger/proof", headers=ds.headers(settings))).json()
        assert proof["balanced"], proof

        # the channel is told, in the disburse style, on the subject it already reads
        sub = await js.pull_subscribe(settings.names.subject("channel.bank.instructions"),
                                      stream=settings.names.stream("CHANNEL"))
        cancels: list[DisburseCancel] = []

        async def told():
            with contextlib.suppress(Exception):
                for m in await sub.fetch(20, timeout=0.5):
                    body = json.loads(m.data)
                    if "cancellations" in body:
                        cancels.append(DisburseCancel.model_validate(body))
            return {str(x.disbursement_id) for m in cancels for x in m.cancellations} == cancelled_ids
        await eventually(told)
        assert {x.status_reason_code for m in cancels for x in m.cancellations} == {"cncl.payee.deceased"}

        # the audit stream: one cancellation per person, a release per instruction, all signed;
        # no NIK on it; the chain and totals still verify
        msgs = await _audit(js, settings)
        events = [json.loads(m.data) for m in msgs]
        cx = [e["data"] for e in events if e["event_type"] == "disbursement.instructions_cancelled"]
        assert len(cx) == 2 and {it["instruction_id"] for x in cx for it in x["items"]} == cancelled_ids
        assert {x["life_status"] for x in cx} == {"deceased"} and sum(x["total"] for x in cx) == 2 * AMOUNT
        rel = [e["data"] for e in events if e["event_type"] == "disbursement.budget_released"]
        assert {r["instruction_id"] for r in rel} == cancelled_ids
        assert all(SIGNATURE_HEADER in m.headers for m in msgs)
        assert a["nik"].encode() not in b"".join(m.data for m in msgs)
        rep = audit.verify(msgs, settings.names.stream("DISBURSEMENT"), svc.deps.cfg.signing_key.public_key())
        assert rep.ok, rep.failures
        assert rep.totals["cancelled"] == 2

        # idempotent: the very same announcement again, and the same news in a new announcement
        await js.publish(settings.names.event("registry.life_status_changed"), death_a)
        await js.publish(settings.names.event("registry.life_status_changed"),
                         _life(a, "deceased", dt.date(2026, 11, 20), reason="crvs.death_notification"))
        await _marker(svc, settings, js, seed=1721)
        assert len(await _audit(js, settings)) == len(msgs)
        again = (await svc.http.get("/allocations", headers=ds.headers(settings))).json()["items"][0]
        assert again == after

        # the bank pays a cancelled instruction anyway: dead-lettered with its reason, nothing booked
        a_dec = ins[(a["nik"], "2026-12")][0].id
        st = {"settlement_id": "s-late", "instruction_id": str(a_dec), "status": "paid",
              "settled_at": dt.datetime.now(dt.UTC).isoformat()}
        await js.publish(settings.names.subject("channel.bank.settlements"), json.dumps(st).encode(),
                         headers={"Nats-Msg-Id": "bank:s-late"})
        dl = await js.pull_subscribe(settings.names.deadletter("disbursement"),
                                     stream=settings.names.stream("DEADLETTER"))
        letters: list[dict] = []

        async def refused():
            with contextlib.suppress(Exception):
                letters.extend(json.loads(m.data) for m in await dl.fetch(10, timeout=0.5))
            return any(x["reason_code"] == "rjct.instruction.cancelled" for x in letters)
        await eventually(refused)
        assert (await _instructions(svc))[(a["nik"], "2026-12")][0].status == "cancelled"
        assert (await svc.http.get("/allocations", headers=ds.headers(settings))).json()["items"][0] == after
        # and the channel's refusal of a cancelled one agrees: nothing changes, no dead letter
        st = {"settlement_id": "s-rjct", "instruction_id": str(ins[(c["nik"], "2026-12")][0].id),
              "status": "failed", "reason": "rjct.cancelled", "settled_at": dt.datetime.now(dt.UTC).isoformat()}
        await js.publish(settings.names.subject("channel.bank.settlements"), json.dumps(st).encode(),
                         headers={"Nats-Msg-Id": "bank:s-rjct"})
        await _marker(svc, settings, js, seed=1722)
        assert (await svc.http.get("/ledger/proof", headers=ds.headers(settings))).json()["balanced"]
        # a retry of a cancelled payment is refused (only a failed one can be paid again)
        r = await svc.http.post(f"/instructions/{a_dec}/retry", json={}, headers=ds.headers(settings))
        assert r.status_code in (404, 409, 422), r.text


async def test_disputed_holds_payment_and_alive_resumes_without_arrears_by_default(settings, nc, start):
    js = nc.jetstream()
    a, b = ds.people(2, seed=173)
    async with start("disbursement", settings) as svc:
        await _setup(svc, settings, js, [a, b])
        await _cycle(svc, settings, "2026-09")
        # sources disagree from 15 September: September was already issued before the dispute began
        await _announce(svc, settings, js, _life(a, "disputed", dt.date(2026, 9, 15), source="agency",
                                                 reason="conflict.deceased_vs_active"), a, "disputed")
        await _cycle(svc, settings, "2026-10")
        await _cycle(svc, settings, "2026-11")
        ins = await _instructions(svc)
        assert ins[(a["nik"], "2026-09")][0].status == "issued"
        assert (a["nik"], "2026-10") not in ins and (a["nik"], "2026-11") not in ins  # held, not issued
        # the verifier decides: alive; payments resume from 20 November's next cycle
        await _announce(svc, settings, js, _life(a, "alive", dt.date(2026, 11, 20), previous="disputed",
                                                 source="verifier", reason="verifier.confirmed_alive"), a, "alive")
        await _cycle(svc, settings, "2026-12")
        ins = await _instructions(svc)
        assert ins[(a["nik"], "2026-12")][0].status == "issued"
        # no arrears: the held October and November are not paid (the program's rules say nothing)
        assert (a["nik"], "2026-10") not in ins and (a["nik"], "2026-11") not in ins
        assert len([k for k in ins if k[0] == b["nik"]]) == 4


async def test_alive_pays_the_held_cycles_as_arrears_where_the_program_says_so(settings, nc, start):
    js = nc.jetstream()
    a, b = ds.people(2, seed=174)
    async with start("disbursement", settings) as svc:
        await _setup(svc, settings, js, [a, b])
        # the rule change is audited like every other (reason, actor, before and after)
        r = await svc.http.put(f"/programs/{PROGRAM}", json=RULES | {"pays_arrears": True,
                                                                      "reason": "Perbup 12/2026: arrears"},
                               headers=ds.headers(settings))
        assert r.status_code == 200, r.text
        async def audited():
            ev = [json.loads(m.data)["data"] for m in await _audit(js, settings) if b"program_rules_set" in m.data]
            return ev if len(ev) == 2 else None
        ev = await eventually(audited)
        assert ev[-1]["rules"]["pays_arrears"] is True and ev[-1]["previous_rules"]["pays_arrears"] is False
        assert ev[-1]["reason"] == "Perbup 12/2026: arrears" and ev[-1]["set_by"] == "pm1"
        await _cycle(svc, settings, "2026-09")
        # disputed from 1 September: September's unpaid instruction is cancelled (held)
        await _announce(svc, settings, js, _life(a, "disputed", dt.date(2026, 9, 1), source="agency",
                                                 reason="conflict.deceased_vs_active"), a, "disputed")

        async def held():
            return (await _instructions(svc))[(a["nik"], "2026-09")][0].status == "cancelled"
        await eventually(held)
        await _cycle(svc, settings, "2026-10")
        assert (a["nik"], "2026-10") not in await _instructions(svc)
        await _announce(svc, settings, js, _life(a, "alive", dt.date(2026, 10, 20), previous="disputed",
                                                 source="verifier", reason="verifier.confirmed_alive"), a, "alive")
        # the checker sees the arrears beside the cycle's own total before approving
        r = await svc.http.post(f"/cycles/{PROGRAM}/2026-11/preview", headers=ds.headers(settings))
        assert r.json()["arrears"] == {"instructions": 2, "total": 2 * AMOUNT} and r.json()["total"] == 2 * AMOUNT
        nov = await _cycle(svc, settings, "2026-11")
        ins = await _instructions(svc)
        assert ins[(a["nik"], "2026-11")][0].status == "issued"
        # the held September and October, paid in November's cycle as instructions of their own cycles
        sep = [r for r in ins[(a["nik"], "2026-09")] if r.status == "issued"]
        assert len(sep) == 1 and sep[0].amount == AMOUNT and sep[0].id == domain.arrears_id(
            PROGRAM, "2026-09", a["nik"], "2026-11")
        assert [r.status for r in ins[(a["nik"], "2026-10")]] == ["issued"]
        assert nov["arrears"] == {"instructions": 2, "total": 2 * AMOUNT}
        # running November again issues nothing more
        r = await svc.http.post(f"/cycles/{PROGRAM}/2026-11", headers=ds.headers(settings))
        assert r.status_code == 200, r.text
        assert len(await _instructions(svc)) == len(ins) and sum(map(len, ins.values())) == 7
        assert (await svc.http.get("/ledger/proof", headers=ds.headers(settings))).json()["balanced"]
        rep = audit.verify(await _audit(js, settings), settings.names.stream("DISBURSEMENT"),
                           svc.deps.cfg.signing_key.public_key())
        assert rep.ok, rep.failures


async def test_an_expired_verification_stops_payment_until_a_new_result(settings, nc, start):
    js = nc.jetstream()
    a, b = ds.people(2, seed=175)
    async with start("disbursement", settings) as svc:
        await _setup(svc, settings, js, [a, b])
        exp = VerificationsExpired(expiries=[
            VerificationExpiry(nik=a["nik"], village_code=a["village_code"], programme_identifiers=[PROGRAM],
                               verification_period="2025-H2", expired_on=dt.date(2026, 10, 1)),
            # b's expired only for another program: Kamalia still pays b
            VerificationExpiry(nik=b["nik"], village_code=b["village_code"], programme_identifiers=["pkh"],
                               expired_on=dt.date(2026, 10, 1))])
        await js.publish(settings.names.event("registry.verifications_expired"),
                         envelope(exp, "registry").model_dump_json().encode())

        async def expired():
            async with svc.rt.sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(store.verification_expiries)))\
                    .scalar_one() == 2
        await eventually(expired)
        await _cycle(svc, settings, "2026-10")
        assert {nik for nik, _p in await _instructions(svc, "2026-10")} == {b["nik"]}
        # re-verified: eligible again from the next cycle
        await js.publish(settings.names.event("registry.verification_recorded"), ds.verification_event(a, True))

        async def cleared():
            async with svc.rt.sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(store.verification_expiries).where(
                    store.verification_expiries.c.nik == a["nik"]))).scalar_one() == 0
        await eventually(cleared)
        await _cycle(svc, settings, "2026-11")
        assert {nik for nik, _p in await _instructions(svc, "2026-11")} == {a["nik"], b["nik"]}


async def test_the_life_rule_in_sql_is_the_domain_rule(settings, start):
    """cycles._life_stop_sql and domain.payable over every status, window and cycle start."""
    async with start("disbursement", settings) as svc:
        d = dt.date
        rows, n = [], 0
        windows = [(None, None), (d(2026, 9, 1), d(2026, 10, 20)), (d(2026, 10, 20), d(2026, 9, 1))]
        for status in ("alive", "deceased", "moved_out", "ineligible", "disputed"):
            for eff in (d(2026, 9, 15), d(2026, 10, 1)):
                for hf, hu in windows:
                    n += 1
                    rows.append({"nik": f"{n:016d}", "life_status": status, "effective_date": eff, "source": "crvs",
                                 "reason_code": "x", "held_from": hf, "held_until": hu,
                                 "changed_at": dt.datetime.now(dt.UTC)})
        async with svc.rt.sessions() as s, s.begin():
            await store.save_life(s, rows)
        for start_day in (d(2026, 9, 1), d(2026, 10, 1), d(2026, 11, 1)):
            for arrears in (False, True):
                async with svc.rt.sessions() as s:
                    stopped = set((await s.execute(sa.text(
                        f"select nik from life_statuses l where {cycles._life_stop_sql()}"),
                        {"start": start_day, "arrears": arrears})).scalars())
                want = {r["nik"] for r in rows if not domain.payable(
                    r["life_status"], r["effective_date"], r["held_from"], r["held_until"], start_day, arrears)}
                assert stopped == want, (start_day, arrears)
        assert uuid.UUID(int=0) != domain.arrears_id("p", "2026-09", "1", "2026-11")


async def test_a_death_announced_while_a_chunk_is_in_flight_leaves_no_payment_to_the_dead(settings, nc, start):
    """The race, made to happen: a cycle's chunk has read the life statuses (a alive) and is held
    just before it commits (its COPY waits on an uncommitted instruction of b's, the test's own
    open transaction); a's death is announced meanwhile. Whichever way the two commit, a must end
    with no issued instruction: the announcement waits for the chain lock the chunk holds, then
    finds a's new instruction and cancels it. (An announcement that wrote the status and looked
    for instructions without that lock would find none and leave a paid.)"""
    js = nc.jetstream()
    a, b, c = ds.people(3, seed=176)
    async with start("disbursement", settings) as svc:
        await _setup(svc, settings, js, [a, b, c])
        async with svc.rt.sessions() as blocker:
            await blocker.execute(sa.insert(store.instructions).values(
                id=uuid.uuid4(), programme_identifier=PROGRAM, period="2026-11", nik=b["nik"], pseudonym="x",
                amount=AMOUNT, channel="bank", cycle_id=uuid.uuid4(), status="issued"))
            run = asyncio.create_task(ds.run_cycle(svc.http, settings, PROGRAM, "2026-11"))

            async def chunk_waits():
                async with svc.rt.sessions() as s:
                    return (await s.execute(sa.text(
                        "select count(*) from pg_stat_activity where datname = current_database() "
                        "and wait_event_type = 'Lock' and query ilike '%copy%instructions%'"))).scalar_one()
            await eventually(chunk_waits, timeout=20)
            await js.publish(settings.names.event("registry.life_status_changed"),
                             _life(a, "deceased", dt.date(2026, 11, 1)))
            await asyncio.sleep(1.5)  # time enough for an announcement that does not wait for the chunk
            await blocker.rollback()
        r = await run
        assert r.status_code == 200 and r.json()["created"] == 3, r.text

        async def settled_for_a():
            rows = (await _instructions(svc, "2026-11")).get((a["nik"], "2026-11"), [])
            return rows if rows and rows[0].status != "issued" else None
        rows = await eventually(settled_for_a, timeout=20)
        assert [x.status for x in rows] == ["cancelled"]
        assert (await _instructions(svc, "2026-11"))[(b["nik"], "2026-11")][0].status == "issued"
        alloc = (await svc.http.get("/allocations", headers=ds.headers(settings))).json()["items"][0]
        assert alloc["reserved"] == 2 * AMOUNT
        assert (await svc.http.get("/ledger/proof", headers=ds.headers(settings))).json()["balanced"]
