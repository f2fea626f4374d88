"""The service's NATS connection, watched.

nats-py can be left with a connection that says it is connected while nothing is read any
more: a `flush(timeout)` that times out leaves a cancelled future behind, the next PONG hits
it, and the reading task dies with InvalidStateError (shared/NOTES-faststream-nats.md). A
readiness probe that flushed with a timeout during a 10 s SIGSTOP of the server did exactly
that, and every consumer of the service was dead afterwards while `/readyz` said 200
(issue 11). So:

- nothing here flushes with a timeout; health is judged from the connection's own tasks and
  a JetStream request that has its own timeout (`probe`);
- a watchdog replaces a connection whose reading, flushing or pinging task has died (the
  new one gets a new `generation`: consumers re-subscribe, core subscriptions are re-made by
  their `on_connect` callbacks);
- PINGs every 5 s and 3 outstanding at most, so a stalled server is noticed in about 20 s,
  not nats-py's default 4 minutes.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.kit import logging as klog
from services.kit.settings import Settings

log = klog.get(__name__)

OnConnect = Callable[[Client], Awaitable[None]]


def connect_options(settings: Settings, name: str) -> dict[str, Any]:
    opts: dict[str, Any] = {
        # every node of a cluster (Settings.nats_url may list them): a node that is down at
        # start-up or goes down later is skipped; nats-py also learns the others from the server
        "servers": settings.nats_servers,
        "name": name,
        # nats-py gives up after ~2 minutes by default; a service must keep trying
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "ping_interval": 5,
        "max_outstanding_pings": 3,
    }
    if settings.nats_creds:
        opts["user_credentials"] = settings.nats_creds
    elif settings.nats_user:
        opts["user"], opts["password"] = settings.nats_user, settings.nats_password
        # each NATS identity may only read replies on its own inboxes (kit.natsperm)
        opts["inbox_prefix"] = f"_INBOX.{settings.nats_user}"
    return opts


async def connect(settings: Settings, name: str) -> Client:
    return await nats.connect(**connect_options(settings, name))


def dead_task(nc: Client) -> str | None:
    """The name of an internal nats-py task that died while the client thinks it is connected."""
    if not nc.is_connected:
        return None
    tasks = {"reader": nc._reading_task, "flusher": nc._flusher_task, "pinger": nc._ping_interval_task}
    for name, task in tasks.items():
        if task is not None and task.done():
            return name
    return None


class Bus:
    """One watched NATS connection per service process."""

    def __init__(self, settings: Settings, name: str, *, watch_every: float = 2.0) -> None:
        self.settings, self.name, self.watch_every = settings, name, watch_every
        self._nc: Client | None = None
        self.generation = 0
        self.replaced = 0
        self._on_connect: list[OnConnect] = []
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("NATS is not connected yet")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    def on_connect(self, callback: OnConnect) -> None:
        """Run `callback(nc)` at start and after every replacement (core subscriptions).
        Register while composing the service, before `start`."""
        if self._nc is not None:
            raise RuntimeError("register on_connect callbacks before the bus starts")
        self._on_connect.append(callback)

    async def start(self) -> None:
        self._nc = await connect(self.settings, self.name)
        self.generation += 1
        for cb in self._on_connect:
            await cb(self._nc)
        self._watch = asyncio.create_task(self._watchdog(), name=f"{self.name}-watchdog")

    async def _watchdog(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.watch_every)
            dead = dead_task(self.nc)
            if dead:
                log.error("nats.connection_broken", task=dead, action="replacing the connection")
                with contextlib.suppress(Exception):
                    await self.replace()

    async def replace(self) -> None:
        """A new connection in place of a broken one; the old one is closed without waiting."""
        old = self._nc
        self._nc = await connect(self.settings, self.name)
        self.generation += 1
        self.replaced += 1
        for cb in self._on_connect:
            await cb(self._nc)
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.close(), 5)

    async def probe(self, timeout: float = 2.0) -> None:
        """Raises unless the server answers a JetStream request within `timeout` (no flush)."""
        nc = self.nc
        if not nc.is_connected:
            raise RuntimeError("not connected (reconnecting)")
        dead = dead_task(nc)
        if dead:
            raise RuntimeError(f"the connection's {dead} task died (being replaced)")
        try:
            await nc.request("$JS.API.INFO", b"", timeout=timeout)
        except nats.errors.TimeoutError:
            raise RuntimeError(f"no answer from JetStream within {timeout:.0f} s") from None

    async def stop(self) -> None:
        self._stopping = True
        if self._watch:
            self._watch.cancel()
            await asyncio.wait({self._watch}, timeout=5)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.drain(), 10)
