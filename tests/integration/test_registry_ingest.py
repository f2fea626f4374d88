"""Agency enrolment reports against real NATS and PostgreSQL: every rejection reason reaches the
agency in a receipt, duplicates change nothing, out-of-order reports cannot regress a status,
and two programs' message ids never swallow each other."""
from __future__ import annotations

import asyncio
import json
import random
import string

import pytest
import sqlalchemy as sa

from services.registry import store
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import drain
from tests.unit.test_registry_rules import CASES

pytestmark = pytest.mark.integration


class Receipts:
    """Every receipt on agency.*.receipts, by message_id (a list: duplicates answer again)."""

    def __init__(self) -> None:
        self.by_id: dict[str, list[dict]] = {}

    async def start(self, nc, settings) -> Receipts:
        async def cb(m):
            for r in factories.receipts_of(m.data):
                self.by_id.setdefault(r["message_id"], []).append(r)
        self.sub = await nc.subscribe(settings.names.receipts("*"), cb=cb)
        return self

    def first(self, mid: str) -> dict | None:
        return (self.by_id.get(mid) or [None])[0]


SCOPED = "scoped"


async def publish(js, settings, program: str, report: dict | bytes, header: str | None = SCOPED):
    """Publish one report with Nats-Msg-Id `header`: by default `<program>:<message_id>` as the
    contract says; None for no header (JetStream then keeps every copy)."""
    data = report if isinstance(report, bytes) else json.dumps(report).encode()
    if header is SCOPED:
        header = factories.msg_id(report, program) if isinstance(report, dict) and "message_id" in report else None
    return await js.publish(settings.names.enrolments(program), data,
                            headers={"Nats-Msg-Id": header} if header is not None else None)


async def test_every_rejection_reason_comes_back_in_a_receipt(settings, nc, start):
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    expected = {}
    async with start("registry", settings) as registry:
        for i, (report, program, codes) in enumerate(CASES):
            mid = f"case-{i}"
            if isinstance(report, dict) and "message_id" in report:
                report = {**report, "message_id": mid}
            await publish(js, settings, program, report, header=f"{program}:{mid}")
            expected[mid] = codes
        await eventually(lambda: all(got.first(m) for m in expected), timeout=15)
        for mid, codes in expected.items():
            r = got.first(mid)
            assert r["status"] == "rjct", (mid, r)
            assert {s["status_reason_code"] for s in r["status_reasons"]} == {f"rjct.{c}" for c in codes}, mid
            assert all(s["status_reason_message"] for s in r["status_reasons"])
        async with registry.rt.sessions() as s:
            assert (await s.execute(sa.select(sa.func.count()).select_from(store.people))).scalar() == 0
    await got.sub.unsubscribe()


async def test_receipt_echoes_the_agency_ids_and_a_rejected_duplicate_gets_the_same_answer(settings, nc, start):
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    bad = factories.enrolment("pkh", village_code="3317019999")
    bad["village_code"] = "3317019999"
    async with start("registry", settings):
        await publish(js, settings, "pkh", bad)
        await eventually(lambda: got.first(bad["message_id"]))
        await publish(js, settings, "pkh", bad, header=None)  # no Nats-Msg-Id: JetStream keeps both
        await eventually(lambda: len(got.by_id[bad["message_id"]]) == 2)
        one, two = got.by_id[bad["message_id"]]
        assert one == two and one["reference_id"] == bad["reference_id"] and one["status"] == "rjct"
    await got.sub.unsubscribe()


async def _state(registry, nik: str) -> tuple[list, int]:
    async with registry.rt.sessions() as s:
        cur = (await s.execute(sa.select(store.enrolments.c.enrolment_status, store.enrolments.c.message_id)
                               .where(store.enrolments.c.nik == nik))).all()
        hist = (await s.execute(sa.select(sa.func.count()).select_from(store.enrolment_history)
                                .where(store.enrolment_history.c.nik == nik))).scalar()
    return [tuple(r) for r in cur], hist


async def _changes(js, settings) -> list[dict]:
    """Every enrolment change the registry announced, in order (batch events flattened)."""
    events = await drain(js, settings.names.event("registry.enrolments_changed"), settings.names.stream("REGISTRY"))
    return [c for e in events for c in e["data"]["changes"]]


async def test_later_effective_date_wins_whatever_the_arrival_order(settings, nc, start):
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    later = factories.enrolment("pkh", status="suspended", effective="2026-03-01")
    earlier = {**later, "message_id": "earlier", "enrolment_status": "active", "status_change_date": "2026-02-01"}
    async with start("registry", settings) as registry:
        await publish(js, settings, "pkh", later)
        await eventually(lambda: got.first(later["message_id"]))
        await publish(js, settings, "pkh", earlier)
        await eventually(lambda: got.first("earlier"))
        assert got.first("earlier")["status"] == "succ"  # accepted into history, but it does not win
        assert await _state(registry, later["nik"]) == ([("suspended", later["message_id"])], 2)
        changed = await eventually(lambda: _changes(js, settings))
        assert [c["enrolment_status"] for c in changed] == ["suspended"]
    await got.sub.unsubscribe()


