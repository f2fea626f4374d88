"""Work done by one copy of a service at a time, when two or more copies run (docs/DEPLOY.md).

Most of what a service does is shared between its copies by construction: consumers share one
durable (each message goes to one copy), units of work lock rows or skip the locked ones, and
every key is unique. A few things are not driven by messages but by time or by a request, and
should run on one copy only:

- singleton timers (`kit.timer(..., singleton=True)`): intake's escalation, disbursement's
  chain checkpoints and its resumption of cycles a crash left running. One copy, the
  *leader*, runs them; the others stand by and take over when it goes.
- exclusive work (`kit.exclusive(name)`): one payment cycle run at a time per
  (program, period), whichever copy was asked; a second request waits for the first.

Both are PostgreSQL session-level advisory locks (`pg_try_advisory_lock` / `pg_advisory_lock`)
held on a connection of their own, in the service's own database (advisory locks are scoped to
one database, so services and test runs never collide). A copy that dies - kill -9, OOM, the
machine gone - loses its connection and PostgreSQL frees the lock at once; a frozen process or
a lost network is caught by `idle_session_timeout`: the holder pings every `check` seconds, and
a session idle for three times that is ended by the server, which frees the lock. A standby
tries every `check` seconds, so a leader's death is taken over within about `check` seconds
(measured: docs/DEPLOY.md).

Why PostgreSQL rather than a JetStream KV lease: every one of these jobs writes to the
service's database anyway, so a lease there fails exactly when the work would fail, and a copy
that cannot reach its database could not do the work either. A KV lease would be a second
system whose clock (TTL) must agree with the database's view; NATS being away for a node's
restart would take the leader away too, for no benefit.

A lease is not a fence: a leader that has lost its lease (its connection cut) may still finish
the tick it is in while another copy starts. Every singleton job is therefore also safe to
run twice at once (row locks, SKIP LOCKED, the chain lock, unique keys); the lease saves the
double work and keeps the audit trail and the logs readable; correctness does not rest on it.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg

from services.kit import logging as klog
from services.kit.db import connect_raw

log = klog.get(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (advisory locks take one bigint)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class AdvisoryLock:
    """One session-level advisory lock on a connection of its own."""

    def __init__(self, db_url: str, name: str, *, check: float = 2.0) -> None:
        self.db_url, self.name, self.key, self.check = db_url, name, lock_key(name), check
        self._conn: asyncpg.Connection[Any] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def acquire(self, *, wait: bool) -> bool:
        """Take the lock: at once or not at all (`wait=False`), or when its holder lets go."""
        conn = await connect_raw(self.db_url, application_name=f"sinergi lock {self.name} pid {os.getpid()}",
                                 # a holder that stops pinging (frozen, cut off) is ended by the
                                 # server after three missed pings, which frees its locks
                                 idle_session_timeout=f"{int(self.check * 3000)}")
        try:
            if wait:
                await conn.execute("select pg_advisory_lock($1)", self.key)
                got = True
            else:
                got = bool(await conn.fetchval("select pg_try_advisory_lock($1)", self.key, timeout=self.check * 2))
        except BaseException:
            conn.terminate()
            raise
        if not got:
            await _close(conn)
            return False
        self._conn = conn
        return True

    async def alive(self) -> bool:
        """Still held? A ping on the lock's connection (which also keeps it from idling out)."""
        if self._conn is None:
            return False
        try:
            await self._conn.fetchval("select 1", timeout=self.check * 2)
            return True
        except Exception as exc:
            log.warning("lock.lost", lock=self.name, error=f"{type(exc).__name__}: {exc}"[:200])
            self._drop()
            return False

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # no round trip to a server that may be unreachable

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close(conn)  # the session's end frees the lock


async def _close(conn: asyncpg.Connection[Any]) -> None:
    try:
        await asyncio.wait_for(conn.close(), 5)
    except Exception:
        conn.terminate()


Hook = Callable[[], Awaitable[None]]


class Lease:
    """The leader among a service's copies: whoever holds the service's leader lock.

    `run()` loops until cancelled: a standby tries to take the lock every `check` seconds; the
    leader pings it as often. `on_gain` runs when this copy becomes the leader, `on_loss` when
    it stops being one (its connection to the database broke, or the service stops)."""

    def __init__(self, db_url: str, name: str, on_gain: Hook, on_loss: Hook, *, check: float = 2.0) -> None:
        self.lock = AdvisoryLock(db_url, name, check=check)
        self.on_gain, self.on_loss, self.check = on_gain, on_loss, check
        self.gained = 0  # times this copy became the leader (tests, logs)
        # set before cancelling `run`: a driver may turn the cancellation into an ordinary error
        self.stopping = False

    @property
    def leader(self) -> bool:
        return self.lock.held

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the loop die: a copy without it never leads
                log.warning("lease.error", lease=self.lock.name, error=f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(self.check)

    async def step(self) -> None:
        """One round: keep the lease, or try to take it."""
        if self.lock.held:
            if not await self.lock.alive():
                log.warning("lease.lost", lease=self.lock.name)
                await self.on_loss()
            return
        try:
            got = await self.lock.acquire(wait=False)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:  # database away: next round
            log.warning("lease.unavailable", lease=self.lock.name, error=f"{type(exc).__name__}: {exc}"[:200])
            return
        if got:
            self.gained += 1
            log.info("lease.gained", lease=self.lock.name)
            await self.on_gain()

    async def release(self) -> None:
        self.stopping = True
        if self.lock.held:
            await self.on_loss()
            await self.lock.release()
            log.info("lease.released", lease=self.lock.name)


@contextlib.asynccontextmanager
async def exclusive(db_url: str, name: str, *, wait: bool = True, check: float = 2.0) -> AsyncIterator[bool]:
    """Hold the lock `name` for the block: yields True once held; with `wait=False`, yields
    False at once if another copy holds it. Pings the lock while the block runs."""
    lock = AdvisoryLock(db_url, name, check=check)
    if not await lock.acquire(wait=wait):
        yield False
        return

    async def keep() -> None:
        while True:
            await asyncio.sleep(check)
            if not await lock.alive():
                return  # logged by alive(); the work goes on, safe by its own locks
    keeper = asyncio.create_task(keep(), name=f"lock-{name}")
    try:
        yield True
    finally:
        keeper.cancel()
        await asyncio.wait({keeper}, timeout=5)
        await lock.release()
