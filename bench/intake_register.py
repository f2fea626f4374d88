"""Intake benchmark: case registrations through the HTTP API (one registry lookup over NATS
request-reply + one PostgreSQL transaction with the case, its step, its audit row and its
outbox events each) and escalation of overdue cases, against the raw NATS and PostgreSQL
baselines measured in the same run with the same concurrency.

    .venv/bin/python bench/intake_register.py [--cases 2000] [--concurrency 16]

Uses SINERGI_NATS_URL / SINERGI_DATABASE_URL (default the local servers), a throw-away
namespace and database. The registry lookup is answered by a minimal in-process responder
(the registry's own lookup speed is the registry's benchmark), half found, half not found
(the latter also emit a proposal). Baselines:
- NATS: the same number of request-replies to that responder, nothing else;
- PostgreSQL: the same number of transactions inserting three small rows each (case, step,
  outbox) into plain tables;
- escalation: one plain UPDATE of the same number of rows.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import nats  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from contracts import wilayah  # noqa: E402
from contracts.lookup import EnrolmentSummary, LookupReply, LookupRequest, PersonSummary  # noqa: E402
from services.intake.app import create_app  # noqa: E402
from services.kit.auth import Principal, Role, issue_token  # noqa: E402
from services.kit.db import drop_database, make_engine  # noqa: E402
from services.kit.migrations import migrate  # noqa: E402
from services.kit.settings import Settings  # noqa: E402
from services.kit.streams import delete_streams, ensure_streams  # noqa: E402

VILLAGE = wilayah.villages_in("331701")[0]


def nik(i: int) -> str:
    return f"{VILLAGE[:6]}0107{60 + i % 30:02d}{i % 9999 + 1:04d}"


async def pooled(n: int, concurrency: int, fn) -> float:
    """Run fn(i) for i in range(n) with `concurrency` workers; seconds taken."""
    it = iter(range(n))

    async def worker():
        for i in it:
            await fn(i)
    t = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return time.perf_counter() - t


async def main(n: int, concurrency: int) -> None:
    run = "bench" + uuid.uuid4().hex[:8]
    settings = Settings(namespace=run, db_prefix=f"sinergi_{run}_", outbox_poll_seconds=0.02,
                        log_level="warning")
    nc = await nats.connect(settings.nats_url)
    await ensure_streams(nc.jetstream(), settings)

    async def answer(msg):
        req = LookupRequest.model_validate_json(msg.data)
        found = req.nik is not None and int(req.nik[-4:]) % 2 == 0
        people = [PersonSummary(nik=req.nik, no_kk=req.nik[:6] + "0101200001", name="Siti", sex="F",
                                birth_date="1960-07-01", village_code=VILLAGE,
                                enrolments=[EnrolmentSummary(programme_identifier="pkh", enrolment_status="active",
                                                             status_change_date="2026-01-01")])] if found else []
        await msg.respond(LookupReply(found=found, people=people).model_dump_json().encode())
    responder = await nats.connect(settings.nats_url)
    await responder.subscribe(settings.names.lookup(), cb=answer)
    await responder.flush()

    await migrate("intake", settings.db_url("intake"))
    engine = make_engine(settings.db_url("intake"), pool_size=concurrency)
    app = create_app(settings)
    front = {"Authorization": "Bearer " + issue_token(Principal("bench", Role.village_office, VILLAGE),
                                                      settings.auth_secret)}
    try:
        # --- baselines -------------------------------------------------------------------
        req = LookupRequest(nik=nik(1)).model_dump_json(exclude_none=True).encode()
        t_nats = await pooled(n, concurrency, lambda i: nc.request(settings.names.lookup(), req, timeout=5))
        async with engine.begin() as c:
            await c.execute(sa.text("create table b_case (id uuid primary key, v text, t text)"))
            await c.execute(sa.text("create table b_step (id bigint generated always as identity primary key, "
                                    "case_id uuid, note text)"))
            await c.execute(sa.text("create table b_out (id uuid primary key, payload bytea)"))

        async def pg_tx(i: int) -> None:
            cid = uuid.uuid4()
            async with engine.begin() as c:
                await c.execute(sa.text("insert into b_case values (:i, :v, :t)"),
                                {"i": cid, "v": VILLAGE, "t": "x" * 80})
                await c.execute(sa.text("insert into b_step (case_id, note) values (:i, 'register')"), {"i": cid})
                await c.execute(sa.text("insert into b_out values (:i, :p)"), {"i": uuid.uuid4(), "p": b"x" * 400})
        t_pg = await pooled(n, concurrency, pg_tx)

        # --- intake ----------------------------------------------------------------------
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://intake", timeout=30) as http:
            async def register(i: int) -> None:
                reporter = {"nik": nik(i)} if i % 2 else {"nik": nik(i), "no_kk": VILLAGE[:6] + "0101200001",
                                                          "name": f"Warga {i}"}
                r = await http.post("/cases", headers=front, json={
                    "reporter": reporter, "village_code": VILLAGE, "category": "not_receiving_aid",
                    "channel": "walk_in", "text": "Bantuan belum diterima bulan ini"})
                if r.status_code != 201:
                    raise RuntimeError(f"registration failed: {r.status_code} {r.text[:200]}")
            t_reg = await pooled(n, concurrency, register)
            kit = app.state.kit
            t0 = time.perf_counter()
            while True:  # the outbox relay drains every event (case + proposal) to JetStream
                async with engine.connect() as c:
                    left = (await c.execute(sa.text("select count(*) from outbox where published_at is null"))).scalar()
                if not left:
                    break
                await asyncio.sleep(0.02)
            t_drain = time.perf_counter() - t0
            events = kit.relay.published

            # the clock moves through the use case: no staff route takes `now=` (issue 15)
            from services.intake import cases
            later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
            t0 = time.perf_counter()
            escalated = 0
            while True:
                moved = len(await cases.escalate_overdue(app.state.deps.kit, app.state.deps.cfg, later))
                escalated += moved
                if moved == 0:
                    break
            t_esc = time.perf_counter() - t0
        async with engine.begin() as c:
            t0 = time.perf_counter()
            await c.execute(sa.text("update b_case set v = 'kecamatan'"))
            t_upd = time.perf_counter() - t0

        print(f"intake benchmark: {n} registrations, concurrency {concurrency}, "
              f"NATS {settings.nats_url}, PostgreSQL {engine.url.host}")
        print(f"  baseline NATS request-reply      {n / t_nats:10.0f} /s")
        print(f"  baseline PostgreSQL 3-row tx      {n / t_pg:10.0f} /s")
        print(f"  registrations (HTTP, lookup, tx)  {n / t_reg:10.0f} /s   "
              f"= {t_nats / t_reg:.2f} x NATS baseline, {t_pg / t_reg:.2f} x PostgreSQL baseline, "
              f"{(t_nats + t_pg) / t_reg:.2f} x both in sequence")
        print(f"  outbox drained after the last registration in {t_drain * 1000:.0f} ms ({events} events published)")
        print(f"  escalation of {escalated} overdue cases   {escalated / t_esc:10.0f} /s   "
              f"(plain UPDATE of {n} rows: {n / t_upd:.0f} /s; ratio {t_upd / t_esc:.3f})")
    finally:
        await engine.dispose()
        await responder.close()
        await delete_streams(nc.jetstream(), settings)
        await nc.close()
        await drop_database(settings.db_url("intake"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    a = ap.parse_args()
    from services.kit import logging as klog
    klog.configure("bench", "warning")  # a log line per case would be part of what is measured
    asyncio.run(main(a.cases, a.concurrency))
