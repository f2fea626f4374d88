"""A report that makes the registry's handler raise (a bug, not bad input) must not block
ingest: after a few deliveries it is dead-lettered with the error, and the rest of its batch
is processed normally. Text the database cannot store is bad input, not a bug: a receipt."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import random

import pytest
import sqlalchemy as sa

from services.registry import domain, handlers, store
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import drain

pytestmark = pytest.mark.integration


async def test_a_report_that_crashes_the_handler_is_dead_lettered_and_the_rest_flows(settings, nc, start, monkeypatch):
    real = domain.check_report

    def flaky(data, program, *a, **kw):
        if b"POISON" in data:
            raise RuntimeError("unforeseen value in report")
        return real(data, program, *a, **kw)
    monkeypatch.setattr(handlers.domain, "check_report", flaky)

    poison = factories.enrolment("pkh", reference_id="POISON-1")
    good = factories.enrolment("pkh")
    js = nc.jetstream()
    receipts: dict[str, dict] = {}

    async def collect(m):
        for r in factories.receipts_of(m.data):
            receipts[r["message_id"]] = r
    await nc.subscribe(settings.names.receipts("pkh"), cb=collect)
    async with start("registry", settings):
        for rep in (poison, good):  # one batch: the good report must not be held hostage
            await js.publish(settings.names.enrolments("pkh"), json.dumps(rep).encode(),
                             headers={"Nats-Msg-Id": factories.msg_id(rep)})
        await eventually(lambda: good["message_id"] in receipts, timeout=20)
        assert receipts[good["message_id"]]["status"] == "succ"

        dl = await js.pull_subscribe(settings.names.deadletter("registry"), stream=settings.names.stream("DEADLETTER"))
        letters: list = []

        async def dead():
            with contextlib.suppress(Exception):
                letters.extend(json.loads(m.data) for m in await dl.fetch(10, timeout=0.5))
            return letters
        await eventually(dead, timeout=20)
        assert [(x["msg_id"], x["reason_code"]) for x in letters] == [(factories.msg_id(poison), "rjct.handler.error")]
        assert "unforeseen value in report" in letters[0]["reason"]
        assert poison["message_id"] not in receipts  # it was never processed, only dead-lettered


NUL_FIELDS = ["name", "address", "reference_id", "message_id", "village_code"]


async def test_nul_in_a_text_field_gets_a_rejected_receipt_and_its_batch_flows(settings, nc, start):
    """PostgreSQL refuses NUL (\\u0000) in text. It passed every rule, so the whole batch failed at
    the insert: no receipt, only a rjct.handler.error dead letter, and ten among 2,000 reports
    turned 1.2 s of ingest into 25 s of one-at-a-time retries. Now it is a rule like any other."""
    rng = random.Random(5)
    reports = [factories.enrolment(["pkh", "bpnt"][i % 2], message_id=f"nul-{i}", sex=rng.choice("FM"),
                                   birth=dt.date(1940, 1, 1) + dt.timedelta(days=i)) for i in range(2000)]
    poisoned = {}
    for n, i in enumerate(range(7, 2000, 200)):  # ten, spread over the batches
        field = NUL_FIELDS[n % len(NUL_FIELDS)]
        reports[i][field] = reports[i][field][:3] + "\x00" + reports[i][field][3:]
        poisoned[reports[i]["message_id"].replace("\x00", "\ufffd")] = field  # the receipt echoes what can be stored
    js = nc.jetstream()
    for r in reports:
        # (a NUL message_id goes without a header: NATS headers are text lines)
        await js.publish_async(settings.names.enrolments(r["programme_identifier"]), json.dumps(r).encode(),
                               headers=None if "\x00" in r["message_id"] else {"Nats-Msg-Id": factories.msg_id(r)})
    await js.publish_async_completed()
    got: dict[str, dict] = {}

    async def collect(m):
        for r in factories.receipts_of(m.data):
            got[r["message_id"]] = r
    sub = await nc.subscribe(settings.names.receipts("*"), cb=collect)
    async with start("registry", settings) as registry:
        await eventually(lambda: len(got) == 2000, timeout=90)  # a bound, not a speed check (shared 2-core CI)
        rejected = {mid: r for mid, r in got.items() if r["status"] == "rjct"}
        assert len(got) - len(rejected) == 1990 and set(rejected) == set(poisoned)
        for mid, field in poisoned.items():
            codes = {s["status_reason_code"] for s in rejected[mid]["status_reasons"]}
            assert f"rjct.{field}.nul_character" in codes, (mid, codes)
        assert "\ufffd" in rejected["nul-407"]["reference_id"]  # echoed, but storable
        letters = await drain(js, settings.names.deadletter("registry"), settings.names.stream("DEADLETTER"))
        assert sorted(d["msg_id"] for d in letters) == sorted(poisoned)
        assert all(d["reason_code"].endswith(".nul_character") for d in letters), letters
        async with registry.rt.sessions() as s:
            assert (await s.execute(sa.select(sa.func.count()).select_from(store.enrolment_history))).scalar() == 1990
            assert (await s.execute(sa.select(sa.func.count()).select_from(store.receipts))).scalar() == 2000
    await sub.unsubscribe()
