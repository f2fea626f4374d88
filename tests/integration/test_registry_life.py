"""Life status against real servers (issue 17): one announcement per change whichever program or
source reported it; disputes go to the verifier's queue; verivali results and Dukcapil's death
notifications change it; the precedence crvs > verifier > agency holds."""
from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from contracts import wilayah
from contracts.crvs import NotifyReceipt
from contracts.registry import LifeStatusChanged
from services.kit.auth import Role
from services.registry import store
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import auth, count, drain, send

pytestmark = pytest.mark.integration


async def life_changes(nc, settings) -> list[dict]:
    """Every LifeStatusChange item announced so far (each envelope checked against the contract)."""
    envs = await drain(nc.jetstream(), settings.names.event("registry.life_status_changed"),
                       settings.names.stream("REGISTRY"), wait=0.3)
    return [c for e in envs for c in LifeStatusChanged.model_validate(e["data"]).model_dump(mode="json")["changes"]]


async def announced(nc, settings, n: int) -> list[dict]:
    """Wait until exactly `n` changes are announced (and no more come for a moment)."""
    async def enough():
        got = await life_changes(nc, settings)
        return got if len(got) >= n else None
    got = await eventually(enough, timeout=15)
    assert len(got) == n, got
    return got


def death(nik: str, reference_id: str | None = None, death_date: str = "2026-03-02", **record) -> dict:
    return {"reference_id": reference_id or f"ev-{uuid.uuid4().hex[:8]}", "timestamp": "2026-03-03T08:00:00Z",
            "data": {"version": "1.0.0", "reg_type": "ns:org:RegistryType:CRVS", "reg_event_type": "DEATH",
                     "reg_record_type": "DeathCertificate",
                     "reg_records": {"identifier": [{"identifier_type": "NIK", "identifier_value": nik}],
                                     "death_date": death_date, "death_place": "Rembang",
                                     "registration_number": "3317-KM-26030001", "registration_date": "2026-03-03",
                                     **record}}, "locale": "ind"}


def notification(events: list[dict], message_id: str | None = None, action: str = "notify") -> dict:
    return {"signature": "unsigned", "header": {"version": "1.0.0", "message_id": message_id or str(uuid.uuid4()),
                                                "message_ts": "2026-03-03T08:00:00Z", "action": action,
                                                "sender_id": "dukcapil", "receiver_id": "sinergi",
                                                "total_count": len(events)},
            "message": {"transaction_id": f"txn-{uuid.uuid4().hex[:8]}", "notify_event": events}}


async def notify(nc, settings, bodies: list[bytes | dict], msg_ids: list[str | None] | None = None) -> list[dict]:
    """Publish notify messages as Dukcapil does and wait for one receipt per message (in order)."""
    got: list[dict] = []

    async def cb(m):
        got.append(NotifyReceipt.model_validate_json(m.data).model_dump(mode="json"))
    sub = await nc.subscribe(settings.names.crvs_receipts(), cb=cb)
    js = nc.jetstream()
    for i, body in enumerate(bodies):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        mid = (msg_ids or [None] * len(bodies))[i]
        if mid is None and isinstance(body, dict):
            mid = f"dukcapil:{body['header']['message_id']}"
        await js.publish(settings.names.crvs_deaths(), data, headers={"Nats-Msg-Id": mid or str(uuid.uuid4())})
    await eventually(lambda: len(got) >= len(bodies), timeout=15)
    await sub.unsubscribe()
    return got


