"""kit.lease: one copy of a service runs its singleton timers and each exclusive job, and another
takes over when that copy dies (its connection closes), freezes (the server ends its idle
session) or stops."""
from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy.engine import make_url

from services.intake import store as intake_store
from services.kit.db import _server_dsn, ensure_database
from services.kit.lease import AdvisoryLock, Lease, exclusive
from services.kit.migrations import migrate
from services.kit.runtime import Kit
from tests.conftest import eventually

CHECK = 0.2


async def _db(settings) -> str:
    url = settings.db_url("intake")
    await ensure_database(url)
    return url


class Copy:
    """One copy's view of the lease, counting what it was told."""

    def __init__(self, url: str, name: str = "sinergi/test/leader") -> None:
        self.events: list[str] = []

        async def gain() -> None:
            self.events.append("gain")

        async def loss() -> None:
            self.events.append("loss")
        self.lease = Lease(url, name, gain, loss, check=CHECK)
        self.task = asyncio.create_task(self.lease.run())

    async def stop(self) -> None:
        self.lease.stopping = True
        self.task.cancel()
        await asyncio.wait({self.task}, timeout=5)
        await self.lease.release()


async def test_one_leader_and_a_takeover_when_it_dies(settings):
    url = await _db(settings)
    a = Copy(url)
    await eventually(lambda: a.lease.leader, timeout=5)
    b = Copy(url)
    await asyncio.sleep(CHECK * 5)
    assert not b.lease.leader and b.events == []
    # what kill -9 does to the leader's connection: the socket closes, the server frees the lock
    assert a.lease.lock._conn is not None
    a.task.cancel()
    await asyncio.wait({a.task})
    a.lease.lock._conn.terminate()
    t0 = asyncio.get_running_loop().time()
    await eventually(lambda: b.lease.leader, timeout=5, interval=0.02)
    assert asyncio.get_running_loop().time() - t0 < CHECK * 3  # within about one round
    assert b.events == ["gain"]
    await b.stop()
    assert b.events == ["gain", "loss"]


async def test_the_leader_notices_it_lost_the_lease(settings):
    url = await _db(settings)
    a = Copy(url)
    await eventually(lambda: a.lease.leader, timeout=5)
    # the database ends the leader's session (a restart, a network cut, an operator)
    dsn, kw = _server_dsn(url, database=make_url(url).database)
    admin = await asyncpg.connect(dsn, **kw)
    try:
        n = await admin.fetchval("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                                 "where application_name like 'sinergi lock sinergi/test/leader%'")
        assert n == 1
    finally:
        await admin.close()
    await eventually(lambda: a.events == ["gain", "loss", "gain"], timeout=5)  # lost, noticed, taken again
    await a.stop()


async def test_a_frozen_holder_loses_the_lock_after_three_missed_pings(settings):
    url = await _db(settings)
    frozen = AdvisoryLock(url, "sinergi/test/frozen", check=0.5)
    assert await frozen.acquire(wait=False)
    other = AdvisoryLock(url, "sinergi/test/frozen", check=0.5)
    assert not await other.acquire(wait=False)
    # `frozen` never pings: the server ends its idle session after 1.5 s
    await asyncio.sleep(2.0)
    assert await other.acquire(wait=False)
    assert not await frozen.alive()
    await other.release()


async def test_exclusive_waits_for_the_holder_or_says_no(settings):
    url = await _db(settings)
    order: list[str] = []

    async def job(tag: str, hold: float) -> None:
        async with exclusive(url, "sinergi/test/cycle", check=CHECK) as mine:
            assert mine
            order.append(f"{tag}-in")
            await asyncio.sleep(hold)
            order.append(f"{tag}-out")

    first = asyncio.create_task(job("a", 0.6))
    await eventually(lambda: order == ["a-in"], timeout=5)
    async with exclusive(url, "sinergi/test/cycle", wait=False, check=CHECK) as mine:
        assert not mine
    await job("b", 0)  # waits for a, then runs
    await first
    assert order == ["a-in", "a-out", "b-in", "b-out"]


async def test_singleton_timer_ticks_on_one_kit_and_moves_when_it_stops(settings):
    settings = settings.model_copy(update={"lease_check_seconds": CHECK})
    await migrate("intake", settings.db_url("intake"))
    ticks: dict[str, int] = {"a": 0, "b": 0}
    kits = {}
    for tag in ("a", "b"):
        kit = Kit("intake", settings, intake_store.metadata)

        async def tick(tag: str = tag) -> None:
            ticks[tag] += 1
        kit.timer("test-singleton", 0.1, tick, singleton=True)
        kits[tag] = kit
    await kits["a"].start()
    await eventually(lambda: kits["a"].leader, timeout=5)
    await kits["b"].start()
    await asyncio.sleep(1.0)
    assert ticks["a"] >= 5 and ticks["b"] == 0 and not kits["b"].leader
    await kits["a"].stop()
    before = ticks["a"]
    await eventually(lambda: kits["b"].leader and ticks["b"] > 3, timeout=5)
    assert ticks["a"] == before  # a stopped ticking when it let go
    await kits["b"].stop()
    dsn, kw = _server_dsn(settings.db_url("intake"), database=settings.db_name("intake"))
    admin = await asyncpg.connect(dsn, **kw)
    try:  # nothing is left holding a lock
        held = await admin.fetchval("select count(*) from pg_locks where locktype = 'advisory' and database = "
                                    "(select oid from pg_database where datname = current_database())")
    finally:
        await admin.close()
    assert held == 0
