"""Registry ingest benchmark: N agency enrolment reports published to JetStream, measured until
every receipt has arrived, against the raw baselines measured in the same run on the same
servers: JetStream publish + consume (ack) of the same messages, and PostgreSQL COPY of the
same rows.

    .venv/bin/python bench/registry_ingest.py [-n 100000] [--invalid 0.05] [--workers 2] [--cluster]

Uses SINERGI_NATS_URL and SINERGI_DATABASE_URL (default the local servers), a throw-away
namespace (streams) and database. The registry runs as `--workers` separate processes
(`sinergi run registry`) sharing one durable consumer, exactly as deployed. Reports are
synthetic but realistic: valid NIKs and No. KKs whose region part is the person's kecamatan,
village codes from the Kemendagri region list (Central Java), about `--invalid` of them
invalid in the ways agencies get wrong (impossible NIK date, unknown village, NIK/sex
mismatch, malformed JSON).

`--cluster`: the same on a three-node JetStream cluster started for the run (bench/cluster.py:
deploy init's cluster configuration on loopback, every stream with three replicas, `sync_interval:
always`); the registry processes connect as `svc-registry` with every node's URL, and the raw
JetStream baseline runs on a scratch stream with three replicas on the same cluster.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import nats  # noqa: E402
import nats.js.errors  # noqa: E402
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig  # noqa: E402

from contracts import wilayah  # noqa: E402
from services.kit.db import _server_dsn, drop_database  # noqa: E402
from services.kit.embedded import free_port  # noqa: E402
from services.kit.migrations import migrate  # noqa: E402
from services.kit.settings import Settings  # noqa: E402
from services.kit.streams import delete_streams, ensure_streams  # noqa: E402

import cluster as bench_cluster  # noqa: E402  (bench/cluster.py, beside this file)

PROGRAMS = ["pkh", "bpnt", "kis", "kip"]
STATUSES = ["active"] * 17 + ["suspended", "exited", "deceased"]
FIRST = ["Siti", "Sri", "Muhammad", "Ahmad", "Dewi", "Budi", "Agus", "Ngatini", "Suparmi", "Slamet", "Sumarni",
         "Joko", "Tri", "Eko", "Wahyu", "Nur", "Puji", "Karsinah", "Rohmat", "Yuli"]
LAST = ["Aminah", "Rahayu", "Santoso", "Wibowo", "Lestari", "Susanti", "Hidayat", "Prasetyo", "Wati", "Suharto",
        "Setiawan", "Handayani", "Kurniawan", "Purwanti", "Saputra"]


def make_reports(n: int, invalid: float, seed: int = 7) -> list[tuple[str, bytes, str]]:
    """(program, payload, message_id) for n reports; about `invalid` of them break a rule."""
    rng = random.Random(seed)
    villages = wilayah.villages_in("33")  # Central Java
    out = []
    for i in range(n):
        v = rng.choice(villages)
        sex = rng.choice("FM")
        born = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 65))
        day = born.day + (40 if sex == "F" else 0)
        serial = i % 9999 + 1
        nik = f"{v[:6]}{day:02d}{born.month:02d}{born.year % 100:02d}{serial:04d}"
        kk = f"{v[:6]}{rng.randint(1, 28):02d}{rng.randint(1, 12):02d}{rng.randint(10, 25):02d}{serial:04d}"
        program = PROGRAMS[i % len(PROGRAMS)]
        mid = f"bench-{i}"
        rep = {"message_id": mid, "reference_id": f"{program.upper()}-{i:07d}", "programme_identifier": program,
               "nik": nik, "no_kk": kk, "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}", "sex": sex,
               "birth_date": born.isoformat(), "village_code": v, "address": f"RT {rng.randint(1, 9):02d} RW 0{rng.randint(1, 5)}",
               "enrolment_status": rng.choice(STATUSES),
               "status_change_date": (dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(0, 600))).isoformat(),
               "is_head_of_household": rng.random() < 0.3}
        if rng.random() < invalid:
            kind = rng.randrange(4)
            if kind == 0:
                rep["nik"] = nik[:6] + "99" + nik[8:]           # no such day
            elif kind == 1:
                rep["village_code"] = v[:6] + "9999"           # unknown village
            elif kind == 2:
                rep["sex"] = "M" if sex == "F" else "F"        # disagrees with the NIK
            else:
                out.append((program, b'{"message_id": "' + mid.encode() + b'", "nik": ', mid))  # cut off
                continue
        out.append((program, json.dumps(rep).encode(), mid))
    return out


async def publish_all(js, subject_of, reports) -> None:
    """Pipelined JetStream publishes with de-duplication ids, acks awaited at the end."""
    for i, (program, payload, mid) in enumerate(reports):
        await js.publish_async(subject_of(program), payload, headers={"Nats-Msg-Id": f"{program}:{mid}"})
        if i % 5000 == 4999:
            await js.publish_async_completed()
    await js.publish_async_completed()


async def baseline_jetstream(nc, settings: Settings, reports) -> float:
    """The same messages through a scratch stream: publish them all, consume and ack them all."""
    js = nc.jetstream()
    name = settings.names.stream("BENCH_RAW")
    subj = settings.names.subject("bench.raw")
    # as replicated as the streams the registry uses (three on a cluster)
    await js.add_stream(StreamConfig(name=name, subjects=[subj + ".>"], num_replicas=settings.stream_replicas))
    try:
        psub = await js.pull_subscribe(subj + ".>", durable="raw", stream=name, config=ConsumerConfig(
            durable_name="raw", ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
            max_ack_pending=20000), pending_msgs_limit=100000)
        t0 = time.perf_counter()

        async def consume() -> None:
            seen = 0
            while seen < len(reports):
                try:
                    msgs = await psub.fetch(1000, timeout=1)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
                await asyncio.gather(*(m.ack() for m in msgs))
                seen += len(msgs)
        consumer = asyncio.create_task(consume())
        await publish_all(js, lambda p: f"{subj}.{p}", reports)
        await consumer
        return time.perf_counter() - t0
    finally:
        await js.delete_stream(name)


COPY_COLUMNS = ["message_id", "reference_id", "programme_identifier", "nik", "no_kk", "name", "sex", "birth_date",
                "village_code", "address", "enrolment_status", "status_change_date"]


async def baseline_copy(db_url: str, reports) -> float:
    """The same rows (as the registry would store them) COPYed into one plain table."""
    rows = []
    for _p, payload, _m in reports:
        try:
            r = json.loads(payload)
            rows.append((r["message_id"], r["reference_id"], r["programme_identifier"], r["nik"], r["no_kk"], r["name"],
                         r["sex"], dt.date.fromisoformat(r["birth_date"]), r["village_code"], r["address"],
                         r["enrolment_status"], dt.date.fromisoformat(r["status_change_date"])))
        except (ValueError, KeyError):
            continue
    dsn, kw = _server_dsn(db_url, database=db_url.rsplit("/", 1)[-1].split("?")[0])
    conn = await asyncpg.connect(dsn, **kw)
    try:
        await conn.execute("create table bench_copy (message_id text, reference_id text, programme_identifier text, "
                           "nik varchar(16), no_kk varchar(16), name text, sex varchar(1), birth_date date, "
                           "village_code varchar(10), address text, enrolment_status text, status_change_date date)")
        t0 = time.perf_counter()
        await conn.copy_records_to_table("bench_copy", records=rows, columns=COPY_COLUMNS)
        elapsed = time.perf_counter() - t0
        await conn.execute("drop table bench_copy")
        return elapsed * len(reports) / len(rows)  # per published message, like the others
    finally:
        await conn.close()


def start_registry(settings: Settings, workers: int, batch: int,
                   identity: dict[str, str] | None = None) -> list[subprocess.Popen]:
    procs = []
    for _ in range(workers):
        env = {**os.environ, "SINERGI_NATS_URL": settings.nats_url, "SINERGI_DATABASE_URL": settings.database_url,
               "SINERGI_NAMESPACE": settings.namespace, "SINERGI_DB_PREFIX": settings.db_prefix,
               "SINERGI_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warning"), "SINERGI_REGISTRY_BATCH_SIZE": str(batch),
               **(identity or {})}  # on a cluster: svc-registry and its password
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "services.cli", "run", "registry", "--port", str(port)],
                                      env=env, cwd=ROOT))
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if procs[-1].poll() is not None:
                raise RuntimeError("the registry exited during start-up")
            time.sleep(0.2)
    return procs


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=100_000, help="enrolment reports to publish")
    ap.add_argument("--invalid", type=float, default=0.05, help="share of invalid reports")
    ap.add_argument("--workers", type=int, default=2, help="registry processes on the one durable consumer")
    ap.add_argument("--batch", type=int, default=2000, help="reports per consumer batch and transaction")
    ap.add_argument("--cluster", action="store_true", help="on a three-node cluster started for the run")
    args = ap.parse_args()

    run = "bench" + uuid.uuid4().hex[:8]
    base = Settings()
    settings = Settings(nats_url=base.nats_url, database_url=base.database_url, namespace=run,
                        db_prefix=f"sinergi_{run}_", _env_file=None)
    if not args.cluster:
        await measure(args, settings)
        return
    async with bench_cluster.cluster(settings) as c:
        # the services' identities allow the real subjects only: no namespace on a cluster of its own
        env = c.env("registry")
        await measure(args, c.settings("bench"), {k: env[k] for k in ("SINERGI_NATS_USER", "SINERGI_NATS_PASSWORD")})


async def measure(args, settings: Settings, identity: dict[str, str] | None = None) -> None:
    reports = make_reports(args.n, args.invalid)
    where = f"three-node cluster, {settings.stream_replicas} replicas" if args.cluster else settings.nats_url
    print(f"{args.n:,} reports ({sum(1 for r in reports if not r[1].endswith(b'}')):,} malformed JSON), "
          f"{args.workers} registry process(es), batch {args.batch}, NATS {where}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    nc = await bench_cluster.connect(settings, "bench", pending_size=512 * 1024 * 1024)
    js = nc.jetstream()
    db_url = settings.db_url("registry")
    procs: list[subprocess.Popen] = []
    try:
        await ensure_streams(js, settings)
        await migrate("registry", db_url)

        js_time = await baseline_jetstream(nc, settings, reports)
        copy_time = await baseline_copy(db_url, reports)

        procs = start_registry(settings, args.workers, args.batch, identity)
        receipts = await js.pull_subscribe(settings.names.receipts("*"), durable="bench",
                                           stream=settings.names.stream("AGENCY_RECEIPTS"),
                                           pending_msgs_limit=200000)
        status: dict[str, str] = {}
        t0 = time.perf_counter()
        publisher = asyncio.create_task(publish_all(js, settings.names.enrolments, reports))
        last_report = t0
        while len(status) < len(reports):
            try:
                # short wait: nats-py's fetch returns a partial batch and then sits out the whole
                # timeout, which with timeout=1 capped this reader (not the registry) at ~1,000/s
                msgs = await receipts.fetch(2000, timeout=0.05)
            except (TimeoutError, nats.errors.TimeoutError):
                msgs = []
            except nats.js.errors.ServiceUnavailableError:  # a new consumer with three replicas: no leader yet
                await asyncio.sleep(0.1)
                msgs = []
            for m in msgs:  # contracts.agency.ReceiptBatch
                for r in json.loads(m.data)["receipts"]:
                    status[r["message_id"]] = r["status"]
            for m in msgs:
                await m.ack()
            if time.perf_counter() - last_report > 5:
                last_report = time.perf_counter()
                print(f"  {len(status):,} receipts after {last_report - t0:.1f} s", flush=True)
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a registry process died")
        elapsed = time.perf_counter() - t0
        await publisher
        load = os.getloadavg()[0]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        try:
            await delete_streams(js, settings)
        finally:
            await nc.close()
            await drop_database(db_url)

    n = len(reports)
    rejected = sum(1 for s in status.values() if s == "rjct")
    rate, js_rate, copy_rate = n / elapsed, n / js_time, n / copy_time
    print()
    print(f"registry end to end : {n:,} reports in {elapsed:.2f} s = {rate:,.0f} events/s "
          f"({n - rejected:,} accepted, {rejected:,} rejected, every one answered)")
    print(f"baseline JetStream  : publish + consume + ack of the same messages in {js_time:.2f} s = {js_rate:,.0f} msg/s")
    print(f"baseline PostgreSQL : COPY of the same rows into one table = {copy_rate:,.0f} rows/s")
    print(f"ratio               : {rate / js_rate:.2f} of JetStream, {rate / copy_rate:.2f} of COPY, "
          f"{rate / (1 / (1 / js_rate + 1 / copy_rate)):.2f} of both in series")
    print(f"load average at the end: {load:.2f} (2 cores)")


if __name__ == "__main__":
    asyncio.run(main())