async def test_a_programs_death_is_announced_once_whichever_program_reports_it(settings, nc, start):
    pkh = factories.enrolment("pkh")
    async with start("registry", settings) as registry:
        await send(nc, settings, [pkh])
        await send(nc, settings, [{**pkh, "message_id": "d-1", "enrolment_status": "deceased",
                                   "status_change_date": "2026-03-05"}])
        [change] = await announced(nc, settings, 1)
        assert change | {"conflict_id": None} == {
            "nik": pkh["nik"], "village_code": pkh["village_code"], "life_status": "deceased",
            "previous_status": "alive", "effective_date": "2026-03-05", "source": "agency", "reported_by": "pkh",
            "reason_code": "agency.deceased", "programme_identifiers": ["pkh"], "conflict_id": None}
        # a second program's death report: enrolled, announced as its enrolment, no second life change
        await send(nc, settings, [{**pkh, "message_id": "d-2", "programme_identifier": "kamalia",
                                   "enrolment_status": "deceased", "status_change_date": "2026-03-06"}])
        await announced(nc, settings, 1)
        person = (await registry.http.get(f"/people/{pkh['nik']}", headers=auth(settings))).json()
        assert person["life_status"]["status"] == "deceased" and person["life_status"]["source"] == "agency"
        assert await count(registry, store.data_quality) == 0


@pytest.mark.parametrize("dead_first", [True, False])
async def test_deceased_against_active_is_disputed_until_a_verifier_decides(settings, nc, start, dead_first):
    pkh = factories.enrolment("pkh")
    dead = {**pkh, "message_id": "d-1", "enrolment_status": "deceased", "status_change_date": "2026-03-05"}
    kamalia = {**pkh, "message_id": "k-1", "programme_identifier": "kamalia", "status_change_date": "2026-03-10"}
    async with start("registry", settings) as registry:
        for batch in ([pkh, dead], [kamalia]) if dead_first else ([pkh, kamalia], [dead]):
            for rep in batch:
                await send(nc, settings, [rep])
        changes = await announced(nc, settings, 2 if dead_first else 1)
        disputed = changes[-1]
        assert disputed["life_status"] == "disputed" and disputed["reason_code"] == "conflict.deceased_vs_active"
        assert disputed["previous_status"] == ("deceased" if dead_first else "alive")
        assert disputed["programme_identifiers"] == ["kamalia", "pkh"]
        h = auth(settings)
        [item] = (await registry.http.get("/data-quality", params={"kind": "death_while_active"}, headers=h)
                  ).json()["items"]
        assert disputed["conflict_id"] == item["id"]
        # the verifier must say what they found
        r = await registry.http.post(f"/data-quality/{item['id']}/resolve", json={"resolution": "visited"}, headers=h)
        assert r.status_code == 400, r.text
        r = await registry.http.post(f"/data-quality/{item['id']}/resolve",
                                     json={"resolution": "visited: she is alive, PKH erred", "life_status": "alive"},
                                     headers=h)
        assert r.status_code == 200 and r.json()["life_status"] == "alive", r.text
        alive = (await announced(nc, settings, len(changes) + 1))[-1]
        assert alive["life_status"] == "alive" and alive["previous_status"] == "disputed"
        assert alive["source"] == "verifier" and alive["reported_by"] == "verivali"
        assert alive["reason_code"] == "verifier.confirmed_alive"
        # the old disagreement reported again does not reopen it
        await send(nc, settings, [{**kamalia, "message_id": "k-2", "status_change_date": "2026-03-11"}])
        await announced(nc, settings, len(changes) + 1)
        history = (await registry.http.get(f"/people/{pkh['nik']}/history", headers=h)).json()
        assert [c["status"] for c in history["life"]][-1] == "alive"


async def test_verivali_results_change_life_status(settings, nc, start):
    village = "3317012001"
    reps = [factories.enrolment("pkh", village_code=village) for _ in range(4)]
    async with start("registry", settings) as registry:
        await send(nc, settings, reps)
        ver = auth(settings, Role.verifier, area=village)
        rnd = (await registry.http.post("/verification-rounds", json={"area": village}, headers=ver)).json()
        for rep, result in zip(reps, ("deceased", "moved", "ineligible", "not_found"), strict=True):
            r = await registry.http.post(f"/verification-rounds/{rnd['round_id']}/results",
                                         json={"nik": rep["nik"], "result": result}, headers=ver)
            assert r.status_code == 200, r.text
        changes = await announced(nc, settings, 3)
        assert [(c["nik"], c["life_status"], c["source"], c["reported_by"], c["reason_code"]) for c in changes] == [
            (reps[0]["nik"], "deceased", "verifier", "verivali", "verivali.deceased"),
            (reps[1]["nik"], "moved_out", "verifier", "verivali", "verivali.moved"),
            (reps[2]["nik"], "ineligible", "verifier", "verivali", "verivali.ineligible")]
        assert all(c["programme_identifiers"] == ["pkh"] for c in changes)


