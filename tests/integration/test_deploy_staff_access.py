"""Staff access through the real login (POST /auth/token, accounts in SINERGI_USERS_FILE) on
the real services: a village office cannot read another village's cases (intake) and only a
program manager can run a payment cycle (disbursement). Also the audit-trail helper, on a
service app whose metadata carries kit.audit's table, and a scan of the logs and the
DISBURSEMENT stream for raw NIKs."""
from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import sqlalchemy as sa
from fastapi import Depends, Request

from contracts import wilayah
from services.kit import audit, users
from services.kit import logging as klog
from services.kit.auth import Principal, Role, require
from services.kit.db import ensure_database
from services.kit.outbox import inbox_table, outbox_table
from services.kit.runtime import Kit
from tests import disbursement_support as ds
from tests.conftest import eventually
from tests.factories import nik
from tests.integration.intake_support import fake_registry

pytestmark = pytest.mark.integration

VILLAGE_A, VILLAGE_B = wilayah.villages_in("331701")[:2]
PW = "kata-sandi-panjang-1"
SIXTEEN = re.compile(r"(?<!\d)\d{16}(?!\d)")


def _staff(settings, tmp_path):
    f = users.UsersFile(tmp_path / "users.yaml")
    for name, role, area in (("ani", Role.village_office, VILLAGE_A), ("budi", Role.village_office, VILLAGE_B),
                             ("pm", Role.program_manager, "3317"), ("kadis", Role.program_manager, "3317"),
                             ("kab", Role.kabupaten, "3317"),
                             ("bpk", Role.auditor, "")):
        f.add(name, PW, role, area)
    return f, settings.model_copy(update={"users_file": str(f.path)})


def _capture_logs(service: str):
    """The pipeline `sinergi run` configures (kit.logging), writing into a buffer."""
    import io
    import logging

    import structlog
    buf = io.StringIO()
    klog.configure(service, "debug")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buf))
    logging.getLogger().handlers[0].setStream(buf)
    return buf


def _reset_logging() -> None:
    import logging

    import structlog
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


