"""PostgreSQL stopped abruptly (`pg_ctl stop -m immediate`) in the middle of a cycle, then
started again: no channel message without its instruction and ledger entries, no duplicates,
the cycle completes, the ledger balances, the chain verifies.

Runs on an embedded PostgreSQL (pgserver) this test starts itself, never a shared server;
NATS is the test session's real server."""
from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from contracts.disbursement import FundingSource
from services.disbursement import audit, budgets, cycles, ledger, store
from services.disbursement.app import compose
from services.disbursement.config import DisbursementSettings
from services.kit.migrations import migrate
from services.kit.settings import Settings
from services.kit.streams import delete_streams, ensure_streams
from tests import disbursement_support as ds
from tests.conftest import eventually

pytestmark = pytest.mark.integration
N = 3000


async def test_postgres_killed_mid_cycle(infra, nc):
    pytest.importorskip("pgserver")
    import pgserver

    from services.kit.embedded import EmbeddedPostgres
    pg = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="sinergi-pgcrash-"))).start()
    run = "t" + os.urandom(5).hex()
    settings = Settings(nats_url=infra[0], database_url=pg.url, namespace=run, db_prefix=f"sinergi_{run}_",
                        outbox_poll_seconds=0.02, _env_file=None)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    cfg = DisbursementSettings(chunk_size=100, checkpoint_every=20, resume_cycles=False, _env_file=None)
    await migrate("disbursement", settings.db_url("disbursement"))
    # the service's parts as `sinergi run disbursement` has them (relay, consumers), without HTTP
    deps = compose(settings, cfg)
    kit = deps.kit
    started = False
    try:
        persons = ds.people(N, seed=41)
        rules = {**ds.KAMALIA, "min_age": None, "require_verified": False, "amount": {"kind": "fixed", "amount": 1000},
                 "funding": [{"source": "apbdes"}]}
        async with kit.unit_of_work() as uow:
            await uow.session.execute(sa.insert(store.programs).values(code="kamalia_merekah", rules=rules,
                                                                       updated_by="t"))
            await uow.session.execute(sa.insert(store.enrolments), [
                {"nik": p["nik"], "programme_identifier": "kamalia_merekah", "no_kk": p["no_kk"],
                 "village_code": p["village_code"], "birth_date": p["birth_date"], "enrolment_status": "active",
                 "status_change_date": p["birth_date"]} for p in persons])
        await budgets.set_allocation(deps, FundingSource.apbdes, "kamalia_merekah", 2026, 1000 * N, "test", "t")
        await kit.start()
        started = True
        task = asyncio.create_task(cycles.run(deps, "kamalia_merekah", "2026-11", "t"))

        async def halfway():
            async with kit.sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(store.instructions))).scalar() >= N // 3
        await eventually(halfway, timeout=60, interval=0.01)
        await asyncio.to_thread(pgserver.pg_ctl, ["-m", "immediate", "stop"], pgdata=pg.server.pgdata,
                                user=pg.server.system_user)
        with pytest.raises((sa.exc.SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await task  # the cycle's connection died under it
        await asyncio.to_thread(pg.server.ensure_postgres_running)
        # the pool's connections died with the server (pre-ping would find out one by one)
        await kit.engine.dispose()
        res = await cycles.run(deps, "kamalia_merekah", "2026-11", "t")
        assert res["instructions"] == N and 0 < res["created"] < N

        async def drained():
            async with kit.sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(store.outbox)
                                        .where(store.outbox.c.published_at.is_(None)))).scalar() == 0
        await eventually(drained, timeout=60)
        async with kit.sessions() as s:
            assert (await ledger.prove(s))["balanced"]
            # every channel message in the outbox has its instruction and its reservation
            # (a message is a batch of disbursements: each one's instruction and reservation)
            orphans = (await s.execute(sa.text(
                "select count(*) from outbox o, jsonb_array_elements(convert_from(o.payload, 'UTF8')::jsonb"
                "->'disbursements') d where o.subject like '%.instructions' and not exists "
                "(select 1 from instructions i join ledger l on l.ref = i.id and l.kind = 'reserve' "
                "where i.id = (d->>'disbursement_id')::uuid)"))).scalar()
            dup = (await s.execute(sa.text("select count(*) - count(distinct nik) from instructions"))).scalar()
        assert orphans == 0 and dup == 0
        _msgs, ids = await ds.channel_items(js, settings)
        assert len(ids) == len(set(ids)) == N
        stream = settings.names.stream("DISBURSEMENT")
        rep = audit.verify(await audit.read_stream(js, stream, settings.names.subject("disbursement.>")), stream,
                           cfg.signing_key.public_key())
        assert rep.ok, rep.failures[:5]
        assert rep.totals["instructions"] == N
    finally:
        if started:
            await kit.stop()
        else:
            await kit.engine.dispose()
        await delete_streams(js, settings)
        pg.stop()
