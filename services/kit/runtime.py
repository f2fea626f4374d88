"""What every service process is made of: settings, database, a watched NATS connection, the
outbox relay, its consumers and timers, and the FastAPI app whose lifespan runs them.

A service composes one `Kit` with its own typed dependencies (services/<svc>/app.py); nothing
is attached to it at run time. `/readyz` is honest: 503, naming the cause, when NATS or the
database do not answer, when a consumer is not running or stalls with messages waiting, or
when the relay's oldest unsent row is older than `outbox_max_age_seconds`.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contracts.subjects import Names
from services.kit import audit, auth
from services.kit import db as kdb
from services.kit import http as kit_http
from services.kit import logging as klog
from services.kit.bus import Bus
from services.kit.consumer import Consumer, ConsumerSpec
from services.kit.lease import Lease, exclusive
from services.kit.metrics import HttpMetrics, KitMetrics
from services.kit.outbox import OutboxRelay, add
from services.kit.settings import Settings
from services.kit.streams import ensure_streams
from services.kit.tracing import Tracing
from services.kit.uow import UnitOfWork

log = klog.get(__name__)
Hook = Callable[[], Coroutine[Any, Any, Any]]


class Health(BaseModel):
    """The process answers (liveness); says nothing about NATS or the database."""

    status: Literal["ok"] = "ok"
    service: str


class Readiness(BaseModel):
    """Readiness: `ready` only when every check says `ok`; otherwise each failing check names
    its cause (NATS, database, outbox age, a consumer not running or stalled)."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description="check name -> `ok` or the cause")


