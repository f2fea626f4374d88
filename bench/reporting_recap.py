"""Reporting recap benchmark: the monthly recap for a regency of 1,000,000 enrolled people
and a year of monthly payments, against the raw PostgreSQL baseline measured in the same run.

    .venv/bin/python bench/reporting_recap.py [--people 1000000] [--runs 10]

Uses SINERGI_DATABASE_URL (default the local server) and a throw-away database.

How the read models are filled:
- enrolments and 12 months of payments for every person (about 12 million payments): by the
  bulk equivalent of the incremental path (`store.apply`), one INSERT ... SELECT per table from
  the same synthetic population; the run first proves, on a small population, that the bulk
  load and the incremental path give identical tables;
- complaints, companion assignments, visit reports and KUBE groups: through `store.apply`
  itself, in consumer-sized batches with the inbox claim, timed (facts/s).

Then `GET /reports/monthly` is timed through the real FastAPI app (in-process ASGI). The
baseline is what a recap without read models would do per request: COPY one month of raw
payment rows into a plain table (timed: PostgreSQL's bulk-load rate) and run the plain
aggregate over them (people paid, amount, payments per program).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from contracts import wilayah  # noqa: E402
from services.kit.db import drop_database, make_engine, sessions  # noqa: E402
from services.kit.migrations import migrate  # noqa: E402
from services.reporting.bulk import claim  # noqa: E402
from services.kit.settings import Settings  # noqa: E402
from services.reporting import store  # noqa: E402
from services.reporting.facts import (Assignment, ComplaintReceived, ComplaintReferred, ComplaintResolved,  # noqa: E402
                                      EnrolmentFact, KubeFlow, KubeGroup, PaymentFact, VisitDone)

VILLAGES = wilayah.villages_in("3317")  # Kabupaten Rembang, 294 villages
YEAR = 2026
# person i: program by i % 10, a monthly amount and a funding source per program
PROGRAMS = [("pkh", 300_000, "apbn")] * 6 + [("bpnt", 200_000, "apbd_kabupaten")] * 3 + [
    ("kamalia_merekah", 450_000, "csr")]

# the same population in SQL: every 50th person exits in June and is not paid after it
POPULATION = """
    with people as (
      select i, (array['pkh','pkh','pkh','pkh','pkh','pkh','bpnt','bpnt','bpnt','kamalia_merekah'])[i % 10 + 1] prog,
             (array[300000,300000,300000,300000,300000,300000,200000,200000,200000,450000])[i % 10 + 1]::bigint amount,
             (array['apbn','apbn','apbn','apbn','apbn','apbn','apbd_kabupaten','apbd_kabupaten','apbd_kabupaten',
                    'csr'])[i % 10 + 1] src,
             (cast(:v as text[]))[i % :nv + 1] village, i % 12 + 1 enrol_month, i % 50 = 0 exited
      from generate_series(0, :n - 1) i),
    grouped as (select prog, amount, src, village, exited, enrol_month, count(*)::bigint c
                from people group by 1, 2, 3, 4, 5, 6)
