"""Issue 12, the payment channels' side, on real NATS and PostgreSQL: a settlement binds to the
channel it was issued to (settlement ids are unique per channel); instructions in batches with
the payee's details, per-item answers and a reconciled daily statement; a failed payment paid
again, once; quarterly stages and one-off cycles."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from contracts.channel import DisburseRequest
from contracts.envelope import envelope
from contracts.payee import Payee
from contracts.registry import EnrolmentsChanged
from services.disbursement import cycles, store
from services.kit.auth import Role
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


# --- instructions in batches, per-item answers, daily statements --------------------------------

BRI = {"kind": "bank_account", "bank_code": "002", "account_number": "0123456789"}
MANDIRI = {"kind": "bank_account", "bank_code": "008", "account_number": "9876543210"}
PICKUP = {"kind": "cash_pickup", "reference": "POS-3317-0042"}
WALI = {"name": "Budi Santoso", "nik": None, "relationship": "anak"}


def _with_payees(persons, payees):
    """Enrolment changes carrying the payee details an agency reported."""
    changes = []
    for p, payee in zip(persons, payees, strict=True):
        c = ds.enrolment_change(p, "kamalia_merekah")
        changes.append(c.model_copy(update={"payee": Payee.model_validate(payee) if payee else None}))
    return changes


async def _publish_changes(js, settings, changes):
    ev = EnrolmentsChanged(changes=changes)
    await js.publish(settings.names.event("registry.enrolments_changed"),
                     envelope(ev, "registry").model_dump_json().encode())
    for c in changes:
        p = {"nik": c.nik, "village_code": c.village_code}
        if (v := ds.verification_event(p, True)) is not None:
            await js.publish(settings.names.event("registry.verification_recorded"), v)


async def _fetch(js, settings, subject, want: int):
    sub = await js.pull_subscribe(settings.names.subject(subject), stream=settings.names.stream("CHANNEL"))
    got: list = []

    async def enough():
        with contextlib.suppress(Exception):
            got.extend(await sub.fetch(10, timeout=0.5))
        return len(got) >= want
    await eventually(enough)
    return got


async def _audit(js, settings) -> list[dict]:
    from services.disbursement import audit
    msgs = await audit.read_stream(js, settings.names.stream("DISBURSEMENT"), settings.names.subject("disbursement.>"),
                                   idle=0.5)
    return [json.loads(m.data) for m in msgs]


async def _verified(js, settings, svc) -> None:
    """`sinergi audit verify` holds over everything the test wrote (retries, statements)."""
    from services.disbursement import audit
    stream = settings.names.stream("DISBURSEMENT")
    msgs = await audit.read_stream(js, stream, settings.names.subject("disbursement.>"), idle=0.5)
    rep = audit.verify(msgs, stream, svc.deps.cfg.signing_key.public_key())
    assert rep.ok, rep.failures[:5]


async def _instruction_rows(svc, program="kamalia_merekah"):
    async with svc.rt.sessions() as s:
        return (await s.execute(sa.select(store.instructions).where(
            store.instructions.c.programme_identifier == program).order_by(store.instructions.c.created_at))).all()


async def test_batched_instructions_with_payees_per_item_results_and_a_reconciled_statement(settings, nc, start):
    js = nc.jetstream()
    persons = ds.people(3, seed=31)
    async with start("disbursement", settings) as svc:
        changes = _with_payees(persons, [{"name": "Sri Wahyuni", "financial_address": BRI},
                                         {"name": "Mbah Karto", "financial_address": PICKUP, "proxy": WALI},
                                         None])
        await _publish_changes(js, settings, changes)
        rows = await _issue(svc, settings, js, persons)
        by_nik = {r.nik: r for r in rows}

        # one message carries the three, with what the bank needs to pay each
        msgs = await _fetch(js, settings, "channel.bank.instructions", 1)
        req = DisburseRequest.model_validate_json(msgs[0].data)
        assert len(msgs) == 1 and len(req.disbursements) == 3
        assert msgs[0].headers["Nats-Msg-Id"] == str(req.transaction_id)
        d = {x.payee_id: x for x in req.disbursements}
        a, b, c = (d[p["nik"]] for p in persons)
        assert (a.payee_name, a.payee_fa, a.proxy) == ("Sri Wahyuni", "account:0123456789@002", None)
        assert (b.payee_fa, b.proxy.name) == ("cash:POS-3317-0042@pos", "Budi Santoso")
        assert c.payee_fa is None and c.payee_name is None
        assert {x.disbursement_id for x in req.disbursements} == {r.id for r in rows}
        assert all(x.amount == 600_000 and x.note for x in req.disbursements)

        # payee details stay off the audit stream
        audit_text = json.dumps(await _audit(js, settings))
        for secret in ("Sri Wahyuni", "0123456789", "POS-3317-0042", "Budi Santoso", persons[0]["nik"]):
            assert secret not in audit_text

        # per-item answers in one message: a paid, b refused with a reason code, one not the bank's
        now = dt.datetime.now(dt.UTC).isoformat()
        answer = {"settlement_id": "bank-2026-11-23-001", "results": [
            {"disbursement_id": str(a.disbursement_id), "status": "succ", "timestamp": now, "channel_reference": "TRX1"},
            {"disbursement_id": str(b.disbursement_id), "status": "rjct", "timestamp": now,
             "status_reason_code": "rjct.pickup.expired", "status_reason_message": "not collected in 30 days"},
            {"disbursement_id": str(uuid.uuid4()), "status": "succ", "timestamp": now}]}
        await js.publish(settings.names.subject("channel.bank.settlements"), json.dumps(answer).encode(),
                         headers={"Nats-Msg-Id": "bank:bank-2026-11-23-001"})

        async def settled():
            return (await _status(svc, a.disbursement_id), await _status(svc, b.disbursement_id)) == ("paid", "failed")
        await eventually(settled)
        # more than 500 results, and a refusal without its reason code: refused as a whole / alone
        many = {"settlement_id": "bank-big", "results": [answer["results"][0]] * 501}
        await js.publish(settings.names.subject("channel.bank.settlements"), json.dumps(many).encode(),
                         headers={"Nats-Msg-Id": "bank:bank-big"})
        mute = {"settlement_id": "bank-mute", "results": [
            {"disbursement_id": str(c.disbursement_id), "status": "rjct", "timestamp": now}]}
        await js.publish(settings.names.subject("channel.bank.settlements"), json.dumps(mute).encode(),
                         headers={"Nats-Msg-Id": "bank:bank-mute"})
        letters = await _letters(js, settings, 3)
        assert sorted(x["reason_code"] for x in letters) == [
            "rjct.instruction.unknown", "rjct.settlement.invalid", "rjct.settlement.reason_missing"]
        assert await _status(svc, c.disbursement_id) == "issued"
        async with svc.rt.sessions() as s:
            why = (await s.execute(sa.select(store.instructions.c.reason)
                                   .where(store.instructions.c.id == b.disbursement_id))).scalar()
        assert why.startswith("rjct.pickup.expired")

        # the day's statement: a (matches), a line Sinergi never issued, c (the books have it unpaid)
        stranger = uuid.uuid4()
        statement = {"statement_id": "bank-stmt-2026-11-23", "statement_date": _today_wib().isoformat(), "items": [
            {"disbursement_id": str(a.disbursement_id), "amount": 600_000},
            {"disbursement_id": str(stranger), "amount": 600_000},
            {"disbursement_id": str(c.disbursement_id), "amount": 600_000}]}
        await js.publish(settings.names.subject("channel.bank.statements"), json.dumps(statement).encode(),
                         headers={"Nats-Msg-Id": "bank:bank-stmt-2026-11-23"})
        h = ds.headers(settings, Role.auditor)

        async def reconciled():
            r = await svc.http.get("/reconciliation/bank", headers=h)
            return r.json()["items"] if r.status_code == 200 and r.json()["items"] else None
        (summary,) = await eventually(reconciled)
        assert (summary["items"], summary["matched"], summary["unmatched"]) == (3, 1, 2)
        r = await svc.http.get("/reconciliation/bank/bank-stmt-2026-11-23", headers=h)
        assert {(x["disbursement_id"], x["reason_code"]) for x in r.json()["items"]} == {
            (str(stranger), "unmatched.unknown"), (str(c.disbursement_id), "unmatched.issued")}
        events = [e for e in await _audit(js, settings) if e["event_type"] == "disbursement.statement_reconciled"]
        assert [(e["data"]["matched"], e["data"]["unmatched"]) for e in events] == [(1, 2)]
        await _verified(js, settings, svc)
        assert by_nik  # (the rows the cycle wrote)


def _today_wib() -> dt.date:
    return dt.datetime.now(dt.timezone(dt.timedelta(hours=7))).date()


# --- retries ---------------------------------------------------------------------------------------

async def test_a_failed_payment_is_paid_again_once_with_corrected_details(settings, nc, start):
    js = nc.jetstream()
    persons = ds.people(2, seed=41)
    async with start("disbursement", settings) as svc:
        await _publish_changes(js, settings, _with_payees(persons, [{"name": "Sri", "financial_address": BRI}, None]))
        rows = await _issue(svc, settings, js, persons)
        first = next(r for r in rows if r.nik == persons[0]["nik"])
        h = ds.headers(settings)
        # not failed: nothing to retry
        r = await svc.http.post(f"/instructions/{first.id}/retry", json={}, headers=h)
        assert r.status_code == 409, r.text
        await js.publish(settings.names.subject("channel.bank.settlements"),
                         _settlement("s-9", first.id, "failed", "account closed"), headers={"Nats-Msg-Id": "bank:s-9"})

        async def failed():
            return await _status(svc, first.id) == "failed"
        await eventually(failed)
        # the agency corrects the account; the registry passes it on
        await _publish_changes(js, settings, _with_payees(persons[:1], [{"name": "Sri", "financial_address": MANDIRI}]))

        async def corrected():
            async with svc.rt.sessions() as s:
                p = (await s.execute(sa.select(store.enrolments.c.payee)
                                     .where(store.enrolments.c.nik == persons[0]["nik"]))).scalar()
            return p and p["financial_address"]["bank_code"] == "008"
        await eventually(corrected)
        assert (await svc.http.post(f"/instructions/{first.id}/retry", json={},
                                    headers=ds.headers(settings, Role.auditor))).status_code == 403
        # many at once: exactly one retry
        answers = await asyncio.gather(*[svc.http.post(f"/instructions/{first.id}/retry", json={"channel": "bank2"},
                                                       headers=h) for _ in range(6)])
        assert sorted(a.status_code for a in answers) == [200] + [409] * 5, [a.text for a in answers]
        new = next(a.json() for a in answers if a.status_code == 200)
        assert new["retry_of"] == str(first.id) and new["channel"] == "bank2"
        msgs = await _fetch(js, settings, "channel.bank2.instructions", 1)
        (item,) = DisburseRequest.model_validate_json(msgs[0].data).disbursements
        assert str(item.disbursement_id) == new["instruction_id"] and item.retry_of == first.id
        assert item.payee_fa == "account:9876543210@008"
        # a cycle re-run issues nothing more for this person
        await cycles.run(svc.deps, "kamalia_merekah", PERIOD, "test")
        live = [r for r in await _instruction_rows(svc) if r.nik == persons[0]["nik"] and r.status != "failed"]
        assert len(live) == 1
        allocs = (await svc.http.get("/allocations", headers=h)).json()["items"]
        assert sum(x["reserved"] for x in allocs) == 2 * 600_000  # released on failure, reserved again
        assert (await svc.http.get("/ledger/proof", headers=h)).json()["balanced"]
        await _verified(js, settings, svc)


async def test_never_two_live_instructions_for_one_person_and_cycle(settings, nc, start):
    """The partial unique index, raced by two transactions that each saw no live instruction."""
    js = nc.jetstream()
    persons = ds.people(1, seed=51)
    async with start("disbursement", settings) as svc:
        (row,) = await _issue(svc, settings, js, persons)

        async def insert(iid):
            async with svc.rt.sessions() as s:
                await s.execute(sa.update(store.instructions).where(store.instructions.c.id == row.id)
                                .values(status="failed"))
                await asyncio.sleep(0.2)  # both are inside their transaction before either inserts
                await s.execute(sa.insert(store.instructions).values(
                    id=iid, programme_identifier=row.programme_identifier, period=row.period, nik=row.nik,
                    pseudonym=row.pseudonym, amount=row.amount, channel="bank", cycle_id=row.cycle_id,
                    status="issued", retry_of=row.id))
                await s.commit()

        async with svc.rt.sessions() as s:
            await s.execute(sa.update(store.instructions).where(store.instructions.c.id == row.id)
                            .values(status="failed"))
            await s.commit()
        results = await asyncio.gather(insert(uuid.uuid4()), insert(uuid.uuid4()), return_exceptions=True)
        assert sum(isinstance(x, IntegrityError) for x in results) == 1, results
        live = [r for r in await _instruction_rows(svc) if r.status != "failed"]
        assert len(live) == 1


# --- frequencies -----------------------------------------------------------------------------------

async def test_quarterly_stages_and_one_off_cycles(settings, nc, start):
    js = nc.jetstream()
    persons = ds.people(2, seed=61)
    pkh = {"name": "PKH", "amount": {"kind": "fixed", "amount": 750_000}, "frequency": "quarterly",
           "funding": [{"source": "apbn"}], "channel": "bank"}
    banjir = {"name": "Bantuan banjir", "amount": {"kind": "fixed", "amount": 300_000}, "frequency": "one_off",
              "funding": [{"source": "apbn"}], "channel": "pos"}
    async with start("disbursement", settings) as svc:
        h = ds.headers(settings)
        for code, rules in (("pkh", pkh), ("banjir", banjir)):
            assert (await svc.http.put(f"/programs/{code}", json=rules, headers=h)).status_code == 200
            r = await svc.http.put(f"/allocations/apbn/{code}/2026", json={"ceiling": 10**9, "reason": "DIPA"},
                                   headers=h)
            assert r.status_code == 200, r.text
            await ds.publish_enrolments(js, settings, persons, code)

        async def all_in():
            async with svc.rt.sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(store.enrolments))).scalar() == 4
        await eventually(all_in, timeout=15)
        for code, wrong in (("pkh", "2026-11"), ("pkh", "2026-Q4"), ("banjir", "2026-11")):
            with pytest.raises(cycles.CycleError) as err:
                await cycles.run(svc.deps, code, wrong, "test")
            assert err.value.status == 422
        t4 = await cycles.run(svc.deps, "pkh", "2026-T4", "test")
        assert t4["created"] == 2
        assert (await cycles.run(svc.deps, "pkh", "2026-T4", "test"))["created"] == 0  # a stage is paid once
        once = await cycles.run(svc.deps, "banjir", "2026-11-banjir", "test")
        assert once["created"] == 2
        rows = await _instruction_rows(svc, "pkh")
        assert {r.period for r in rows} == {"2026-T4"}
        events = await _audit(js, settings)
        issued = [e["data"] for e in events if e["event_type"] == "disbursement.payment_instructions_issued"]
        assert {(e["programme_identifier"], e["period"], e["cycle_key"]) for e in issued} == {
            ("pkh", "2026-10", "2026-T4"), ("banjir", "2026-11", "2026-11-banjir")}
        msgs = await _fetch(js, settings, "channel.bank.instructions", 1)
        items = DisburseRequest.model_validate_json(msgs[0].data).disbursements
        assert {x.period for x in items} == {"2026-T4"}
        # a stage's payments settle like a month's (the audit stream's period is the month paid in)
        now = dt.datetime.now(dt.UTC).isoformat()
        answer = {"settlement_id": "t4-1", "results": [
            {"disbursement_id": str(items[0].disbursement_id), "status": "succ", "timestamp": now},
            {"disbursement_id": str(items[1].disbursement_id), "status": "rjct", "timestamp": now,
             "status_reason_code": "rjct.account.closed"}]}
        await js.publish(settings.names.subject("channel.bank.settlements"), json.dumps(answer).encode(),
                         headers={"Nats-Msg-Id": "bank:t4-1"})

        async def settled():
            return {await _status(svc, x.disbursement_id) for x in items} == {"paid", "failed"}
        await eventually(settled)
        recorded = [e["data"] for e in await _audit(js, settings)
                    if e["event_type"] in ("disbursement.settlement_recorded", "disbursement.budget_released")]
        assert len(recorded) == 3 and {(e["period"], e["cycle_key"]) for e in recorded} == {("2026-10", "2026-T4")}
