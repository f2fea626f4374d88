"""Composition shared by every service: database, NATS, FastStream broker, outbox relay,
health checks and the FastAPI app whose lifespan starts and stops them all."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Awaitable, Callable

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker

from services.kit import auth
from services.kit import db as kdb
from services.kit import logging as klog
from services.kit.outbox import OutboxRelay
from services.kit.settings import Settings
from services.kit.streams import broker_auth, connect, ensure_streams

log = klog.get(__name__)


class ServiceRuntime:
    """One service process. Handlers and routes are attached by the service's app.py."""

    def __init__(self, service: str, settings: Settings, metadata: sa.MetaData) -> None:
        self.service, self.settings, self.names = service, settings, settings.names
        auth.check_secret(settings.auth_secret, settings.env)  # no production run on the dev secret
        self.metadata = metadata
        # every service's metadata carries the kit's outbox and inbox tables (kit.outbox)
        self.outbox = metadata.tables["outbox"]
        self.inbox = metadata.tables["inbox"]
        self.engine = kdb.make_engine(settings.db_url(service))
        self.sessions = kdb.sessions(self.engine)
        self.broker = NatsBroker(settings.nats_url, **broker_auth(settings), name=f"sinergi-{service}-broker",
                                 max_reconnect_attempts=-1, reconnect_time_wait=1, logger=None,
                                 graceful_timeout=10.0)
        self.nc = None
        self.js = None
        self.relay: OutboxRelay | None = None
        self.relay_batch: int | None = None  # a service with bulk volume sets a bigger batch
        self.on_start: list[Callable[[], Awaitable[Any]]] = []
        self.on_stop: list[Callable[[], Awaitable[Any]]] = []
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.nc = await connect(self.settings, f"sinergi-{self.service}")
        self.js = self.nc.jetstream()
        # only add missing streams here; `sinergi migrate` is what updates their config
        await ensure_streams(self.js, self.settings, update=False)
        self.relay = OutboxRelay(self.engine, self.outbox, self.js, batch=self.relay_batch or self.settings.outbox_batch,
                                 poll=self.settings.outbox_poll_seconds)
        self.relay.start()
        await self.broker.start()
        for hook in self.on_start:
            await hook()
        log.info("service.started", nats=self.settings.nats_url)

    async def stop(self) -> None:
        for hook in self.on_stop:
            with contextlib.suppress(Exception):  # a hook that hangs must not keep the service up
                await asyncio.wait_for(hook(), 30)
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await self.broker.stop()
        if self.relay:
            await self.relay.stop()
        if self.nc:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        await self.engine.dispose()
        log.info("service.stopped")

    def background(self, coro_fn: Callable[[], Awaitable[Any]], name: str) -> None:
        """Run a long-lived task from start-up until stop (e.g. an escalation timer)."""
        async def _start() -> None:
            self._tasks.append(asyncio.create_task(coro_fn(), name=name))
        self.on_start.append(_start)

    def kick(self) -> None:
        if self.relay:
            self.relay.kick()

    async def ready(self) -> dict[str, str]:
        checks = {}
        try:
            if self.nc is None or not self.nc.is_connected:
                raise RuntimeError("not connected")
            await self.nc.flush(timeout=2)
            checks["nats"] = "ok"
        except Exception as exc:
            checks["nats"] = f"unavailable: {exc or type(exc).__name__}"
        try:
            # the whole check is bounded: connecting to an unreachable host can hang far longer
            await asyncio.wait_for(self._ping_database(), 3)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {str(exc)[:200] or type(exc).__name__}"
        return checks

    async def _ping_database(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("select 1"))

    def http_app(self, title: str, description: str = "") -> FastAPI:
        runtime = self

        @contextlib.asynccontextmanager
        async def lifespan(_app: FastAPI):
            await runtime.start()
            try:
                yield
            finally:
                await runtime.stop()

        app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan)
        app.state.runtime = runtime
        app.include_router(auth.router())  # POST /auth/token, GET /auth/me (kit.auth, kit.users)

        @app.get("/healthz", tags=["health"], summary="process alive")
        async def healthz() -> dict:
            return {"status": "ok", "service": runtime.service}

        @app.get("/readyz", tags=["health"], summary="NATS and database reachable (503 otherwise)")
        async def readyz() -> JSONResponse:
            checks = await runtime.ready()
            ok = all(v == "ok" for v in checks.values())
            return JSONResponse({"status": "ready" if ok else "unavailable", "checks": checks},
                                status_code=200 if ok else 503)

        @app.exception_handler(RequestValidationError)
        async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
            # say what is wrong, field by field, without echoing the whole input back
            errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "problem": e["msg"]}
                      for e in exc.errors()]
            return JSONResponse({"error": "invalid request", "details": errors}, status_code=422)

        return app
