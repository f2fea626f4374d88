"""Agency enrolment reports against real NATS and PostgreSQL: every rejection reason reaches the
agency in a receipt, duplicates change nothing, out-of-order reports cannot regress a status."""
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

    async def start(self, nc, settings) -> "Receipts":
        async def cb(m):
            for r in factories.receipts_of(m.data):
                self.by_id.setdefault(r["message_id"], []).append(r)
        self.sub = await nc.subscribe(settings.names.receipts("*"), cb=cb)
        return self

    def first(self, mid: str) -> dict | None:
        return (self.by_id.get(mid) or [None])[0]


async def publish(js, settings, program: str, report: dict | bytes, msg_id: str | None = None) -> None:
    data = report if isinstance(report, bytes) else json.dumps(report).encode()
    mid = msg_id or (report.get("message_id") if isinstance(report, dict) else None)
    await js.publish(settings.names.enrolments(program), data, headers={"Nats-Msg-Id": mid} if mid else None)


async def test_every_rejection_reason_comes_back_in_a_receipt(settings, nc, start):
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    expected = {}
    async with start("registry", settings) as registry:
        for i, (report, program, codes) in enumerate(CASES):
            mid = f"case-{i}"
            if isinstance(report, dict) and "message_id" in report:
                report = {**report, "message_id": mid}
            await publish(js, settings, program, report, msg_id=mid)
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
        await publish(js, settings, "pkh", bad, msg_id="a")
        await eventually(lambda: got.first(bad["message_id"]))
        await publish(js, settings, "pkh", bad, msg_id="b")  # different Nats-Msg-Id: JetStream keeps both
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
            await eventually(lambda: got.first(rep["message_id"]))
        assert (await _state(registry, base["nik"]))[0] == [("suspended", "msg-z")]
        assert (await _state(registry, other["nik"]))[0] == [("suspended", "other-z")]
    await got.sub.unsubscribe()


async def test_ties_agree_in_sql_and_events_under_a_language_collation(settings, nc, start):
    """A regency's PostgreSQL may default to en_US (the postgres image does): there "a-1" sorts
    before "B-1", by code point after it. The stored winner and the announced change must agree."""
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    base = factories.enrolment("pkh", effective="2026-05-01")
    upper = {**base, "message_id": "B-1", "enrolment_status": "suspended"}
    lower = {**base, "message_id": "a-1", "enrolment_status": "exited"}
    async with start("registry", settings) as registry:
        async with registry.rt.sessions.begin() as s:
            await s.execute(sa.text('alter table enrolments alter column message_id type text collate "en-US-x-icu"'))
        for rep in (upper, lower):
            await publish(js, settings, "pkh", rep)
            await eventually(lambda: got.first(rep["message_id"]))
        stored = (await _state(registry, base["nik"]))[0]
        changed = await eventually(lambda: _changes(js, settings))
        assert stored == [(changed[-1]["enrolment_status"], "a-1")] == [("exited", "a-1")]
    await got.sub.unsubscribe()


async def test_same_message_in_one_batch_and_again_later_changes_nothing(settings, nc, start):
    js = nc.jetstream()
    got = await Receipts().start(nc, settings)
    rep = factories.enrolment("bpnt")
    newer = {**rep, "message_id": "newer", "enrolment_status": "exited", "status_change_date": "2026-06-01"}
    # three copies (distinct Nats-Msg-Ids, so JetStream keeps them) before the registry starts: one batch
    for i in range(3):
        await publish(js, settings, "bpnt", rep, msg_id=f"copy-{i}")
    async with start("registry", settings) as registry:
        await eventually(lambda: len(got.by_id.get(rep["message_id"], [])) == 3)
        assert len({json.dumps(r, sort_keys=True) for r in got.by_id[rep["message_id"]]}) == 1
        await publish(js, settings, "bpnt", newer)
        await eventually(lambda: got.first("newer"))
        await publish(js, settings, "bpnt", rep, msg_id="copy-late")  # an old message re-sent after a change
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
        await publish(js, settings, "pkh", bad, msg_id="hdr-long")
        await publish(js, settings, "pkh", good)
        await eventually(lambda: got.first(long_id) and got.first(good["message_id"]), timeout=8)
        r = got.first(long_id)
        assert r["status"] == "rjct"
        assert [s["status_reason_code"] for s in r["status_reasons"]] == ["rjct.message_id.string_too_long"]
        assert got.first(good["message_id"])["status"] == "succ"
        await publish(js, settings, "pkh", bad, msg_id="hdr-long-again")  # the same message again
        await eventually(lambda: len(got.by_id[long_id]) == 2)
        assert got.by_id[long_id][1] == r
        async with registry.rt.sessions() as s:
            assert (await s.execute(sa.select(sa.func.count()).select_from(store.enrolment_history))).scalar() == 1
    await got.sub.unsubscribe()
