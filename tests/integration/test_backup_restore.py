"""Backup and restore as docs/DEPLOY.md (sections 3 and 4) says, on real servers: traffic
through the registry, a payment cycle with settlements and a signed checkpoint, reporting's
read models; then the services stop, each service database is dumped (`pg_dump -Fc`), NATS
stops and its JetStream store is archived. The databases are dropped (the server lost), a
fresh nats-server starts on the restored store, the dumps are restored (`pg_restore --clean
--if-exists --create`), the services start on them, and: every count is as it was, every
stream holds what it held, the ledger proof balances, the audit stream verifies, consumers
do not apply anything twice, and new traffic is handled."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import asyncpg
import nats
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from contracts.subjects import STREAMS
from services.disbursement import audit, ledger
from services.disbursement import store as dstore
from services.kit.db import drop_database
from services.kit.embedded import EmbeddedNats
from services.kit.settings import Settings
from services.registry import store as rstore
from tests import disbursement_support as ds
from tests import factories
from tests.conftest import eventually, running
from tests.integration.registry_support import send
from tests.integration.test_disbursement_cycle import PERIOD, _setup

pytestmark = pytest.mark.integration
SERVICES = ("registry", "disbursement", "reporting")


def pg_bin(tool: str, server_major: int) -> str:
    """A pg_dump/pg_restore at least as new as the server (pg_dump refuses a newer server):
    the one on PATH, else the one in the pgserver wheel (PostgreSQL 16)."""
    candidates = [shutil.which(tool)]
    try:
        import pgserver  # noqa: F401 - only for its binaries' location
        candidates.append(str(Path(pgserver.__file__).parent / "pginstall" / "bin" / tool))
    except ImportError:
        pass
    for c in candidates:
        if c and Path(c).exists():
            out = subprocess.run([c, "--version"], capture_output=True, text=True).stdout
            if int(out.split()[-1].split(".")[0]) >= server_major:
                return c
    pytest.skip(f"no {tool} for PostgreSQL {server_major}")


def libpq(url: str) -> tuple[dict[str, str], str]:
    """(environment for libpq tools, database name) of a SQLAlchemy URL."""
    u = make_url(url)
    host = u.query.get("host") or u.host or "127.0.0.1"
    env = {"PGHOST": host if isinstance(host, str) else host[0], "PGUSER": u.username or "postgres"}
    if u.port:
        env["PGPORT"] = str(u.port)
    if u.password:
        env["PGPASSWORD"] = u.password
    return env, u.database or "postgres"


async def server_major(url: str) -> int:
    env, _ = libpq(url)
    conn = await asyncpg.connect(host=env["PGHOST"], port=int(env.get("PGPORT", 5432)), user=env["PGUSER"],
                                 password=env.get("PGPASSWORD"), database="postgres")
    try:
        return int(await conn.fetchval("show server_version_num")) // 10000
    finally:
        await conn.close()


async def counts(svcs) -> dict[str, int]:
    async def n(svc, table) -> int:
        async with svc.rt.sessions() as s:
            return (await s.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
    reg, dis, rep = svcs["registry"], svcs["disbursement"], svcs["reporting"]
    out = {"people": await n(reg, rstore.people), "enrolments": await n(reg, rstore.enrolments),
           "receipts": await n(reg, rstore.receipts), "instructions": await n(dis, dstore.instructions),
           "ledger": await n(dis, dstore.ledger), "disbursement enrolments": await n(dis, dstore.enrolments)}
    async with rep.rt.sessions() as s:
        for table in ("enrolment_counts", "people_paid"):
            out[f"reporting {table}"] = (await s.execute(sa.text(f"select count(*) from {table}"))).scalar_one()
    return out


async def stream_sizes(url: str) -> dict[str, int]:
    nc = await nats.connect(url)
    try:
        return {name: (await nc.jetstream().stream_info(name)).state.messages for name in STREAMS}
    finally:
        await nc.close()


async def traffic(svcs, settings, nc, persons) -> None:
    """Agency reports through the registry; a payment cycle with settlements; a checkpoint."""
    js = nc.jetstream()
    dis = svcs["disbursement"]
    await _setup(dis, settings, js, persons)
    reports = [factories.enrolment("pkh") for _ in range(5)]
    got = await send(nc, settings, reports)
    assert all(r["status"] == "succ" for r in got.values())
    r = await run_cycle(dis, settings)
    assert r.json()["created"] == len(persons), r.text
    sub = await js.pull_subscribe(settings.names.subject("channel.pos.instructions"),
                                  stream=settings.names.stream("CHANNEL"))
    now = dt.datetime.now(dt.UTC).isoformat()
    msgs = await sub.fetch(1, timeout=5)  # one disburse batch carries the cycle's instructions
    items = [d for m in msgs for d in json.loads(m.data)["disbursements"]]
    for i, d in enumerate(items[:4]):
        st = {"settlement_id": f"s{i}", "instruction_id": d["disbursement_id"],
              "status": "failed" if i == 0 else "paid", "reason": "closed" if i == 0 else None, "settled_at": now}
        await js.publish(settings.names.subject("channel.pos.settlements"), json.dumps(st).encode(),
                         headers={"Nats-Msg-Id": f"pos:s{i}"})
    for m in msgs:
        await m.ack()

    async def settled():
        async with dis.rt.sessions() as s:
            return (await s.execute(sa.select(sa.func.count()).select_from(dstore.instructions)
                                    .where(dstore.instructions.c.status != "issued"))).scalar_one() == 4
    await eventually(settled, timeout=20)
    await ledger.checkpoint_if_due(dis.deps)


async def run_cycle(dis, settings):
    """Run the month's cycle as the disbursement tests do (with its approval, where the service
    asks for one)."""
    if hasattr(ds, "run_cycle"):
        return await ds.run_cycle(dis.http, settings, "kamalia_merekah", PERIOD)
    return await dis.http.post(f"/cycles/kamalia_merekah/{PERIOD}", headers=ds.headers(settings))


async def quiet(svcs) -> None:
    """Every outbox sent and every consumer caught up: the moment to back up."""
    async def caught_up():
        for svc in svcs.values():
            b = await svc.rt.relay.backlog()
            if b.pending:
                return False
            for c in svc.rt.consumers:
                if await c.check() or c.pending:
                    return False
        return True
    await eventually(caught_up, timeout=30)


async def audit_verifies(url: str, svc) -> audit.Report:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        msgs = await audit.read_stream(js, "DISBURSEMENT", "disbursement.>", idle=0.5)
    finally:
        await nc.close()
    return audit.verify(msgs, "DISBURSEMENT", svc.deps.cfg.signing_key.public_key())


async def test_backup_and_restore_into_fresh_servers_loses_nothing(infra, tmp_path):
    _, db_url = infra
    run = "b" + uuid.uuid4().hex[:9]
    backup = tmp_path / "backup"
    backup.mkdir()
    old_nats = EmbeddedNats(tmp_path / "old").start()
    # production names (no namespace): this NATS is the test's own
    settings = Settings(nats_url=old_nats.url, database_url=db_url, db_prefix=f"sinergi_{run}_",
                        outbox_poll_seconds=0.05, _env_file=None)
    persons = ds.people(6, seed=21)
    major = await server_major(settings.db_url("registry"))
    try:
        # --- a system with history ------------------------------------------------------------
        nc = await nats.connect(old_nats.url)
        async with running("registry", settings) as reg, running("disbursement", settings) as dis, \
                running("reporting", settings) as rep:
            svcs = {"registry": reg, "disbursement": dis, "reporting": rep}
            await traffic(svcs, settings, nc, persons)
            await quiet(svcs)
            before = await counts(svcs)
            proof_before = (await dis.http.get("/ledger/proof", headers=ds.headers(settings))).json()
        await nc.close()
        assert proof_before["balanced"], proof_before
        assert before["instructions"] == len(persons) and before["receipts"] == 5
        streams_before = await stream_sizes(old_nats.url)

        # --- back up (docs/DEPLOY.md section 3): services stopped above; dumps; NATS stopped, store archived
        for svc in SERVICES:
            env, name = libpq(settings.db_url(svc))
            await asyncio.to_thread(subprocess.run, [pg_bin("pg_dump", major), "-Fc", "-f",
                                                     str(backup / f"{name}.dump"), name],
                                    env={**env, "PATH": "/usr/bin:/bin"}, check=True, capture_output=True)
        old_nats.stop()
        with tarfile.open(backup / "nats-data.tgz", "w:gz") as tar:
            tar.add(old_nats.dir / "jetstream", arcname=".")

        # --- the server is lost: databases dropped, old NATS store gone -------------------------
        for svc in SERVICES:
            await drop_database(settings.db_url(svc))
        shutil.rmtree(old_nats.dir)

        # --- restore (section 4) into fresh servers ------------------------------------------
        new_dir = tmp_path / "new"
        (new_dir / "nats" / "jetstream").mkdir(parents=True)
        with tarfile.open(backup / "nats-data.tgz") as tar:
            tar.extractall(new_dir / "nats" / "jetstream", filter="data")
        new_nats = EmbeddedNats(new_dir).start()
        for svc in SERVICES:
            env, name = libpq(settings.db_url(svc))
            r = await asyncio.to_thread(subprocess.run, [pg_bin("pg_restore", major), "--clean", "--if-exists",
                                                         "--create", "-d", "postgres", str(backup / f"{name}.dump")],
                                        env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        restored = settings.model_copy(update={"nats_url": new_nats.url})
        try:
            assert await stream_sizes(new_nats.url) == streams_before
            nc = await nats.connect(new_nats.url)
            async with running("registry", restored) as reg, running("disbursement", restored) as dis, \
                    running("reporting", restored) as rep:
                svcs = {"registry": reg, "disbursement": dis, "reporting": rep}
                await asyncio.sleep(1.0)  # give consumers a chance to (wrongly) apply anything twice
                await quiet(svcs)
                assert await counts(svcs) == before
                proof = (await dis.http.get("/ledger/proof", headers=ds.headers(restored))).json()
                assert proof["balanced"] and proof == proof_before
                report = await audit_verifies(new_nats.url, dis)
                assert report.ok, report.failures
                assert report.checkpoints >= 1 and report.totals["instructions"] == len(persons)

                # the system carries on: a new report is answered and counted
                fresh = factories.enrolment("pkh")
                got = await send(nc, restored, [fresh])
                assert got[fresh["message_id"]]["status"] == "succ"
                await quiet(svcs)
                after = await counts(svcs)
                assert after["receipts"] == before["receipts"] + 1 and after["people"] == before["people"] + 1
                r = await run_cycle(dis, restored)
                assert r.status_code in (200, 409), r.text
                assert r.status_code == 409 or r.json()["created"] == 0  # the restored cycle is known: nobody paid twice
            await nc.close()
        finally:
            new_nats.stop()
    finally:
        old_nats.stop()
        for svc in ("intake", *SERVICES):
            with contextlib.suppress(Exception):
                await drop_database(settings.db_url(svc))
