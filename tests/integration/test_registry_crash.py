"""SIGKILL `sinergi run registry` at random moments while it ingests N enrolment reports,
restart it, repeat; in the end nothing is lost and nothing doubled: every report has exactly
one stored receipt and at least one receipt on AGENCY_RECEIPTS, every accepted report is in the
history once, and every (person, program) enrolment change is announced on REGISTRY once."""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys

import httpx
import pytest
import sqlalchemy as sa

from services.kit import db as kdb
from services.kit.embedded import free_port
from services.kit.migrations import migrate
from services.registry import store
from tests import factories
from tests.conftest import eventually
from tests.integration.registry_support import drain

pytestmark = pytest.mark.integration
N = int(os.environ.get("SINERGI_REGISTRY_CRASH_N", "12000"))
KILLS = int(os.environ.get("SINERGI_CRASH_KILLS", "4"))


def _spawn(settings, port: int) -> subprocess.Popen:
    env = {**os.environ, "SINERGI_NATS_URL": settings.nats_url, "SINERGI_DATABASE_URL": settings.database_url,
           "SINERGI_NAMESPACE": settings.namespace, "SINERGI_DB_PREFIX": settings.db_prefix,
           "SINERGI_LOG_LEVEL": "warning", "SINERGI_REGISTRY_BATCH_SIZE": "500", "SINERGI_OUTBOX_POLL_SECONDS": "0.02",
           "SINERGI_REGISTRY_ACK_WAIT": "5"}  # a killed process's batch comes back after 5 s
    return subprocess.Popen([sys.executable, "-m", "services.cli", "run", "registry", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


async def _ready(port: int, proc: subprocess.Popen) -> None:
    async def ok():
        assert proc.poll() is None, "registry exited"
        try:
            async with httpx.AsyncClient() as c:
                return (await c.get(f"http://127.0.0.1:{port}/readyz", timeout=1)).status_code == 200
        except httpx.HTTPError:
            return False
    await eventually(ok, timeout=60, interval=0.1)


async def test_sigkill_during_ingest_then_restart_loses_nothing_and_doubles_nothing(settings, nc):
    js = nc.jetstream()
    await migrate("registry", settings.db_url("registry"))
    rng = random.Random(os.environ.get("SINERGI_CRASH_SEED", "11"))
    reports = []
    for i in range(N):
        # one person per report (a distinct birth date each: factories' serials repeat after 9,999)
        r = factories.enrolment(["pkh", "bpnt"][i % 2], sex=rng.choice("FM"), message_id=f"crash-{i}",
                                birth=dt.date(1940, 1, 1) + dt.timedelta(days=i))
        if i % 20 == 7:
            r["village_code"] = r["village_code"][:6] + "9999"  # rejected: unknown village
        reports.append(r)
    valid = [r for r in reports if not r["village_code"].endswith("9999")]
    for i, r in enumerate(reports):
        await js.publish_async(settings.names.enrolments(r["programme_identifier"]), json.dumps(r).encode(),
                               headers={"Nats-Msg-Id": factories.msg_id(r)})
        if i % 2000 == 1999:
            await js.publish_async_completed()
    await js.publish_async_completed()

    engine = kdb.make_engine(settings.db_url("registry"), pool_size=2)
    sessions = kdb.sessions(engine)

    async def answered() -> int:
        async with sessions() as s:
            return (await s.execute(sa.select(sa.func.count()).select_from(store.receipts))).scalar()

    port = free_port()
    proc = _spawn(settings, port)
    at_kill = []
    try:
        for _ in range(KILLS):
            await _ready(port, proc)
            target = min(N - 1, await answered() + rng.randint(1, N // (KILLS + 1)))

            async def progressed(target=target):
                return await answered() >= target
            await eventually(progressed, timeout=60, interval=0.01)
            await asyncio.sleep(rng.uniform(0, 0.05))  # mid-batch, mid-relay, mid-ack: anywhere
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            at_kill.append(await answered())
            proc = _spawn(settings, port)
        await _ready(port, proc)

        async def all_answered():
            return await answered() == N
        await eventually(all_answered, timeout=120)

        async def relayed():
            async with sessions() as s:
                return (await s.execute(sa.select(sa.func.count()).select_from(store.outbox)
                                        .where(store.outbox.c.published_at.is_(None)))).scalar() == 0
        await eventually(relayed, timeout=60)
        async with sessions() as s:
            history = (await s.execute(sa.select(sa.func.count()).select_from(store.enrolment_history))).scalar()
            people = (await s.execute(sa.select(sa.func.count()).select_from(store.people))).scalar()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        await engine.dispose()

    assert at_kill[0] > 0 and at_kill[-1] < N, at_kill  # the kills really fell during ingest
    assert history == people == len(valid)
    receipts = [r for b in await drain(js, settings.names.receipts("*"), settings.names.stream("AGENCY_RECEIPTS"), 1)
                for r in b["receipts"]]
    by_id: dict[str, set[str]] = collections.defaultdict(set)
    for r in receipts:
        by_id[r["message_id"]].add(json.dumps(r, sort_keys=True))
    assert set(by_id) == {r["message_id"] for r in reports}  # every report answered
    assert all(len(v) == 1 for v in by_id.values())  # a repeated answer is the same answer
    events = await drain(js, settings.names.event("registry.enrolments_changed"), settings.names.stream("REGISTRY"), 1)
    announced = collections.Counter((c["nik"], c["programme_identifier"]) for e in events for c in e["data"]["changes"])
    assert set(announced) == {(r["nik"], r["programme_identifier"]) for r in valid}
    assert set(announced.values()) == {1}  # each change once, whatever the kills interrupted