async def test_ties_on_the_effective_date_resolve_by_message_id_in_any_order(settings, nc, start):
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    base = factories.enrolment("pkh", effective="2026-05-01")
    a = {**base, "message_id": "msg-a", "enrolment_status": "exited"}
    z = {**base, "message_id": "msg-z", "enrolment_status": "suspended"}
    other = factories.enrolment("pkh", effective="2026-05-01")
    oa = {**other, "message_id": "other-a", "enrolment_status": "exited"}
    oz = {**other, "message_id": "other-z", "enrolment_status": "suspended"}
    async with start("registry", settings) as registry:
        for rep in (z, a, oa, oz):  # person 1: greater id first; person 2: smaller id first
            await publish(js, settings, "pkh", rep)
            await eventually(lambda rep=rep: got.first(rep["message_id"]))
        assert (await _state(registry, base["nik"]))[0] == [("suspended", "msg-z")]
        assert (await _state(registry, other["nik"]))[0] == [("suspended", "other-z")]
    await got.sub.unsubscribe()


async def _language_collation(registry) -> str | None:
    """A collation of this server that sorts like a language ("a-1" before "B-1"): ICU's en-US,
    else a libc en_US; None where there is none (pgserver's build has neither ICU nor locales)."""
    async with registry.rt.sessions() as s:
        names = (await s.execute(sa.text(
            "select collname from pg_collation where collname = 'en-US-x-icu' or collname ilike 'en_US%' "
            "order by collname = 'en-US-x-icu' desc"))).scalars().all()
        for name in names:
            if (await s.execute(sa.text(f"select 'a-1' < 'B-1' collate \"{name}\""))).scalar():
                return str(name)
    return None


async def test_ties_agree_in_sql_and_events_under_a_language_collation(settings, nc, start):
    """A regency's PostgreSQL may default to en_US (the postgres image does): there "a-1" sorts
    before "B-1", by code point after it. The stored winner and the announced change must agree."""
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    base = factories.enrolment("pkh", effective="2026-05-01")
    upper = {**base, "message_id": "B-1", "enrolment_status": "suspended"}
    lower = {**base, "message_id": "a-1", "enrolment_status": "exited"}
    async with start("registry", settings) as registry:
        collation = await _language_collation(registry)
        if collation is None:
            await got.sub.unsubscribe()
            pytest.skip("this PostgreSQL has no language collation (no ICU, no en_US locale; e.g. the embedded "
                        "pgserver): every order here is by code point, the case this test guards cannot occur")
        async with registry.rt.sessions.begin() as s:
            await s.execute(sa.text(f'alter table enrolments alter column message_id type text collate "{collation}"'))
        for rep in (upper, lower):
            await publish(js, settings, "pkh", rep)
            await eventually(lambda rep=rep: got.first(rep["message_id"]))
        stored = (await _state(registry, base["nik"]))[0]
        changed = await eventually(lambda: _changes(js, settings))
        assert stored == [(changed[-1]["enrolment_status"], "a-1")] == [("exited", "a-1")]
    await got.sub.unsubscribe()


async def test_same_message_in_one_batch_and_again_later_changes_nothing(settings, nc, start):
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    rep = factories.enrolment("bpnt")
    newer = {**rep, "message_id": "newer", "enrolment_status": "exited", "status_change_date": "2026-06-01"}
    # three copies (no Nats-Msg-Id, so JetStream keeps them) before the registry starts: one batch
    for _ in range(3):
        await publish(js, settings, "bpnt", rep, header=None)
    async with start("registry", settings) as registry:
        await eventually(lambda: len(got.by_id.get(rep["message_id"], [])) == 3)
        assert len({json.dumps(r, sort_keys=True) for r in got.by_id[rep["message_id"]]}) == 1
        await publish(js, settings, "bpnt", newer)
        await eventually(lambda: got.first("newer"))
        await publish(js, settings, "bpnt", rep, header=None)  # an old message re-sent after a change
        await eventually(lambda: len(got.by_id[rep["message_id"]]) == 4)
        assert got.by_id[rep["message_id"]][3] == got.by_id[rep["message_id"]][0]
        assert await _state(registry, rep["nik"]) == ([("exited", "newer")], 2)
        await asyncio.sleep(0)  # the relay has published; one event per real change
        changed = await eventually(lambda: _changes(js, settings))
        assert [c["enrolment_status"] for c in changed] == ["active", "exited"]
    await got.sub.unsubscribe()


