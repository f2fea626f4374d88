"""The first vertical slice against real NATS and PostgreSQL: an agency publishes with raw
nats-py; the registry stores and answers; reporting counts; the agency gets a receipt."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import pytest

from services.kit.auth import Principal, Role, issue_token
from tests import factories
from tests.conftest import eventually

pytestmark = pytest.mark.integration


def _staff(settings, area: str = "") -> dict:
    token = issue_token(Principal("dinsos-1", Role.verifier, area), settings.auth_secret)
    return {"Authorization": f"Bearer {token}"}


async def _receipts(nc, settings, program):
    got: dict[str, dict] = {}
    sub = await nc.subscribe(settings.names.receipts(program))

    async def pump():
        async for m in sub.messages:
            for r in factories.receipts_of(m.data):
                got[r["message_id"]] = r
    task = asyncio.create_task(pump())
    return got, task


async def test_agency_enrolment_flows_to_registry_reporting_and_receipt(settings, nc, start):
    js = nc.jetstream()
    got, pump = await _receipts(nc, settings, "pkh")
    report = factories.enrolment("pkh", is_head_of_household=True)
    async with start("registry", settings) as registry, start("reporting", settings) as reporting:
        ack = await js.publish(settings.names.enrolments("pkh"), json.dumps(report).encode(),
                               headers={"Nats-Msg-Id": factories.msg_id(report)})
        assert not ack.duplicate
        receipt = await eventually(lambda: got.get(report["message_id"]))
        assert receipt["status"] == "succ"
        assert receipt["reference_id"] == report["reference_id"]
        assert receipt["status_reasons"] == []

        # personal data: no token, no person; a village office elsewhere is told nothing (404, as
        # for a NIK nobody has: issue 15)
        assert (await registry.http.get(f"/people/{report['nik']}")).status_code == 401
        elsewhere = "3318"  # Kabupaten Pati; the report's village is in Rembang (3317)
        assert (await registry.http.get(f"/people/{report['nik']}",
                                        headers=_staff(settings, elsewhere))).status_code == 404
        r = await registry.http.get(f"/people/{report['nik']}", headers=_staff(settings, report["village_code"]))
        assert r.status_code == 200
        person = r.json()
        assert person["name"] == "Siti Aminah" and person["no_kk"] == report["no_kk"]
        assert person["enrolments"] == [{"programme_identifier": "pkh", "enrolment_status": "active",
                                         "status_change_date": "2026-01-01", "reported_by": "pkh",
                                         "reference_id": report["reference_id"]}]

        async def counted():
            r = (await reporting.http.get("/reports/enrolments", params={"program": "pkh"})).json()
            return r["items"]
        items = await eventually(counted)
        assert items == [{"programme_identifier": "pkh", "village_code": report["village_code"],
                          "enrolment_status": "active", "people": 1,
                          "village_name": items[0]["village_name"]}]
        assert items[0]["village_name"]
    pump.cancel()


async def test_bad_messages_get_rejected_receipts_and_dead_letters_and_consumer_keeps_going(settings, nc, start):
    js = nc.jetstream()
    got, pump = await _receipts(nc, settings, "bpnt")
    subj = settings.names.enrolments("bpnt")
    bad_nik = factories.enrolment("bpnt", nik="3317019907600001")  # day 99: no such date
    mismatch = factories.enrolment("bpnt", sex="M")
    mismatch["sex"] = "F"  # NIK says male
    unknown_village = factories.enrolment("bpnt", village_code="3317999999")
    good = factories.enrolment("bpnt")
    async with start("registry", settings) as registry:
        await js.publish(subj, b"{not json", headers={"Nats-Msg-Id": "garbage-1"})
        for rep in (bad_nik, mismatch, unknown_village, good):
            await js.publish(subj, json.dumps(rep).encode(), headers={"Nats-Msg-Id": factories.msg_id(rep)})
        await eventually(lambda: len(got) == 5)

        def codes(rep):
            return {r["status_reason_code"] for r in got[rep["message_id"]]["status_reasons"]}
        assert got["garbage-1"]["status"] == "rjct" and codes({"message_id": "garbage-1"}) == {"rjct.json.invalid"}
        assert got[bad_nik["message_id"]]["status"] == "rjct"
        assert "rjct.nik.invalid_birth_date" in codes(bad_nik)
        assert codes(mismatch) == {"rjct.nik.sex_mismatch"}
        assert "rjct.village_code.unknown" in codes(unknown_village)
        assert all(r["status_reason_message"] for r in got[unknown_village["message_id"]]["status_reasons"])
        assert got[good["message_id"]]["status"] == "succ"
        assert (await registry.http.get(f"/people/{good['nik']}", headers=_staff(settings))).status_code == 200
        r = await registry.http.get(f"/people/{bad_nik['nik']}", headers=_staff(settings))
        assert r.status_code == 400 and "not a real date" in r.text
        assert (await registry.http.get(f"/people/{mismatch['nik']}", headers=_staff(settings))).status_code == 404

        # every rejected message is on the dead-letter subject, with its reason and payload
        sub = await js.pull_subscribe(settings.names.deadletter("registry"), stream=settings.names.stream("DEADLETTER"))
        letters = []
        async def fetch_all():
            with contextlib.suppress(Exception):
                letters.extend(await sub.fetch(10, timeout=1))
            return len(letters) >= 4
        await eventually(fetch_all)
        bodies = [json.loads(m.data) for m in letters]
        assert {b["msg_id"] for b in bodies} == {"garbage-1", bad_nik["message_id"], mismatch["message_id"],
                                                 unknown_village["message_id"]}
        garbage = next(b for b in bodies if b["msg_id"] == "garbage-1")
        assert base64.b64decode(garbage["payload_b64"]) == b"{not json" and garbage["reason"]
    pump.cancel()


async def test_same_message_twice_changes_nothing_and_answers_the_same_receipt(settings, nc, start):
    js = nc.jetstream()
    got: list[dict] = []

    async def collect(m):
        got.extend(factories.receipts_of(m.data))
    sub = await nc.subscribe(settings.names.receipts("pkh"), cb=collect)
    rep = factories.enrolment("pkh")
    async with start("registry", settings) as registry:
        await js.publish(settings.names.enrolments("pkh"), json.dumps(rep).encode())  # no Nats-Msg-Id: both land
        await eventually(lambda: len(got) == 1)
        await js.publish(settings.names.enrolments("pkh"), json.dumps(rep).encode())
        await eventually(lambda: len(got) == 2)
        assert got[0]["status"] == got[1]["status"] == "succ"
        assert got[0] == got[1]
        async with registry.rt.sessions() as s:
            from sqlalchemy import func, select
            from services.registry.store import enrolment_history
            n = (await s.execute(select(func.count()).select_from(enrolment_history))).scalar()
        assert n == 1
    await sub.unsubscribe()