async def test_dukcapils_death_is_the_strongest_source(settings, nc, start):
    pkh = factories.enrolment("pkh")
    unknown = factories.enrolment("kamalia")  # not yet known to any program
    async with start("registry", settings) as registry:
        await send(nc, settings, [pkh])
        [receipt] = await notify(nc, settings, [notification([death(pkh["nik"], "e-1"),
                                                              death(unknown["nik"], "e-2")])])
        assert receipt["status"] == "succ"
        assert [(s["reference_id"], s["status"], s["status_reason_code"]) for s in receipt["notify_status"]] == [
            ("e-1", "succ", None), ("e-2", "succ", "info.crvs.not_in_registry")]
        [change] = await announced(nc, settings, 1)
        assert (change["nik"], change["life_status"], change["source"], change["reported_by"],
                change["reason_code"], change["effective_date"]) == (
            pkh["nik"], "deceased", "crvs", "dukcapil", "crvs.death_notification", "2026-03-02")
        # a program cannot dispute it: its report is stored and answered with the reason
        got = await send(nc, settings, [{**pkh, "message_id": "still-active", "status_change_date": "2026-03-20"}])
        assert got["still-active"]["status"] == "succ"
        assert [r["status_reason_code"] for r in got["still-active"]["status_reasons"]] == [
            "info.life.deceased_in_civil_registry"]
        # the unknown NIK enrolled later: announced deceased then, from Dukcapil
        await send(nc, settings, [unknown])
        changes = await announced(nc, settings, 2)
        assert (changes[1]["nik"], changes[1]["life_status"], changes[1]["source"]) == (unknown["nik"], "deceased",
                                                                                      "crvs")
        assert await count(registry, store.data_quality) == 0
        # the same message again: the same receipt, nothing applied twice
        again = notification([death(pkh["nik"], "e-1")], message_id=receipt["message_id"])
        [repeat] = await notify(nc, settings, [again], [f"dukcapil:{receipt['message_id']}-resent"])
        assert repeat == receipt
        await announced(nc, settings, 2)


async def test_dukcapils_death_closes_a_dispute(settings, nc, start):
    pkh = factories.enrolment("pkh")
    async with start("registry", settings) as registry:
        await send(nc, settings, [pkh, {**pkh, "message_id": "k", "programme_identifier": "kamalia"}])
        await send(nc, settings, [{**pkh, "message_id": "d", "enrolment_status": "deceased",
                                   "status_change_date": "2026-03-01"}])
        await announced(nc, settings, 1)
        await notify(nc, settings, [notification([death(pkh["nik"])])])
        changes = await announced(nc, settings, 2)
        assert (changes[1]["previous_status"], changes[1]["life_status"], changes[1]["source"]) == (
            "disputed", "deceased", "crvs")
        h = auth(settings)
        assert (await registry.http.get("/data-quality", headers=h)).json()["total"] == 0
        [item] = (await registry.http.get("/data-quality", params={"status": "resolved"}, headers=h)).json()["items"]
        assert item["resolved_by"] == "dukcapil" and changes[0]["conflict_id"] == item["id"]
        # a verifier cannot say "alive" any more: the item is closed
        r = await registry.http.post(f"/data-quality/{item['id']}/resolve",
                                     json={"resolution": "saw her", "life_status": "alive"}, headers=h)
        assert r.status_code == 409


