"""`sinergi reporting rebuild`: read models rebuilt from the streams equal the live ones,
repair a damaged read model, and lose or double nothing while events keep arriving."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from services.reporting import store
from services.reporting.rebuild import rebuild
from tests.conftest import eventually
from tests.integration.test_reporting_recap import (PERIOD, _paid, check_known_recap, folded, publish,
                                                    publish_known_dataset)

pytestmark = pytest.mark.integration


async def snapshot(svc) -> dict[str, list]:
    """Every read-model row (the inbox by its keys: processed_at is when, not what)."""
    out = {}
    async with svc.rt.sessions() as s:
        for t in store.READ_MODELS:
            cols = [c for c in t.c if c.name != "processed_at"]
            out[t.name] = [tuple(r) for r in (await s.execute(sa.select(*cols).order_by(*cols))).all()]
    return out


def _same_report(a: dict, b: dict) -> bool:
    return {**a, "generated_at": None} == {**b, "generated_at": None}


async def test_rebuilt_read_models_equal_the_live_ones_and_repair_damage(settings, nc, start):
    js = nc.jetstream()
    async with start("reporting", settings) as rep:
        n = await publish_known_dataset(js, settings.names)
        await eventually(lambda: folded(rep, n), timeout=20)
        live_tables = await snapshot(rep)
        live = (await rep.http.get("/reports/monthly", params={"period": PERIOD})).json()
        assert sum(len(rows) for rows in live_tables.values()) > 60

        # damage the live read models: a rebuild must restore them from the streams alone
        async with rep.rt.sessions.begin() as s:
            await s.execute(sa.update(store.payment_monthly).values(amount=store.payment_monthly.c.amount + 1))
            await s.execute(sa.delete(store.visit_monthly))
            await s.execute(sa.delete(store.complaint_cases))
        damaged = (await rep.http.get("/reports/monthly", params={"period": PERIOD})).json()
        assert not _same_report(damaged, live)

        progress = await rebuild(settings)
        assert sum(progress.events.values()) == n
        assert await snapshot(rep) == live_tables
        rebuilt = (await rep.http.get("/reports/monthly", params={"period": PERIOD})).json()
        assert _same_report(rebuilt, live)
        check_known_recap(rebuilt)

        # the live consumers carry on into the swapped-in tables
        await publish(js, settings.names, _paid("r-after", "pkh", PERIOD, ("apbn", 700_000)))

        async def paid_after():
            r = (await rep.http.get("/reports/monthly", params={"period": PERIOD})).json()
            return next(p for p in r["programs"] if p["programme_identifier"] == "pkh")["amount_paid"] == 2_500_000
        await eventually(paid_after)


async def test_rebuild_while_events_keep_arriving_loses_and_doubles_nothing(settings, nc, start):
    js = nc.jetstream()
    names = settings.names
    async with start("reporting", settings) as rep:
        sent = {"n": 0}

        async def stream_in(prefix: str, count: int, pause: float) -> None:
            for i in range(count):
                await publish(js, names, _paid(f"{prefix}{i}", "pkh", "2026-05", ("apbn", 1_000)))
                sent["n"] += 1
                if i % 10 == 9:
                    await asyncio.sleep(pause)
        await stream_in("before-", 200, 0)
        sent["n"] = 0
        feeder = asyncio.create_task(stream_in("during-", 400, 0.06))  # about 2.5 s of arrivals
        await asyncio.sleep(0.1)
        await rebuild(settings)
        assert 0 < sent["n"] < 400, "the rebuild should have run while events were arriving"
        await feeder

        async def all_there():
            r = (await rep.http.get("/reports/monthly", params={"period": "2026-05"})).json()
            return r["programs"]
        await eventually(lambda: _count(rep, 600), timeout=20)
        (pkh,) = await all_there()
        assert pkh == {"programme_identifier": "pkh", "enrolled": 0, "people_paid": 600, "amount_paid": 600_000,
                       "payments": 600}


async def _count(svc, n: int) -> bool:
    async with svc.rt.sessions() as s:
        got = (await s.execute(sa.select(sa.func.coalesce(sa.func.sum(store.payment_monthly.c.payments), 0)))).scalar()
    assert got <= n, f"{got} payments counted for {n} events: something was counted twice"
    return got == n


async def test_rebuild_command_is_wired(settings):
    """`sinergi reporting rebuild` runs the same rebuild against the configured servers."""
    env = {"SINERGI_NATS_URL": settings.nats_url, "SINERGI_DATABASE_URL": settings.database_url,
           "SINERGI_NAMESPACE": settings.namespace, "SINERGI_DB_PREFIX": settings.db_prefix}
    from services.kit.migrations import migrate
    await migrate("reporting", settings.db_url("reporting"))
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli", "reporting", "rebuild"],
                                   env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "rebuilt and swapped" in proc.stderr

    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "services.cli", "reporting", "recap", *argv],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    ok = await asyncio.to_thread(cli, "2026-03")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["period"] == "2026-03"
    bad = await asyncio.to_thread(cli, "2026-13")
    assert bad.returncode != 0 and "month 13" in bad.stderr