class Kit:
    """One service process's shared parts. Build it, add consumers and timers, then run the
    FastAPI app from `http_app` (or `start`/`stop` it yourself in a test)."""

    def __init__(self, service: str, settings: Settings, metadata: sa.MetaData, *,
                 relay_batch: int | None = None) -> None:
        auth.check_secret(settings.auth_secret, settings.env)  # no production run on the dev secret
        self.service, self.settings = service, settings
        self.names: Names = settings.names
        self.metadata = metadata
        # every service's metadata carries the kit's outbox and inbox tables (kit.outbox)
        self.outbox: sa.Table = metadata.tables["outbox"]
        self.inbox: sa.Table = metadata.tables["inbox"]
        self.engine: AsyncEngine = kdb.make_engine(settings.db_url(service))
        self.sessions: async_sessionmaker[AsyncSession] = kdb.sessions(self.engine)
        self.bus = Bus(settings, f"sinergi-{service}")
        self.metrics = KitMetrics(self)  # /metrics (kit.metrics); reads the parts below at scrape time
        self.tracing = Tracing(service, settings.otel_endpoint)  # no-ops unless an endpoint is set
        self.tracing.instrument(self.engine)
        self.relay = OutboxRelay(self.engine, self.outbox, lambda: self.bus.nc, self.names, service,
                                 batch=relay_batch or settings.outbox_batch, poll=settings.outbox_poll_seconds,
                                 on_round=self.metrics.relay_round)
        self.consumers: list[Consumer] = []
        self._timers: list[tuple[str, Hook]] = []
        self._singletons: list[tuple[str, Hook]] = []  # timers run by the lease holder only
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._leading: dict[str, asyncio.Task[Any]] = {}
        self.lease: Lease | None = None
        self._on_start: list[Hook] = []
        self._on_stop: list[Hook] = []
        self.started_at = time.monotonic()

    # -- composition -----------------------------------------------------------------------

    def consume(self, spec: ConsumerSpec) -> Consumer:
        c = Consumer(self, spec)
        self.consumers.append(c)
        return c

    def timer(self, name: str, every: float, tick: Hook, *, singleton: bool = False) -> None:
        """Run `tick()` every `every` seconds from start until stop; a failing tick is logged
        and tried again next time (the database may be away).

        `singleton`: with several copies of the service running, only the one holding the
        service's lease (kit.lease: a PostgreSQL advisory lock) runs it; it ticks at once when
        a copy becomes the leader (taking over from one that died), then every `every` s."""
        async def loop() -> None:
            first = singleton
            while True:
                if not first:
                    await asyncio.sleep(every)
                first = False
                try:
                    await tick()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("timer.failed", timer=name, error=f"{type(exc).__name__}: {exc}"[:300])
        (self._singletons if singleton else self._timers).append((name, loop))

    def task(self, name: str, run: Hook) -> None:
        """A one-off task started after everything else (e.g. resuming interrupted work)."""
        self._timers.append((name, run))

    def exclusive(self, name: str, *, wait: bool = True) -> contextlib.AbstractAsyncContextManager[bool]:
        """`async with kit.exclusive("cycle/pkh/2026-11") as mine:` - held by one copy of the
        service at a time (kit.lease); `mine` is False only with `wait=False` when another copy
        holds it. The lock goes with the process: a copy killed mid-way frees it at once."""
        return exclusive(self.settings.db_url(self.service), f"sinergi/{self.service}/{name}", wait=wait,
                         check=self.settings.lease_check_seconds)

    @property
    def leader(self) -> bool:
        """This copy holds the service's lease and runs its singleton timers."""
        return self.lease is not None and self.lease.leader

    def on_start(self, hook: Hook) -> None:
        self._on_start.append(hook)

    def on_stop(self, hook: Hook) -> None:
        self._on_stop.append(hook)

    # -- units of work ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """A transaction whose queued messages become outbox rows before it commits; the relay
        is woken after the commit."""
        async with self.sessions.begin() as session:
            uow = UnitOfWork(session, self.names, self.service)
            yield uow
            await audit.record_request(session)  # a staff write over HTTP leaves its row (kit.audit.install)
            if uow.rows:
                self.tracing.stamp(uow.rows)
                await add(session, self.outbox, uow.rows)
        if uow.rows:
            self.metrics.queued(uow.rows)
            self.relay.kick()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start()
        # only add missing streams here; `sinergi migrate` is what updates their config
        await ensure_streams(self.bus.js, self.settings, update=False)
        self.relay.start()
        for hook in self._on_start:
            await hook()
        for c in self.consumers:
            await c.start()
        for name, run in self._timers:
            self._tasks[name] = asyncio.create_task(run(), name=name)
        if self._singletons:
            self.lease = Lease(self.settings.db_url(self.service), f"sinergi/{self.service}/leader",
                               self._lead, self._follow, check=self.settings.lease_check_seconds)
            self._tasks["lease"] = asyncio.create_task(self.lease.run(), name="lease")
        log.info("service.started", nats=self.settings.nats_url, consumers=[c.spec.durable for c in self.consumers])

    async def _lead(self) -> None:
        for name, run in self._singletons:
            self._leading[name] = asyncio.create_task(run(), name=name)

    async def _follow(self) -> None:
        leading, self._leading = self._leading, {}
        for t in leading.values():
            t.cancel()
        if leading:
            await asyncio.wait(leading.values(), timeout=10)

    async def stop(self) -> None:
        if self.lease is not None:
            self.lease.stopping = True
        for t in self._tasks.values():
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks.values(), timeout=10)
        if self.lease is not None:
            with contextlib.suppress(Exception):  # the next leader takes over either way
                await asyncio.wait_for(self.lease.release(), 15)
        for c in self.consumers:
            await c.stop()
        for hook in self._on_stop:
            with contextlib.suppress(Exception):  # a hook that hangs must not keep the service up
                await asyncio.wait_for(hook(), 30)
        await self.relay.stop()
        await self.bus.stop()
        await self.engine.dispose()
        log.info("service.stopped")

    # -- health ----------------------------------------------------------------------------

    async def ready(self) -> dict[str, str]:
        """Each check's state, "ok" or what is wrong. Bounded: at most a few seconds."""
        checks: dict[str, str] = {}
        try:
            await self.bus.probe(timeout=2.0)
            checks["nats"] = "ok"
        except Exception as exc:
            checks["nats"] = f"unavailable: {exc or type(exc).__name__}"
        try:
            # bounded: connecting to an unreachable host can hang far longer
            await asyncio.wait_for(self._ping_database(), 3)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {str(exc)[:200] or type(exc).__name__}"
        checks["outbox"] = await self._outbox_state(checks["database"] == "ok")
        for c in self.consumers:
            try:
                problem = c.problem() or (await asyncio.wait_for(c.check(), 3) if checks["nats"] == "ok" else None)
            except Exception as exc:
                problem = f"cannot ask the server: {str(exc)[:100] or type(exc).__name__}"
            checks[f"consumer {c.spec.durable}"] = problem or "ok"
        for name, t in self._tasks.items():
            if t.done() and not t.cancelled() and t.exception() is not None:
                checks[f"task {name}"] = f"stopped: {t.exception()!r}"[:200]
        return checks

    async def _outbox_state(self, db_ok: bool) -> str:
        problem = self.relay.problem()
        if problem:
            return problem
        if not db_ok:
            return "unknown (database unavailable)"
        try:
            b = await asyncio.wait_for(self.relay.backlog(), 3)
        except Exception as exc:
            return f"unknown: {str(exc)[:100]}"
        limit = self.settings.outbox_max_age_seconds
        if b.oldest_age > limit:
            why = f"; last error: {self.relay.last_error}" if self.relay.last_error else ""
            return f"behind: {b.pending} rows waiting, the oldest for {b.oldest_age:.0f} s (limit {limit:.0f} s){why}"
        return "ok"

    async def _ping_database(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("select 1"))

    # -- HTTP ------------------------------------------------------------------------------

    def http_app(self, title: str, description: str = "") -> FastAPI:
        kit = self

        @contextlib.asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            await kit.start()
            try:
                yield
            finally:
                await kit.stop()

        app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan,
                      telemetry=kit.tracing.fastapi())  # type: ignore[arg-type]
        app.state.kit = kit  # for tests and tools that hold only the app (tests/conftest.py)
        app.add_middleware(HttpMetrics, histogram=kit.metrics.http_latency)  # latency per route template
        app.include_router(auth.router())  # POST /auth/token, GET /auth/me (kit.auth, kit.users)

        @app.get("/healthz", tags=["health"], summary="process alive")
        async def healthz() -> Health:
            return Health(service=kit.service)

        @app.get("/metrics", tags=["health"], include_in_schema=False)
        async def metrics() -> Response:
            # Prometheus text format (kit.metrics; every metric in docs/OPERATIONS.md)
            return Response(await kit.metrics.exposition(), media_type=kit.metrics.content_type)

        @app.get("/readyz", tags=["health"], response_model=Readiness,
                 responses={503: {"model": Readiness, "description": "not ready: `checks` names the cause"}},
                 summary="NATS, database, outbox and every consumer working (503 naming the cause otherwise)")
        async def readyz() -> JSONResponse:
            checks = await kit.ready()
            ok = all(v == "ok" for v in checks.values())
            body = Readiness(status="ready" if ok else "unavailable", checks=checks)
            return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

        # one error body (kit.http.ErrorBody) for every 4xx/5xx, and the OpenAPI saying so
        kit_http.install_errors(app)

        return app