@pytest.mark.parametrize("decision", ["deceased", "moved_out"])
async def test_a_verifier_ends_a_dispute_with_a_death_or_a_move(settings, nc, start, decision):
    pkh = factories.enrolment("pkh")
    async with start("registry", settings) as registry:
        await send(nc, settings, [pkh, {**pkh, "message_id": "k", "programme_identifier": "kamalia"}])
        await send(nc, settings, [{**pkh, "message_id": "d", "enrolment_status": "deceased",
                                   "status_change_date": "2026-03-01"}])
        [disputed] = await announced(nc, settings, 1)
        h = auth(settings)
        r = await registry.http.post(f"/data-quality/{disputed['conflict_id']}/resolve",
                                     json={"resolution": "checked with the village head", "life_status": decision},
                                     headers=h)
        assert r.status_code == 200 and r.json()["life_status"] == decision, r.text
        after = (await announced(nc, settings, 2))[1]
        assert (after["life_status"], after["source"], after["reason_code"]) == (
            decision, "verifier", f"verifier.confirmed_{decision}")
        # a confirmed death dates from the reported one (the exit's month, nothing paid since is
        # valid); a move the verifier found dates from the finding
        reported = dt.date(2026, 3, 1)
        if decision == "deceased":
            assert after["effective_date"] == reported.isoformat()
        else:
            assert after["effective_date"] > reported.isoformat()
        # a program cannot bring them back
        await send(nc, settings, [{**pkh, "message_id": "k-2", "programme_identifier": "kamalia",
                                   "status_change_date": "2026-04-01"}])
        await announced(nc, settings, 2)


async def test_hostile_notifications_each_get_a_receipt_with_a_reason(settings, nc, start):
    pkh = factories.enrolment("pkh")
    nul = notification([death(pkh["nik"])])
    nul["header"]["message_id"] = "has\u0000nul"
    cases: list[tuple[bytes | dict, str | None, str]] = [
        (b"{not json", None, "rjct.json.invalid"),
        (b"[1, 2]", None, "rjct.json.not_object"),
        ({"header": {"message_id": "m-hdr"}}, "dukcapil:m-hdr", "rjct.header.action.missing"),
        (notification([death(pkh["nik"])], action="search"), None, "rjct.header.action"),
        (notification([death(pkh["nik"])], message_id="m-unscoped"), "m-unscoped", "rjct.message_id.unscoped"),
        (notification([]), None, "rjct.message.notify_event.too_short"),
        (notification([death(pkh["nik"], "same"), death(pkh["nik"], "same")]), None, "rjct.reference_id.duplicate"),
        (nul, "dukcapil:nul", "rjct.text.unstorable"),
        (b"x" * (300 * 1024), None, "rjct.message.too_large"),
        (notification([death(pkh["nik"], "\ud800lone")]), None, "rjct.text.unstorable"),
        (notification([{"reference_id": "r"}]), None, "rjct.message.notify_event.data.missing"),
    ]
    events = [death("12345", "bad-nik"), death(pkh["nik"], "future", death_date="2099-01-01"),
              death(pkh["nik"], "old", death_date="1900-01-01"), death(pkh["nik"], "fmt", death_date="kemarin"),
              {**death(pkh["nik"], "birth"), "data": {**death(pkh["nik"])["data"], "reg_event_type": "BIRTH"}},
              death(pkh["nik"], "nul", registration_number="akta\u0000")]
    async with start("registry", settings) as registry:
        await send(nc, settings, [pkh])
        receipts = await notify(nc, settings, [c[0] for c in cases] + [notification(events)],
                                [c[1] for c in cases] + [None])
        by_code = sorted(r["status_reason_code"] or "" for r in receipts if r["status"] == "rjct")
        assert by_code == sorted(c[2] for c in cases), by_code
        [mixed] = [r for r in receipts if r["status"] == "succ"]
        assert [s["status_reason_code"] for s in mixed["notify_status"]] == [
            "rjct.nik.format", "rjct.death_date.in_future", "rjct.death_date.before_birth", "rjct.death_date.format",
            "rjct.reg_event_type.unsupported", "rjct.text.unstorable"]
        assert all(s["status"] == "rjct" for s in mixed["notify_status"])
        # the messages that could not be read are dead letters too; nobody was declared dead
        letters = await drain(nc.jetstream(), settings.names.deadletter("registry"),
                              settings.names.stream("DEADLETTER"), wait=0.3)
        assert sorted(x["reason_code"] for x in letters) == sorted(c[2] for c in cases)
        assert await life_changes(nc, settings) == []
        person = (await registry.http.get(f"/people/{pkh['nik']}", headers=auth(settings))).json()
        assert person["life_status"]["status"] == "alive"


