"""A report that makes the registry's handler raise (a bug, not bad input) must not block
ingest: after a few deliveries it is dead-lettered with the error, and the rest of its batch
is processed normally."""
from __future__ import annotations

import json

import pytest

from services.registry import domain, handlers
from tests import factories
from tests.conftest import eventually

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
                             headers={"Nats-Msg-Id": rep["message_id"]})
        await eventually(lambda: good["message_id"] in receipts, timeout=20)
        assert receipts[good["message_id"]]["status"] == "succ"

        dl = await js.pull_subscribe(settings.names.deadletter("registry"), stream=settings.names.stream("DEADLETTER"))
        letters: list = []

        async def dead():
            try:
                letters.extend(json.loads(m.data) for m in await dl.fetch(10, timeout=0.5))
            except Exception:
                pass
            return letters
        await eventually(dead, timeout=20)
        assert [(x["msg_id"], x["reason_code"]) for x in letters] == [(poison["message_id"], "rjct.handler.error")]
        assert "unforeseen value in report" in letters[0]["reason"]
        assert poison["message_id"] not in receipts  # it was never processed, only dead-lettered
