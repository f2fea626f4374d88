"""Disbursement cycle benchmark: one program cycle for N people, computed, budget-checked,
ledgered and published (channel instructions and audit events through the outbox relay),
beside the raw baselines measured in the same run on the same servers: PostgreSQL COPY of
N rows shaped like the instructions, and JetStream publish of N messages of the same size.

    .venv/bin/python bench/cycle.py                 # N = 100,000 (quick)
    .venv/bin/python bench/cycle.py --full          # N = 1,000,000
    .venv/bin/python bench/cycle.py --full --sync-always   # embedded nats-server, sync_interval: always
    .venv/bin/python bench/cycle.py --cluster       # three-node cluster, two disbursement copies

Uses SINERGI_NATS_URL and SINERGI_DATABASE_URL (default the local servers), a throw-away
namespace and database. The enrolments are loaded first (not timed), as the registry's events
would have put them in disbursement's own table. The timed cycle is `cycles.run` (chunks of
`--chunk` people per unit of work, exactly what `POST /cycles/...` runs) with the service's
kit started (its outbox relay publishing concurrently, its consumers idle), as in the running
service; the clock stops when the last row is confirmed by JetStream.

`--cluster`: on a three-node JetStream cluster started for the run (bench/cluster.py: deploy
init's cluster configuration, `sync_interval: always`, streams with three replicas), with a
second copy of the service (`sinergi run disbursement`) whose relay shares the outbox with the
first; both connect as `svc-disbursement`. The publish baseline uses a scratch stream with three
replicas on the same cluster.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from nats.js.api import StreamConfig  # noqa: E402

from contracts import wilayah  # noqa: E402
from contracts.disbursement import FundingSource  # noqa: E402
from services.disbursement import budgets, cycles, ledger, store  # noqa: E402
from services.disbursement.app import compose  # noqa: E402
from services.disbursement.config import DisbursementSettings  # noqa: E402
from services.kit.db import drop_database  # noqa: E402
from services.kit.migrations import migrate  # noqa: E402
from services.kit.settings import Settings  # noqa: E402
from services.kit.streams import delete_streams, ensure_streams  # noqa: E402

import cluster as bench_cluster  # noqa: E402  (bench/cluster.py, beside this file)

AMOUNT = 600_000  # about Rembang's monthly poverty line


def population(n: int) -> list[tuple]:
    """n distinct valid NIKs (region, birth date, serial) in Kabupaten Rembang."""
    kec = sorted({v[:6] for v in wilayah.villages_in("3317")})
    villages = {k: [v for v in wilayah.villages_in(k)] for k in kec}
    out, i = [], 0
    birth = dt.date(1950, 1, 1)
    while len(out) < n:
        k = kec[i % len(kec)]
        day = (i // len(kec)) % 28 + 1
        month = (i // (len(kec) * 28)) % 12 + 1
        serial = i // (len(kec) * 28 * 12) + 1
        nik = f"{k}{day + 40:02d}{month:02d}50{serial:04d}"
        v = villages[k][i % len(villages[k])]
        out.append((nik, "kamalia_merekah", f"{k}0101{serial % 100:02d}{serial:04d}", v,
                    birth.replace(month=month, day=day), "active", dt.date(2026, 1, 1)))
        i += 1
    return out


async def baseline_copy(engine, n: int) -> float:
    rows = [(uuid.uuid4(), "kamalia_merekah", "2026-11", f"{i:016d}", "ab" * 32, AMOUNT, "pos", None,
             uuid.uuid4(), "issued") for i in range(n)]
    async with engine.begin() as conn:
        await conn.execute(sa.text("create temp table copy_baseline (like instructions including defaults)"))
        raw = (await conn.get_raw_connection()).driver_connection
        t = time.perf_counter()
        await raw.copy_records_to_table("copy_baseline", records=rows, columns=[
            "id", "programme_identifier", "period", "nik", "pseudonym", "amount", "channel", "exclusivity_class",
            "cycle_id", "status"])
        return time.perf_counter() - t


async def baseline_publish(nc, prefix: str, n: int, size: int, replicas: int = 1) -> float:
    js = nc.jetstream()
    name = f"{prefix.upper()}_BENCH_BASELINE"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.baseline.>"], num_replicas=replicas))
    payload = b"x" * size
    try:
        t = time.perf_counter()
        for i in range(0, n, 2000):  # pipelined like the relay: send 2,000, then wait for their acks
            futs = [await js.publish_async(f"{prefix}.baseline.x", payload, headers={"Nats-Msg-Id": f"b{j}"})
                    for j in range(i, min(n, i + 2000))]
            await asyncio.gather(*futs)
        return time.perf_counter() - t
    finally:
        await js.delete_stream(name)


async def main(args) -> None:
    embedded = None
    nats_url = os.environ.get("SINERGI_NATS_URL", "nats://127.0.0.1:4222")
    if args.sync_always:
        from services.kit.embedded import EmbeddedNats
        embedded = EmbeddedNats(Path(tempfile.mkdtemp(prefix="sinergi-bench-")), sync_always=True).start()
        nats_url = embedded.url
    run = "b" + uuid.uuid4().hex[:8]
    settings = Settings(nats_url=nats_url, namespace=run, db_prefix=f"sinergi_{run}_", outbox_poll_seconds=0.01,
                        _env_file=None)
    if not args.cluster:
        await measure(args, settings, settings, embedded)
        return
    async with bench_cluster.cluster(settings) as c:
        # the service's identity allows the real subjects only: no namespace on a cluster of its own
        await measure(args, c.settings("svc-disbursement"), c.settings("bench"), None, c)


async def measure(args, settings: Settings, own: Settings, embedded, cluster=None) -> None:
    """`settings`: the service's; `own`: the benchmark's connection (the same off a cluster)."""
    cfg = DisbursementSettings(chunk_size=args.chunk, checkpoint_every=1000, relay_batch=args.relay_batch,
                               resume_cycles=False, _env_file=None)
    url = settings.db_url("disbursement")
    nc = await bench_cluster.connect(own, "bench")
    await ensure_streams(nc.jetstream(), own)
    await migrate("disbursement", url)
    deps = compose(settings, cfg)
    kit = deps.kit
    second = None
    engine, sessions = kit.engine, kit.sessions
    n = args.n
    try:
        sync = "always (fsync before ack)" if args.sync_always or cluster else "server default"
        where = f"; three-node cluster, {settings.stream_replicas} replicas, two copies" if cluster else ""
        print(f"N = {n:,}; JetStream sync: {sync}{where}; "
              f"chunk {args.chunk}; relay batch {args.relay_batch}; cores {os.cpu_count()}; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        t = time.perf_counter()
        rules = {"name": "Kamalia Merekah", "amount": {"kind": "fixed", "amount": AMOUNT}, "require_verified": False,
                 "funding_mode": "order", "funding": [{"source": "csr"}, {"source": "apbd_kabupaten"}],
                 "exclusivity_class": "cash_elderly", "channel": "pos"}
        async with kit.unit_of_work() as uow:
            await uow.session.execute(sa.insert(store.programs).values(code="kamalia_merekah", rules=rules,
                                                                       updated_by="bench"))
            await ledger.copy(uow.session, store.enrolments, ["nik", "programme_identifier", "no_kk", "village_code",
                                                             "birth_date", "enrolment_status", "status_change_date"],
                              population(n))
        # the first source covers 40 %: the cycle spills into the second, as order funding does
        await budgets.set_allocation(deps, FundingSource.csr, "kamalia_merekah", 2026, AMOUNT * (n * 4 // 10),
                                     "bench", "bench")
        await budgets.set_allocation(deps, FundingSource.apbd_kabupaten, "kamalia_merekah", 2026, AMOUNT * n,
                                     "bench", "bench")
        print(f"setup (not timed): {n:,} enrolments loaded in {time.perf_counter() - t:.1f} s", flush=True)

        js = nc.jetstream()
        await kit.start()
        if cluster is not None:
            second = start_second_copy(cluster, args)
            await wait_ready(second)
        t0 = time.perf_counter()
        res = await cycles.run(deps, "kamalia_merekah", "2026-11", "bench")
        t_commit = time.perf_counter() - t0
        while True:
            async with sessions() as s:
                left = (await s.execute(sa.select(sa.func.count()).select_from(store.outbox)
                                        .where(store.outbox.c.published_at.is_(None)))).scalar()
            if left == 0:
                break
            await asyncio.sleep(0.05)
        t_total = time.perf_counter() - t0
        await kit.stop()
        assert res["instructions"] == n, res
        async with sessions() as s:
            proof = await ledger.prove(s)
            outbox_rows = (await s.execute(sa.select(sa.func.count()).select_from(store.outbox))).scalar()
            # instructions leave in G2P Connect disburse batches (up to 500 people a message): the
            # publish baseline sends as many messages of the same average size as the relay did
            avg = (await s.execute(sa.text("select avg(length(payload))::int from outbox"))).scalar()
            batches = (await s.execute(sa.text("select count(*) from outbox where subject like '%instructions'"))).scalar()
        chan = (await js.stream_info(settings.names.stream("CHANNEL"))).state.messages
        assert proof["balanced"] and chan == batches, (proof, chan, batches)

        if second is not None:
            second.stop()
        copy_s = await baseline_copy(engine, n)
        pub_s = await baseline_publish(nc, (own.namespace or "b" + uuid.uuid4().hex[:8]), outbox_rows, avg,
                                       settings.stream_replicas)
        rate = n / t_total
        print()
        print(f"cycle committed (computed, budget-checked, ledgered, outbox): {t_commit:7.1f} s  {n / t_commit:10,.0f} people/s")
        print(f"cycle until every message confirmed by JetStream:           {t_total:7.1f} s  {rate:10,.0f} people/s")
        print(f"  ({outbox_rows:,} outbox rows published: {batches:,} disburse batches for {n:,} people + signed "
              f"audit events; ledger balanced: {proof['balanced']})")
        print(f"baseline PostgreSQL COPY of {n:,} instruction rows:            {copy_s:7.1f} s  {n / copy_s:10,.0f} rows/s")
        print(f"baseline JetStream publish of {outbox_rows:,} x {avg:,} B messages (the cycle's): {pub_s:7.1f} s  "
              f"{outbox_rows * avg / pub_s / 1e6:6.1f} MB/s")
        print(f"ratio cycle / COPY rate:    {rate / (n / copy_s):.3f}   (each person: 2 rows COPYed, instruction and "
              "ledger transfer, and 1/500 of a channel batch)")
        print(f"ratio cycle / publish time: {pub_s / t_total:.3f}   (the same messages and bytes, published alone)")
    finally:
        if second is not None:
            second.stop()
        await engine.dispose()  # again: stop() is not reached when the cycle failed
        await drop_database(url)
        await delete_streams(nc.jetstream(), settings)
        await nc.close()
        if embedded:
            embedded.stop()


def start_second_copy(cluster, args):
    """`sinergi run disbursement` against the cluster: its relay takes outbox rows beside ours."""
    from tests.cluster_support import Copy, free_ports
    env = {**cluster.env("disbursement"), "SINERGI_LOG_LEVEL": "warning", "SINERGI_OUTBOX_POLL_SECONDS": "0.01",
           "SINERGI_DISBURSEMENT_RESUME_CYCLES": "false", "SINERGI_DISBURSEMENT_RELAY_BATCH": str(args.relay_batch)}
    copy = Copy("disbursement", free_ports(1)[0], env)
    copy.start()
    return copy


async def wait_ready(copy) -> None:
    await copy.ready(120)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=100_000, help="people in the cycle (default 100,000)")
    p.add_argument("--full", action="store_true", help="N = 1,000,000")
    p.add_argument("--sync-always", action="store_true",
                   help="start an embedded nats-server with sync_interval: always (fsync before every ack)")
    p.add_argument("--chunk", type=int, default=10000, help="people per cycle transaction (the service's default)")
    p.add_argument("--relay-batch", type=int, default=10000, help="outbox rows per relay round")
    p.add_argument("--cluster", action="store_true", help="three-node cluster, two copies of the service")
    a = p.parse_args()
    if a.full:
        a.n = 1_000_000
    asyncio.run(main(a))