async def test_a_nik_outside_your_area_answers_as_an_unknown_one(settings, nc, start):
    """Issue 17: GET /people/{nik} (and every route taking a NIK) gives the same 404 body for a
    person in another area as for a NIK nobody registered."""
    here = "3317012001"
    there = next(v for v in wilayah.villages_in("3317") if not v.startswith(here[:6]))
    pkh = factories.enrolment("pkh", village_code=there)
    nobody = factories.enrolment("pkh", village_code=there)["nik"]
    async with start("registry", settings) as registry:
        assert (await send(nc, settings, [pkh]))[pkh["message_id"]]["status"] == "succ"
        office = auth(settings, Role.village_office, area=here)
        for route in ("/people/{}", "/people/{}/history"):
            outside = await registry.http.get(route.format(pkh["nik"]), headers=office)
            unknown = await registry.http.get(route.format(nobody), headers=office)
            assert outside.status_code == unknown.status_code == 404
            assert outside.json() == {**unknown.json(), **{k: v.replace(nobody, pkh["nik"]) for k, v in
                                                           unknown.json().items() if isinstance(v, str)}}
            assert unknown.json()["error"].replace(nobody, "<nik>") == outside.json()["error"].replace(pkh["nik"],
                                                                                                       "<nik>")
            assert dict(outside.headers).keys() == dict(unknown.headers).keys()
        # the verifier's result for someone outside the area is refused the same way
        ver = auth(settings, Role.verifier, area=here)
        rnd = (await registry.http.post("/verification-rounds", json={"area": here}, headers=ver)).json()
        answers = [await registry.http.post(f"/verification-rounds/{rnd['round_id']}/results",
                                            json={"nik": n, "result": "verified"}, headers=ver)
                   for n in (pkh["nik"], nobody)]
        assert [a.status_code for a in answers] == [404, 404]
        assert answers[0].json()["error"].replace(pkh["nik"], "<nik>") == answers[1].json()["error"].replace(
            nobody, "<nik>")
        # in the person's own area it answers
        assert (await registry.http.get(f"/people/{pkh['nik']}", headers=auth(settings, Role.village_office,
                                                                                area=there))).status_code == 200


async def test_a_stop_no_transaction_announced_is_announced_by_the_lease_holder(settings, nc, start):
    """The race REGISTRY.md describes: Dukcapil's death for a NIK no program knew and that NIK's
    first enrolment commit at once, each unseen by the other. Here Dukcapil's row is written
    as that transaction would leave it (a life status, no announcement in life_history)."""
    import datetime as dt

    from services.registry import life

    pkh = factories.enrolment("pkh")
    async with start("registry", settings) as registry:
        await send(nc, settings, [pkh])
        async with registry.rt.unit_of_work() as uow:
            await store.write_lives(uow.session, [{"nik": pkh["nik"], "status": "deceased", "source": "crvs",
                                                   "effective_date": dt.date(2026, 3, 2), "reported_by": "dukcapil",
                                                   "reason_code": "crvs.death_notification", "reason": "akta 1"}], [])
        async with registry.rt.unit_of_work() as uow:
            assert await life.announce_unannounced(uow) == 1
        [change] = await announced(nc, settings, 1)
        assert (change["nik"], change["life_status"], change["previous_status"], change["source"],
                change["programme_identifiers"]) == (pkh["nik"], "deceased", "alive", "crvs", ["pkh"])
        async with registry.rt.unit_of_work() as uow:
            assert await life.announce_unannounced(uow) == 0
        await announced(nc, settings, 1)