"""
BULK = [
    """insert into enrolment_flow (programme_identifier, village_code, period, enrolment_status, people)
       select prog, village, p, st, sum(d) from (
         select prog, village, '2025-' || lpad(enrol_month::text, 2, '0') p, 'active' st, c d from grouped
         union all select prog, village, '2026-06', 'active', -c from grouped where exited
         union all select prog, village, '2026-06', 'exited', c from grouped where exited) x
       group by 1, 2, 3, 4 having sum(d) <> 0""",
    """insert into enrolment_counts (programme_identifier, village_code, enrolment_status, people)
       select prog, village, case when exited then 'exited' else 'active' end, sum(c) from grouped group by 1, 2, 3""",
    """insert into payment_monthly (programme_identifier, village_code, funding_source, period, amount, payments)
       select prog, village, src, '2026-' || lpad(m::text, 2, '0'), sum(c * amount), sum(c)
       from grouped cross join generate_series(1, 12) m where not (exited and m > 6) group by 1, 2, 3, 4""",
    """insert into people_paid (programme_identifier, village_code, period, people)
       select prog, village, '2026-' || lpad(m::text, 2, '0'), sum(c)
       from grouped cross join generate_series(1, 12) m where not (exited and m > 6) group by 1, 2, 3""",
    """insert into enrolment_state (programme_identifier, person_ref, village_code, enrolment_status, effective)
       select prog, 'p' || i, village, case when exited then 'exited' else 'active' end,
              case when exited then date '2026-06-15' else make_date(2025, enrol_month, 1) end from people""",
    """insert into paid_months (programme_identifier, person_ref, year, months)
       select prog, 'p' || i, 2026, case when exited then 63 else 4095 end from people""",
    """insert into allocations (funding_source, programme_identifier, fiscal_year, amount)
       select src, prog, 2026, sum(c * amount * 12) * 11 / 10 from grouped group by 1, 2""",
]


COMPARED = [store.enrolment_state, store.enrolment_flow, store.enrolment_counts, store.payment_monthly,
            store.people_paid, store.paid_months]


def population_facts(lo: int, hi: int) -> tuple[list, list]:
    """Person i's facts, as the adapters would give them: (enrolments, payments)."""
    enrol, pay = [], []
    for i in range(lo, hi):
        prog, amount, src = PROGRAMS[i % 10]
        village = VILLAGES[i % len(VILLAGES)]
        enrol.append(EnrolmentFact(prog, f"p{i}", village, "active", dt.date(2025, i % 12 + 1, 1)))
        exited = i % 50 == 0
        if exited:
            enrol.append(EnrolmentFact(prog, f"p{i}", village, "exited", dt.date(2026, 6, 15)))
        pay.extend(PaymentFact(prog, f"p{i}", village, src, amount, f"2026-{m:02d}")
                   for m in range(1, 13) if not (exited and m > 6))
    return enrol, pay


