"""Crash tests against real NATS and PostgreSQL.

- SIGKILL `sinergi run disbursement` at random moments during a cycle of N payments, restart
  it, repeat; in the end: exactly one instruction per funded person, on the channel once each,
  no ceiling exceeded, the ledger balances, the audit chain verifies.
- The outbox relay dies after the broker acknowledged but before it marked the rows sent:
  the repeat publish is de-duplicated by JetStream (Nats-Msg-Id).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys

import httpx
import pytest
import sqlalchemy as sa

from contracts.disbursement import FundingSource
from services.disbursement import audit, budgets, cycles, ledger, store
from services.disbursement.app import compose
from services.disbursement.config import DisbursementSettings
from services.kit import db as kdb
from services.kit.embedded import free_port
from services.kit.migrations import migrate
from services.kit.outbox import OutboxRelay
from tests import disbursement_support as ds
from tests.conftest import eventually

pytestmark = pytest.mark.integration
N = int(os.environ.get("SINERGI_CRASH_N", "10000"))
KILLS = int(os.environ.get("SINERGI_CRASH_KILLS", "5"))
AMOUNT = 250_000


def _spawn(settings, port_base: int, resume: bool = False) -> subprocess.Popen:
    env = {**os.environ, "SINERGI_NATS_URL": settings.nats_url, "SINERGI_DATABASE_URL": settings.database_url,
           "SINERGI_NAMESPACE": settings.namespace, "SINERGI_DB_PREFIX": settings.db_prefix,
           "SINERGI_HTTP_PORT_BASE": str(port_base), "SINERGI_LOG_LEVEL": "warning",
           "SINERGI_DISBURSEMENT_CHUNK_SIZE": "500", "SINERGI_DISBURSEMENT_CHECKPOINT_EVERY": "10",
           "SINERGI_OUTBOX_POLL_SECONDS": "0.02", "SINERGI_DISBURSEMENT_RESUME_CYCLES": str(resume).lower()}
    return subprocess.Popen([sys.executable, "-m", "services.cli", "run", "disbursement"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


async def _ready(client: httpx.AsyncClient, proc: subprocess.Popen) -> None:
    async def ok():
        assert proc.poll() is None, "disbursement exited"
        try:
            return (await client.get("/readyz", timeout=1)).status_code == 200
        except httpx.HTTPError:
            return False
    await eventually(ok, timeout=60, interval=0.1)


async def test_sigkill_during_cycle_then_restart_pays_everyone_once(settings, nc):
    js = nc.jetstream()
    await migrate("disbursement", settings.db_url("disbursement"))
    persons = ds.people(N, seed=5)
    funded = N - N // 10  # the ceiling covers 90 %: the rest must stay unpaid, exactly
    port_base = free_port() - 2
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port_base + 2}", timeout=120)
    h = ds.headers(settings)
    proc = _spawn(settings, port_base)
    engine = kdb.make_engine(settings.db_url("disbursement"), pool_size=2)
    sessions = kdb.sessions(engine)
    kills = 0
    at_kill: list[int] = []
    t0 = asyncio.get_running_loop().time()
    try:
        await _ready(client, proc)
        rules = {**ds.KAMALIA, "min_age": None, "require_verified": False, "amount": {"kind": "fixed", "amount": AMOUNT},
                 "funding": [{"source": "apbd_kabupaten"}]}
        assert (await client.put("/programs/kamalia_merekah", json=rules, headers=h)).status_code == 200
        r = await client.put("/allocations/apbd_kabupaten/kamalia_merekah/2026",
                             json={"ceiling": funded * AMOUNT, "reason": "APBD 2026"}, headers=h)
        assert r.status_code == 200, r.text
        await ds.publish_enrolments(js, settings, persons, "kamalia_merekah")

        async def enrolled():
            async with sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(store.enrolments))).scalar() == N
        await eventually(enrolled, timeout=60)

        t_enrolled = asyncio.get_running_loop().time()
        rng = random.Random(os.environ.get("SINERGI_CRASH_SEED", "7"))
        # maker-checker: prepared by pm1; the first call is the approval (killed mid-run), the later
        # ones continue the approved cycle
        r = await client.post("/cycles/kamalia_merekah/2026-11/prepare", headers=h)
        assert r.status_code == 200, r.text
        path = f"/cycles/preparations/{r.json()['preparation_id']}/approve"
        while kills < KILLS:
            call = asyncio.create_task(client.post(path, headers=ds.headers(settings, user="kadis")))
            path = "/cycles/kamalia_merekah/2026-11"
            # kill at a random point: after a random amount of progress, plus a random delay
            async with sessions() as s:
                start_n = (await s.execute(sa.select(sa.func.count()).select_from(store.instructions))).scalar()
            target = min(funded - 1, start_n + rng.randint(1, funded // 4))

            async def progressed(target=target, call=call):
                async with sessions() as s:
                    return (await s.execute(sa.select(sa.func.count())
                                            .select_from(store.instructions))).scalar() >= target or call.done()
            await eventually(progressed, timeout=60, interval=0.01)
            await asyncio.sleep(rng.uniform(0, 0.05))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            with contextlib.suppress(httpx.HTTPError):
                await call
            async with sessions() as s:
                at_kill.append((await s.execute(sa.select(sa.func.count()).select_from(store.instructions))).scalar())
            # the last restart finishes the cycle by itself (a crash left it running)
            proc = _spawn(settings, port_base, resume=kills == KILLS)
            await _ready(client, proc)

        async def completed():
            async with sessions() as s:
                return (await s.execute(sa.select(store.cycles.c.status))).scalar() == "completed"
        await eventually(completed, timeout=120)
        r = await client.post("/cycles/kamalia_merekah/2026-11", headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["instructions"] == funded and r.json()["created"] == 0
        # the program manager's command line against the running service: nothing new either
        env = {**os.environ, "SINERGI_AUTH_SECRET": settings.auth_secret}
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "cycle", "run", "kamalia_merekah", "2026-11",
            "--url", f"http://127.0.0.1:{port_base + 2}", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await cli.communicate()
        assert cli.returncode == 0 and "created" in out.decode() and "9,000" in out.decode(), (out, err)

        async def all_sent():
            async with sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(store.outbox)
                                        .where(store.outbox.c.published_at.is_(None)))).scalar() == 0
        await eventually(all_sent, timeout=60)
        proof = (await client.get("/ledger/proof", headers=h)).json()
        assert proof["balanced"], proof
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        await client.aclose()

    async with sessions() as s:
        dup = (await s.execute(sa.text("select count(*) - count(distinct nik) from instructions"))).scalar()
        n_ins = (await s.execute(sa.select(sa.func.count()).select_from(store.instructions))).scalar()
        alloc = (await s.execute(sa.select(store.allocations))).one()
    assert dup == 0 and n_ins == funded
    # the kills must have hit cycles in flight, not only idle moments
    assert any(0 < n < funded for n in at_kill), at_kill
    assert alloc.reserved == funded * AMOUNT <= alloc.ceiling
    await engine.dispose()

    # the channel got each instruction exactly once (JetStream dropped the relay's repeats)
    _msgs, ids = await ds.channel_items(js, settings)
    assert len(ids) == len(set(ids)) == funded
    # and the audit chain verifies
    stream = settings.names.stream("DISBURSEMENT")
    msgs = await audit.read_stream(js, stream, settings.names.subject("disbursement.>"))
    rep = audit.verify(msgs, stream, DisbursementSettings(_env_file=None).signing_key.public_key())
    assert rep.ok, rep.failures[:5]
    assert rep.totals["instructions"] == funded and rep.checkpoints >= 1
    print(f"\nSIGKILLed {kills} times during a cycle of {N}; {funded} paid once each; "
          f"{rep.events} audit events verified; instructions at each kill {at_kill}; "
          f"setup {t_enrolled - t0:.1f} s, kills and restarts {asyncio.get_running_loop().time() - t_enrolled:.1f} s")


async def test_relay_dies_after_broker_ack_before_marking_sent(settings, nc):
    """Publish every pending row (acked by JetStream), then 'crash' before the UPDATE commits;
    the next relay publishes them again: every repeat is a duplicate, the stream holds each once."""
    js = nc.jetstream()
    await migrate("disbursement", settings.db_url("disbursement"))
    deps = compose(settings, DisbursementSettings(resume_cycles=False, _env_file=None))
    kit = deps.kit
    persons = ds.people(40, seed=9)
    rules = {**ds.KAMALIA, "min_age": None, "require_verified": False, "amount": {"kind": "fixed", "amount": 1000},
             "funding": [{"source": "csr"}]}
    async with kit.unit_of_work() as uow:
        await uow.session.execute(sa.insert(store.programs).values(code="kamalia_merekah", rules=rules, updated_by="t"))
        await uow.session.execute(sa.insert(store.enrolments), [
            {"nik": p["nik"], "programme_identifier": "kamalia_merekah", "no_kk": p["no_kk"],
             "village_code": p["village_code"], "birth_date": p["birth_date"], "enrolment_status": "active",
             "status_change_date": p["birth_date"]} for p in persons])
    await budgets.set_allocation(deps, FundingSource.csr, "kamalia_merekah", 2026, 10**9, "test", "t")
    await cycles.run(deps, "kamalia_merekah", "2026-11", "t")

    class DiesBeforeMarking(OutboxRelay):
        async def drain_once(self) -> int:
            t = self.table
            async with self.engine.begin() as conn:
                rows = (await conn.execute(sa.select(t.c.id, t.c.subject, t.c.payload).where(t.c.published_at.is_(None))
                                           .order_by(t.c.seq).with_for_update(skip_locked=True))).all()
                acks = [await js.publish(r.subject, r.payload, headers={"Nats-Msg-Id": str(r.id)}) for r in rows]
                assert not any(a.duplicate for a in acks)
                raise RuntimeError("killed after the broker's ack, before marking the rows sent")

    with pytest.raises(RuntimeError):
        await DiesBeforeMarking(kit.engine, store.outbox, lambda: nc, settings.names, "disbursement").drain_once()
    relay = OutboxRelay(kit.engine, store.outbox, lambda: nc, settings.names, "disbursement")
    sent = await relay.drain_once()
    assert sent == 1 + 4  # 40 instructions in one disburse batch + allocation, reserved, issued, cycle completed
    assert relay.duplicates == 5
    assert await relay.drain_once() == 0
    info = await js.stream_info(settings.names.stream("CHANNEL"))
    assert info.state.messages == 1
    stream = settings.names.stream("DISBURSEMENT")
    assert (await js.stream_info(stream)).state.messages == 4
    rep = audit.verify(await audit.read_stream(js, stream, settings.names.subject("disbursement.>")), stream)
    assert rep.ok and rep.totals["instructions"] == 40
    async with kit.sessions() as s:
        assert (await ledger.prove(s))["balanced"]
    await kit.engine.dispose()