async def _login(svc, user: str) -> dict:
    r = await svc.http.post("/auth/token", data={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_village_office_cannot_read_another_villages_cases(settings, nc, start, tmp_path):
    f, s = _staff(settings, tmp_path)
    body = {"reporter": {"nik": nik(VILLAGE_A, dt.date(1958, 3, 4), "F")}, "village_code": VILLAGE_A,
            "category": "not_receiving_aid", "channel": "walk_in", "kind": "complaint",
            "text": "Sudah tiga bulan tidak menerima bantuan"}
    async with fake_registry(nc, s, {}), start("intake", s) as svc:
        ani, budi, kab = await _login(svc, "ani"), await _login(svc, "budi"), await _login(svc, "kab")
        r = await svc.http.post("/cases", json=body, headers=ani)
        assert r.status_code == 201, r.text
        case = r.json()
        assert (await svc.http.get(f"/cases/{case['ticket']}", headers=ani)).status_code == 200
        assert (await svc.http.get(f"/cases/{case['ticket']}", headers=budi)).status_code == 404
        assert (await svc.http.get(f"/cases/{case['case_id']}/history", headers=budi)).status_code == 404
        assert (await svc.http.get("/cases", headers=budi)).json()["total"] == 0
        assert (await svc.http.get(f"/cases/{case['ticket']}", headers=kab)).status_code == 200
        r = await svc.http.post("/cases", json={**body, "village_code": VILLAGE_A}, headers=budi)
        assert r.status_code == 403
        f.set_disabled("ani")  # e.g. the officer left: her open session ends now
        assert (await svc.http.get(f"/cases/{case['ticket']}", headers=ani)).status_code == 401


async def test_only_a_program_manager_runs_a_payment_cycle(settings, nc, start, tmp_path):
    _f, s = _staff(settings, tmp_path)
    persons = ds.people(3)
    buf = _capture_logs("disbursement")
    async with start("disbursement", s) as svc:
        pm = await _login(svc, "pm")
        for path, body in (("/programs/kamalia_merekah", ds.KAMALIA),
                           ("/poverty-lines/3317/2026", {"amount": 600_000, "reason": "BPS 2026"}),
                           ("/allocations/csr/kamalia_merekah/2026", {"ceiling": 10 * 600_000, "reason": "MoU"})):
            r = await svc.http.put(path, json=body, headers=pm)
            assert r.status_code == 200, r.text
        await ds.publish_enrolments(nc.jetstream(), s, persons, "kamalia_merekah")

        async def enrolled():
            r = await svc.http.post("/cycles/kamalia_merekah/2026-11/preview", headers=pm)
            return r.status_code == 200 and r.json()
        await eventually(enrolled, timeout=15)
        for user in ("kab", "bpk", "ani"):
            r = await svc.http.post("/cycles/kamalia_merekah/2026-11/prepare", headers=await _login(svc, user))
            assert r.status_code == 403 and "program_manager" in r.json()["error"], r.text
        assert (await svc.http.post("/cycles/kamalia_merekah/2026-11/prepare")).status_code == 401
        r = await svc.http.post("/cycles/kamalia_merekah/2026-11/prepare", headers=pm)
        assert r.status_code == 200, r.text
        prepared = r.json()["preparation_id"]
        # maker-checker: the preparer may not approve; a second program manager does
        r = await svc.http.post(f"/cycles/preparations/{prepared}/approve", headers=pm)
        assert r.status_code == 403, r.text
        r = await svc.http.post(f"/cycles/preparations/{prepared}/approve", headers=await _login(svc, "kadis"))
        assert r.status_code in (200, 201), r.text

        # the auditors' stream and the service logs carry no raw NIK
        js = nc.jetstream()
        stream = s.names.stream("DISBURSEMENT")

        async def published():
            return (await js.stream_info(stream)).state.messages > 0
        await eventually(published)
        sub = await js.subscribe(s.names.subject("disbursement.>"), ordered_consumer=True, stream=stream)
        n = (await js.stream_info(stream)).state.messages
        bodies = [(await sub.next_msg(timeout=5)).data.decode() for _ in range(n)]
        await sub.unsubscribe()
        raw = {p["nik"] for p in persons}
        assert not [b for b in bodies if any(x in b for x in raw)], "a NIK on the DISBURSEMENT stream"
    logs = buf.getvalue()
    _reset_logging()
    assert '"service.started"' in logs and "auth.login" in logs  # the scan read real service logs
    assert not SIXTEEN.search(logs), SIXTEEN.search(logs)


async def test_writes_are_attributed_in_the_services_audit_trail(settings):
    """The mechanism every service adopts: audit_table in its metadata, record() in the write's
    transaction. Personal data in `detail` is masked before it is stored."""
    md = sa.MetaData()
    outbox_table(md), inbox_table(md)
    log = audit.audit_table(md)
    notes = sa.Table("notes", md, sa.Column("id", sa.Integer, primary_key=True), sa.Column("village", sa.Text))
    url = settings.db_url("reporting")  # a scratch database the fixture drops afterwards
    await ensure_database(url)
    rt = Kit("reporting", settings, md)
    async with rt.engine.begin() as conn:
        await conn.run_sync(md.create_all)
    app = rt.http_app("test")

    @app.post("/notes/{village}")
    async def add_note(village: str, request: Request, p: Principal = Depends(require(Role.village_office))) -> dict:
        async with rt.sessions.begin() as s:
            new_id = (await s.execute(sa.insert(notes).values(village=village).returning(notes.c.id))).scalar_one()
            await audit.record(s, log, p, "note.add", target=str(new_id), area=village, request=request,
                               detail={"nik": "3317014107600001", "name": "Siti", "reason": "kunjungan rumah"})
        return {"id": new_id}

    import httpx
    from services.kit.auth import issue_token
    token = issue_token(Principal("ani", Role.village_office, VILLAGE_A), settings.auth_secret)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.1.2.3", 5000)),
                                     base_url="http://t") as c:
            r = await c.post(f"/notes/{VILLAGE_A}", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
        async with rt.sessions() as s:
            rows = await audit.trail(s, log, actor="ani")
        assert len(rows) == 1
        row = rows[0]
        assert (row["actor"], row["role"], row["actor_area"], row["action"], row["target"], row["area"],
                row["client"]) == ("ani", "village_office", VILLAGE_A, "note.add", str(r.json()["id"]), VILLAGE_A,
                                   "10.1.2.3")
        assert row["detail"] == {"nik": "331701**********", "name": "***", "reason": "kunjungan rumah"}
        assert "3317014107600001" not in json.dumps(row, default=str)
        with pytest.raises(ValueError):
            audit.row(None, "note.add")  # every write names who did it
    finally:
        await rt.engine.dispose()


async def test_a_persons_data_is_exported_on_request(settings, nc, start, tmp_path):
    """UU 27/2022 right of access: every row holding the NIK, from every service database."""
    from services.kit.privacy import export_person
    from tests import factories

    report = factories.enrolment("pkh", is_head_of_household=True)
    other = factories.enrolment("pkh")
    async with start("registry", settings):
        for rep in (report, other):
            await nc.jetstream().publish(settings.names.enrolments("pkh"), json.dumps(rep).encode(),
                                         headers={"Nats-Msg-Id": factories.msg_id(rep)})

        async def exported():
            data = await export_person(settings, report["nik"])
            return data if data["services"]["registry"].get("people") else None
        data = await eventually(exported, timeout=15)
    people = data["services"]["registry"]["people"]
    assert [(p["nik"], p["name"], p["no_kk"]) for p in people] == [(report["nik"], "Siti Aminah", report["no_kk"])]
    text = json.dumps(data, default=str)
    assert other["nik"] not in text
    assert any(t for t in data["services"]["registry"] if t != "people"), "enrolments too"
    with pytest.raises(ValueError):
        await export_person(settings, "12345")