def other_facts(people: int) -> list:
    """Complaints, companion assignments, visits and KUBE in proportion to the population."""
    out: list = []
    cases = people // 50
    for k in range(cases):
        v = VILLAGES[k % len(VILLAGES)]
        cid, day = f"case-{k}", dt.date(YEAR, k % 12 + 1, k % 28 + 1)
        out.append(ComplaintReceived(cid, v, day, day + dt.timedelta(days=14)))
        if k % 4 == 0:
            out.append(ComplaintReferred(cid, v, "kecamatan", day + dt.timedelta(days=2), day + dt.timedelta(days=16)))
        if k % 3:
            out.append(ComplaintResolved(cid, v, day + dt.timedelta(days=k % 20), None))
    companions = max(people // 500, 1)
    for k in range(people // 50):  # assisted people with a companion
        v = VILLAGES[k % len(VILLAGES)]
        comp = f"pdp-{k % companions:04d}"
        out.append(Assignment(f"asg-{k}", comp, v, True, f"{YEAR}-01"))
        out.extend(VisitDone(f"vis-{k}-{m}", comp, v, f"{YEAR}-{m:02d}", ("good", "fair", "poor")[k % 3],
                             ("good", "fair")[m % 2]) for m in range(1, 13) if (k + m) % 7)
    for g in range(max(people // 2000, 1)):
        v = VILLAGES[g % len(VILLAGES)]
        out.append(KubeGroup(f"kube-{g}", v, 10 + g % 6, "2025-01"))
        out.append(KubeFlow(f"kube-{g}", "2025-01", funded=25_000_000, disbursed=20_000_000))
        out.extend(KubeFlow(f"kube-{g}", f"{YEAR}-{m:02d}", due=1_000_000, repaid=1_000_000 if (g + m) % 5 else 0)
                   for m in range(1, 13))
    return out


async def apply_batches(sess, facts: list, batch: int = 500) -> float:
    """The consumer's path: per batch, claim the event ids in the inbox and fold in the facts."""
    t0 = time.perf_counter()
    for k in range(0, len(facts), batch):
        chunk = facts[k:k + batch]
        async with sess.begin() as s:
            await claim(s, store.inbox, "bench", [str(uuid.uuid4()) for _ in chunk])
            await store.apply(s, chunk)
    return time.perf_counter() - t0


async def bulk_load(engine, people: int) -> float:
    t0 = time.perf_counter()
    async with engine.begin() as conn:
        for sql in BULK:
            await conn.execute(sa.text(POPULATION + sql), {"n": people, "v": VILLAGES, "nv": len(VILLAGES)})
        await conn.execute(sa.text("analyze"))
    return time.perf_counter() - t0


async def dump(engine, tables) -> dict:
    out = {}
    async with engine.connect() as conn:
        for t in tables:
            out[t.name] = sorted(tuple(r) for r in (await conn.execute(sa.select(t))).all())
    return out


async def fresh_db(settings: Settings) -> tuple[str, object]:
    url = settings.db_url("reporting")
    await drop_database(url)
    await migrate("reporting", url)
    return url, make_engine(url, pool_size=4)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--period", default="2026-12")
    ap.add_argument("--freshness", type=int, default=20,
                    help="settlements sent one at a time through the running service (0: skip); "
                         "the burst rate is bench/reporting_drain.py's")
    args = ap.parse_args()
    run = uuid.uuid4().hex[:6]
    if args.freshness:
        await freshness(run, args.freshness)
    base = dict(database_url=os.environ.get("SINERGI_DATABASE_URL", Settings().database_url), _env_file=None)
    check = Settings(db_prefix=f"sinergi_bench_{run}_chk_", **base)
    settings = Settings(db_prefix=f"sinergi_bench_{run}_", **base)
    try:
        # 1. the bulk load equals the incremental path, on a small population
        small = 3_000
        _u, e1 = await fresh_db(check)
        enrol, pay = population_facts(0, small)
        await apply_batches(sessions(e1), enrol + pay)
        incremental = await dump(e1, COMPARED)
        await e1.dispose()
        _u, e1 = await fresh_db(check)
        await bulk_load(e1, small)
        bulk = await dump(e1, COMPARED)
        await e1.dispose()
        await drop_database(check.db_url("reporting"))
        same = bulk == incremental
        print(f"bulk load equals the incremental path for {small:,} people and {len(pay):,} payments: "
              f"{'yes' if same else 'NO'}")
        if not same:
            raise SystemExit("the bulk load does not match store.apply; fix bench/reporting_recap.py")

        # 2. the full regency
        _url, engine = await fresh_db(settings)
        t_bulk = await bulk_load(engine, args.people)
        payments = args.people * 12 - (args.people + 49) // 50 * 6  # every 50th person is not paid after June
        print(f"bulk-loaded read models for {args.people:,} people, {payments:,} payments in {t_bulk:.1f} s")
        other = other_facts(args.people)
        t_other = await apply_batches(sessions(engine), other)
        print(f"store.apply (consumer path, batches of 500): {len(other):,} complaint/visit/KUBE facts in "
              f"{t_other:.1f} s = {len(other) / t_other:,.0f} facts/s")
        sample_enrol, sample_pay = population_facts(args.people, args.people + 5_000)
        sample = [PaymentFact(p.program, p.person_ref, p.village_code, p.funding_source, p.amount, "2025-06")
                  for p in sample_pay[:50_000]]  # a month outside the recap's year: the figures stay as loaded
        t_pay = await apply_batches(sessions(engine), sample)
        print(f"store.apply: {len(sample):,} payment facts in {t_pay:.1f} s = {len(sample) / t_pay:,.0f} facts/s")
        async with engine.begin() as conn:
            await conn.execute(sa.text("analyze"))
            sizes = {t.name: (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar()
                     for t in store.READ_MODELS}
        print("read-model rows: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items() if v))

        # 3. GET /reports/monthly through the real app
        from services.reporting.app import create_app
        app = create_app(settings)  # no lifespan: the route needs only the database
        times = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reporting") as http:
            r = await http.get("/reports/monthly", params={"period": args.period})
            assert r.status_code == 200, r.text
            for _ in range(args.runs):
                t0 = time.perf_counter()
                r = await http.get("/reports/monthly", params={"period": args.period})
                times.append(time.perf_counter() - t0)
        body = r.json()
        enrolled = sum(p["enrolled"] for p in body["programs"])
        paid = sum(p["people_paid"] for p in body["programs"])
        expected_paid = args.people - (args.people + 49) // 50
        assert enrolled == expected_paid and paid == expected_paid, (enrolled, paid, expected_paid)
        recap = statistics.median(times)
        print(f"GET /reports/monthly?period={args.period}: median {recap * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
              f"over {args.runs} runs ({len(r.content):,} bytes; {enrolled:,} enrolled, {paid:,} paid)")

        # 4. the raw PostgreSQL baseline: one month of raw payment rows, COPY, then the plain aggregate
        import asyncpg
        dsn = sa.engine.make_url(settings.db_url("reporting")).set(drivername="postgresql")
        conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            await conn.execute("create unlogged table raw_payments (programme_identifier text, person_ref text, "
                               "village_code text, funding_source text, amount bigint, period text)")
            month = int(args.period[5:])
            rows = [(PROGRAMS[i % 10][0], f"p{i}", VILLAGES[i % len(VILLAGES)], PROGRAMS[i % 10][2],
                     PROGRAMS[i % 10][1], args.period) for i in range(args.people) if not (i % 50 == 0 and month > 6)]
            t0 = time.perf_counter()
            await conn.copy_records_to_table("raw_payments", records=rows)
            t_copy = time.perf_counter() - t0
            n_rows = len(rows)
            del rows
            await conn.execute("analyze raw_payments")
            scan = []
            for _ in range(max(args.runs // 2, 3)):
                t0 = time.perf_counter()
                await conn.fetch("select programme_identifier, count(distinct person_ref), sum(amount), count(*) "
                                 "from raw_payments where period = $1 group by 1", args.period)
                scan.append(time.perf_counter() - t0)
        finally:
            await conn.close()
        base_scan = statistics.median(scan)
        print(f"baseline COPY of that month's {n_rows:,} raw payment rows: {t_copy:.2f} s = "
              f"{n_rows / t_copy:,.0f} rows/s")
        print(f"baseline plain aggregate over them (people paid, amount, payments per program): "
              f"median {base_scan * 1000:.0f} ms")
        print(f"ratio recap / plain one-month aggregate: {recap / base_scan:.2f} "
              f"(the recap also covers enrolment, year-to-date realisation, complaints, visits, KUBE, areas; "
              f"a scan over the year's {payments:,} payments would be about 12x the baseline)")
        print(f"goal: recap under 1 s -> {'met' if recap < 1 else 'NOT met'}")
        await engine.dispose()
    finally:
        await drop_database(settings.db_url("reporting"))


async def freshness(run: str, count: int) -> None:
    """Settlements through the real service, one at a time: publish -> in the read model."""
    from contracts.disbursement import FundingLine, SettlementRecorded
    from contracts.envelope import envelope
    from services.kit.streams import connect, delete_streams, ensure_streams
    from services.reporting.app import create_app

    s = Settings(nats_url=os.environ.get("SINERGI_NATS_URL", Settings().nats_url),
                 database_url=os.environ.get("SINERGI_DATABASE_URL", Settings().database_url),
                 namespace=f"bench{run}", db_prefix=f"sinergi_bench_{run}_f_", _env_file=None)
    await migrate("reporting", s.db_url("reporting"))
    nc = await connect(s, "bench-reporting")
    js = nc.jetstream()
    await ensure_streams(js, s)

    def event(i: int) -> tuple[str, bytes]:
        ev = SettlementRecorded(chain_seq=i + 1, prev_hash="0" * 64, instruction_id=uuid.uuid4(), pseudonym=f"f{i}",
                                programme_identifier="pkh", period="2026-11", status="paid", amount=300_000,
                                funding=[FundingLine(source="apbn", allocation_id=uuid.uuid4(), amount=300_000)],
                                settled_at=dt.datetime.now(dt.UTC))
        env = envelope(ev, "disbursement")
        return str(env.event_id), env.model_dump_json().encode()
    subject = s.names.event("disbursement.settlement_recorded")
    app = create_app(s)
    try:
        async with app.router.lifespan_context(app):
            kit = app.state.kit

            async def folded() -> int:
                async with kit.sessions() as sess:
                    return (await sess.execute(sa.select(sa.func.count()).select_from(store.inbox))).scalar()
            lat = []
            for i in range(count):
                eid, body = event(i)
                t0 = time.perf_counter()
                await js.publish(subject, body, headers={"Nats-Msg-Id": eid})
                while await folded() < i + 1:
                    await asyncio.sleep(0.002)
                lat.append(time.perf_counter() - t0)
            lat.sort()
            print(f"freshness, one settlement at a time through the running service: publish -> in the read "
                  f"model median {statistics.median(lat) * 1000:.0f} ms, worst {lat[-1] * 1000:.0f} ms ({count} events)")
    finally:
        await delete_streams(js, s)
        await nc.close()
        await drop_database(s.db_url("reporting"))


if __name__ == "__main__":
    asyncio.run(main())
