"""Reporting drain benchmark: a burst of N `disbursement.settlement_recorded` events (a payment
cycle's settlements) waiting in the DISBURSEMENT stream when reporting starts, timed from its
consumer's first delivery until the last event is acknowledged (the kit acks after the commit,
so acknowledged = in the read models), against the raw JetStream publish rate of messages of
the same size measured in the same run.

    .venv/bin/python bench/reporting_drain.py [-n 20000] [--batch 2000] [--fetch-wait 0.05]

Both publishes go the way the outbox relay publishes: rounds of `outbox_batch` pipelined
`publish_async` calls with a `Nats-Msg-Id`, then every PubAck of the round awaited. The
baseline publishes the very same bytes into a scratch stream; then the events go into the
DISBURSEMENT stream (also timed, printed for comparison), then reporting starts in this
process (`create_app` and its lifespan, as `sinergi run reporting`) and the bench only polls
the durable's state on the server (`consumer_info` every 5 ms): first delivery, then ack floor
at the last sequence. Afterwards the read models are checked against the events.

Uses SINERGI_NATS_URL and SINERGI_DATABASE_URL (default the local servers), a throw-away
namespace (streams) and database. Events are synthetic but shaped like a cycle's: one
settlement per payee (64-hex pseudonyms) for October 2026, Rembang's villages, four programs,
one in ten paid from two funding sources, one in twenty failed (a failed settlement changes no
figure). Half of the payees were paid January to September already (`--history`, written
straight into `paid_months` before the run), as in a steady month; the other half are new
this year. The two take different paths in the store (a locked update, an insert).
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import hashlib
import inspect
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from nats.js.api import StreamConfig  # noqa: E402
from nats.js.errors import NotFoundError  # noqa: E402

from contracts import wilayah  # noqa: E402
from contracts.disbursement import FundingLine, SettlementRecorded  # noqa: E402
from contracts.envelope import envelope  # noqa: E402
from services.kit.db import drop_database, make_engine  # noqa: E402
from services.kit.migrations import migrate  # noqa: E402
from services.kit.settings import Settings  # noqa: E402
from services.kit.streams import delete_streams, ensure_streams  # noqa: E402

DURABLE = "reporting-disbursement-v1"
PROGRAMS = [("pkh", "apbn", 600_000), ("bpnt", "apbn", 200_000), ("kamalia_merekah", "csr", 450_000),
            ("rtlh", "apbdes", 15_000_000)]
VILLAGES = wilayah.villages_in("3317")  # Kabupaten Rembang


def payee(i: int) -> str:
    return hashlib.sha256(f"payee-{i}".encode()).hexdigest()


def settlements(n: int) -> list[tuple[str, bytes, int, int]]:
    """(event id, envelope JSON as disbursement's outbox writes it, amount paid, payments) each."""
    out = []
    settled = dt.datetime(2026, 11, 25, 3, tzinfo=dt.UTC)
    for i in range(n):
        program, source, amount = PROGRAMS[i % len(PROGRAMS)]
        lines = [FundingLine(source=source, allocation_id=uuid.uuid4(), amount=amount)]
        if i % 10 == 3:  # a split payment: part of it from the regency budget
            lines = [FundingLine(source=source, allocation_id=uuid.uuid4(), amount=amount - 100_000),
                     FundingLine(source="apbd_kabupaten", allocation_id=uuid.uuid4(), amount=100_000)]
        paid = i % 20 != 7
        ev = SettlementRecorded(chain_seq=i + 1, prev_hash=hashlib.sha256(str(i).encode()).hexdigest(),
                                instruction_id=uuid.uuid4(), pseudonym=payee(i),
                                programme_identifier=program, period="2026-10",
                                status="paid" if paid else "failed", amount=amount,
                                reason=None if paid else "rekening tidak aktif", funding=lines, settled_at=settled,
                                village_code=VILLAGES[i % len(VILLAGES)])
        env = envelope(ev, "disbursement")
        out.append((str(env.event_id), env.model_dump_json().encode(), amount if paid else 0, int(paid)))
    return out


async def publish_like_the_relay(js, subject: str, events, round_size: int) -> float:
    """Rounds of pipelined publishes, each round's acks awaited (kit/outbox.py, drain_once)."""
    t0 = time.perf_counter()
    for k in range(0, len(events), round_size):
        futures = [await js.publish_async(subject, body, headers={"Nats-Msg-Id": eid})
                   for eid, body, _a, _p in events[k:k + round_size]]
        done, pending = await asyncio.wait(futures, timeout=30)
        if pending or any(f.exception() for f in done):
            raise RuntimeError("JetStream did not acknowledge every publish")
    return time.perf_counter() - t0


async def baseline_publish(js, settings: Settings, events, round_size: int) -> float:
    name, subject = settings.names.stream("BENCH_RAW"), settings.names.subject("bench.raw")
    await js.add_stream(StreamConfig(name=name, subjects=[subject],
                                     duplicate_window=float(settings.dedup_window_seconds)))
    try:
        return await publish_like_the_relay(js, subject, events, round_size)
    finally:
        await js.delete_stream(name)


async def drained(js, stream: str, last_seq: int, timeout: float = 600) -> tuple[float, float]:
    """(first delivery, last acknowledgement) of the durable, seen on the server every 5 ms."""
    first = None
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            info = await js.consumer_info(stream, DURABLE)
        except NotFoundError:
            info = None
        now = time.perf_counter()
        if info is not None:
            if first is None and info.delivered.consumer_seq > 0:
                first = now
            if info.ack_floor.stream_seq >= last_seq and first is not None:
                return first, now
        await asyncio.sleep(0.005)
    raise TimeoutError("reporting did not drain the burst")


async def paid_before(db_url: str, n: int, share: float) -> int:
    """Payee i (every 1/share-th) was paid January to September 2026 already."""
    step = round(1 / share) if share else 0
    rows = [(PROGRAMS[i % len(PROGRAMS)][0], payee(i), 2026, 0b111111111) for i in range(0, n, step)] if step else []
    engine = make_engine(db_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            for k in range(0, len(rows), 5000):
                await conn.execute(sa.text("insert into paid_months (programme_identifier, person_ref, year, months) "
                                           "values (:p, :r, :y, :m)"),
                                   [{"p": p, "r": r, "y": y, "m": m} for p, r, y, m in rows[k:k + 5000]])
    finally:
        await engine.dispose()
    return len(rows)


def make_app(settings: Settings, batch: int | None, fetch_wait: float | None):
    from services.reporting import app as reporting_app
    if (batch or fetch_wait) and "cfg" in inspect.signature(reporting_app.create_app).parameters:
        from services.reporting.settings import ReportingSettings
        cfg = ReportingSettings(_env_file=None, **{k: v for k, v in (("batch", batch), ("fetch_wait", fetch_wait))
                                                   if v})
        return reporting_app.create_app(settings, cfg)
    return reporting_app.create_app(settings)


async def check_read_models(db_url: str, events) -> str:
    """The burst's money and payments are in the read models, exactly once."""
    engine = make_engine(db_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            amount, payments = (await conn.execute(sa.text(
                "select coalesce(sum(amount), 0), coalesce(sum(payments), 0) from payment_monthly"))).one()
            people = (await conn.execute(sa.text("select coalesce(sum(people), 0) from people_paid"))).scalar()
    finally:
        await engine.dispose()
    want = (sum(e[2] for e in events), sum(e[3] for e in events))
    if (amount, payments) != want or people != want[1]:
        raise SystemExit(f"read models wrong: amount {amount} payments {payments} people {people}, want {want}")
    return f"{int(payments):,} payments, Rp {int(amount):,}, {int(people):,} people paid: as published"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20_000, help="settlements in the burst")
    ap.add_argument("--batch", type=int, default=None, help="consumer batch (default: reporting's setting)")
    ap.add_argument("--fetch-wait", type=float, default=None, help="consumer wait for a partial batch, seconds")
    ap.add_argument("--history", type=float, default=0.5, help="share of payees paid earlier this year")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the drain (the service runs in this process) into FILE")
    args = ap.parse_args()

    run = "bench" + uuid.uuid4().hex[:8]
    base = Settings()
    settings = Settings(nats_url=base.nats_url, database_url=base.database_url, namespace=run,
                        db_prefix=f"sinergi_{run}_", log_level="warning", _env_file=None)
    events = settlements(args.n)
    size = sum(len(e[1]) for e in events) / len(events)
    print(f"{args.n:,} settlement_recorded events of {size:.0f} bytes on average, {args.history:.0%} of the payees "
          f"paid earlier this year; load average {os.getloadavg()[0]:.2f} (2 cores)", flush=True)
    nc = await nats.connect(settings.nats_url, pending_size=256 * 1024 * 1024)
    js = nc.jetstream()
    db_url = settings.db_url("reporting")
    try:
        await ensure_streams(js, settings)
        await migrate("reporting", db_url)
        steady = await paid_before(db_url, args.n, args.history)
        t_raw = await baseline_publish(js, settings, events, settings.outbox_batch)
        stream = settings.names.stream("DISBURSEMENT")
        t_pub = await publish_like_the_relay(js, settings.names.event(SettlementRecorded.event_type), events,
                                             settings.outbox_batch)
        last_seq = (await js.stream_info(stream)).state.last_seq

        app = make_app(settings, args.batch, args.fetch_wait)
        profiler = cProfile.Profile() if args.profile else None
        async with app.router.lifespan_context(app):
            if profiler:
                profiler.enable()
            first, last = await drained(js, stream, last_seq)
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
        checked = await check_read_models(db_url, events)
        load = os.getloadavg()[0]
    finally:
        try:
            await delete_streams(js, settings)
        finally:
            await nc.close()
            await drop_database(db_url)

    n = len(events)
    t_drain = last - first
    raw_rate, drain_rate = n / t_raw, n / t_drain
    print()
    print(f"baseline JetStream publish, scratch stream : {n:,} in {t_raw:.2f} s = {raw_rate:,.0f} msg/s")
    print(f"the same events into DISBURSEMENT          : {n:,} in {t_pub:.2f} s = {n / t_pub:,.0f} msg/s")
    print(f"reporting drain, first delivery -> last ack: {n:,} in {t_drain:.2f} s = {drain_rate:,.0f} events/s")
    print(f"ratio drain / raw publish                  : {drain_rate / raw_rate:.2f}")
    print(f"read models: {checked} ({steady:,} payees with earlier months); load average at the end {load:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