async def test_an_overlong_message_id_gets_its_rejection_and_does_not_hold_up_the_batch(settings, nc, start):
    """A message_id far over the contract's 128 characters (too big for a database key) is still
    answered with its reason, in the same batch as its neighbours, never a failed batch."""
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    long_id = "".join(random.Random(3).choices(string.ascii_letters + string.digits, k=9000))  # incompressible
    bad = factories.enrolment("pkh", message_id=long_id)
    good = factories.enrolment("pkh")
    async with start("registry", settings) as registry:
        await publish(js, settings, "pkh", bad, header=None)
        await publish(js, settings, "pkh", good)
        await eventually(lambda: got.first(long_id) and got.first(good["message_id"]), timeout=8)
        r = got.first(long_id)
        assert r["status"] == "rjct"
        assert [s["status_reason_code"] for s in r["status_reasons"]] == ["rjct.message_id.string_too_long"]
        assert got.first(good["message_id"])["status"] == "succ"
        await publish(js, settings, "pkh", bad, header=None)  # the same message again
        await eventually(lambda: len(got.by_id[long_id]) == 2)
        assert got.by_id[long_id][1] == r
        async with registry.rt.sessions() as s:
            assert (await s.execute(sa.select(sa.func.count()).select_from(store.enrolment_history))).scalar() == 1
    await got.sub.unsubscribe()


async def test_two_programs_may_use_the_same_message_id_and_an_unscoped_header_is_rejected(settings, nc, start):
    """JetStream de-duplicates Nats-Msg-Id across the whole stream: with the header set to the bare
    message_id, bpnt's "row-1" was dropped as a repeat of pkh's "row-1", and no receipt ever came.
    Scoped as <program>:<message_id>, both arrive; an unscoped header is refused with a reason."""
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    pkh = factories.enrolment("pkh", message_id="row-1")
    bpnt = factories.enrolment("bpnt", message_id="row-1")
    unscoped = factories.enrolment("kis", message_id="row-1")
    async with start("registry", settings) as registry:
        acks = [await publish(js, settings, "pkh", pkh), await publish(js, settings, "bpnt", bpnt)]
        assert not any(a.duplicate for a in acks)
        await asyncio.sleep(0.2)  # past the agencies' stream's 100 ms window: JetStream keeps the repeat
        await publish(js, settings, "pkh", pkh)  # a true repeat: the registry answers it with its first receipt
        await publish(js, settings, "kis", unscoped, header="row-1")
        await eventually(lambda: len(got.by_id.get("row-1", [])) == 4, timeout=15)
        by_program = {r["programme_identifier"]: r for r in got.by_id["row-1"]}
        assert [r for r in got.by_id["row-1"] if r["programme_identifier"] == "pkh"] == [by_program["pkh"]] * 2
        assert by_program["pkh"]["status"] == by_program["bpnt"]["status"] == "succ"
        assert by_program["pkh"]["reference_id"] == pkh["reference_id"]
        assert by_program["bpnt"]["reference_id"] == bpnt["reference_id"]
        r = by_program["kis"]
        assert r["status"] == "rjct"
        assert [s["status_reason_code"] for s in r["status_reasons"]] == ["rjct.message_id.unscoped"]
        assert "'kis:row-1'" in r["status_reasons"][0]["status_reason_message"]
        async with registry.rt.sessions() as s:
            enrolled = (await s.execute(sa.select(store.enrolments.c.nik, store.enrolments.c.programme_identifier)
                                        .order_by(store.enrolments.c.programme_identifier))).all()
        assert [tuple(e) for e in enrolled] == [(bpnt["nik"], "bpnt"), (pkh["nik"], "pkh")]
        dead = await drain(js, settings.names.deadletter("registry"), settings.names.stream("DEADLETTER"))
        assert [(d["msg_id"], d["reason_code"]) for d in dead] == [("row-1", "rjct.message_id.unscoped")]
    await got.sub.unsubscribe()


async def test_an_agency_cannot_take_another_programs_message_id(settings, nc, start):
    """JetStream's duplicate window is keyed by Nats-Msg-Id alone: pkh's agency publishing on its
    own subject with bpnt's next id (`bpnt:row-7`, guessable) made JetStream drop bpnt's real
    report for ten minutes, with no receipt. The agencies' stream keeps the shortest window
    (100 ms) and the registry de-duplicates per program: the forgery gets its rejection, bpnt's
    report its receipt."""
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    forged = factories.enrolment("pkh", message_id="row-7")
    real = factories.enrolment("bpnt", message_id="row-7")
    async with start("registry", settings):
        await publish(js, settings, "pkh", forged, header="bpnt:row-7")
        await eventually(lambda: got.first("row-7") is not None, timeout=15)
        await asyncio.sleep(0.2)  # the time an agency's next upload takes at the least: past 100 ms
        ack = await publish(js, settings, "bpnt", real)
        assert not ack.duplicate
        await eventually(lambda: len(got.by_id.get("row-7", [])) == 2, timeout=15)
        by_program = {r["programme_identifier"]: r for r in got.by_id["row-7"]}
        assert by_program["pkh"]["status"] == "rjct"
        assert by_program["bpnt"]["status"] == "succ" and by_program["bpnt"]["reference_id"] == real["reference_id"]
    await got.sub.unsubscribe()
